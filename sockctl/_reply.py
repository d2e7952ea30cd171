"""Reading the daemon's reply messages, for :class:`sockctl.Client` and the handles of sessions.

Low-level failures are translated here, at one boundary: socket errors become
:class:`~sockctl.errors.DaemonUnavailable`, bad JSON or types :class:`~sockctl.errors.ProtocolError`.
"""

import json
import socket
from typing import Any

from sockctl import _wire
from sockctl.errors import (
    DaemonTimeout,
    DaemonUnavailable,
    ProtocolError,
    SockdError,
    from_info,
)
from sockctl.protocol import ErrorInfo, WireTypeError, from_wire


def read_message(
    sock: socket.socket, timeout: float | None
) -> tuple[dict[str, Any] | None, list[int]]:
    """One reply message and the descriptors that came with it; ``(None, [])`` once sockd hung up.

    ``timeout`` is only named in the error when the socket's own timeout expires.
    """
    try:
        data, fds = _wire.recv(sock)
    except TimeoutError as exc:
        raise DaemonTimeout(f"sockd did not answer within {timeout} s") from exc
    except SockdError:
        raise
    except ConnectionResetError as exc:
        refusal = pending_error(sock)
        raise refusal or DaemonUnavailable(f"lost the connection to sockd: {exc}") from exc
    except OSError as exc:
        raise DaemonUnavailable(f"lost the connection to sockd: {exc}") from exc
    if not data:
        return None, fds
    try:
        message = json.loads(data)
    except ValueError as exc:
        _wire.close_all(fds)
        raise ProtocolError(f"sockd sent a reply that is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        _wire.close_all(fds)
        raise ProtocolError("sockd sent a reply that is not a JSON object")
    return message, fds


def decode(tp: Any, raw: Any) -> Any:
    """``raw`` (decoded JSON) as the contract type ``tp``."""
    try:
        return from_wire(tp, raw)
    except (WireTypeError, KeyError) as exc:
        raise ProtocolError(f"sockd sent a reply that breaks the contract: {exc}") from exc


def error_from(message: dict[str, Any]) -> SockdError:
    """The exception an error reply stands for."""
    try:
        info: ErrorInfo = from_wire(ErrorInfo, message.get("error"))
    except (WireTypeError, KeyError) as exc:
        return ProtocolError(f"sockd sent an error reply that breaks the contract: {exc}")
    return from_info(info)


def pending_error(sock: socket.socket) -> SockdError | None:
    """An error reply already queued on a connection the daemon closed, if there is one.

    The kernel reports ECONNRESET once (the daemon closed with our request unread) before it hands
    out what is still queued, hence the second attempt.
    """
    for _ in range(2):
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except ConnectionResetError:
            continue
        except OSError:
            return None
        try:
            message = json.loads(data)
        except ValueError:
            return None
        if isinstance(message, dict) and not message.get("ok", True):
            return error_from(message)
        return None
    return None
