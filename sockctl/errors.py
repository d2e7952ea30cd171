"""Every error sockd and sockctl raise: one class per wire code, plus the client's own.

The hierarchy::

    SockdError                       base of everything raised here (exit code 1)
    ├── DaemonUnavailable            no daemon at the socket, or it went away (3)
    │   └── DaemonTimeout            the daemon did not answer in time (3)
    ├── ProtocolError                the daemon's reply broke the contract (10)
    └── RequestError                 the daemon refused a request; ``code`` is the wire code
        ├── InvalidRequest           invalid_request: a field is wrong; ``field`` names it (9)
        │   ├── MalformedMessage     malformed_message: not a JSON object (9)
        │   ├── MessageTooLarge      message_too_large: over protocol.MAX_MESSAGE (9)
        │   └── UnknownOperation     unknown_operation (9)
        ├── UnsupportedVersion       unsupported_version: another protocol major version (10)
        ├── PermissionDenied         permission_denied: policy says no (4)
        ├── NotFound                 not_found (5)
        │   └── CommandNotFound      not_found for ``argv``: also a FileNotFoundError (5)
        ├── AlreadyExists            already_exists (6)
        ├── QuotaExceeded            quota_exceeded (7)
        ├── Busy                     busy: in use, e.g. processes inside a namespace (8)
        ├── TooManyConnections       too_many_connections: a connection limit was hit (8)
        ├── NotSupported             not_supported: this kernel cannot do it, e.g. sock kill (12)
        └── InternalError            internal_error: a bug or a kernel failure; details are logged (11)

The numbers are the ``sockctl`` exit codes (``exit_code``). The daemon raises the same classes;
its server turns them into error replies and the client turns those back into these classes.
"""

import errno
from typing import Any, ClassVar

from sockctl.protocol import ErrorCode, ErrorInfo


class SockdError(Exception):
    """Base class of every error raised by sockd and sockctl."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnavailable(SockdError):
    """The daemon cannot be reached at the socket, or closed the connection."""

    exit_code = 3


class DaemonTimeout(DaemonUnavailable):
    """The daemon did not answer within the client's timeout."""


class ProtocolError(SockdError):
    """A reply that does not follow the wire contract (a bug, or a daemon of another version)."""

    exit_code = 10


class RequestError(SockdError):
    """The daemon refused or failed a request. ``code`` is the stable wire code."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.details: dict[str, Any] = details or {}

    def info(self) -> ErrorInfo:
        """This error as it travels on the wire."""
        return ErrorInfo(
            code=self.code, message=self.message, field=self.field, details=self.details
        )

    def __str__(self) -> str:
        return f"{self.message} (field: {self.field})" if self.field else self.message


class InvalidRequest(RequestError):
    code = ErrorCode.INVALID_REQUEST
    exit_code = 9


class MalformedMessage(InvalidRequest):
    code = ErrorCode.MALFORMED_MESSAGE


class MessageTooLarge(InvalidRequest):
    code = ErrorCode.MESSAGE_TOO_LARGE


class UnknownOperation(InvalidRequest):
    code = ErrorCode.UNKNOWN_OPERATION


class UnsupportedVersion(RequestError):
    code = ErrorCode.UNSUPPORTED_VERSION
    exit_code = 10


class PermissionDenied(RequestError):
    code = ErrorCode.PERMISSION_DENIED
    exit_code = 4


class NotFound(RequestError):
    code = ErrorCode.NOT_FOUND
    exit_code = 5


class CommandNotFound(NotFound, FileNotFoundError):
    """``ns.exec``'s command does not exist: a :class:`FileNotFoundError` too, as from subprocess.

    ``filename`` is the command as given; ``errno`` is ENOENT.
    """

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, field=field, details=details)
        self.errno = errno.ENOENT
        self.strerror = message
        self.filename = (details or {}).get("command")

    def __str__(self) -> str:
        return RequestError.__str__(self)


class AlreadyExists(RequestError):
    code = ErrorCode.ALREADY_EXISTS
    exit_code = 6


class QuotaExceeded(RequestError):
    code = ErrorCode.QUOTA_EXCEEDED
    exit_code = 7


class Busy(RequestError):
    code = ErrorCode.BUSY
    exit_code = 8


class TooManyConnections(RequestError):
    code = ErrorCode.TOO_MANY_CONNECTIONS
    exit_code = 8


class NotSupported(RequestError):
    """The kernel lacks what the request needs (e.g. CONFIG_INET_DIAG_DESTROY for sock.kill)."""

    code = ErrorCode.NOT_SUPPORTED
    exit_code = 12


class InternalError(RequestError):
    code = ErrorCode.INTERNAL_ERROR
    exit_code = 11


ERROR_CLASSES: dict[ErrorCode, type[RequestError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        MalformedMessage,
        MessageTooLarge,
        UnknownOperation,
        UnsupportedVersion,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        QuotaExceeded,
        Busy,
        TooManyConnections,
        NotSupported,
        InternalError,
    )
}
"""The exception class of each wire code."""


def from_info(info: ErrorInfo) -> RequestError:
    """The exception for an error reply."""
    if info.code is ErrorCode.NOT_FOUND and info.field == "argv":
        return CommandNotFound(info.message, field=info.field, details=info.details)
    return ERROR_CLASSES[info.code](info.message, field=info.field, details=info.details)
