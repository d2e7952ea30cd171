"""The sockd wire contract: every request, reply, limit and error code, shared by daemon and client.

One request is one JSON object in one SOCK_SEQPACKET datagram::

    {"proto": 2, "op": "ns.create", "name": "test"}

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

Sessions (``OPERATIONS[op].follow_ups`` is not empty; ``ns.exec``) use the listing envelope for events:
each event is one ``{"ok": true, "more": true, "items": [event]}`` message sent when it happens, and the
last message carries the final result. While a session runs, the client may send the follow-up requests
the operation names (``exec.signal``) on the same connection; they get no answer of their own, and any
other request ends the session with an error. Closing the connection ends the session (``ns.exec``
kills the command). A client uses one connection per session.

Replies of operations with ``gives_fds`` carry descriptors as SCM_RIGHTS in the message, referred to by
index in the result (``SockOpenReply.fd``).

The types here are standard-library dataclasses on purpose: the daemon validates requests with pydantic
(strict, extra fields forbidden) and exports the JSON Schema from the same classes, while the client and
CLI never import pydantic, whose import and first model build cost ~85 ms of start-up (measured; the
CLI's whole-command budget is 120 ms). ``Constraint`` carries the bounds pydantic enforces.
"""

import binascii
import dataclasses
import enum
import functools
import itertools
import struct
import types
import typing
from binascii import a2b_base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, Union

VERSION = "0.1.0"
"""The sockd/sockctl release."""

PROTOCOL_VERSION = 2
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


_Contract = TypeVar("_Contract", bound=type)


@typing.dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,)
)
def contract(cls: _Contract) -> _Contract:
    """``@dataclass(frozen=True, kw_only=True, slots=True)`` without generated code.

    dataclasses compiles source text for each class's ``__init__``, ``__repr__``, ``__eq__``,
    ``__hash__``, ``__setattr__`` and ``__delattr__``: for the ~55 contract types that was ~45 ms of
    every sockctl command's start-up (measured with ``-X importtime``; bench/cli.py). Here the class
    is still a standard dataclass (``dataclasses.fields``, ``replace`` and pydantic see its fields)
    but those methods are shared functions reading the field table. Constructing one costs ~1 µs
    more; the types built once per socket of a large listing (:class:`SockInfo`,
    :class:`SockProcess`, :class:`SockTimer`, :class:`SockMemory`) stay plain dataclasses.
    """
    if cls.__doc__ is None:  # else dataclass() makes one with inspect.signature: ~12 ms once
        cls.__doc__ = f"{cls.__name__}({', '.join(cls.__annotations__)})"
    made: Any = dataclass(init=False, repr=False, eq=False, slots=True, kw_only=True)(cls)
    made._contract_table = tuple(
        (field.name, field.default, field.default_factory) for field in dataclasses.fields(made)
    )
    made.__init__ = _contract_init
    made.__repr__ = _contract_repr
    made.__eq__ = _contract_eq
    made.__hash__ = _contract_hash
    made.__setattr__ = made.__delattr__ = _contract_frozen
    made.__getstate__ = _contract_values
    made.__setstate__ = _contract_setstate
    return typing.cast(_Contract, made)


_MISSING: Any = dataclasses.MISSING


def _contract_init(self: Any, **kwargs: Any) -> None:
    put = object.__setattr__
    unused = len(kwargs)
    for name, default, factory in type(self)._contract_table:
        if name in kwargs:
            put(self, name, kwargs[name])
            unused -= 1
        elif default is not _MISSING:
            put(self, name, default)
        elif factory is not _MISSING:
            put(self, name, factory())
        else:
            raise TypeError(f"{type(self).__name__}() missing keyword argument {name!r}")
    if unused:
        known = {name for name, _, _ in type(self)._contract_table}
        unknown = sorted(set(kwargs) - known)[0]
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown!r}")


def _contract_values(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, name) for name, _, _ in type(self)._contract_table])


def _contract_setstate(self: Any, state: tuple[Any, ...]) -> None:
    for (name, _, _), value in zip(type(self)._contract_table, state, strict=True):
        object.__setattr__(self, name, value)


def _contract_repr(self: Any) -> str:
    names = [name for name, _, _ in type(self)._contract_table]
    inner = ", ".join(map("{}={!r}".format, names, _contract_values(self)))
    return f"{type(self).__qualname__}({inner})"


def _contract_eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _contract_values(self) == _contract_values(other)


def _contract_hash(self: Any) -> int:
    return hash(_contract_values(self))


def _contract_frozen(self: Any, name: str, *value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


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
    NOT_SUPPORTED = "not_supported"
    INTERNAL_ERROR = "internal_error"


@contract
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
MAX_DNS = 3
"""resolv.conf's own limit on name servers (MAXNS)."""
IpAddress = Annotated[str, Constraint(min_length=2, max_length=45, pattern=r"^[0-9A-Fa-f.:]+$")]
"""An IPv4 or IPv6 address, without prefix (parsed by the daemon)."""


@contract
class RequestBase:
    """Fields every request carries. Strict types, no extra fields (a plain dict keeps pydantic out)."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    proto: int = PROTOCOL_VERSION


@contract
class PingRequest(RequestBase):
    """Check that the daemon answers."""

    op: Literal["ping"] = "ping"


@contract
class WhoAmIRequest(RequestBase):
    """What the daemon knows about the caller, from the kernel, and what policy allows it."""

    op: Literal["whoami"] = "whoami"


@contract
class StatusRequest(RequestBase):
    """Daemon version, uptime and counters."""

    op: Literal["status"] = "status"


@contract
class NsCreateRequest(RequestBase):
    """Create a named network namespace owned by the caller, as ``ip netns add`` would."""

    op: Literal["ns.create"] = "ns.create"
    name: NsName
    loopback_up: bool = True
    hostname: Hostname | None = None
    """Give the namespace its own UTS namespace with this hostname (kept alongside it)."""
    admin: bool = False
    """Own the network namespace by a new user namespace of the caller's (mapping only the caller's
    uid and gid), so that ``ns exec --admin`` gives the owner CAP_NET_ADMIN/NET_RAW over it only."""


@contract
class NsDeleteRequest(RequestBase):
    """Delete a named namespace; refused while processes live inside unless ``force``."""

    op: Literal["ns.delete"] = "ns.delete"
    name: NsName
    force: bool = False


@contract
class NsListRequest(RequestBase):
    """Every named namespace in the netns directory, made by sockd or by anything else."""

    op: Literal["ns.list"] = "ns.list"


@contract
class NsScanRequest(RequestBase):
    """Every network namespace on the host that a process is in or a name holds, named or not
    (containers', ``unshare -n``'s), like ``lsns -t net``. Root and monitors see all; others the
    named ones and those their own processes are in."""

    op: Literal["ns.scan"] = "ns.scan"


@contract
class NsIdentifyRequest(RequestBase):
    """Names of the namespace a process is in; the caller's own process when ``pid`` is omitted."""

    op: Literal["ns.identify"] = "ns.identify"
    pid: Pid | None = None


@contract
class NsPidsRequest(RequestBase):
    """Processes inside a named namespace."""

    op: Literal["ns.pids"] = "ns.pids"
    name: NsName


# Links, attach, nsid, show (issue 6) ------------------------------------------------------------


@contract
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
    nat: bool = False
    """A way out: a default route inside via the host end, forwarding on, source NAT through the
    host's uplinks (host links only). Needs ``policy.nat_groups``."""
    dns: Annotated[list[IpAddress], Constraint(max_length=MAX_DNS)] = dataclasses.field(
        default_factory=list
    )
    """Name servers for the namespace's resolv.conf (with ``nat``); empty: the host's upstream
    servers (behind a local stub such as systemd-resolved's, its upstream ones)."""


