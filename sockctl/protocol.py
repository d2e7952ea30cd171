"""The sockd wire contract: every request, reply, limit and error code, shared by daemon and client.

One request is one JSON object in one SOCK_SEQPACKET datagram::

    {"proto": 1, "op": "ns.create", "name": "test"}

``proto`` is the protocol's major version; the daemon refuses any other with ``unsupported_version``
before it looks at the rest. ``op`` selects the request type (a discriminated union); unknown fields are
rejected. File descriptors travel as SCM_RIGHTS in the same datagram and are referred to by index.

A reply is one or more datagrams, answering the requests of a connection in order::

    {"ok": true, "result": {...}}                               one message
    {"ok": true, "more": true, "items": [...]}                  first parts of a listing ...
    {"ok": true, "more": false, "items": [...], "result": ...}  ... and its last part
    {"ok": false, "error": {"code": "not_found", "message": "...", "field": null, "details": {}}}

Listings (``OPERATIONS[op].item`` is set) stream their items over as many messages as they need, each at
most ``MAX_MESSAGE`` bytes, so neither side holds a whole large result in one buffer.

The types here are standard-library dataclasses on purpose: the daemon validates requests with pydantic
(strict, extra fields forbidden) and exports the JSON Schema from the same classes, while the client and
CLI never import pydantic, whose import and first model build cost ~85 ms of start-up (measured; the
CLI's whole-command budget is 120 ms). ``Constraint`` carries the bounds pydantic enforces.
"""

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

VERSION = "0.1.0"
"""The sockd/sockctl release."""

PROTOCOL_VERSION = 1
"""Major protocol version; a request of another major version is refused."""

MAX_MESSAGE = 65536
"""Largest datagram either side sends or accepts, in bytes."""

MAX_FDS = 8
"""Most file descriptors one message may carry."""

DEFAULT_SOCKET = "/run/sockd/sockd.sock"
SOCKET_ENV = "SOCKD_SOCKET"

NS_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
"""Namespace names: 1-64 ASCII letters, digits, ``_ . -``, not starting with ``.`` or ``-``.

Stricter than iproute2 (which takes anything without ``/`` up to NAME_MAX) so that names are safe in
paths, log lines and shells, and cannot hide look-alike Unicode characters.
"""

NS_NAME_RULE = (
    "1-64 characters of A-Z a-z 0-9 _ . -, not starting with . or - (no spaces, slashes or Unicode)"
)

PID_MAX = 4194304  # PID_MAX_LIMIT on 64-bit Linux

