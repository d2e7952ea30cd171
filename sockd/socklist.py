"""Socket inspection: ``sock.list`` and ``sock.summary``, like ss, in any namespace, for anyone.

A request is served in one pass per namespace: the kernel's sock_diag dump (opened inside the
namespace, :mod:`sockd.sockdiag`) arrives as chunks of columns, is filtered, and is sent on as
:class:`~sockctl.protocol.SockBatch` items of ~48 KB, so the daemon's memory does not grow with the
number of sockets. Process attribution is one scan of ``/proc/*/fd`` per request, on a thread
beside the first dumps.

Batches are written as JSON text here, column by column, instead of building one
:class:`~sockctl.protocol.SockInfo` per socket and going through the generic ``to_wire``: that path
cost more than the whole kernel dump at 100 000 sockets. ``tests/test_socklist.py`` pins that the
text decodes, with the generic decoder too, to the contract's types.

Policy (``sockd.policy``): everyone sees every socket's addresses (``policy.socket_visibility =
"all"``, the default; ``"own"`` limits non-monitors to their own sockets), but other users'
processes only root and members of ``policy.monitor_groups`` do. For everyone else the /proc scan
covers only their own processes (which is also much faster).
"""

import errno
import fnmatch
import functools
import ipaddress
import itertools
import json
import operator
import os
import socket
import threading
from binascii import b2a_base64
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_str
from typing import IO, TYPE_CHECKING, Any, TypeVar

from sockctl import protocol as p
from sockctl.errors import (
    InternalError,
    InvalidRequest,
    NotFound,
    NotSupported,
    PermissionDenied,
)
from sockd import linux, sockdiag
from sockd.netns import DEFAULT_PROC
from sockd.policy import Peer

if TYPE_CHECKING:
    from collections.abc import Generator

    from sockd.daemon import Daemon
    from sockd.dispatch import Call, Session

# Kernel state numbers (include/net/tcp_states.h) by ss's names; syn-recv covers request sockets.
_STATE_NUMBERS: dict[str, tuple[int, ...]] = {
    "established": (sockdiag.TCP_ESTABLISHED,),
    "syn-sent": (sockdiag.TCP_SYN_SENT,),
    "syn-recv": (sockdiag.TCP_SYN_RECV, sockdiag.TCP_NEW_SYN_RECV),
    "fin-wait-1": (sockdiag.TCP_FIN_WAIT1,),
    "fin-wait-2": (sockdiag.TCP_FIN_WAIT2,),
    "time-wait": (sockdiag.TCP_TIME_WAIT,),
    "closed": (sockdiag.TCP_CLOSE,),
    "close-wait": (sockdiag.TCP_CLOSE_WAIT,),
    "last-ack": (sockdiag.TCP_LAST_ACK,),
    "listening": (sockdiag.TCP_LISTEN,),
    "closing": (sockdiag.TCP_CLOSING,),
}
_STATE_NAME = ["unknown"] * 256
for _name, _numbers in _STATE_NUMBERS.items():
    for _number in _numbers:
        _STATE_NAME[_number] = _name

_UNIX_TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", 5: "seqpacket"}


_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}


@dataclass(frozen=True)
class _Table:
    """One kernel socket table: what sock_diag dumps in one request, or one /proc/net file."""

    kind: str
    family: int
    protocol: int
    proc_name: str

    @property
    def family_name(self) -> str:
        return _FAMILY_NAMES.get(int(self.family), "unix")

    @property
    def type_name(self) -> str:
        return {"tcp": "stream", "udp": "dgram", "raw": "raw"}.get(self.kind, "")


_INET_TABLES = (
    _Table("tcp", socket.AF_INET, socket.IPPROTO_TCP, "tcp"),
    _Table("tcp", socket.AF_INET6, socket.IPPROTO_TCP, "tcp6"),
    _Table("udp", socket.AF_INET, socket.IPPROTO_UDP, "udp"),
    _Table("udp", socket.AF_INET6, socket.IPPROTO_UDP, "udp6"),
    _Table("raw", socket.AF_INET, socket.IPPROTO_RAW, "raw"),
    _Table("raw", socket.AF_INET6, socket.IPPROTO_RAW, "raw6"),
)
_UNIX_TABLE = _Table("unix", socket.AF_UNIX, 0, "unix")


# Requests -> what to dump --------------------------------------------------------------------------


@dataclass
class _Filters:
    """A request's filters, checked and compiled once."""

    tables: list[_Table]
    state_mask: int
    local_port: int | None = None
    remote_port: int | None = None
    local_net: Callable[[str], bool] | None = None
    remote_net: Callable[[str], bool] | None = None
    unix_name: Callable[[str | None], bool] | None = None
    uid: int | None = None
    unix_types: frozenset[int] = frozenset(_UNIX_TYPES)
    """The UNIX socket types listed (SOCK_STREAM...): Linux 6 has no other; the contract names
    no other."""
    expr: "dict[int, _Predicate] | None" = None
    """The filter expression compiled for each address family (AF_INET, AF_INET6)."""
    bytecode: bytes = b""
    """The filter expression as inet_diag bytecode, for the kernel to filter sock_diag dumps
    with (the predicates still run: they also serve /proc/net, and are cheap on what is left)."""

    @property
    def unix_possible(self) -> bool:
        """Whether any UNIX row can pass: port, IP filters and expressions match only IP rows."""
        return (
            self.local_port is None
            and self.remote_port is None
            and self.local_net is None
            and self.remote_net is None
            and self.expr is None
        )

    @property
    def inet_possible(self) -> bool:
        return self.unix_name is None


def _state_mask(names: list[str]) -> int:
    if not names:
        return sockdiag.ALL_STATES
    mask = 0
    for name in names:
        for state in p.SOCK_STATE_GROUPS.get(name, (name,)):
            for number in _STATE_NUMBERS[state]:
                mask |= 1 << number
    return mask


def _tables(kinds: list[str], families: list[str]) -> list[_Table]:
    # As ss: -4/-6 alone mean IP sockets only; UNIX is listed when asked for, or when no kind and
    # no family narrows the listing.
    wanted_families = {{"inet": socket.AF_INET, "inet6": socket.AF_INET6}[f] for f in families} or {
        socket.AF_INET,
        socket.AF_INET6,
    }
    tables = [
        t for t in _INET_TABLES if (not kinds or t.kind in kinds) and t.family in wanted_families
    ]
    if "unix" in kinds or (not kinds and not families):
        tables.append(_UNIX_TABLE)
    return tables