@contract
class NsPublishRequest(RequestBase):
    """Publish host port ``host_port`` into the namespace (DNAT to its NAT link's address, ``port``
    there; the same port when None). Host ports below 1024 need a ``policy.privileged_ports`` grant."""

    op: Literal["ns.publish"] = "ns.publish"
    name: NsName
    transport: Literal["tcp", "udp"] = "tcp"
    host_port: Annotated[int, Constraint(ge=1, le=65535)]
    port: Annotated[int, Constraint(ge=1, le=65535)] | None = None


@contract
class NsUnpublishRequest(RequestBase):
    """Withdraw a published host port of the namespace."""

    op: Literal["ns.unpublish"] = "ns.unpublish"
    name: NsName
    transport: Literal["tcp", "udp"] = "tcp"
    host_port: Annotated[int, Constraint(ge=1, le=65535)]


@contract
class NsUnlinkRequest(RequestBase):
    """Remove a link sockd made; ``ifname`` is its end in ``name`` (may be omitted if it has one)."""

    op: Literal["ns.unlink"] = "ns.unlink"
    name: NsName
    ifname: IfName | None = None


@contract
class NsShowRequest(RequestBase):
    """One namespace in detail: hostname, every interface with state, addresses and peer."""

    op: Literal["ns.show"] = "ns.show"
    name: NsName


@contract
class NsAttachRequest(RequestBase):
    """Name the network namespace of a process (``ip netns attach``); the caller's own if no pid."""

    op: Literal["ns.attach"] = "ns.attach"
    name: NsName
    pid: Pid | None = None


@contract
class NsSetNsidRequest(RequestBase):
    """Assign the namespace's nsid as seen from the host (``ip netns set NAME N|auto``); None: auto."""

    op: Literal["ns.set_nsid"] = "ns.set_nsid"
    name: NsName
    nsid: Nsid | None = None


# Socket inspection (sock.list, sock.summary) -------------------------------------------------------

SockKind = Literal["tcp", "udp", "raw", "unix"]
UnixType = Literal["stream", "dgram", "seqpacket"]
SockFamily = Literal["inet", "inet6"]

SOCK_STATES = (
    "established",
    "syn-sent",
    "syn-recv",
    "fin-wait-1",
    "fin-wait-2",
    "time-wait",
    "closed",
    "close-wait",
    "last-ack",
    "listening",
    "closing",
)
"""Socket states by ss's names. UDP/RAW sockets are ``closed`` when unconnected (ss: UNCONN),
``established`` when connected; UNIX sockets use ``listening``, ``established``, ``syn-sent``
(connecting) and ``closed``."""

_CONNECTED = tuple(s for s in SOCK_STATES if s not in ("listening", "closed"))
SOCK_STATE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": SOCK_STATES,
    "connected": _CONNECTED,
    "synchronized": tuple(s for s in _CONNECTED if s != "syn-sent"),
    "bucket": ("syn-recv", "time-wait"),
    "big": tuple(s for s in SOCK_STATES if s not in ("syn-recv", "time-wait")),
    "listen": ("listening",),
}
"""ss's state groups (``ss state connected``), plus ``listen`` as a short alias of ``listening``."""

SockStateFilter = Literal[
    "established",
    "syn-sent",
    "syn-recv",
    "fin-wait-1",
    "fin-wait-2",
    "time-wait",
    "closed",
    "close-wait",
    "last-ack",
    "listening",
    "closing",
    "all",
    "connected",
    "synchronized",
    "bucket",
    "big",
    "listen",
]
Port = Annotated[int, Constraint(ge=0, le=65535)]
Uid = Annotated[int, Constraint(ge=0, le=4294967294)]
SockAddress = Annotated[str, Constraint(min_length=1, max_length=256)]
"""An IPv4/IPv6 address or network (``10.0.0.0/8``, ``::1``), or for UNIX sockets a name pattern:
``/run/*.sock``, ``@abstract*`` (shell wildcards)."""


# Filter expressions (ss's ``sport = :ssh or dst 10.0.0.0/8``), a tree of tagged nodes.

MAX_SOCK_EXPR_NODES = 128
"""Most nodes (leaves, and, or, not) a sock.list filter expression may have."""

MAX_SOCK_EXPR_DEPTH = 16
"""Deepest nesting of and/or/not a filter expression may have (the expression itself is level 1)."""

SockPortCmp = Literal["eq", "ne", "lt", "le", "gt", "ge"]
SockNetwork = Annotated[str, Constraint(min_length=1, max_length=64)]
"""An IPv4 or IPv6 address or network (``10.0.0.0/8``, ``::1``, ``::1/128``)."""


@contract
class Tagged:
    """A union of dataclasses discriminated by the literal field ``field`` (pydantic's tagged union).

    pydantic then picks the member by the tag instead of trying each one, and names the bad tag or
    the bad field of the chosen member in its error.
    """

    field: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = handler(source)
        choices: dict[str, Any] = {}
        members = typing.get_args(source)
        for member, choice in zip(members, schema["choices"], strict=True):
            for tag in typing.get_args(typing.get_type_hints(member)[self.field]):
                choices[tag] = choice
        return {"type": "tagged-union", "choices": choices, "discriminator": self.field}


@contract
class TreeBounds:
    """Bounds on a nested JSON value (a filter expression), checked before pydantic descends into it.

    ``nodes`` counts objects, ``depth`` their nesting. Checked first so that a hostile tree costs one
    iterative walk, not a recursive validation, and is refused as ``expr_too_large``.
    """

    nodes: int
    depth: int

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        return {
            "type": "function-before",
            "function": {"type": "no-info", "function": self.check},
            "schema": handler(source),
        }

    def check(self, value: Any) -> Any:
        nodes = 0
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                nodes += 1
                depth += 1
                if nodes > self.nodes or depth > self.depth:
                    from pydantic_core import PydanticCustomError  # noqa: PLC0415 -- daemon only

                    raise PydanticCustomError(
                        "expr_too_large",
                        "filter expression too large: at most {nodes} nodes, {depth} levels deep",
                        {"nodes": self.nodes, "depth": self.depth},
                    )
                stack.extend((child, depth) for child in item.values())
            elif isinstance(item, list):
                stack.extend((child, depth) for child in item)
        return value


@contract
class SockPortMatch:
    """``sport``/``dport`` compared with a port: ``{"op": "sport", "cmp": "ge", "port": 1024}``."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    op: Literal["sport", "dport"]
    cmp: SockPortCmp
    port: Port


@contract
class SockHostMatch:
    """``src``/``dst``: the local/remote address is in ``address`` (null: any) and, unless ``port``
    is null, the port equals ``port``, as ss's ``dst 10.0.0.0/8:80``.

    An IPv4 network also matches IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``), as in the kernel's
    inet_diag filter that ss uses; an IPv6 network matches only IPv6 sockets.
    """

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    op: Literal["src", "dst"]
    address: SockNetwork | None
    port: Port | None


@contract
class SockAnd:
    """Every one of ``args`` matches."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    op: Literal["and"] = "and"
    args: Annotated[list["SockExpr"], Constraint(min_length=1, max_length=MAX_SOCK_EXPR_NODES)]


@contract
class SockOr:
    """At least one of ``args`` matches."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    op: Literal["or"] = "or"
    args: Annotated[list["SockExpr"], Constraint(min_length=1, max_length=MAX_SOCK_EXPR_NODES)]


@contract
class SockNot:
    """``arg`` does not match."""

    __pydantic_config__ = {"extra": "forbid", "strict": True}  # noqa: RUF012 -- read by pydantic
    op: Literal["not"] = "not"
    arg: "SockExpr"


SockExpr = Annotated[
    Union[SockAnd, SockOr, SockNot, SockPortMatch, SockHostMatch],  # noqa: UP007 -- see Request
    Tagged(field="op"),
]
"""A sock.list filter expression: a tree of and/or/not over port and address comparisons, tagged by
``op``; ``sockctl sock list`` parses ss's syntax into one (:mod:`sockctl._ssfilter`)."""

BoundedSockExpr = Annotated[
    SockExpr, TreeBounds(nodes=MAX_SOCK_EXPR_NODES, depth=MAX_SOCK_EXPR_DEPTH)
]


