"""sockctl: the client library and CLI for sockd.

::

    from sockctl import Client, PermissionDenied

    with Client() as client:
        try:
            client.ns_create("test")
        except PermissionDenied as exc:
            print(exc)
"""

from sockctl._client import Client
from sockctl.errors import (
    AlreadyExists,
    Busy,
    DaemonTimeout,
    DaemonUnavailable,
    InternalError,
    InvalidRequest,
    MalformedMessage,
    MessageTooLarge,
    NotFound,
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
    SockListResult,
    SockProcess,
    SockSummaryResult,
    StatusReply,
    WhoAmIReply,
)

__version__ = VERSION

__all__ = [
    "AlreadyExists",
    "Busy",
    "Client",
    "DaemonTimeout",
    "DaemonUnavailable",
    "InterfaceInfo",
    "InternalError",
    "InvalidRequest",
    "LinkEnd",
    "LinkInfo",
    "MalformedMessage",
    "MessageTooLarge",
    "NotFound",
    "NsDeleteReply",
    "NsDetail",
    "NsIdentifyReply",
    "NsInfo",
    "NsPidsResult",
    "NsUnlinkReply",
    "PermissionDenied",
    "PingReply",
    "ProtocolError",
    "QuotaExceeded",
    "RequestError",
    "SockCount",
    "SockInfo",
    "SockListResult",
    "SockProcess",
    "SockSummaryResult",
    "SockdError",
    "StatusReply",
    "TooManyConnections",
    "UnknownOperation",
    "UnsupportedVersion",
    "WhoAmIReply",
    "__version__",
]