def _address_filter(
    value: str, field_name: str
) -> tuple[Callable[[str], bool] | None, Callable[[str | None], bool] | None]:
    """An IP address/network matcher, or a UNIX name pattern matcher (``/...`` or ``@...``)."""
    if value.startswith(("/", "@")):
        pattern = value

        def unix_match(name: str | None) -> bool:
            return name is not None and fnmatch.fnmatchcase(name, pattern)

        return None, unix_match
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    network = _ip_network(text, field_name, value, ", nor a UNIX name pattern starting with / or @")
    cache: dict[str, bool] = {}

    def inet_match(address: str) -> bool:
        hit = cache.get(address)
        if hit is None:
            if len(cache) > 65536:
                cache.clear()
            hit = cache[address] = ipaddress.ip_address(address) in network
        return hit

    return inet_match, None


_Predicate = Callable[[str, int, str, int], bool]
"""Whether an IP socket passes a filter expression, given its local address and port, remote
address and port (addresses as inet_ntop text, as in :class:`sockdiag.InetChunk`)."""

_PORT_CMP: dict[str, Callable[[int, int], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _compile_expr(expr: p.SockExpr, family: int, where: str) -> _Predicate:
    """Turn a filter expression into one predicate for sockets of ``family``, once per request.

    Semantics are those of the kernel's inet_diag bytecode that ss compiles its filters to
    (net/ipv4/inet_diag.c, inet_diag_bc_run): ports compare as numbers, 0 for "any" (a
    listener's remote port); an address condition's port must match first; an IPv4 network also
    matches IPv4-mapped IPv6 addresses. ``where`` names the node in errors (``expr.args.1``).
    """
    if isinstance(expr, p.SockAnd | p.SockOr):
        parts = [_compile_expr(arg, family, f"{where}.args.{i}") for i, arg in enumerate(expr.args)]
        pair = _both if isinstance(expr, p.SockAnd) else _either
        return functools.reduce(pair, parts)
    if isinstance(expr, p.SockNot):
        inner = _compile_expr(expr.arg, family, f"{where}.arg")

        def negation(local: str, lport: int, remote: str, rport: int) -> bool:
            return not inner(local, lport, remote, rport)

        return negation
    if isinstance(expr, p.SockPortMatch):
        compare, port = _PORT_CMP[expr.cmp], expr.port
        if expr.op == "sport":
            return lambda local, lport, remote, rport: compare(lport, port)
        return lambda local, lport, remote, rport: compare(rport, port)
    return _host_predicate(expr, family, where)


def _both(first: _Predicate, second: _Predicate) -> _Predicate:
    # Pairs of closures, not all()/any() over a generator: half the cost per socket.
    def both(local: str, lport: int, remote: str, rport: int) -> bool:
        return first(local, lport, remote, rport) and second(local, lport, remote, rport)

    return both


def _either(first: _Predicate, second: _Predicate) -> _Predicate:
    def either(local: str, lport: int, remote: str, rport: int) -> bool:
        return first(local, lport, remote, rport) or second(local, lport, remote, rport)

    return either


def _host_predicate(expr: p.SockHostMatch, family: int, where: str) -> _Predicate:
    in_net = (
        None if expr.address is None else _network_match(expr.address, family, f"{where}.address")
    )
    want = expr.port
    if expr.op == "src":

        def source(local: str, lport: int, remote: str, rport: int) -> bool:
            return (want is None or lport == want) and (in_net is None or in_net(local))

        return source

    def destination(local: str, lport: int, remote: str, rport: int) -> bool:
        return (want is None or rport == want) and (in_net is None or in_net(remote))

    return destination


def _ip_network(
    text: str, field_name: str, shown: str, alternatives: str = ""
) -> "ipaddress.IPv4Network | ipaddress.IPv6Network":
    """``text`` as a network (an address is a /32 or /128), or the request's error."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise InvalidRequest(
            f"{field_name}: {shown!r} is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8, "
            f"::1){alternatives}",
            field=field_name,
        ) from exc


def _network_match(text: str, family: int, field_name: str) -> Callable[[str], bool]:
    """Whether an address of ``family`` (text) is in the network ``text``; cached per address."""
    network = _ip_network(text, field_name, text)
    socket_version = 4 if family == socket.AF_INET else 6
    if network.version == 6 and socket_version == 4:
        return lambda address: False
    # Integers from inet_pton (~0.2 us) rather than ipaddress objects (~1 us) for each address.
    mask, value = int(network.netmask), int(network.network_address)
    if network.version == 4 and socket_version == 6:
        # An IPv4-mapped IPv6 address is ::ffff:a.b.c.d: 0xffff in bits 32-47, zeros above.
        mask, value = mask | 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_00000000, value | 0xFFFF_00000000
    pton, from_bytes = socket.inet_pton, int.from_bytes
    cache: dict[str, bool] = {}

    def match(address: str) -> bool:
        hit = cache.get(address)
        if hit is None:
            if len(cache) > 65536:
                cache.clear()
            hit = cache[address] = from_bytes(pton(family, address)) & mask == value
        return hit

    return match


def _filters(request: p.SockListRequest | p.SockSummaryRequest) -> _Filters:
    filters = _Filters(
        tables=_tables(list(request.kinds), list(request.families)), state_mask=sockdiag.ALL_STATES
    )
    if isinstance(request, p.SockListRequest):
        _flat_filters(filters, request)
    if request.expr is not None:
        filters.expr = {
            family: _compile_expr(request.expr, family, "expr")
            for family in (socket.AF_INET, socket.AF_INET6)
        }
        filters.bytecode = sockdiag.filter_bytecode(request.expr)
    if filters.unix_name is not None:
        filters.tables = [t for t in filters.tables if t.kind == "unix"]
    elif not filters.unix_possible:
        filters.tables = [t for t in filters.tables if t.kind != "unix"]
    return filters


def _flat_filters(filters: _Filters, request: p.SockListRequest) -> None:
    """sock.list's one-value filters: states, ports, addresses or UNIX name patterns, uid."""
    filters.state_mask = _state_mask(list(request.states))
    filters.local_port = request.local_port
    filters.remote_port = request.remote_port
    filters.uid = request.uid
    if request.unix_types:
        filters.unix_types = frozenset(
            number for number, name in _UNIX_TYPES.items() if name in request.unix_types
        )
    if request.local_address is not None:
        filters.local_net, filters.unix_name = _address_filter(
            request.local_address, "local_address"
        )
    if request.remote_address is not None:
        remote_net, unix_peer = _address_filter(request.remote_address, "remote_address")
        if unix_peer is not None:
            raise InvalidRequest(
                "remote_address: UNIX sockets are matched by their own name only (local_address); "
                "their peer is given by inode",
                field="remote_address",
            )
        filters.remote_net = remote_net


# Namespaces ----------------------------------------------------------------------------------------


@dataclass
class _Target:
    """One namespace to list: its name (None: the host's) and an fd pinning it (None: ours).

    Its sock_diag socket is opened when its turn comes and closed with the fd right after, so that
    listing hundreds of namespaces holds two descriptors at a time, not hundreds.
    """

    name: str | None
    fd: int | None
    diag: sockdiag.DiagSocket | None = None

    def open_diag(self) -> None:
        try:
            self.diag = sockdiag.run_in_netns(self.fd, sockdiag.DiagSocket.open)
        except sockdiag.SockDiagUnavailable:
            self.diag = None  # every table of this namespace comes from /proc/net
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # setns: the file is not a network namespace
                raise NotFound(f"{self.name} is not a network namespace", field="netns") from exc
            where = self.name or "the host's namespace"
            raise InternalError(f"cannot open sock_diag in {where}: {exc.strerror}") from exc

    def close(self) -> None:
        if self.diag is not None:
            self.diag.close()
            self.diag = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _targets(
    daemon: "Daemon", netns: str | None, all_netns: bool, stack: ExitStack, peer: Peer | None = None
) -> list[_Target]:
    """Open the namespaces a request names; ``stack`` closes whatever is still open at its end.

    ``all_netns``: the host's, every named one, then every unnamed one ``peer`` may see (all for
    root and monitors, else those its own processes are in), tagged ``pid:PID`` after a process
    inside (``nsenter -t PID -n`` enters it).
    """
    if netns is not None and all_netns:
        raise InvalidRequest("give either netns or all_netns, not both", field="netns")
    named: list[tuple[str, str]]
    if all_netns:
        named = daemon.namespaces.mounted()
    elif netns is not None:
        path = os.path.join(daemon.namespaces.netns_dir, netns)
        if not linux.is_namespace_mount(path):
            raise NotFound(f"no namespace named {netns}", field="netns")
        named = [(netns, path)]
    else:
        named = []
    targets: list[_Target] = []
    seen: set[tuple[int, int]] = set()
    if netns is None:
        host = _Target(None, None)
        stack.callback(host.close)  # its sock_diag socket, once opened
        targets.append(host)
        seen.add(linux.ns_identity("/proc/thread-self/ns/net"))
    for name, path in named:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:  # deleted since we listed it
            if all_netns:
                continue
            raise NotFound(f"no namespace named {name}", field="netns") from exc
        target = _Target(name, fd)
        stack.callback(target.close)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen:
            target.close()
            continue  # a second name for a namespace already listed: its sockets once
        seen.add((st.st_dev, st.st_ino))
        targets.append(target)
    if all_netns and peer is not None:
        targets += _unnamed_targets(daemon, peer, seen, stack)
    return targets


def _unnamed_targets(
    daemon: "Daemon", peer: Peer, seen: set[tuple[int, int]], stack: ExitStack
) -> list[_Target]:
    """The unnamed namespaces ``peer`` may see (:meth:`Namespaces.scan`), as ``pid:PID`` targets."""
    targets = []
    for entry in daemon.namespaces.scan(peer):
        if entry.name is not None or entry.host or entry.pid is None:
            continue
        try:
            fd = os.open(f"/proc/{entry.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone since the scan
        target = _Target(f"pid:{entry.pid}", fd)
        stack.callback(target.close)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen or st.st_ino != entry.id:
            target.close()
            continue  # listed already, or the pid now names another process
        seen.add((st.st_dev, st.st_ino))
        targets.append(target)
    return targets


class _Sources:
    """Sockets of each table of one namespace: sock_diag, or /proc/net where the kernel lacks it.

    They come in chunks of columns, one per kernel message batch (sockdiag.InetChunk).
    """

    def __init__(self) -> None:
        self.fallback: list[str] = []
        self._unavailable: set[str] = set()

    def inet(
        self,
        target: _Target,
        table: _Table,
        mask: int,
        bytecode: bytes = b"",
        ext: int | None = None,
    ) -> Iterator[sockdiag.InetChunk]:
        if target.diag is not None and table.proc_name not in self._unavailable:
            try:
                yield from target.diag.inet(table.family, table.protocol, mask, bytecode, ext)
            except sockdiag.SockDiagUnavailable:
                # Raised by the first recv, before any row: switching to /proc/net is clean.
                self._unavailable.add(table.proc_name)
            else:
                return
        self._note(table)
        with self._open_proc(target, table) as file:
            yield from sockdiag.proc_net_inet(file, table.family, mask)

    def unix(
        self, target: _Target, mask: int, memory: bool | None = None
    ) -> Iterator[sockdiag.UnixChunk]:
        if target.diag is not None and "unix" not in self._unavailable:
            try:
                yield from target.diag.unix(mask, memory)
            except sockdiag.SockDiagUnavailable:
                self._unavailable.add("unix")
            else:
                return
        self._note(_UNIX_TABLE)
        with self._open_proc(target, _UNIX_TABLE) as file:
            yield from sockdiag.proc_net_unix(file, mask)

    def _note(self, table: _Table) -> None:
        if table.proc_name not in self.fallback:
            self.fallback.append(table.proc_name)

    @staticmethod
    def _open_proc(target: _Target, table: _Table) -> IO[bytes]:
        try:
            return sockdiag.run_in_netns(target.fd, lambda: sockdiag.open_proc_net(table.proc_name))
        except OSError as exc:
            raise InternalError(
                f"sock_diag has no {table.kind} support and /proc/net/{table.proc_name} cannot be "
                f"read: {exc.strerror}"
            ) from exc


# Processes -----------------------------------------------------------------------------------------


class _Processes:
    """The holders of each socket inode, encoded as the JSON of a SockBatch's holders columns."""

    def __init__(self, holders: sockdiag.Holders) -> None:
        self.holders = holders
        # "[pid," for every pid that holds a socket (a few hundred): a holder is one f-string.
        self._prefix = {pid: f"[{pid}," for pid in holders.names}

    def column(self, inodes: Iterable[int], pids: set[int]) -> tuple[list[str], list[int] | None]:
        """Each inode's holders as a JSON ``[pid, fd, ...]`` list (``[]``: none visible), and how
        many were cut (None when none was); adds the pids named to ``pids``."""
        get = self.holders.packed_of
        prefix = self._prefix
        named = pids.add
        out: list[str] = []
        omitted: list[int] | None = None
        for index, inode in enumerate(inodes):
            many = get(inode)
            if not many:
                out.append("[]")
            elif len(many) == 1:
                held = many[0]
                named(held >> 32)
                out.append(f"{prefix[held >> 32]}{held & 0xFFFFFFFF}]")
            else:
                shown = many[: p.MAX_SOCK_PROCESSES]
                pids.update(h >> 32 for h in shown)
                out.append(f"[{','.join(f'{h >> 32},{h & 0xFFFFFFFF}' for h in shown)}]")
                if len(many) > len(shown):
                    if omitted is None:
                        omitted = [0] * index
                    omitted.append(len(many) - len(shown))
                    continue
            if omitted is not None:
                omitted.append(0)
        return out, omitted

    def table(self, pids: set[int]) -> str:
        """The ``holder_pid``/``holder_name`` members naming ``pids``."""
        names = self.holders.names
        ordered = sorted(pids)
        return (
            f'"holder_pid":{_ints(ordered)},"holder_name":{_dumps([names[pid] for pid in ordered])}'
        )

    def held_by(self, pid: int) -> set[int]:
        """The inodes process ``pid`` holds."""
        return self.holders.held_by(pid)


class _Scan:
    """The /proc/*/fd scan of one request, on its own short-lived thread.

    It costs more than the listing itself (a readlink per open file on the host, mostly kernel
    time), so it runs while the first sockets are dumped and parsed; their encoding waits for it.
    The thread touches only /proc and never changes namespace.
    """

    def __init__(self, scan: Callable[[], sockdiag.Holders]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(
            target=self._run, args=(scan,), name="sockd-scan", daemon=True
        )
        self._thread.start()

    def _run(self, scan: Callable[[], sockdiag.Holders]) -> None:
        try:
            self._outcome.append(_Processes(scan()))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the request's thread by result()
            self._outcome.append(exc)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> _Processes:
        self._thread.join()
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        result: _Processes = outcome
        return result


def _start_scan(
    daemon: "Daemon", peer: Peer, request: p.SockListRequest
) -> tuple[_Scan | None, str]:
    """Start the /proc/*/fd scan if the request needs holders; returns it and the process scope."""
    if not request.processes and request.pid is None:
        return None, "none"
    everyone = daemon.policy.sees_all_processes(peer)
    # With processes shown, a pid filter still needs every holder of the matching sockets (a
    # socket shared after fork lists all of them, as ss does); without, that one pid suffices.
    only_pid = request.pid if not request.processes else None
    proc, uid = daemon.namespaces.proc, None if everyone else peer.uid
    # The iterator sees the host's processes: not for a /proc elsewhere (tests, containers).
    auto = daemon.config.sockets.process_scan == "auto" and proc == DEFAULT_PROC
    files = daemon.task_files if auto else None
    scan = _Scan(lambda: sockdiag.socket_holders(proc, uid=uid, pid=only_pid, files=files))
    scope = ("all" if everyone else "own") if request.processes else "none"
    return scan, scope


# Encoding ------------------------------------------------------------------------------------------
#
# A SockBatch is written as JSON text by hand, column by column: str.join over map(str, ...) runs in
# C, and addresses (inet_ntop output) and state names need no escaping. The generic json encoder
# took 1.7 µs per socket here, the joins 0.3. Only UNIX names go through json (they can be anything).

_MAX_ITEM = p.MAX_MESSAGE - 1024  # as daemon._CHUNK: a reply datagram less its envelope
_TARGET_ITEM = 48_000
"""Aimed-at size of a SockBatch's JSON: a datagram holds one with room for a misjudged batch."""
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # ASCII only: escapes surrogates too
_STATE_JSON = [f'"{name}"' for name in _STATE_NAME]


def _ints(values: Iterable[int]) -> str:
    return f"[{','.join(map(str, values))}]"


def _plain(values: Sequence[str]) -> str:
    """Strings that need no JSON escaping (IP addresses, our own names)."""
    return '["' + '","'.join(values) + '"]' if values else "[]"


def _unix_name(name: bytes | None) -> str | None:
    if name is None:
        return None
    if name[:1] == b"\0":
        return "@" + os.fsdecode(name[1:])
    return os.fsdecode(name)


def _header(target: _Target, table: _Table) -> str:
    netns = "" if target.name is None else f'"netns":{_json_str(target.name)},'
    return f'{netns}"kind":"{table.kind}","family":"{table.family_name}"'


def _inet_main(header: str, type_name: str, c: sockdiag.InetChunk) -> str:
    """A batch of IP sockets as JSON, but for its holders and its closing brace."""
    return (
        f'{{{header},"type":[{",".join([type_name] * c.count())}],'
        f'"state":[{",".join(map(_STATE_JSON.__getitem__, c.state))}],'
        f'"recv_q":{_ints(c.recv_q)},"send_q":{_ints(c.send_q)},"local":{_plain(c.local)},'
        f'"local_port":{_ints(c.local_port)},"remote":{_plain(c.remote)},'
        f'"remote_port":{_ints(c.remote_port)},"inode":{_ints(c.inode)},"uid":{_ints(c.uid)}'
    )


def _inet_tail(c: sockdiag.InetChunk, procs: "_Processes | None") -> str:
    """The rest of :func:`_inet_main`'s batch: its holders (when shown) and the closing brace."""
    if procs is None:
        return "}"
    pids: set[int] = set()
    held, omitted = procs.column(c.inode, pids)
    text = f',"holders":[{",".join(held)}]'
    if omitted is not None:
        text += f',"holders_omitted":{_ints(omitted)}'
    return f"{text},{procs.table(pids)}}}"


def _unix_main(header: str, c: sockdiag.UnixChunk) -> str:
    """A batch of UNIX sockets as JSON, but for its holders and its closing brace."""
    nulls = ",".join(["null"] * c.count())
    names = [_unix_name(name) for name in c.name]
    return (
        f'{{{header},"type":[{",".join(map(_UNIX_TYPE_JSON.__getitem__, c.type))}],'
        f'"state":[{",".join(map(_STATE_JSON.__getitem__, c.state))}],'
        f'"recv_q":{_ints(c.recv_q)},"send_q":{_ints(c.send_q)},"local":{_dumps(names)},'
        f'"local_port":[{nulls}],"remote":[{nulls}],"remote_port":[{nulls}],'
        f'"inode":{_ints(c.inode)},"uid":{_dumps(c.uid)},'
        f'"peer_inode":{_dumps([peer or None for peer in c.peer])}'
    )


def _unix_tail(c: sockdiag.UnixChunk, procs: "_Processes | None") -> str:
    """The rest of :func:`_unix_main`'s batch: its and its peers' holders, and the brace."""
    if procs is None:
        return "}"
    pids: set[int] = set()
    held, omitted = procs.column(c.inode, pids)
    text = f',"holders":[{",".join(held)}]'
    if omitted is not None:
        text += f',"holders_omitted":{_ints(omitted)}'
    peers, _ = procs.column(c.peer, pids)
    peers = [held if inode else "null" for held, inode in zip(peers, c.peer, strict=True)]
    return f'{text},"peer_holders":[{",".join(peers)}],{procs.table(pids)}}}'


_UNIX_TYPE_JSON = {number: f'"{name}"' for number, name in _UNIX_TYPES.items()}

_DETAIL_COLUMNS = (("extended", "cookie"), ("extended", "v6only"), ("timers", "timer"),
                   ("info", "tcp_info"), ("memory", "skmem"), ("extended", "shutdown"),
                   ("info", "congestion"), ("cgroup", "cgroup"))  # fmt: skip
"""Request flag and SockBatch column of each of sockdiag.Details' eight parts, in its order."""
_TCP_INFO_PART = 3
"""The part that is bytes (struct tcp_info): base64 on the wire."""
_CGROUP_PART = 7
"""The part that is a cgroup id: its path on the wire."""


def _wanted_details(request: p.SockListRequest) -> tuple[int, ...]:
    """Which parts of the sockets' details a listing sends (indexes into sockdiag.Details)."""
    return tuple(i for i, (flag, _) in enumerate(_DETAIL_COLUMNS) if getattr(request, flag))


def _base64(raw: Any) -> str | None:
    return None if raw is None else b2a_base64(raw, newline=False).decode("ascii")


class CgroupPaths:
    """cgroup v2 ids to paths, as ss --cgroup prints them (``/system.slice/ssh.service``).

    A cgroup's id is its directory's inode number on the cgroup2 mount; the tree is walked
    again (at most once per listing) when a socket names an id not seen yet. ``unreachable:ID``
    (hex, as ss) for an id no directory has: a cgroup removed since, or one outside this mount.
    """

    def __init__(self, mounts: str = "/proc/self/mounts") -> None:
        self._mounts = mounts
        self._paths: dict[int, str] = {}
        self._walked = False

    def path(self, cgroup_id: int | None) -> str | None:
        if cgroup_id is None:
            return None
        found = self._paths.get(cgroup_id)
        if found is None and not self._walked:
            self._walked = True
            self._walk()
            found = self._paths.get(cgroup_id)
        return found if found is not None else f"unreachable:{cgroup_id:x}"

    def _walk(self) -> None:
        root = self._root()
        if root is None:
            return
        try:
            self._paths[os.stat(root).st_ino] = "/"
        except OSError:
            return
        pending = [(root, "")]
        while pending:  # the directory entries carry their inodes: no stat per cgroup
            directory, path = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            self._paths[entry.inode()] = f"{path}/{entry.name}"
                            pending.append((entry.path, f"{path}/{entry.name}"))
            except OSError:  # removed while we walk
                continue

    def _root(self) -> str | None:
        """The first cgroup2 mount (``/sys/fs/cgroup``, ``/sys/fs/cgroup/unified``), if any."""
        try:
            with open(self._mounts, encoding="utf-8", errors="replace") as mounts:
                for line in mounts:
                    fields = line.split()
                    if len(fields) > 2 and fields[2] == "cgroup2":
                        return fields[1].replace("\\040", " ")
        except OSError:
            return None
        return None


def _details_json(
    c: "sockdiag.InetChunk | sockdiag.UnixChunk", wanted: tuple[int, ...], cgroups: CgroupPaths
) -> str:
    """The detail columns a request asked for (null cells where a source had none: /proc/net)."""
    details = (
        c.details if len(c.details) == c.count() else [(None,) * len(_DETAIL_COLUMNS)] * c.count()
    )
    encode: dict[int, Callable[[Any], Any]] = {_TCP_INFO_PART: _base64, _CGROUP_PART: cgroups.path}
    return "".join(
        f',"{_DETAIL_COLUMNS[i][1]}":'
        + _dumps(
            list(map(encode[i], (d[i] for d in details)))
            if i in encode
            else [d[i] for d in details]
        )
        for i in wanted
    )


def _inet_keep(
    f: _Filters, only: set[int] | None, family: int
) -> Callable[[sockdiag.InetChunk], list[bool]] | None:
    """Which sockets of a chunk pass every filter a request sets on IP sockets; None: no filter."""
    local_port, remote_port, uid = f.local_port, f.remote_port, f.uid
    local_net, remote_net = f.local_net, f.remote_net
    expr = None if f.expr is None else f.expr[family]
    if (local_port, remote_port, uid, local_net, remote_net, only, expr) == (None,) * 7:
        return None

    def keep(c: sockdiag.InetChunk) -> list[bool]:
        return [
            (local_port is None or lport == local_port)
            and (remote_port is None or rport == remote_port)
            and (uid is None or owner == uid)
            and (local_net is None or local_net(local))
            and (remote_net is None or remote_net(remote))
            and (only is None or inode in only)
            and (expr is None or expr(local, lport, remote, rport))
            for inode, local, lport, remote, rport, owner in zip(
                c.inode, c.local, c.local_port, c.remote, c.remote_port, c.uid, strict=True
            )
        ]

    return keep


def _unix_keep(f: _Filters, only: set[int] | None) -> Callable[[sockdiag.UnixChunk], list[bool]]:
    uid, name_match, types = f.uid, f.unix_name, f.unix_types

    def keep(c: sockdiag.UnixChunk) -> list[bool]:
        return [
            sock_type in types
            and (uid is None or owner == uid)
            and (name_match is None or name_match(_unix_name(name)))
            and (only is None or inode in only)
            for sock_type, inode, name, owner in zip(c.type, c.inode, c.name, c.uid, strict=True)
        ]

    return keep


_Chunk = TypeVar("_Chunk", sockdiag.InetChunk, sockdiag.UnixChunk)


_OVERLAP_ROWS = 8192
"""Most sockets kept (encoded but for their holders) while the process scan runs: bounds memory."""


@dataclass
class _Prepared:
    """A batch encoded but for its holders (``head``), with what finishes it."""

    chunk: Any
    head: str
    main: Callable[[Any], str]
    tail: Callable[[Any, "_Processes | None"], str]


@dataclass
class _Listing:
    """One sock.list request while it streams: keeps the sockets that pass the filters as the
    kernel hands them over and sends them in SockBatch items of ~48 KB."""

    request: p.SockListRequest
    filters: _Filters
    targets: list[_Target]
    scan: _Scan | None
    process_scope: str
    stack: ExitStack
    sources: _Sources = field(default_factory=_Sources)
    count: int = 0
    only: set[int] | None = None
    """With a pid filter: the inodes that process holds."""
    _batch_rows: int = 256
    """Rows per batch, adjusted after each batch to aim at _TARGET_ITEM bytes."""
    _prepared: "list[_Prepared]" = field(default_factory=list)
    """Batches encoded but for their holders while the process scan runs."""
    _prepared_rows: int = 0
    cgroups: CgroupPaths = field(default_factory=CgroupPaths)

    def items(self) -> Iterator[str]:
        with self.stack:
            if self.request.pid is not None and self.scan is not None:
                self.only = self.scan.result().held_by(self.request.pid)
            for target in self.targets:
                target.open_diag()
                for table in self.filters.tables:
                    if table.kind == "unix":
                        yield from self._unix(target)
                    else:
                        yield from self._inet(target, table)
                target.close()
            yield from self._complete()

    def result(self) -> p.SockListResult:
        return p.SockListResult(
            count=self.count,
            namespaces=[t.name for t in self.targets],
            process_scope=self.process_scope,  # type: ignore[arg-type]
            proc_fallback=list(self.sources.fallback),
        )

    def _procs(self) -> _Processes | None:
        """The holders, once the scan is over (waits for it), or None when not shown."""
        if self.scan is None or not self.request.processes:
            return None
        return self.scan.result()

    def _scanning(self) -> bool:
        """Whether the holders are to be shown and the process scan still runs."""
        return self.scan is not None and self.request.processes and not self.scan.done()

    def _inet(self, target: _Target, table: _Table) -> Iterator[str]:
        header, type_name = _header(target, table), f'"{table.type_name}"'
        keep = _inet_keep(self.filters, self.only, table.family)
        wanted = _wanted_details(self.request)
        ext = (
            None
            if not wanted
            else (
                (sockdiag.EXT_INFO if self.request.info else 0)
                | (sockdiag.EXT_MEMORY if self.request.memory else 0)
            )
        )
        chunks = self.sources.inet(
            target, table, self.filters.state_mask, self.filters.bytecode, ext
        )
        if keep is not None:
            chunks = (c.select(keep(c)) for c in chunks)

        def main(chunk: sockdiag.InetChunk) -> str:
            text = _inet_main(header, type_name, chunk)
            return text + _details_json(chunk, wanted, self.cgroups) if wanted else text

        yield from self._batches(chunks, main, _inet_tail)

    def _unix(self, target: _Target) -> Iterator[str]:
        header = _header(target, _UNIX_TABLE)
        keep = _unix_keep(self.filters, self.only)
        wanted = _wanted_details(self.request)
        memory = self.request.memory if wanted else None
        chunks = (
            c.select(keep(c)) for c in self.sources.unix(target, self.filters.state_mask, memory)
        )

        def main(chunk: sockdiag.UnixChunk) -> str:
            text = _unix_main(header, chunk)
            return text + _details_json(chunk, wanted, self.cgroups) if wanted else text

        yield from self._batches(chunks, main, _unix_tail)

    def _batches(
        self,
        chunks: Iterable[_Chunk],
        main: Callable[[_Chunk], str],
        tail: Callable[[_Chunk, _Processes | None], str],
    ) -> Iterator[str]:
        """Gather chunks into batches of about _TARGET_ITEM bytes of JSON and encode them.

        While the process scan runs, batches are encoded but for their holders and kept (at most
        _OVERLAP_ROWS sockets, over every table and namespace); once it is over, or when that
        many are kept, each gets its holders and goes out.
        """
        pending: list[_Chunk] = []
        rows = 0
        for chunk in chunks:
            if not chunk.count():
                continue
            pending.append(chunk)
            rows += chunk.count()
            if rows >= self._batch_rows:
                yield from self._out(pending[0].concat(pending), main, tail)
                pending, rows = [], 0
        if pending:
            yield from self._out(pending[0].concat(pending), main, tail)

    def _out(
        self,
        chunk: _Chunk,
        main: Callable[[_Chunk], str],
        tail: Callable[[_Chunk, _Processes | None], str],
    ) -> Iterator[str]:
        """Send a chunk in batches; or, while the scan runs, keep them encoded but for holders."""
        size, step = chunk.count(), self._batch_rows
        parts = [chunk.part(i, min(size, i + step)) for i in range(0, size, step)]
        if len(parts) == 1:
            parts = [chunk]
        if self._scanning() and self._prepared_rows < _OVERLAP_ROWS:
            for part in parts:
                head = main(part)
                self._prepared.append(_Prepared(part, head, main, tail))
                self._prepared_rows += part.count()
            # Aim the next batches at the target with room for holders (~15 % of a batch).
            self._batch_rows = max(
                16, min(4096, part.count() * _TARGET_ITEM * 4 // (5 * len(head)))
            )
            return
        yield from self._complete()
        for part in parts:
            yield from self._send(part, main, tail)

    def _complete(self) -> Iterator[str]:
        """The batches kept during the scan, with their holders (waits for the scan)."""
        if not self._prepared:
            return
        procs = self._procs()
        prepared, self._prepared, self._prepared_rows = self._prepared, [], 0
        for kept in prepared:
            text = kept.head + kept.tail(kept.chunk, procs)
            if len(text) > _MAX_ITEM and kept.chunk.count() > 1:
                yield from self._send(kept.chunk, kept.main, kept.tail)  # many holders: halve it
            else:
                yield self._sent(kept.chunk, text)

    def _send(
        self,
        chunk: _Chunk,
        main: Callable[[_Chunk], str],
        tail: Callable[[_Chunk, _Processes | None], str],
    ) -> Iterator[str]:
        """Encode a batch, halving it until each part fits a datagram."""
        text = main(chunk) + tail(chunk, self._procs())
        size = chunk.count()
        if len(text) > _MAX_ITEM and size > 1:
            yield from self._send(chunk.part(0, size // 2), main, tail)
            yield from self._send(chunk.part(size // 2, size), main, tail)
            return
        yield self._sent(chunk, text)

    def _sent(self, chunk: _Chunk, text: str) -> str:
        """Count a batch going out, and learn the next batch size from its text."""
        size = chunk.count()
        self.count += size
        # Sockets of one table are alike: scale the next batch so its text lands near the target.
        self._batch_rows = max(16, min(4096, size * _TARGET_ITEM // max(len(text), 1)))
        return text


# Operations ----------------------------------------------------------------------------------------


def _visible_uid(daemon: "Daemon", peer: Peer, requested: int | None) -> int | None:
    """The uid filter policy imposes (socket_visibility = "own"), merged with the request's."""
    if daemon.policy.sees_all_sockets(peer):
        return requested
    if requested is not None and requested != peer.uid:
        raise PermissionDenied(
            f"policy shows you only your own sockets (uid {peer.uid}); join a monitor group to "
            f"see uid {requested}'s",
            field="uid",
        )
    return peer.uid


def list_sockets(
    daemon: "Daemon", peer: Peer, request: p.SockListRequest
) -> tuple[Iterator[str], Callable[[], p.SockListResult]]:
    """The items (JSON text) and the end-of-listing summary of a sock.list request."""
    filters = _filters(request)
    filters.uid = _visible_uid(daemon, peer, request.uid)
    stack = ExitStack()
    try:
        targets = _targets(daemon, request.netns, request.all_netns, stack, peer)
        scan, scope = _start_scan(daemon, peer, request)
    except BaseException:
        stack.close()
        raise
    listing = _Listing(request, filters, targets, scan, scope, stack)
    return listing.items(), listing.result


def summarize_sockets(
    daemon: "Daemon", peer: Peer, request: p.SockSummaryRequest
) -> tuple[list[p.SockCount], p.SockSummaryResult]:
    """Counts per namespace, kind, family and state (small: at most ~40 per namespace)."""
    filters = _filters(request)
    uid = _visible_uid(daemon, peer, None)
    sources = _Sources()
    counts: list[p.SockCount] = []
    total = 0
    with ExitStack() as stack:
        targets = _targets(daemon, request.netns, request.all_netns, stack, peer)
        for target in targets:
            target.open_diag()
            for table in filters.tables:
                tally: Counter[int] = Counter()
                chunks: Iterable[sockdiag.InetChunk | sockdiag.UnixChunk]
                if table.kind == "unix":
                    chunks = sources.unix(target, filters.state_mask)
                else:
                    inet = sources.inet(target, table, filters.state_mask, filters.bytecode)
                    keep = _inet_keep(filters, None, table.family)  # the expression, if any
                    chunks = inet if keep is None else (c.select(keep(c)) for c in inet)
                for chunk in chunks:
                    if uid is None:
                        tally.update(chunk.state)
                    else:
                        tally.update(
                            s for s, u in zip(chunk.state, chunk.uid, strict=True) if u == uid
                        )
                states: Counter[str] = Counter()
                for number, n in tally.items():
                    states[_STATE_NAME[number]] += n
                for state, n in sorted(states.items()):
                    counts.append(
                        p.SockCount(
                            netns=target.name,
                            kind=table.kind,  # type: ignore[arg-type]
                            family=table.family_name,  # type: ignore[arg-type]
                            state=state,
                            count=n,
                        )
                    )
                    total += n
            target.close()
        result = p.SockSummaryResult(
            namespaces=[t.name for t in targets], total=total, proc_fallback=sources.fallback
        )
    return counts, result


# sock.kill (ss -K) ---------------------------------------------------------------------------------

_KILL_DEFAULT_STATES = sockdiag.ALL_STATES & ~(
    (1 << sockdiag.TCP_TIME_WAIT) | (1 << sockdiag.TCP_NEW_SYN_RECV)
)
"""Without state filters, what sock.kill closes: TIME-WAIT and half-open (SYN-RECV) entries have
no socket file and no owner to tell (the kernel says uid 0); they are closed only when asked for
by state."""


@dataclass(frozen=True, slots=True)
class _Match:
    table: _Table
    sockid: bytes
    row: p.SockInfo


def _inet_listing(
    request: "p.SockKillRequest | p.SockEventsRequest", what: str, states: list[str]
) -> p.SockListRequest:
    """The sock.list filters of a request about TCP/UDP sockets only (kill, events); a UNIX name
    pattern as an address is refused by name."""
    for name in ("local_address", "remote_address"):
        value = getattr(request, name)
        if value is not None and value.startswith(("/", "@")):
            raise InvalidRequest(
                f"{name}: {what} TCP/UDP sockets; {value!r} is a UNIX name", field=name
            )
    return p.SockListRequest(
        kinds=list(request.kinds) or ["tcp", "udp"],
        families=list(request.families),
        states=states,  # type: ignore[arg-type]
        local_port=request.local_port,
        remote_port=request.remote_port,
        local_address=request.local_address,
        remote_address=request.remote_address,
        uid=request.uid,
        netns=request.netns,
        processes=False,
        expr=request.expr,
    )


def kill_sockets(daemon: "Daemon", peer: Peer, request: p.SockKillRequest) -> p.SockKillReply:
    """Close the TCP/UDP sockets a sock.kill request matches, all or nothing as to policy."""
    selectors = (request.local_port, request.remote_port, request.local_address)
    if (*selectors, request.remote_address, request.uid, request.expr) == (None,) * 6:
        raise InvalidRequest(
            "sock.kill needs a filter (a port, an address, a uid or an expression): without one "
            "it would close every socket",
            field="expr",
        )
    listing = _inet_listing(request, "sock.kill closes", list(request.states))
    filters = _filters(listing)
    if not request.states:
        filters.state_mask = _KILL_DEFAULT_STATES
    with ExitStack() as stack:
        (target,) = _targets(daemon, request.netns, False, stack)
        target.open_diag()
        if target.diag is None:
            raise NotSupported("sock.kill needs sock_diag, which this kernel lacks")
        matches = _kill_matches(target.diag, target, filters, explicit=bool(request.kinds))
        if not daemon.policy.kills_any_socket(peer):
            others = [m for m in matches if m.row.uid != peer.uid]
            if others:
                shown = daemon.policy.sees_all_sockets(peer)
                first = others[0].row
                which = (
                    f"e.g. {_kill_text(first)} (uid {first.uid})" if shown else "not listed here"
                )
                raise PermissionDenied(
                    f"{len(others)} matching socket(s) belong to other users ({which}); you may "
                    f"close only your own (uid {peer.uid}): narrow the filter, or ask a member of "
                    f"policy.kill_groups. Nothing was closed.",
                    field="uid",
                    details={"uid": peer.uid, "others": len(others)},
                )
        if request.dry_run:
            return p.SockKillReply(killed=[m.row for m in matches], dry_run=True)
        killed: list[p.SockInfo] = []
        gone = 0
        for match in matches:
            try:
                closed = target.diag.destroy(match.table.family, match.table.protocol, match.sockid)
            except sockdiag.DestroyUnsupported as exc:
                raise NotSupported(str(exc)) from exc
            if not closed:
                gone += 1
                continue
            killed.append(match.row)
            daemon.log.info(
                f"sock kill: closed {_kill_text(match.row)} for uid {peer.uid}",
                SOCKD_NS=target.name or "",
                SOCKD_SOCKET=_kill_text(match.row),
                SOCKD_SOCKET_UID=match.row.uid,
                SOCKD_UID=peer.uid,
            )
        return p.SockKillReply(killed=killed, gone=gone)


def _kill_matches(
    diag: sockdiag.DiagSocket, target: _Target, filters: _Filters, *, explicit: bool
) -> list[_Match]:
    matches: list[_Match] = []
    for table in filters.tables:
        keep = _inet_keep(filters, None, table.family)
        try:
            for chunk, ids in diag.inet_ids(
                table.family, table.protocol, filters.state_mask, filters.bytecode
            ):
                chosen = keep(chunk) if keep is not None else [True] * len(ids)
                for i in itertools.compress(range(len(ids)), chosen):
                    if filters.uid is not None and chunk.uid[i] != filters.uid:
                        continue
                    matches.append(_Match(table, ids[i], _kill_row(target, table, chunk, i)))
                    if len(matches) > p.MAX_SOCK_KILL:
                        raise InvalidRequest(
                            f"the filter matches more than {p.MAX_SOCK_KILL} sockets; nothing was "
                            f"closed: narrow it",
                            field="expr",
                        )
        except sockdiag.SockDiagUnavailable:
            if explicit:
                raise InternalError(
                    f"this kernel cannot list {table.kind} sockets through sock_diag, so sockd "
                    f"cannot close them"
                ) from None
    return matches


def _kill_row(target: _Target, table: _Table, c: sockdiag.InetChunk, i: int) -> p.SockInfo:
    return p.SockInfo(
        table.kind,  # type: ignore[arg-type]
        table.family_name,  # type: ignore[arg-type]
        table.type_name,  # type: ignore[arg-type]
        _STATE_NAME[c.state[i]],
        c.recv_q[i],
        c.send_q[i],
        c.local[i],
        c.local_port[i],
        c.remote[i],
        c.remote_port[i],
        c.inode[i],
        c.uid[i],
        netns=target.name,
    )


def _kill_text(row: p.SockInfo) -> str:
    def end(address: str | None, port: int | None) -> str:
        return f"[{address}]:{port}" if address and ":" in address else f"{address}:{port}"

    return f"{row.kind} {end(row.local, row.local_port)} -> {end(row.remote, row.remote_port)}"


# Socket events (ss -E) -----------------------------------------------------------------------------


def watch_sockets(daemon: "Daemon", peer: Peer, request: p.SockEventsRequest) -> "Session":
    """sock.events: a session that sends each TCP/UDP socket the kernel destroys in a namespace
    (from its sock_diag destroy groups, which need CAP_NET_ADMIN: ss -E is root's)."""
    from sockd.dispatch import Session  # noqa: PLC0415 -- dispatch imports this module

    listing = _inet_listing(request, "sock.events follows", [])
    filters = _filters(listing)  # checked now: a bad filter is an error before the stream starts
    return Session(functools.partial(_watch, daemon, request, filters))


def _watch(
    daemon: "Daemon", request: p.SockEventsRequest, filters: _Filters, call: "Call"
) -> "Generator[p.SockInfo, None, p.SockEventsResult]":
    import select  # noqa: PLC0415 -- only this long-lived request polls
    import time  # noqa: PLC0415

    tables = {(t.family, t.protocol): t for t in filters.tables if t.kind in ("tcp", "udp")}
    sent = overflows = 0
    ended: str = "closed"
    with ExitStack() as stack:
        (target,) = _targets(daemon, request.netns, False, stack)
        try:
            events = sockdiag.run_in_netns(
                target.fd, functools.partial(sockdiag.DestroyEvents.open, list(tables))
            )
        except OSError as exc:
            raise InternalError(
                f"cannot join the kernel's socket-destroy groups: {exc.strerror}"
            ) from exc
        stack.callback(events.close)
        from sockd.dispatch import UNDER_WAY  # noqa: PLC0415 -- dispatch imports this module

        yield UNDER_WAY  # type: ignore[misc]  # the client knows: from now on nothing is missed
        poll = select.poll()
        poll.register(events.fileno(), select.POLLIN)
        poll.register(call.channel.fileno(), select.POLLIN)
        deadline = None if request.seconds is None else time.monotonic() + request.seconds
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                ended = "seconds"
                break
            ready = {fd for fd, _ in poll.poll(None if wait is None else wait * 1000)}
            if call.channel.fileno() in ready and call.channel.receive() is None:
                break  # the client has gone: nobody to answer
            if events.fileno() not in ready:
                continue
            found, dropped = events.read()
            overflows += dropped
            for family, protocol, chunk in found:
                table = tables.get((family, protocol))
                keep = _inet_keep(filters, None, family)
                if table is None or (keep is not None and not keep(chunk)[0]):
                    continue
                yield _event_row(target, table, chunk)
                sent += 1
                if request.count is not None and sent >= request.count:
                    ended = "count"
                    break
            if ended == "count":
                break
    return p.SockEventsResult(events=sent, overflows=overflows, ended=ended)  # type: ignore[arg-type]


def _event_row(target: _Target, table: _Table, chunk: sockdiag.InetChunk) -> p.SockInfo:
    row = _kill_row(target, table, chunk, 0)
    # A destroyed UDP socket's send queue comes as (u32) -1, which ss prints as -1.
    if row.send_q >= 1 << 31:
        row.send_q -= 1 << 32
    return row