@contract
class SockListRequest(RequestBase):
    """Sockets of the host's namespace, of a named one, or of all of them (``all_netns``), like ss.

    Empty lists mean "all": every kind (tcp, udp, raw, unix), both IP families, every state. A row
    is listed when it passes every filter given; port and IP filters match only TCP/UDP/RAW rows,
    name patterns only UNIX rows. ``processes`` adds the holders of each socket (pid, name, fd), as
    far as policy lets the caller see them; ``pid`` keeps only sockets that process holds.
    """

    op: Literal["sock.list"] = "sock.list"
    kinds: list[SockKind] = dataclasses.field(default_factory=list)
    families: list[SockFamily] = dataclasses.field(default_factory=list)
    states: list[SockStateFilter] = dataclasses.field(default_factory=list)
    local_port: Port | None = None
    remote_port: Port | None = None
    local_address: SockAddress | None = None
    remote_address: SockAddress | None = None
    uid: Uid | None = None
    pid: Pid | None = None
    netns: NsName | None = None
    """A named namespace; None: the host's (the daemon's own)."""
    all_netns: bool = False
    """The host's namespace, every named one and every unnamed one the caller may see (all for root
    and monitors, else those its own processes are in); rows carry ``netns``: the name, or
    ``pid:PID`` of a process inside an unnamed one (``sockctl ns list --all`` lists them)."""
    processes: bool = True
    expr: BoundedSockExpr | None = None
    """An ss-like filter expression over ports and addresses, on top of the flat filters; it
    matches only TCP/UDP/RAW rows (UNIX sockets are not listed when it is given)."""
    extended: bool = False
    """Each socket's cookie (ss -e ``sk:``; uid and inode are always there)."""
    timers: bool = False
    """Each TCP socket's timer (ss -o)."""
    info: bool = False
    """Each TCP socket's tcp_info and congestion control (ss -i)."""
    memory: bool = False
    """Each socket's sk_meminfo counters (ss -m)."""
    cgroup: bool = False
    """Each TCP/UDP/RAW socket's cgroup (v2) path (ss --cgroup; ``-e`` shows it too)."""
    unix_types: list[UnixType] = dataclasses.field(default_factory=list)
    """UNIX sockets of these types only (ss ``-A unix_stream``...); empty: every type."""


@contract
class SockSummaryRequest(RequestBase):
    """Socket counts per namespace, kind, family and state, like ``ss -s``."""

    op: Literal["sock.summary"] = "sock.summary"
    kinds: list[SockKind] = dataclasses.field(default_factory=list)
    families: list[SockFamily] = dataclasses.field(default_factory=list)
    netns: NsName | None = None
    all_netns: bool = False
    expr: BoundedSockExpr | None = None
    """Count only the sockets this filter expression matches (as in sock.list: IP sockets only)."""


MAX_SOCK_KILL = 4096
"""Most sockets one ``sock.kill`` closes: a filter that matches more is refused (nothing closed)."""

SockKillKind = Literal["tcp", "udp"]


@contract
class SockKillRequest(RequestBase):
    """Close TCP/UDP sockets that match, like ``ss -K``: SOCK_DESTROY through sock_diag.

    The filters are those of :class:`SockListRequest` (empty kinds: TCP and UDP). At least one of
    ports, addresses, ``uid`` or ``expr`` must be given: a bare ``sock kill`` would close every
    socket. A TCP connection is reset (its peer sees ECONNRESET), a listener stops accepting, a UDP
    socket's next call fails with ECONNABORTED. Everyone may close their own sockets (the socket's
    uid is the caller's); root and policy.kill_groups any. All or nothing: when a match is not the
    caller's to close, or there are more than :data:`MAX_SOCK_KILL`, nothing is closed.
    ``dry_run`` answers which sockets would be closed, and closes none.
    """

    op: Literal["sock.kill"] = "sock.kill"
    kinds: list[SockKillKind] = dataclasses.field(default_factory=list)
    families: list[SockFamily] = dataclasses.field(default_factory=list)
    states: list[SockStateFilter] = dataclasses.field(default_factory=list)
    local_port: Port | None = None
    remote_port: Port | None = None
    local_address: SockAddress | None = None
    remote_address: SockAddress | None = None
    uid: Uid | None = None
    netns: NsName | None = None
    """A named namespace; None: the host's."""
    expr: BoundedSockExpr | None = None
    dry_run: bool = False


MAX_SOCK_EVENTS = 1_000_000
MAX_SOCK_EVENTS_SECONDS = 86_400


@contract
class SockEventsRequest(RequestBase):
    """Follow the TCP/UDP sockets of a namespace as the kernel destroys them, like ``ss -E``.

    Each socket destroyed from then on comes as an item (a :class:`SockInfo` as the kernel last
    had it: often ``closed``, TIME-WAIT and other leftovers come when they expire), until the
    client closes the connection, ``count`` sockets came, or ``seconds`` passed; then the reply
    (:class:`SockEventsResult`). Filters as in sock.list (empty kinds: TCP and UDP). Joining the
    kernel's socket-destroy groups needs CAP_NET_ADMIN, so ``ss -E`` is root's; sockd lets anyone
    watch, as it lets anyone list.
    """

    op: Literal["sock.events"] = "sock.events"
    kinds: list[SockKillKind] = dataclasses.field(default_factory=list)
    families: list[SockFamily] = dataclasses.field(default_factory=list)
    local_port: Port | None = None
    remote_port: Port | None = None
    local_address: SockAddress | None = None
    remote_address: SockAddress | None = None
    uid: Uid | None = None
    netns: NsName | None = None
    """A named namespace; None: the host's."""
    expr: BoundedSockExpr | None = None
    count: Annotated[int, Constraint(ge=1, le=MAX_SOCK_EVENTS)] | None = None
    """End after this many sockets."""
    seconds: Annotated[int, Constraint(ge=1, le=MAX_SOCK_EVENTS_SECONDS)] | None = None
    """End after this long."""


@contract
class SockEventsResult:
    """The end of a ``sock.events`` stream: how many sockets were sent, how many times the kernel
    dropped some because they came faster than they were read (``overflows``: its socket buffer
    was full, and ``ss -E`` would have missed them too), and why it ended (``closed``: the client
    went away; it then gets no reply, but the audit record says so)."""

    events: int
    overflows: int
    ended: Literal["count", "seconds", "closed"]


# Acting inside a namespace as the caller: ns.exec, exec.signal, sock.open ---------------------------

FdIndex = Annotated[int, Constraint(ge=0, le=MAX_FDS - 1)]
"""Index of a descriptor in the SCM_RIGHTS array of the same message."""

