"""sockctl: the client library and CLI for sockd.

::

    from sockctl import Client, PermissionDenied

    with Client() as client:
        try:
            client.ns_create("test")
        except PermissionDenied as exc:
            print(exc)
        status = client.exec("test", ["ip", "-br", "link"])     # as yourself, inside "test"
        server = client.open_socket("tcp:0.0.0.0:80", ns="test")  # a socket made inside "test"
"""

from typing import TYPE_CHECKING, Any

from sockctl._client import Client
from sockctl.errors import (
    AlreadyExists,
    Busy,
    CommandNotFound,
    DaemonTimeout,
    DaemonUnavailable,
    InternalError,
    InvalidRequest,
    MalformedMessage,
    MessageTooLarge,
    NotFound,
    NotSupported,
    PermissionDenied,
    ProtocolError,
    QuotaExceeded,
    RequestError,
    SockdError,
    TooManyConnections,
    UnknownOperation,
    UnsupportedVersion,
)
from sockctl.protocol import (
    VERSION,
    ExecExit,
    ExecStarted,
    InterfaceInfo,
    LinkEnd,
    LinkInfo,
    NsDeleteReply,
    NsDetail,
    NsIdentifyReply,
    NsInfo,
    NsPidsResult,
    NsUnlinkReply,
    PingReply,
    SockCount,
    SockInfo,
    SockKillReply,
    SockListResult,
    SockMemory,
    SockOpenReply,
    SockProcess,
    SockSummaryResult,
    SockTimer,
    StatusReply,
    TcpInfo,
    WhoAmIReply,
)

if TYPE_CHECKING:
    from sockctl import oob
    from sockctl._exec import DEVNULL, FORWARDED_SIGNALS, PIPE, NsProcess
    from sockctl.oob import recv_until_mark, recv_urgent, send_urgent, sockatmark

__version__ = VERSION

_LAZY = {
    "DEVNULL": "sockctl._exec",
    "FORWARDED_SIGNALS": "sockctl._exec",
    "PIPE": "sockctl._exec",
    "NsProcess": "sockctl._exec",
    "recv_until_mark": "sockctl.oob",
    "recv_urgent": "sockctl.oob",
    "send_urgent": "sockctl.oob",
    "sockatmark": "sockctl.oob",
}
"""Names imported on first use: their modules (subprocess, termios, fcntl...) cost ~6 ms of the
start-up of every sockctl command that does not run things or use out-of-band data."""


def __getattr__(name: str) -> Any:
    import importlib  # noqa: PLC0415

    if name == "oob":
        return importlib.import_module("sockctl.oob")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sockctl' has no attribute {name!r}")


__all__ = [
    "DEVNULL",
    "FORWARDED_SIGNALS",
    "PIPE",
    "AlreadyExists",
    "Busy",
    "Client",
    "CommandNotFound",
    "DaemonTimeout",
    "DaemonUnavailable",
    "ExecExit",
    "ExecStarted",
    "InterfaceInfo",
    "InternalError",
    "InvalidRequest",
    "LinkEnd",
    "LinkInfo",
    "MalformedMessage",
    "MessageTooLarge",
    "NotFound",
    "NotSupported",
    "NsDeleteReply",
    "NsDetail",
    "NsIdentifyReply",
    "NsInfo",
    "NsPidsResult",
    "NsProcess",
    "NsUnlinkReply",
    "PermissionDenied",
    "PingReply",
    "ProtocolError",
    "QuotaExceeded",
    "RequestError",
    "SockCount",
    "SockInfo",
    "SockKillReply",
    "SockListResult",
    "SockMemory",
    "SockOpenReply",
    "SockProcess",
    "SockSummaryResult",
    "SockTimer",
    "SockdError",
    "StatusReply",
    "TcpInfo",
    "TooManyConnections",
    "UnknownOperation",
    "UnsupportedVersion",
    "WhoAmIReply",
    "__version__",
    "oob",
    "recv_until_mark",
    "recv_urgent",
    "send_urgent",
    "sockatmark",
]