HOSTNAME_PATTERN = (
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
"""Hostnames (``ns create --hostname``): RFC 1123 labels separated by dots, at most 64 characters."""

IFNAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$"
"""Interface names: 1-15 characters (IFNAMSIZ - 1) of A-Z a-z 0-9 _ . -, not starting with . or -."""

CIDR_PATTERN = r"^[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}$"
"""Shape of an ``address/prefix``; the daemon parses it with :mod:`ipaddress` and names the field."""

NSID_MAX = 2**31 - 1


class ErrorCode(enum.StrEnum):
    """Stable error codes; each has one exception class in :mod:`sockctl.errors`."""

    INVALID_REQUEST = "invalid_request"
    MALFORMED_MESSAGE = "malformed_message"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNKNOWN_OPERATION = "unknown_operation"
    UNSUPPORTED_VERSION = "unsupported_version"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    QUOTA_EXCEEDED = "quota_exceeded"
    BUSY = "busy"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Constraint:
    """Bounds on one field, applied by pydantic in the daemon and shown in the JSON Schema.

    pydantic calls ``__get_pydantic_core_schema__`` on ``Annotated`` metadata, so this module needs no
    pydantic import to declare them.
    """

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    ge: int | None = None
    le: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = dict(handler(source))
        for key in ("min_length", "max_length", "pattern", "ge", "le"):
            value = getattr(self, key)
            if value is not None:
                schema[key] = value
        return schema


NsName = Annotated[str, Constraint(min_length=1, max_length=64, pattern=NS_NAME_PATTERN)]
Pid = Annotated[int, Constraint(ge=1, le=PID_MAX)]
Hostname = Annotated[str, Constraint(min_length=1, max_length=64, pattern=HOSTNAME_PATTERN)]
IfName = Annotated[str, Constraint(min_length=1, max_length=15, pattern=IFNAME_PATTERN)]
Cidr = Annotated[str, Constraint(min_length=4, max_length=49, pattern=CIDR_PATTERN)]
Nsid = Annotated[int, Constraint(ge=0, le=NSID_MAX)]


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestBase:
    """Fields every request carries. Strict types, no extra fields (a plain dict keeps pydantic out)."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    proto: int = PROTOCOL_VERSION


@dataclass(frozen=True, kw_only=True, slots=True)
class PingRequest(RequestBase):
    """Check that the daemon answers."""

    op: Literal["ping"] = "ping"


@dataclass(frozen=True, kw_only=True, slots=True)
class WhoAmIRequest(RequestBase):
    """What the daemon knows about the caller, from the kernel, and what policy allows it."""

    op: Literal["whoami"] = "whoami"


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusRequest(RequestBase):
    """Daemon version, uptime and counters."""

    op: Literal["status"] = "status"


@dataclass(frozen=True, kw_only=True, slots=True)
class NsCreateRequest(RequestBase):
    """Create a named network namespace owned by the caller, as ``ip netns add`` would."""

    op: Literal["ns.create"] = "ns.create"
    name: NsName
    loopback_up: bool = True
    hostname: Hostname | None = None
    """Give the namespace its own UTS namespace with this hostname (kept alongside it)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NsDeleteRequest(RequestBase):
    """Delete a named namespace; refused while processes live inside unless ``force``."""

    op: Literal["ns.delete"] = "ns.delete"
    name: NsName
    force: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class NsListRequest(RequestBase):
    """Every named namespace in the netns directory, made by sockd or by anything else."""

    op: Literal["ns.list"] = "ns.list"


@dataclass(frozen=True, kw_only=True, slots=True)
class NsIdentifyRequest(RequestBase):
    """Names of the namespace a process is in; the caller's own process when ``pid`` is omitted."""

    op: Literal["ns.identify"] = "ns.identify"
    pid: Pid | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NsPidsRequest(RequestBase):
    """Processes inside a named namespace."""

    op: Literal["ns.pids"] = "ns.pids"
    name: NsName


# Links, attach, nsid, show (issue 6) ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class NsLinkRequest(RequestBase):
    """Connect a namespace to the host (``peer`` None) or to another namespace with a veth pair.

    Addresses: with none of ``address``, ``peer_address``, ``no_address`` both ends get the two
    addresses of one block of the daemon's pool (the peer the first, ``name``'s end the second);
    otherwise each end gets exactly the address given for it (a host end only from root).
    """

    op: Literal["ns.link"] = "ns.link"
    name: NsName
    peer: NsName | None = None
    address: Cidr | None = None
    peer_address: Cidr | None = None
    no_address: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class NsUnlinkRequest(RequestBase):
    """Remove a link sockd made; ``ifname`` is its end in ``name`` (may be omitted if it has one)."""

    op: Literal["ns.unlink"] = "ns.unlink"
    name: NsName
    ifname: IfName | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NsShowRequest(RequestBase):
    """One namespace in detail: hostname, every interface with state, addresses and peer."""

    op: Literal["ns.show"] = "ns.show"
    name: NsName


@dataclass(frozen=True, kw_only=True, slots=True)
class NsAttachRequest(RequestBase):
    """Name the network namespace of a process (``ip netns attach``); the caller's own if no pid."""

    op: Literal["ns.attach"] = "ns.attach"
    name: NsName
    pid: Pid | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NsSetNsidRequest(RequestBase):
    """Assign the namespace's nsid as seen from the host (``ip netns set NAME N|auto``); None: auto."""

    op: Literal["ns.set_nsid"] = "ns.set_nsid"
    name: NsName
    nsid: Nsid | None = None


Request = Union[  # noqa: UP007 -- pydantic reads the discriminator from a typing.Union
    PingRequest,
    WhoAmIRequest,
    StatusRequest,
    NsCreateRequest,
    NsDeleteRequest,
    NsListRequest,
    NsIdentifyRequest,
    NsPidsRequest,
    # issue 6
    NsLinkRequest,
    NsUnlinkRequest,
    NsShowRequest,
    NsAttachRequest,
    NsSetNsidRequest,
]


@dataclass(frozen=True, kw_only=True, slots=True)
class PingReply:
    version: str
    protocol: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WhoAmIReply:
    uid: int
    gid: int
    groups: list[int]
    pid: int
    pidfd: bool
    """Whether the daemon holds a pidfd for the caller (Linux >= 6.5), so acting on it is race-free."""
    root: bool
    may_create: bool
    sees_all_processes: bool
    namespace_quota: int
    namespaces_owned: int
    link_quota: int = 0
    links_owned: int = 0
    address_quota: int = 0
    addresses_held: int = 0
    """Pool addresses held by the caller's links (two per link that took its addresses from the pool)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusReply:
    version: str
    protocol: int
    pid: int
    uptime: float
    connections: int
    requests: int
    namespaces_managed: int
    config: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class NsInfo:
    name: str
    id: int | None
    """Inode of the namespace (what ``readlink /proc/PID/ns/net`` shows); None if it is not mounted."""
    owner_uid: int
    managed: bool
    """True when sockd created it; False for namespaces made by ``ip netns add`` and others (owner 0)."""
    created: float | None
    nsid: int | None
    processes: int
    hostname: str | None = None
    """The hostname of its own UTS namespace (``ns create --hostname``); None: it shares the host's."""
    attached: bool = False
    """Named from an existing process's namespace (``ns attach``)."""
    links: int = 0
    """Links sockd made that have an end in it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NsDeleteReply:
    name: str
    pids: list[int]
    """Processes that were still inside (visible to the caller); they keep the namespace alive."""
    hidden_pids: int
    still_alive: bool
    pinned_mounts: int = 0
    """Bind mounts of it (often in other mount namespaces) that keep it alive without its name."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NsIdentifyReply:
    pid: int
    names: list[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class NsPidsResult:
    """The end of an ``ns.pids`` listing: how many pids policy hid from the caller."""

    name: str
    hidden: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkEnd:
    """One end of a veth pair, as the kernel shows it now."""

    namespace: str | None
    """The named namespace it lives in; None: the host."""
    ifname: str
    up: bool
    """Administratively up."""
    state: str
    """Operational state as ``ip link`` names it (up, down, lowerlayerdown, ...); "absent" if gone."""
    addresses: list[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkInfo:
    """A link sockd made: ``end`` is in the namespace it was made for, ``peer`` in the host or another."""

    id: str
    owner_uid: int
    end: LinkEnd
    peer: LinkEnd
    pool_block: str | None
    """The pool block its addresses came from; None when they were given (or there are none)."""
    created: float


@dataclass(frozen=True, kw_only=True, slots=True)
class NsUnlinkReply:
    id: str
    name: str
    ifname: str
    peer_namespace: str | None
    peer_ifname: str
    released: str | None
    """The pool block given back, if the link had one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InterfaceInfo:
    """One interface inside a namespace, and its peer when sockd made it."""

    ifname: str
    index: int
    kind: str | None
    up: bool
    state: str
    addresses: list[str]
    link: LinkInfo | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NsDetail:
    info: NsInfo
    interfaces: list[InterfaceInfo]
    uts_path: str | None = None
    """Where its UTS namespace is mounted (``nsenter --uts=PATH``), if it has one."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorInfo:
    code: ErrorCode
    message: str
    field: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """What one operation takes and gives back.

    ``reply`` is the whole answer of a plain operation. For a listing, ``item`` is the type of each
    streamed item and ``reply`` (if any) the summary sent with the last part.
    """

    request: type[Any]
    reply: type[Any] | None
    item: type[Any] | None = None
    takes_fds: bool = False
    mutating: bool = False


OPERATIONS: dict[str, Operation] = {
    "ping": Operation(PingRequest, PingReply),
    "whoami": Operation(WhoAmIRequest, WhoAmIReply),
    "status": Operation(StatusRequest, StatusReply),
    "ns.create": Operation(NsCreateRequest, NsInfo, mutating=True),
    "ns.delete": Operation(NsDeleteRequest, NsDeleteReply, mutating=True),
    "ns.list": Operation(NsListRequest, None, item=NsInfo),
    "ns.identify": Operation(NsIdentifyRequest, NsIdentifyReply),
    "ns.pids": Operation(NsPidsRequest, NsPidsResult, item=int),
    # issue 6
    "ns.link": Operation(NsLinkRequest, LinkInfo, mutating=True),
    "ns.unlink": Operation(NsUnlinkRequest, NsUnlinkReply, mutating=True),
    "ns.show": Operation(NsShowRequest, NsDetail),
    "ns.attach": Operation(NsAttachRequest, NsInfo, mutating=True),
    "ns.set_nsid": Operation(NsSetNsidRequest, NsInfo, mutating=True),
}
"""Every operation by its ``op`` name."""


def to_wire(value: Any) -> Any:
    """Turn a reply or request dataclass (recursively) into JSON-ready Python objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_wire(item) for key, item in value.items()}
    return value


class WireTypeError(ValueError):
    """A value received from the peer does not have the type the contract promises."""


def from_wire(tp: Any, value: Any) -> Any:
    """Build ``tp`` (a contract dataclass, list, optional or scalar type) from decoded JSON.

    Used by the client on the daemon's replies. It checks types as it goes, so a reply from a daemon
    that breaks the contract raises :class:`WireTypeError` instead of yielding a half-typed object.
    """
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return from_wire(typing.get_args(tp)[0], value)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return from_wire(inner, value)
    if origin is list:
        _expect(value, list, tp)
        (inner,) = typing.get_args(tp)
        return [from_wire(inner, item) for item in value]
    if origin is dict:
        _expect(value, dict, tp)
        return value
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise WireTypeError(f"expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _expect(value, dict, tp)
        hints = _type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        # Unknown keys come from a newer daemon of the same major version: ignore them.
        kwargs = {key: from_wire(hints[key], item) for key, item in value.items() if key in known}
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise WireTypeError(f"{tp.__name__}: {exc}") from exc
    return _scalar_from_wire(tp, value)


def _scalar_from_wire(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as exc:
            raise WireTypeError(str(exc)) from exc
    if tp is float:
        _expect(value, int | float, tp)
        return float(value)
    if tp is int and isinstance(value, bool):
        raise WireTypeError(f"expected int, got {value!r}")
    _expect(value, tp, tp)
    return value


def _expect(value: Any, kind: Any, tp: Any) -> None:
    if not isinstance(value, kind):
        raise WireTypeError(f"expected {tp}, got {type(value).__name__}")


@functools.cache
def _type_hints(tp: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(tp, include_extras=True)