MAX_ARGV = 1024
MAX_ENV = 1024
NO_NUL = r"^[^\x00]*$"
Arg = Annotated[str, Constraint(pattern=NO_NUL)]
EnvName = Annotated[str, Constraint(min_length=1, max_length=4096, pattern=r"^[^=\x00]+$")]
AbsolutePath = Annotated[str, Constraint(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$")]
Signal = Annotated[int, Constraint(ge=1, le=64)]
Backlog = Annotated[int, Constraint(ge=0, le=65535)]


@contract
class NsExecRequest(RequestBase):
    """Run ``argv`` inside the named namespace as the caller (uid, gid and groups from the kernel).

    The command gets the environment of ``ip netns exec NAME`` (its own mount namespace, a fresh /sys,
    ``/etc/netns/NAME/*`` over ``/etc``), then the caller's identity with no capabilities, then ``cwd``
    (entered as the caller: one it cannot enter is refused), ``umask`` and exactly ``env``. ``argv[0]``
    is looked up in ``env["PATH"]``; nothing is run through a shell. ``stdin``/``stdout``/``stderr`` are
    indexes of descriptors sent with the request; ``null`` means /dev/null.

    ``tty``: ``stdin`` is a terminal of the caller's (the slave of a pty the client opened, owned by
    the caller) that becomes the command's controlling terminal, the command leading a session of its
    own on it, so that job control works inside (a shell's Ctrl-Z, ``fg``, ``bg``) and the terminal's
    hang-up and window-size changes reach it.

    A session: the daemon answers with an :class:`ExecStarted` event once the command runs, then with
    :class:`ExecExit` when it has ended. Meanwhile the client may send :class:`ExecSignalRequest`; if the
    connection closes, the command's process group is killed.
    """

    op: Literal["ns.exec"] = "ns.exec"
    name: NsName
    argv: Annotated[list[Arg], Constraint(min_length=1, max_length=MAX_ARGV)]
    env: Annotated[dict[EnvName, Arg], Constraint(max_length=MAX_ENV)] = dataclasses.field(
        default_factory=dict
    )
    cwd: AbsolutePath = "/"
    umask: Annotated[int, Constraint(ge=0, le=0o777)] = 0o022
    stdin: FdIndex | None = None
    stdout: FdIndex | None = None
    stderr: FdIndex | None = None
    tty: bool = False
    admin: bool = False
    """As the namespace's admin (its owner, in a namespace made ``admin``): keep CAP_NET_ADMIN and
    CAP_NET_RAW, which count in the namespace's own user namespace only."""


@contract
class ExecSignalRequest(RequestBase):
    """Follow-up of ``ns.exec`` on its connection: deliver ``signal`` to the command's process group.

    Not answered. Outside a running ``ns.exec`` it is refused with ``invalid_request``.
    """

    op: Literal["exec.signal"] = "exec.signal"
    signal: Signal


SocketFamily = Literal["inet", "inet6", "unix"]
SocketType = Literal["stream", "dgram", "seqpacket"]


@contract
class SockOpenRequest(RequestBase):
    """Create a socket inside namespace ``ns`` (the host's when null), bind it and hand it over.

    ``address``: an IP address for inet/inet6 (with ``port``), an absolute path or ``@name`` (abstract)
    for unix; null leaves the socket unbound (to connect from inside the namespace). The socket is made
    with the caller's filesystem identity: a unix path is created with the caller's permissions and
    owned by the caller, and ``ss -e`` shows the caller's uid. ``backlog`` makes an inet stream socket
    listen. A unix socket is never put in listening state by the daemon: a listener's SO_PEERCRED names
    whoever called listen(), which must be the caller, not root; the client listens itself.

    Policy: any port in a namespace the caller may enter (its owner, root, ``policy.exec_groups``); in
    the host, ports 1-1023 only as granted by ``policy.privileged_ports``.
    """

    op: Literal["sock.open"] = "sock.open"
    ns: NsName | None = None
    family: SocketFamily
    type: SocketType = "stream"
    address: Annotated[str, Constraint(min_length=1, max_length=4096, pattern=NO_NUL)] | None = None
    port: Port = 0
    backlog: Backlog | None = None
    reuseaddr: bool = False
    reuseport: bool = False
    v6only: bool | None = None


Request = Union[  # noqa: UP007 -- pydantic reads the discriminator from a typing.Union
    PingRequest,
    WhoAmIRequest,
    StatusRequest,
    NsCreateRequest,
    NsDeleteRequest,
    NsListRequest,
    NsScanRequest,
    NsIdentifyRequest,
    NsPidsRequest,
    # issue 6
    NsLinkRequest,
    NsUnlinkRequest,
    NsShowRequest,
    NsAttachRequest,
    NsSetNsidRequest,
    # issue 14
    NsPublishRequest,
    NsUnpublishRequest,
    SockListRequest,
    SockSummaryRequest,
    SockKillRequest,
    SockEventsRequest,
    # issue 5
    NsExecRequest,
    ExecSignalRequest,
    SockOpenRequest,
]


@contract
class PingReply:
    version: str
    protocol: int


@contract
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


@contract
class StatusReply:
    version: str
    protocol: int
    pid: int
    uptime: float
    connections: int
    requests: int
    namespaces_managed: int
    config: str | None


@contract
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


@contract
class NetnsEntry:
    """One network namespace of the host, as ``ns.scan`` found it."""

    id: int
    """Its inode (``readlink /proc/PID/ns/net``)."""
    nsid: int | None
    """Its nsid as the host sees it, if it has one."""
    processes: int
    """Processes inside (all of them, whoever asks)."""
    pid: int | None
    """The lowest pid inside the caller may see (its own, unless root or a monitor)."""
    uid: int | None
    """That process's uid."""
    command: str | None
    """That process's command line (bounded)."""
    name: str | None
    """Its name in the netns directory, if it has one."""
    host: bool = False
    """The host's own namespace (sockd's)."""
    owner_uid: int = 0
    """Who created the user namespace that owns it (0: the host's)."""


@contract
class NsDeleteReply:
    name: str
    pids: list[int]
    """Processes that were still inside (visible to the caller); they keep the namespace alive."""
    hidden_pids: int
    still_alive: bool
    pinned_mounts: int = 0
    """Bind mounts of it (often in other mount namespaces) that keep it alive without its name."""


@contract
class NsIdentifyReply:
    pid: int
    names: list[str]


@contract
class NsPidsResult:
    """The end of an ``ns.pids`` listing: how many pids policy hid from the caller."""

    name: str
    hidden: int


MAX_SOCK_PROCESSES = 128
"""Most holders listed per socket (and per peer) in a ``sock.list`` row."""

SockType = Literal["stream", "dgram", "seqpacket", "raw"]
SockFamilyName = Literal["inet", "inet6", "unix"]


# Not frozen, unlike the other contract types: a listing builds 100 000 of these, and a frozen
# dataclass's __init__ (object.__setattr__ per field) costs ~1.5x; holding lists, they were never
# hashable anyway.
@dataclass(kw_only=True, slots=True)
class SockProcess:
    """A process holding a socket: what ``ss -p`` shows as ``("name",pid=N,fd=M)``."""

    pid: int
    name: str
    """The command name (``/proc/PID/comm``)."""
    fd: int


@dataclass(slots=True)
class SockInfo:
    """One socket, as :meth:`sockctl.Client.sock_list` returns it; fields are what ``ss -tanpe`` /
    ``ss -xpe`` show. (On the wire, sockets travel in :class:`SockBatch` columns.)

    For TCP/UDP/RAW, ``local``/``remote`` are IP addresses in text form (``0.0.0.0``, ``::`` for
    "any") and ports are numbers (0: any); a RAW socket's ``local_port`` is its IP protocol, as ss
    shows it. For UNIX sockets ``local`` is the bound name: a path, ``@name`` for an abstract name
    (its leading NUL shown as ``@``; other bytes as they are), None when unnamed; names that are not
    UTF-8 are decoded like file names (``os.fsdecode``; ``os.fsencode`` gives the bytes back).
    ``remote``/ports are None and ``peer_inode`` names the other end (None: not connected).

    ``processes`` is None unless processes were asked for; then it lists the holders policy lets
    the caller see (possibly none), at most :data:`MAX_SOCK_PROCESSES` (one socket inherited by
    thousands of workers must still fit a datagram): ``processes_omitted`` counts the rest.
    ``peer_processes`` does the same for a UNIX socket's peer.

    Positional construction is allowed (unlike the other contract types) because the client
    builds these from columns with ``map``; the field order is part of the contract.
    """

    kind: SockKind
    family: SockFamilyName
    type: SockType
    state: str
    """One of :data:`SOCK_STATES`."""
    recv_q: int
    send_q: int
    local: str | None
    local_port: int | None
    remote: str | None
    remote_port: int | None
    inode: int
    """0 for TIME-WAIT and half-open (SYN-RECV) connections, which have no socket file."""
    uid: int | None
    """The socket's owner; None where the kernel does not tell (the /proc/net fallback for UNIX)."""
    peer_inode: int | None = None
    netns: str | None = None
    """The named namespace the socket lives in; None: the host's."""
    processes: list[SockProcess] | None = None
    processes_omitted: int = 0
    peer_processes: list[SockProcess] | None = None
    cookie: int | None = None
    """The kernel's socket cookie (ss -e ``sk:``, in hex there); asked for with ``extended``."""
    v6only: bool | None = None
    """IPV6_V6ONLY of an IPv6 socket (ss -e ``v6only:``), with ``extended``; None for others."""
    timer: "SockTimer | None" = None
    tcp_info: "TcpInfo | None" = None
    memory: "SockMemory | None" = None
    shutdown: int | None = None
    """With ``extended``: the directions shut down, as bits (1: receive, the peer's FIN or
    SHUT_RD; 2: send, SHUT_WR); ss -e draws it ``<->``, ``-->``, ``<--``, ``---``."""
    cgroup: str | None = None
    """With ``cgroup``: the socket's cgroup v2 path (``/system.slice/ssh.service``), or
    ``unreachable:ID`` (hex) where no cgroup has that id (any more)."""


SockTimerName = Literal["on", "keepalive", "timewait", "persist", "unknown"]
_TIMER_NAMES: tuple[SockTimerName, ...] = (
    "on",
    "on",
    "keepalive",
    "timewait",
    "persist",
    "unknown",
)
"""ss's names by the kernel's idiag_timer (1 retransmit, 2 keepalive, 3 TIME-WAIT, 4 zero-window
probe; 0 is no timer, shown as None)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SockTimer:
    """A TCP socket's pending timer, as ``ss -o`` shows ``timer:(keepalive,119min,0)``."""

    name: SockTimerName
    expires_ms: int
    """Milliseconds until it fires (as the kernel reported it at the dump)."""
    retrans: int
    """Retransmits (or keepalive probes) so far."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SockMemory:
    """A socket's memory counters (sk_meminfo), as ``ss -m`` shows ``skmem:(r0,rb131072,...)``:
    bytes allocated and limits of the receive and send queues, forward-allocated, queued, option
    memory, backlog, and packets dropped. None: the kernel did not send that counter."""

    rmem_alloc: int | None = None
    rcvbuf: int | None = None
    wmem_alloc: int | None = None
    sndbuf: int | None = None
    fwd_alloc: int | None = None
    wmem_queued: int | None = None
    optmem: int | None = None
    backlog: int | None = None
    drops: int | None = None


SOCK_MEMORY_FIELDS = (
    "rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued", "optmem", "backlog",
    "drops",
)  # fmt: skip


class TcpInfo(NamedTuple):
    """A TCP socket's ``struct tcp_info`` (``ss -i``), the kernel's field names without ``tcpi_``.

    Times are in microseconds (``rtt``, ``rttvar``, ``rto``, ``ato``, ``min_rtt``, ``rcv_rtt``,
    ``busy_time``, ...) but for the ``last_*`` fields and ``total_rto_time`` (milliseconds); rates in
    bytes per second. A field is None when the kernel's tcp_info is too old to have it.
    ``congestion`` is the congestion control's name (``cubic``, ``bbr``). A named tuple, not a
    dataclass: a listing makes one per TCP socket, and a tuple is ten times cheaper to build. On
    the wire (inside SockInfo) it is an object of its fields, as a dataclass would be.
    """

    state: int | None = None
    ca_state: int | None = None
    retransmits: int | None = None
    probes: int | None = None
    backoff: int | None = None
    options: int | None = None
    snd_wscale: int | None = None
    rcv_wscale: int | None = None
    delivery_rate_app_limited: int | None = None
    fastopen_client_fail: int | None = None
    rto: int | None = None
    ato: int | None = None
    snd_mss: int | None = None
    rcv_mss: int | None = None
    unacked: int | None = None
    sacked: int | None = None
    lost: int | None = None
    retrans: int | None = None
    fackets: int | None = None
    last_data_sent: int | None = None
    last_ack_sent: int | None = None
    last_data_recv: int | None = None
    last_ack_recv: int | None = None
    pmtu: int | None = None
    rcv_ssthresh: int | None = None
    rtt: int | None = None
    rttvar: int | None = None
    snd_ssthresh: int | None = None
    snd_cwnd: int | None = None
    advmss: int | None = None
    reordering: int | None = None
    rcv_rtt: int | None = None
    rcv_space: int | None = None
    total_retrans: int | None = None
    pacing_rate: int | None = None
    max_pacing_rate: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate: int | None = None
    busy_time: int | None = None
    rwnd_limited: int | None = None
    sndbuf_limited: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None
    rcv_wnd: int | None = None
    rehash: int | None = None
    total_rto: int | None = None
    total_rto_recoveries: int | None = None
    total_rto_time: int | None = None
    received_ce: int | None = None
    congestion: str | None = None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Callable[[Any], Any]) -> Any:
        """An object of the fields (pydantic would make a named tuple an array)."""
        from pydantic_core import core_schema  # noqa: PLC0415 -- only the schema needs it

        hints = typing.get_type_hints(cls)
        fields = {
            name: core_schema.typed_dict_field(handler(hints[name]), required=False)
            for name in cls._fields
        }
        return core_schema.no_info_after_validator_function(
            lambda value: cls(**value), core_schema.typed_dict_schema(fields)
        )


# struct tcp_info (include/uapi/linux/tcp.h) up to tcpi_received_ce (Linux 6.10); a kernel sends
# the prefix it knows, so older kernels' structs are shorter and newer ones' longer. The wire
# carries the struct as the kernel sent it (base64): decoding is one struct.unpack here instead of
# a JSON object of sixty numbers per socket, which cost the daemon and the client 5x more.
_TCP_INFO_KERNEL = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"), ("backoff", "B"),
    ("options", "B"), ("wscale", "B"), ("flags", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"),
    ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"), ("snd_ssthresh", "I"),
    ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"), ("bytes_received", "Q"),
    ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"), ("data_segs_out", "I"),
    ("delivery_rate", "Q"),
    ("busy_time", "Q"), ("rwnd_limited", "Q"), ("sndbuf_limited", "Q"),
    ("delivered", "I"), ("delivered_ce", "I"),
    ("bytes_sent", "Q"), ("bytes_retrans", "Q"), ("dsack_dups", "I"), ("reord_seen", "I"),
    ("rcv_ooopack", "I"), ("snd_wnd", "I"), ("rcv_wnd", "I"), ("rehash", "I"),
    ("total_rto", "H"), ("total_rto_recoveries", "H"), ("total_rto_time", "I"),
    ("received_ce", "I"),
)  # fmt: skip
_TCP_INFO_STRUCT = struct.Struct("=" + "".join(code for _, code in _TCP_INFO_KERNEL))
MAX_TCP_INFO = 1024
"""The longest struct tcp_info the client takes (Linux 6.10's is 256 bytes)."""


@functools.cache
def _tcp_info_decoder(size: int) -> Callable[[bytes, str | None], TcpInfo]:
    """How to turn a struct tcp_info of ``size`` bytes into a TcpInfo: the fields it holds
    whole, the rest None; wscale split in two nibbles, flags in its bits."""
    present = 0
    end = 0
    for _, code in _TCP_INFO_KERNEL:
        end += struct.calcsize("=" + code)
        if end > size:
            break
        present += 1
    missing = (None,) * (len(_TCP_INFO_KERNEL) - present)
    full, unpack, unpack_from = (
        _TCP_INFO_STRUCT.size,
        _TCP_INFO_STRUCT.unpack,
        _TCP_INFO_STRUCT.unpack_from,
    )
    pad = bytes(max(0, full - size))
    new = tuple.__new__  # TcpInfo._make without its length check: the length is right by design

    def decode(raw: bytes, congestion: str | None) -> TcpInfo:
        values = unpack(raw[:full] + pad)[:present] + missing
        wscale, flags = values[6], values[7]
        return new(
            TcpInfo,
            (
                *values[:6],
                None if wscale is None else wscale & 0xF,
                None if wscale is None else wscale >> 4,
                None if flags is None else flags & 1,
                None if flags is None else (flags >> 1) & 3,
                *values[8:],
                congestion,
            ),
        )

    def decode_whole(raw: bytes, congestion: str | None) -> TcpInfo:  # the struct is all there
        values = unpack_from(raw)
        wscale, flags = values[6], values[7]
        return new(
            TcpInfo,
            (
                *values[:6],
                wscale & 0xF,
                wscale >> 4,
                flags & 1,
                flags >> 1 & 3,
                *values[8:],
                congestion,
            ),
        )

    return decode_whole if size >= full else decode


def tcp_info(raw: bytes, congestion: str | None = None) -> TcpInfo:
    """A :class:`TcpInfo` from the kernel's struct tcp_info (a prefix of it on older kernels)."""
    return _tcp_info_decoder(len(raw))(raw, congestion)


@contract
class SockBatch:
    """Sockets of one namespace, kind and family, as columns: an item of the ``sock.list`` listing.

    Position i of every list describes socket i; the lists are named and typed like the fields of
    :class:`SockInfo`. Columns rather than one object per socket because a listing can hold
    100 000 sockets: columns are 40 % smaller and decode several times faster (measured in
    bench/socklist.py). Optional columns are absent when every value would be the default
    (``peer_inode`` for IP sockets, ``holders`` when processes were not asked for).

    Holders travel as ``[pid, fd]`` pairs with a table of the batch's process names, not as a
    :class:`SockProcess` object per socket: that took the processes column from 40 to 11 bytes per
    socket and its decoding from ~1.4 to ~0.4 µs (protocol version 2).
    """

    netns: str | None = None
    kind: SockKind
    family: SockFamilyName
    type: list[SockType]
    state: list[str]
    recv_q: list[int]
    send_q: list[int]
    local: list[str | None]
    local_port: list[int | None]
    remote: list[str | None]
    remote_port: list[int | None]
    inode: list[int]
    uid: list[int | None]
    peer_inode: list[int | None] | None = None
    holders: list[list[int] | None] | None = None
    """Each socket's holders as flat ``[pid, fd, pid, fd, ...]`` (``[]``: none the caller may see;
    None: a UNIX socket's peer column where there is no peer); absent when processes were not asked
    for. Their names are in ``holder_pid``/``holder_name``. :func:`sock_batch_processes` turns the
    column into :class:`SockProcess` lists."""
    holders_omitted: list[int] | None = None
    """Holders beyond :data:`MAX_SOCK_PROCESSES` left out, per socket; absent when none were."""
    peer_holders: list[list[int] | None] | None = None
    """The holders of each UNIX socket's peer, like ``holders``."""
    holder_pid: list[int] | None = None
    holder_name: list[str] | None = None
    """The command name of each pid in ``holder_pid``: every pid the batch's holders name."""
    cookie: list[int | None] | None = None
    """Per socket, with ``extended``: its cookie."""
    v6only: list[bool | None] | None = None
    """Per socket, with ``extended``: IPV6_V6ONLY of IPv6 sockets, None for others."""
    timer: list[list[int] | None] | None = None
    """Per socket, with ``timers``: ``[kind, expires_ms, retrans]`` (kind as the kernel's
    idiag_timer, 1-4), None without a timer."""
    tcp_info: list[str | None] | None = None
    """Per socket, with ``info``: its struct tcp_info as the kernel sent it, base64 (decode with
    :func:`sock_batch_tcp_info`), None for sockets without one (UDP, TIME-WAIT)."""
    congestion: list[str | None] | None = None
    """Per socket, with ``info``: its congestion control's name."""
    skmem: list[list[int] | None] | None = None
    """Per socket, with ``memory``: the sk_meminfo counters in :class:`SockMemory`'s order."""
    shutdown: list[int | None] | None = None
    """Per socket, with ``extended``: its shutdown bits (see :attr:`SockInfo.shutdown`)."""
    cgroup: list[str | None] | None = None
    """Per socket, with ``cgroup``: its cgroup path (None for UNIX sockets)."""


@contract
class SockListResult:
    """The end of a ``sock.list`` listing."""

    count: int
    namespaces: list[str | None]
    """The namespaces listed (None: the host's)."""
    process_scope: Literal["all", "own", "none"]
    """Whose processes are shown: everyone's, only the caller's (policy), or none (not asked)."""
    proc_fallback: list[str]
    """Tables read from /proc/net because the kernel has no sock_diag handler for them (e.g.
    ``raw``, ``raw6`` without CONFIG_INET_RAW_DIAG); their rows lack some fields, as with ss."""


@contract
class SockCount:
    """How many sockets of one kind, family and state a namespace has (an item of sock.summary)."""

    netns: str | None
    kind: SockKind
    family: Literal["inet", "inet6", "unix"]
    state: str
    count: int


@contract
class SockSummaryResult:
    """The end of a ``sock.summary`` listing."""

    namespaces: list[str | None]
    total: int
    proc_fallback: list[str]


@contract
class SockKillReply:
    """What ``sock.kill`` closed (with ``dry_run``: would close), as ``sock.list`` rows without
    processes; ``gone`` counts matches that closed by themselves before their turn."""

    killed: list[SockInfo]
    gone: int = 0
    dry_run: bool = False


@contract
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


@contract
class LinkInfo:
    """A link sockd made: ``end`` is in the namespace it was made for, ``peer`` in the host or another."""

    id: str
    owner_uid: int
    end: LinkEnd
    peer: LinkEnd
    pool_block: str | None
    """The pool block its addresses came from; None when they were given (or there are none)."""
    created: float
    nat: bool = False
    """Whether the namespace reaches the host's uplinks through this link (``ns link --nat``)."""
    published: list["PublishedPort"] = dataclasses.field(default_factory=list)


@contract
class PublishedPort:
    """A host port DNATed into a namespace (``ns publish``)."""

    name: str
    transport: str
    host_port: int
    address: str
    """The namespace's address it goes to."""
    port: int
    owner_uid: int


@contract
class NsUnlinkReply:
    id: str
    name: str
    ifname: str
    peer_namespace: str | None
    peer_ifname: str
    released: str | None
    """The pool block given back, if the link had one."""


@contract
class InterfaceInfo:
    """One interface inside a namespace, and its peer when sockd made it."""

    ifname: str
    index: int
    kind: str | None
    up: bool
    state: str
    addresses: list[str]
    link: LinkInfo | None = None


@contract
class NsDetail:
    info: NsInfo
    interfaces: list[InterfaceInfo]
    uts_path: str | None = None
    """Where its UTS namespace is mounted (``nsenter --uts=PATH``), if it has one."""


@contract
class ExecStarted:
    """``ns.exec`` event: the command runs, as process ``pid`` (in the daemon's pid namespace)."""

    pid: int


@contract
class ExecExit:
    """The end of an ``ns.exec``: exactly one of ``exit_code`` and ``signal`` is set."""

    pid: int
    exit_code: int | None
    signal: int | None

    @property
    def returncode(self) -> int:
        """As :attr:`subprocess.Popen.returncode`: the exit code, or ``-N`` for a death by signal N."""
        return -self.signal if self.signal is not None else self.exit_code or 0

    @property
    def status(self) -> int:
        """As a shell reports it: the exit code, or ``128 + N`` for a death by signal N."""
        return 128 + self.signal if self.signal is not None else self.exit_code or 0


@contract
class SockOpenReply:
    """The socket ``sock.open`` made: descriptor ``fd`` of the reply's SCM_RIGHTS array."""

    fd: int
    ns: str | None
    family: SocketFamily
    type: SocketType
    address: str | None
    """The bound address as the kernel reports it (``@name`` for an abstract unix name)."""
    port: int | None
    listening: bool


@contract
class ErrorInfo:
    code: ErrorCode
    message: str
    field: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Operation(NamedTuple):
    """What one operation takes and gives back.

    ``reply`` is the whole answer of a plain operation. For a listing, ``item`` is the type of each
    streamed item and ``reply`` (if any) the summary sent with the last part. A session (non-empty
    ``follow_ups``) streams events of type ``item`` and ends with ``reply``; the client may send the
    requests named in ``follow_ups`` while it runs. ``gives_fds``: the reply carries descriptors.
    """

    request: type[Any]
    reply: type[Any] | None
    item: type[Any] | None = None
    takes_fds: bool = False
    mutating: bool = False
    gives_fds: bool = False
    follow_ups: tuple[str, ...] = ()


OPERATIONS: dict[str, Operation] = {
    "ping": Operation(PingRequest, PingReply),
    "whoami": Operation(WhoAmIRequest, WhoAmIReply),
    "status": Operation(StatusRequest, StatusReply),
    "ns.create": Operation(NsCreateRequest, NsInfo, mutating=True),
    "ns.delete": Operation(NsDeleteRequest, NsDeleteReply, mutating=True),
    "ns.list": Operation(NsListRequest, None, item=NsInfo),
    "ns.scan": Operation(NsScanRequest, None, item=NetnsEntry),
    "ns.identify": Operation(NsIdentifyRequest, NsIdentifyReply),
    "ns.pids": Operation(NsPidsRequest, NsPidsResult, item=int),
    # issue 6
    "ns.link": Operation(NsLinkRequest, LinkInfo, mutating=True),
    "ns.unlink": Operation(NsUnlinkRequest, NsUnlinkReply, mutating=True),
    "ns.show": Operation(NsShowRequest, NsDetail),
    "ns.attach": Operation(NsAttachRequest, NsInfo, mutating=True),
    "ns.set_nsid": Operation(NsSetNsidRequest, NsInfo, mutating=True),
    # issue 14: a way out
    "ns.publish": Operation(NsPublishRequest, PublishedPort, mutating=True),
    "ns.unpublish": Operation(NsUnpublishRequest, PublishedPort, mutating=True),
    # Socket inspection
    "sock.list": Operation(SockListRequest, SockListResult, item=SockBatch),
    "sock.summary": Operation(SockSummaryRequest, SockSummaryResult, item=SockCount),
    # issue 15: audited like a mutation (root closes sockets on the caller's behalf).
    "sock.kill": Operation(SockKillRequest, SockKillReply, mutating=True),
    "sock.events": Operation(SockEventsRequest, SockEventsResult, item=SockInfo),
    # issue 5: acting inside a namespace as the caller. Both are audited like mutations: root acts
    # on the caller's behalf.
    "ns.exec": Operation(
        NsExecRequest,
        ExecExit,
        item=ExecStarted,
        takes_fds=True,
        mutating=True,
        follow_ups=("exec.signal",),
    ),
    "exec.signal": Operation(ExecSignalRequest, None),
    "sock.open": Operation(SockOpenRequest, SockOpenReply, mutating=True, gives_fds=True),
}
"""Every operation by its ``op`` name."""


_SCALARS = (str, int, float, bool, type(None))


def to_wire(value: Any) -> Any:
    """Turn a reply or request dataclass (recursively) into JSON-ready Python objects."""
    if isinstance(value, _SCALARS):  # the common case first: this runs once per field
        return value
    cls: Any = type(value)  # types are hashable; typeshed's type[Any] does not say so
    names = _field_names(cls)
    if names is not None:
        return {name: to_wire(getattr(value, name)) for name in names}
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_wire(item) for key, item in value.items()}
    return value


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...] | None:
    """The field names of a dataclass or named tuple type (None for other types), looked up once
    per type: both go on the wire as objects."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return typing.cast(tuple[str, ...], cls._fields)
    return None


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
    known = _field_names(tp) if isinstance(tp, type) else None
    if known is not None:  # a dataclass or a named tuple: an object on the wire
        _expect(value, dict, tp)
        hints = _type_hints(tp)
        # Unknown keys come from a newer daemon of the same major version: ignore them.
        kwargs = {key: from_wire(hints[key], item) for key, item in value.items() if key in known}
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise WireTypeError(f"{tp.__name__}: {exc}") from exc
    return _scalar_from_wire(tp, value)


# The sock.list fast path ---------------------------------------------------------------------------

_NONE = type(None)
_SOCK_COLUMNS: tuple[tuple[str, frozenset[type], frozenset[str] | None], ...] = (
    ("type", frozenset({str}), frozenset(typing.get_args(SockType))),
    ("state", frozenset({str}), None),
    ("recv_q", frozenset({int}), None),
    ("send_q", frozenset({int}), None),
    ("local", frozenset({str, _NONE}), None),
    ("local_port", frozenset({int, _NONE}), None),
    ("remote", frozenset({str, _NONE}), None),
    ("remote_port", frozenset({int, _NONE}), None),
    ("inode", frozenset({int}), None),
    ("uid", frozenset({int, _NONE}), None),
)
"""SockBatch's required columns, in SockInfo's field order, with their value types."""
_SOCK_OPTIONAL: tuple[tuple[str, frozenset[type], Any], ...] = (
    ("peer_inode", frozenset({int, _NONE}), None),
    ("holders", frozenset({list, _NONE}), None),
    ("holders_omitted", frozenset({int}), 0),
    ("peer_holders", frozenset({list, _NONE}), None),
)
"""SockBatch's optional per-socket columns, with their value types and SockInfo's default."""
_INT_ONLY = frozenset({int})
_SOCK_KINDS = frozenset(typing.get_args(SockKind))
_SOCK_FAMILIES = frozenset(typing.get_args(SockFamilyName))


def sock_batch_from_wire(value: Any) -> SockBatch:
    """``from_wire(SockBatch, value)`` at C speed: a listing can carry 100 000 sockets.

    Checks the whole contract like :func:`from_wire` (each column's value types and literals, equal
    lengths; unknown keys from a newer daemon are ignored) but column by column with set operations
    instead of value by value. Raises :class:`WireTypeError`.
    """
    if type(value) is not dict:
        raise WireTypeError(f"expected SockBatch, got {type(value).__name__}")
    kind, family, netns = value.get("kind"), value.get("family"), value.get("netns")
    if kind not in _SOCK_KINDS or family not in _SOCK_FAMILIES or type(netns) not in (str, _NONE):
        raise WireTypeError(f"SockBatch: bad kind, family or netns: {kind!r} {family!r} {netns!r}")
    columns: dict[str, Any] = {}
    size: int | None = None
    for name, allowed, literals in _SOCK_COLUMNS:
        column = value.get(name)
        size = _check_column(name, column, allowed, size)
        if literals is not None and not literals.issuperset(typing.cast(list[Any], column)):
            raise WireTypeError(f"SockBatch.{name}: values outside {sorted(literals)}")
        columns[name] = column
    for name, allowed, _default in _SOCK_OPTIONAL:
        column = value.get(name)
        if column is not None:
            _check_column(name, column, allowed, size)
        columns[name] = column
    pids, names = value.get("holder_pid"), value.get("holder_name")
    if pids is not None or names is not None:
        pid_count = _check_column("holder_pid", pids, _INT_ONLY, None)
        _check_column("holder_name", names, frozenset({str}), pid_count)
    known = frozenset(pids or ())
    for name in ("holders", "peer_holders"):
        if columns[name] is not None:
            _check_holders(name, columns[name], known)
    for name, check in _SOCK_DETAILS:
        column = value.get(name)
        if column is not None:
            _check_column(
                name,
                column,
                _DETAIL_TYPES[name],
                size,
            )
            check(name, column)
        columns[name] = column
    return SockBatch(
        netns=netns,
        kind=typing.cast(SockKind, kind),
        family=typing.cast(SockFamilyName, family),
        holder_pid=pids,
        holder_name=names,
        **columns,
    )


def _check_int_lists(name: str, column: list[Any], length: int | None = None) -> None:
    cells = [cell for cell in column if cell is not None]
    if not all(type(cell) is list for cell in cells):
        raise WireTypeError(f"SockBatch.{name}: expected lists")
    if not _INT_ONLY.issuperset(map(type, itertools.chain.from_iterable(cells))):
        raise WireTypeError(f"SockBatch.{name}: expected lists of ints")
    if length is not None and set(map(len, cells)) - {length}:
        raise WireTypeError(f"SockBatch.{name}: expected lists of {length} ints")


def _check_timers(name: str, column: list[Any]) -> None:
    _check_int_lists(name, column, 3)
    if not {cell[0] for cell in column if cell is not None} <= {1, 2, 3, 4, 5}:
        raise WireTypeError(f"SockBatch.{name}: a timer's kind is 1-5")


def _check_tcp_info(name: str, column: list[Any]) -> None:
    """Lengths only: the base64 itself is checked as it is decoded (:func:`sock_batch_tcp_info`),
    which decoding it here too would make a third of an ``-i`` listing's client time."""
    lengths = [len(cell) for cell in column if cell is not None]
    if max(lengths, default=0) > (MAX_TCP_INFO + 2) // 3 * 4:
        raise WireTypeError(f"SockBatch.{name}: a tcp_info longer than {MAX_TCP_INFO} bytes")
    if any(length & 3 for length in lengths):
        raise WireTypeError(f"SockBatch.{name}: base64 comes in groups of four characters")


def _check_skmem(name: str, column: list[Any]) -> None:
    _check_int_lists(name, column)


def _no_check(name: str, column: list[Any]) -> None:
    return None


def _check_shutdown(name: str, column: list[Any]) -> None:
    wrong = [bits for bits in column if bits is not None and not 0 <= bits <= 3]
    if wrong:
        raise WireTypeError(f"SockBatch.{name}: shutdown bits {wrong[0]} are not 0-3")


_SOCK_DETAILS: tuple[tuple[str, Callable[[str, list[Any]], None]], ...] = (
    ("cookie", _no_check),
    ("v6only", _no_check),
    ("timer", _check_timers),
    ("tcp_info", _check_tcp_info),
    ("congestion", _no_check),
    ("skmem", _check_skmem),
    ("shutdown", _check_shutdown),
    ("cgroup", _no_check),
)
"""SockBatch's detail columns (sock list -e -o -i -m) and the check of their cells' contents."""
_DETAIL_TYPES: dict[str, frozenset[type]] = {
    "cookie": frozenset({int, _NONE}),
    "v6only": frozenset({bool, _NONE}),
    "timer": frozenset({list, _NONE}),
    "tcp_info": frozenset({str, _NONE}),
    "congestion": frozenset({str, _NONE}),
    "skmem": frozenset({list, _NONE}),
    "shutdown": frozenset({int, _NONE}),
    "cgroup": frozenset({str, _NONE}),
}


def _timer(cell: list[int] | None) -> SockTimer | None:
    if cell is None:
        return None
    return SockTimer(name=_TIMER_NAMES[min(cell[0], 5)], expires_ms=cell[1], retrans=cell[2])


def sock_batch_tcp_info(batch: SockBatch) -> list[TcpInfo | None]:
    """Each socket's :class:`TcpInfo` (None without one), decoded from the batch's ``tcp_info``
    and ``congestion`` columns; all None when the listing did not ask for ``info``. Raises
    :class:`WireTypeError` for a cell that is not base64."""
    if batch.tcp_info is None:
        return [None] * len(batch.inode)
    congestion = batch.congestion or [None] * len(batch.inode)
    try:
        return [
            None if raw is None else tcp_info(a2b_base64(raw, strict_mode=True), name)
            for raw, name in zip(batch.tcp_info, congestion, strict=True)
        ]
    except (binascii.Error, struct.error) as exc:
        raise WireTypeError(f"SockBatch.tcp_info: not a struct tcp_info in base64: {exc}") from exc


def _memory(cell: list[int] | None) -> SockMemory | None:
    if cell is None:
        return None
    return SockMemory(**dict(zip(SOCK_MEMORY_FIELDS, cell, strict=False)))


def _check_holders(name: str, column: list[Any], known: frozenset[int]) -> None:
    """A holders column: flat [pid, fd, ...] lists of ints (or None), pids named in the table.

    Set operations over the flattened column, no Python code per socket: a listing's every
    socket passes through here.
    """
    cells = [cell for cell in column if cell]
    flat = list(itertools.chain.from_iterable(cells))
    if not _INT_ONLY.issuperset(map(type, flat)):
        wrong = next(v for v in flat if type(v) is not int)
        raise WireTypeError(f"SockBatch.{name}: unexpected value {wrong!r}")
    lengths = set(map(len, cells))
    if any(n % 2 or n > 2 * MAX_SOCK_PROCESSES for n in lengths):
        raise WireTypeError(
            f"SockBatch.{name}: a socket's holders are pid, fd pairs, at most "
            f"{MAX_SOCK_PROCESSES} of them"
        )
    if not known.issuperset(flat[::2]):
        unknown = sorted(set(flat[::2]) - known)[:5]
        raise WireTypeError(f"SockBatch.{name}: pids {unknown} are not in holder_pid")


def sock_batch_processes(batch: SockBatch, *, peer: bool = False) -> list[list[SockProcess] | None]:
    """A batch's ``holders`` (or ``peer_holders``) column as :class:`SockProcess` lists.

    A socket without visible holders gets ``[]``; None stays None (no peer, or processes were not
    asked for: then every socket gets None).
    """
    column = batch.peer_holders if peer else batch.holders
    if column is None:
        return [None] * len(batch.inode)
    names = dict(zip(batch.holder_pid or (), batch.holder_name or (), strict=True))
    one = SockProcess
    return [
        None
        if held is None
        else [one(pid=held[0], name=names[held[0]], fd=held[1])]
        if len(held) == 2
        else [
            one(pid=pid, name=names[pid], fd=fd)
            for pid, fd in zip(held[::2], held[1::2], strict=True)
        ]
        for held in column
    ]


def sock_batch_rows(batch: SockBatch) -> list[SockInfo]:
    """The sockets of a batch as :class:`SockInfo` rows (built with ``map``, ~0.5 µs each)."""
    size = len(batch.inode)
    repeat = itertools.repeat
    optional: dict[str, Iterable[Any]] = {
        name: repeat(default, size) if getattr(batch, name) is None else getattr(batch, name)
        for name, _, default in _SOCK_OPTIONAL
    }
    if batch.holders is not None:
        optional["holders"] = sock_batch_processes(batch)
    if batch.peer_holders is not None:
        optional["peer_holders"] = sock_batch_processes(batch, peer=True)
    details = (  # each its own iterator: map() draws from every argument once per row
        repeat(None, size) if batch.cookie is None else batch.cookie,
        repeat(None, size) if batch.v6only is None else batch.v6only,
        repeat(None, size) if batch.timer is None else map(_timer, batch.timer),
        repeat(None, size) if batch.tcp_info is None else sock_batch_tcp_info(batch),
        repeat(None, size) if batch.skmem is None else map(_memory, batch.skmem),
        repeat(None, size) if batch.shutdown is None else batch.shutdown,
        repeat(None, size) if batch.cgroup is None else batch.cgroup,
    )
    return list(
        map(
            SockInfo,
            repeat(batch.kind, size),
            repeat(batch.family, size),
            *(getattr(batch, name) for name, _, _ in _SOCK_COLUMNS),
            optional["peer_inode"],
            repeat(batch.netns, size),
            optional["holders"],
            optional["holders_omitted"],
            optional["peer_holders"],
            *details,
        )
    )


def _check_column(name: str, column: Any, allowed: frozenset[type], size: int | None) -> int:
    if type(column) is not list:
        raise WireTypeError(f"SockBatch.{name}: expected a list, got {type(column).__name__}")
    if size is not None and len(column) != size:
        raise WireTypeError(f"SockBatch.{name}: {len(column)} values for {size} sockets")
    if not allowed.issuperset(map(type, column)):
        wrong = next(v for v in column if type(v) not in allowed)
        raise WireTypeError(f"SockBatch.{name}: unexpected value {wrong!r}")
    return len(column)


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
