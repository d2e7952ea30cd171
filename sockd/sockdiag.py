"""Socket inspection, the Linux side: sock_diag netlink dumps, /proc/net parsing, /proc/*/fd scans.

Part of the Linux layer (see :mod:`sockd.linux`): operation modules get plain rows from here and never
see netlink, struct layouts or /proc formats. Errors surface as ``OSError`` subclasses.

- :class:`DiagSocket` dumps the sockets of ONE network namespace: the one its netlink socket was
  created in. Create it inside the target namespace (``run_in_netns(fd, DiagSocket.open)``), then
  use it from any thread. Kernel references: ``include/uapi/linux/inet_diag.h``, ``unix_diag.h``,
  ``net/ipv4/inet_diag.c``, ``net/unix/diag.c``; iproute2's ``misc/ss.c`` is the reference user.
- :func:`proc_net_inet` / :func:`proc_net_unix` parse ``/proc/net/{tcp,udp,raw}{,6}`` and
  ``/proc/net/unix``: the fallback where the kernel lacks a sock_diag handler
  (``CONFIG_INET_RAW_DIAG`` is often off; raw sockets are then only listed there, by ss too).
- :func:`socket_holders` maps socket inodes to the processes holding them, in one pass over
  ``/proc/*/fd``.

Sockets come in chunks of columns (:class:`InetChunk`, :class:`UnixChunk`), one per kernel message
batch, not as one object per socket: a listing of 100 000 sockets passes through here, and the
column conversion runs in C. Parsing uses precompiled :class:`struct.Struct` objects (pyroute2's
generic netlink parser was measured 45x slower on the same dump, ../shared/DESIGN.md).
"""

import array
import bisect
import contextlib
import errno
import functools
import ipaddress
import itertools
import operator
import os
import socket
import struct
import subprocess
import sys
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, TypeVar

from sockctl import protocol as p
from sockd import linux, taskfiles

_T = TypeVar("_T")
_C = TypeVar("_C", "InetChunk", "UnixChunk", "_IdChunk")

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR = 2
_NLMSG_DONE = 3

# TCP states (include/net/tcp_states.h). UDP, RAW and UNIX sockets reuse these numbers.
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5
TCP_TIME_WAIT = 6
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8
TCP_LAST_ACK = 9
TCP_LISTEN = 10
TCP_CLOSING = 11
TCP_NEW_SYN_RECV = 12  # a request socket (half-open connection); ss shows it as SYN-RECV
TCP_BOUND_INACTIVE = 13  # Linux 6.8: bound, neither listening nor connected (from the bind hash)
ALL_STATES = 0xFFFFFFFF & ~(1 << TCP_BOUND_INACTIVE)
"""Every state ss -a lists. Bound-inactive sockets (a bind() without listen() or connect()) are
dumped by Linux >= 6.8 only when asked for by that bit, which ss -a does not set either."""

# unix_diag_req.udiag_show: which attributes each reply carries (include/uapi/linux/unix_diag.h).
_UDIAG_SHOW_NAME = 0x01
_UDIAG_SHOW_PEER = 0x04
_UDIAG_SHOW_RQLEN = 0x10
_UDIAG_SHOW_UID = 0x40  # Linux >= 5.3; older kernels send no UID attribute (uid None)
_UNIX_DIAG_NAME = 0
_UNIX_DIAG_PEER = 2
_UNIX_DIAG_RQLEN = 4
_UNIX_DIAG_UID = 7
_UDIAG_SHOW_MEMINFO = 0x20
_UNIX_DIAG_MEMINFO = 5
_UNIX_DIAG_SHUTDOWN = 6
_UNIX_COOKIE = struct.Struct("=II")  # udiag_cookie, after udiag_ino

# nlmsghdr, then struct inet_diag_req_v2 (family, protocol, ext, raw protocol, states, and a zeroed
# struct inet_diag_sockid of 48 bytes), or struct unix_diag_req (family, protocol, pad, states, ino,
# show, cookie).
_INET_REQUEST = struct.Struct("=IHHII BBBBI 48x")
_UNIX_REQUEST = struct.Struct("=IHHII BBHIII 8x")
# nlmsghdr + struct inet_diag_msg in one unpack: len, type, (flags, seq, pid, family), state,
# (timer, retrans), sport, dport (big-endian: swapped below), src, dst, (if, cookie, expires),
# rqueue, wqueue, uid, inode.
_INET_MSG = struct.Struct("=IH10x xBxx HH16s16s 16x IIII")
# nlmsghdr + struct unix_diag_msg: len, type, (flags, seq, pid, family), type, state, (pad), inode,
# (cookie).
_INET_ID_MSG = struct.Struct("=IH10x xBxx 48s 4x IIII")
"""inet_diag_msg with its inet_diag_sockid whole (sport, dport, src, dst, if, cookie)."""
_SOCKID = struct.Struct("=HH16s16s8x")
_DESTROY_REQUEST = struct.Struct("=IHHII BBBBI 48s")
SOCK_DESTROY = 21
_NLM_F_ACK = 0x4
_UNIX_MSG = struct.Struct("=IH10x xBBxI8x")
_NLMSG_HEADER = struct.Struct("=IH")
_NLMSG_HEADER_SIZE = 16
_NLATTR = struct.Struct("=HH")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_RQLEN = struct.Struct("=II")
_ERRNO = struct.Struct("=i")

_RECV_SIZE = 65536  # the kernel fills at most 32 KiB per dump batch (netlink_recvmsg)
_ADDRESS_CACHE = 65536


Details = tuple[
    int,
    "bool | None",
    "tuple[int, int, int] | None",
    "bytes | None",
    "list[int] | None",
    "int | None",
    "str | None",
    "int | None",
]
"""One socket's details: its cookie (ss -e ``sk:``), IPV6_V6ONLY of an IPv6 socket (ss -e
``v6only:``; None for others), its timer as (kind, expires ms, retransmits) or None (ss -o), its
struct tcp_info as the kernel sent it (ss -i; decoded by the client, :func:`protocol.tcp_info`),
its sk_meminfo counters (ss -m), its sk_shutdown bits (1: receive, 2: send; ss -e's ``<->``),
its congestion control's name (ss -i) and the id of its cgroup (v2; ss --cgroup)."""


def _columns(rows: list[tuple[Any, ...]], fields: int) -> list[Sequence[Any]]:
    """Rows as columns; rows without details (the shorter tuples) get an empty details column."""
    if not rows:
        return [()] * fields
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    return columns if len(columns) == fields else [*columns, ()]


class InetChunk(NamedTuple):
    """TCP/UDP/RAW sockets of one kernel message batch, as columns: position i is socket i.

    Addresses are in ``inet_ntop`` text form, ports in host order. For RAW sockets the local "port"
    is the IP protocol, as ss shows it. Columns, not one tuple per socket: the whole conversion
    then runs in C (``struct.iter_unpack``, ``zip``, ``map``), about 4x cheaper per socket.
    """

    state: Sequence[int]
    recv_q: Sequence[int]
    send_q: Sequence[int]
    inode: Sequence[int]
    local: Sequence[str]
    local_port: Sequence[int]
    remote: Sequence[str]
    remote_port: Sequence[int]
    uid: Sequence[int]
    details: Sequence[Details] = ()
    """Per socket, what ``sock list -e -o -i -m`` show (:data:`Details`); empty unless asked for."""

    @classmethod
    def from_rows(cls, rows: list[tuple[Any, ...]]) -> "InetChunk":
        return cls._make(_columns(rows, len(cls._fields)))

    def count(self) -> int:  # type: ignore[override]  # tuple.count is of no use here
        return len(self.inode)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The sockets one tuple each, in the columns' order, without their details."""
        return zip(*self[:-1], strict=True)

    def select(self, keep: Sequence[bool]) -> "InetChunk":
        return InetChunk._make(list(itertools.compress(column, keep)) for column in self)

    def part(self, start: int, stop: int) -> "InetChunk":
        return InetChunk._make(c[start:stop] for c in self)

    @staticmethod
    def concat(chunks: "list[InetChunk]") -> "InetChunk":
        if len(chunks) == 1:
            return chunks[0]
        return InetChunk._make(
            list(itertools.chain.from_iterable(c)) for c in zip(*chunks, strict=True)
        )


class UnixChunk(NamedTuple):
    """UNIX sockets of one kernel message batch, as columns (see :class:`InetChunk`).

    ``type`` is SOCK_STREAM/SOCK_DGRAM/SOCK_SEQPACKET; ``name`` the raw ``sun_path`` (None when
    unnamed, a leading NUL for an abstract name); ``peer`` the peer's inode (0: none); ``uid`` None
    where the source cannot tell (/proc/net/unix).
    """

    type: Sequence[int]
    state: Sequence[int]
    recv_q: Sequence[int]
    send_q: Sequence[int]
    inode: Sequence[int]
    name: Sequence[bytes | None]
    peer: Sequence[int]
    uid: Sequence[int | None]
    details: Sequence[Details] = ()

    @classmethod
    def from_rows(cls, rows: list[tuple[Any, ...]]) -> "UnixChunk":
        return cls._make(_columns(rows, len(cls._fields)))

    def count(self) -> int:  # type: ignore[override]
        return len(self.inode)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """The sockets one tuple each, in the columns' order, without their details."""
        return zip(*self[:-1], strict=True)

    def select(self, keep: Sequence[bool]) -> "UnixChunk":
        return UnixChunk._make(list(itertools.compress(column, keep)) for column in self)

    def part(self, start: int, stop: int) -> "UnixChunk":
        return UnixChunk._make(c[start:stop] for c in self)

    @staticmethod
    def concat(chunks: "list[UnixChunk]") -> "UnixChunk":
        if len(chunks) == 1:
            return chunks[0]
        return UnixChunk._make(
            list(itertools.chain.from_iterable(c)) for c in zip(*chunks, strict=True)
        )


_End = bool | OSError | None
"""How a reply buffer ends the dump: None (more follows), True (NLMSG_DONE), or the error."""


class SockDiagUnavailable(OSError):
    """The kernel has no sock_diag handler for this family/protocol (not built in, not loadable)."""


class DestroyUnsupported(OSError):
    """The kernel cannot close sockets through sock_diag (no ``CONFIG_INET_DIAG_DESTROY``)."""


def run_in_netns(ns_fd: int | None, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in the network namespace ``ns_fd`` and return its result; None: right here.

    With an fd it runs on a short-lived thread that setns()es and then dies (linux.run_in_thread):
    no shared thread ever changes namespace. Sockets and ``/proc/thread-self/net`` files that ``fn``
    opens stay bound to that namespace and can be used from any thread afterwards.
    """
    if ns_fd is None:
        return fn()

    def inside() -> _T:
        linux.setns(ns_fd, linux.CLONE_NEWNET)
        return fn()

    return linux.run_in_thread(inside)


class DiagSocket:
    """A NETLINK_SOCK_DIAG socket: dumps the sockets of the namespace it was created in.

    ::

        with run_in_netns(ns_fd, DiagSocket.open) as diag:
            for state, rq, sq, inode, local, lport, remote, rport, uid in diag.inet(
                socket.AF_INET, socket.IPPROTO_TCP, 1 << TCP_LISTEN
            ):
                print(local, lport)

    One dump at a time. A dump abandoned half-way (its iterator closed before the end) would leave
    the rest of the kernel's answer queued and read as the next dump's: the socket is closed instead,
    and later dumps raise ``OSError(EBADF)``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0
        # Address text by raw bytes, per family: "::" and "0.0.0.0" have the same 16 bytes.
        self._addresses: dict[int, _Addresses] = {
            socket.AF_INET: _Addresses(socket.AF_INET),
            socket.AF_INET6: _Addresses(socket.AF_INET6),
        }

    @classmethod
    def open(cls) -> "DiagSocket":
        """A sock_diag socket in the calling thread's network namespace."""
        try:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
            )
        except OSError as exc:
            raise _translate(exc) from exc
        return cls(sock)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "DiagSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inet(
        self, family: int, protocol: int, states: int, bytecode: bytes = b"", ext: int | None = None
    ) -> Iterator[InetChunk]:
        """TCP, UDP or RAW sockets of ``family`` (AF_INET, AF_INET6) whose state is in ``states``.

        ``states`` is a bit mask of ``1 << TCP_*``; ``bytecode`` a filter from
        :func:`filter_bytecode` that the kernel runs on each socket. Yields one
        :class:`InetChunk` per kernel message batch (a few hundred sockets). Raises
        :class:`SockDiagUnavailable` when the kernel has no handler for the protocol (RAW needs
        ``CONFIG_INET_RAW_DIAG``).

        ``ext`` (:data:`EXT_INFO`, :data:`EXT_MEMORY`, or 0) fills each chunk's ``details``: cookie,
        timer, and the attributes asked for; None leaves them out (the fast path).
        """
        raw_protocol = 0
        if protocol not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            # raw_diag is selected with sdiag_protocol = IPPROTO_RAW; the IP protocol to match
            # (0: all) goes in the pad byte, sdiag_raw_protocol (net/ipv4/raw_diag.c).
            raw_protocol, protocol = 0, socket.IPPROTO_RAW
        request = self._inet_request(family, protocol, states, bytecode, raw_protocol, ext or 0)
        addresses = self._addresses[family]
        if ext is not None:
            layouts: dict[int, _Layout | None] = {}
            made = [0]
            return self._dump(
                request, lambda buf: _inet_detail_chunk(buf, addresses, layouts, made)
            )
        return self._dump(request, lambda buf: _inet_chunk(buf, addresses))

    def inet_ids(
        self, family: int, protocol: int, states: int, bytecode: bytes = b""
    ) -> "Iterator[_IdChunk]":
        """As :meth:`inet` (TCP or UDP), each chunk with its sockets' raw ``inet_diag_sockid``
        (ports, addresses, interface, cookie): what :meth:`destroy` needs to name one socket."""
        request = self._inet_request(family, protocol, states, bytecode)
        addresses = self._addresses[family]
        return self._dump(request, lambda buf: _inet_id_chunk(buf, addresses))

    def destroy(self, family: int, protocol: int, sockid: bytes) -> bool:
        """Close one TCP/UDP socket (SOCK_DESTROY); False when no such socket exists any more.

        Raises :class:`DestroyUnsupported` when the kernel lacks ``CONFIG_INET_DIAG_DESTROY`` (or
        the protocol's destroy), PermissionError without CAP_NET_ADMIN.
        """
        request = _DESTROY_REQUEST.pack(
            _DESTROY_REQUEST.size,
            SOCK_DESTROY,
            _NLM_F_REQUEST | _NLM_F_ACK,
            self._next_seq(),
            0,
            family,
            protocol,
            0,
            0,
            ALL_STATES,
            sockid,
        )
        self._sock.send(request)
        while True:
            buf = self._sock.recv(_RECV_SIZE)
            if len(buf) < _NLMSG_HEADER_SIZE + 4:
                raise OSError(errno.EPROTO, "sock_diag: truncated netlink message")
            _, kind = _NLMSG_HEADER.unpack_from(buf, 0)
            if kind != _NLMSG_ERROR:
                continue  # nothing else is sent for a SOCK_DESTROY; skip rather than misread
            (code,) = _ERRNO.unpack_from(buf, _NLMSG_HEADER_SIZE)
            if code == 0:
                return True
            if -code == errno.ENOENT:
                return False
            if -code == errno.EOPNOTSUPP:
                raise DestroyUnsupported(
                    errno.EOPNOTSUPP,
                    "the kernel cannot close sockets from outside (CONFIG_INET_DIAG_DESTROY is "
                    "not set)",
                )
            raise OSError(-code, f"sock_diag: SOCK_DESTROY: {os.strerror(-code)}")

    def _inet_request(
        self,
        family: int,
        protocol: int,
        states: int,
        bytecode: bytes,
        raw_protocol: int = 0,
        ext: int = 0,
    ) -> bytes:
        attribute = _NLATTR.pack(_NLATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE)
        request = _INET_REQUEST.pack(
            _INET_REQUEST.size + (len(attribute) + len(bytecode) if bytecode else 0),
            SOCK_DIAG_BY_FAMILY,
            _NLM_F_REQUEST | _NLM_F_DUMP,
            self._next_seq(),
            0,
            family,
            protocol,
            ext,
            raw_protocol,
            states,
        )
        return request + attribute + bytecode if bytecode else request

    def unix(self, states: int, memory: bool | None = None) -> Iterator[UnixChunk]:
        """UNIX sockets whose state is in ``states`` (LISTEN, ESTABLISHED, CLOSE = unconnected),
        one list per kernel message batch. ``memory`` not None fills ``details`` (cookie, and with
        True the sk_meminfo counters)."""
        show = _UDIAG_SHOW_NAME | _UDIAG_SHOW_PEER | _UDIAG_SHOW_RQLEN | _UDIAG_SHOW_UID
        if memory:
            show |= _UDIAG_SHOW_MEMINFO
        request = _UNIX_REQUEST.pack(
            _UNIX_REQUEST.size,
            SOCK_DIAG_BY_FAMILY,
            _NLM_F_REQUEST | _NLM_F_DUMP,
            self._next_seq(),
            0,
            socket.AF_UNIX,
            0,
            0,
            states,
            0,
            show,
        )
        if memory is not None:
            return self._dump(request, functools.partial(_unix_chunk, details=True))
        return self._dump(request, _unix_chunk)

    def _dump(self, request: bytes, parse: Callable[[bytes], tuple[_C, "_End"]]) -> Iterator[_C]:
        """Send a dump request; yield each reply buffer's chunk until the kernel's NLMSG_DONE."""
        done = False
        try:
            self._send(request)
            while not done:
                buf = self._sock.recv(_RECV_SIZE)
                if len(buf) < _NLMSG_HEADER_SIZE:
                    raise OSError(errno.EPROTO, "sock_diag: truncated netlink message")
                chunk, end = parse(buf)
                if end is not None:
                    done = True  # DONE or ERROR ends the dump: nothing of it stays queued
                    if isinstance(end, OSError):
                        raise end
                if chunk.count():
                    yield chunk
        finally:
            if not done:
                self.close()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, request: bytes) -> None:
        try:
            self._sock.send(request)
        except OSError as exc:
            raise _translate(exc) from exc


# inet_diag filter bytecode (include/uapi/linux/inet_diag.h, net/ipv4/inet_diag.c) -----------------

_INET_DIAG_REQ_BYTECODE = 1
_BC_JMP = 1
_BC_S_GE, _BC_S_LE, _BC_D_GE, _BC_D_LE = 2, 3, 4, 5
_BC_S_COND, _BC_D_COND = 7, 8
_BC_OP = struct.Struct("=BBH")  # struct inet_diag_bc_op: code, yes, no
_HOSTCOND = struct.Struct("=BB2xi")  # struct inet_diag_hostcond: family, prefix_len, port
_MAX_BYTECODE = 65535 - 8
"""A jump (``no``) is 16 bits: longer programs are not sent (the daemon's own check still runs)."""


def filter_bytecode(expr: p.SockExpr) -> bytes:
    """A filter expression as inet_diag bytecode, so the kernel drops what does not match.

    Built as ss builds it (misc/ss.c, ssfilter_bytecompile): a program's ops run in sequence; each
    goes ``yes`` bytes on when its test holds and ``no`` bytes on when not, and the socket matches
    when the run ends exactly at the end (a fragment's "false" exit is 4 bytes past its end).
    ``and`` concatenates (the first part's false exits moved past the second), ``or`` puts an
    always-taken jump to the end between its parts, ``not`` one to the false exit after its part.
    The kernel audits the program (inet_diag_bc_audit) before it runs it. Returns b"" when the
    program would be too long to address; the daemon's predicate filters alone then.
    """
    code = _compile(expr)
    return code if len(code) <= _MAX_BYTECODE else b""


def _compile(expr: p.SockExpr) -> bytes:
    if isinstance(expr, p.SockAnd | p.SockOr):
        parts = [_compile(arg) for arg in expr.args]
        combine = _bc_and if isinstance(expr, p.SockAnd) else _bc_or
        code = parts[0]
        for part in parts[1:]:
            code = combine(code, part)
        return code
    if isinstance(expr, p.SockNot):
        return _bc_not(_compile(expr.arg))
    if isinstance(expr, p.SockPortMatch):
        source = expr.op == "sport"
        if expr.cmp in ("eq", "ne"):
            test = _bc_hostcond(source, None, expr.port)
            return test if expr.cmp == "eq" else _bc_not(test)
        # lt = not ge, gt = not le, as ss compiles them.
        ge = expr.cmp in ("ge", "lt")
        op = (_BC_S_GE if ge else _BC_S_LE) if source else (_BC_D_GE if ge else _BC_D_LE)
        test = _BC_OP.pack(op, 8, 12) + _BC_OP.pack(0, 0, expr.port)
        return test if expr.cmp in ("ge", "le") else _bc_not(test)
    network = None if expr.address is None else ipaddress.ip_network(expr.address, strict=False)
    return _bc_hostcond(expr.op == "src", network, expr.port)


def _bc_hostcond(
    source: bool,
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
    port: int | None,
) -> bytes:
    """A S_COND/D_COND op: the port (unless None) and the address prefix (unless None) match."""
    if network is None:
        family, prefix, address = socket.AF_UNSPEC, 0, b""
    else:
        family = socket.AF_INET if network.version == 4 else socket.AF_INET6
        prefix, address = network.prefixlen, network.network_address.packed
    size = _BC_OP.size + _HOSTCOND.size + len(address)
    op = _BC_OP.pack(_BC_S_COND if source else _BC_D_COND, size, size + 4)
    return op + _HOSTCOND.pack(family, prefix, -1 if port is None else port) + address


def _bc_and(first: bytes, second: bytes) -> bytes:
    return _relocate_false_exits(first, len(second)) + second


def _bc_or(first: bytes, second: bytes) -> bytes:
    return first + _BC_OP.pack(_BC_JMP, 4, len(second) + 4) + second


def _bc_not(code: bytes) -> bytes:
    return code + _BC_OP.pack(_BC_JMP, 4, 8)


def _relocate_false_exits(code: bytes, by: int) -> bytes:
    """``code`` with its jumps to its false exit (4 bytes past its end) moved ``by`` bytes on."""
    out = bytearray(code)
    offset = 0
    while offset < len(out):
        op, yes, no = _BC_OP.unpack_from(out, offset)
        if offset + no == len(out) + 4:
            _BC_OP.pack_into(out, offset, op, yes, no + by)
        offset += yes
    return bytes(out)


class _Addresses(dict[bytes, str]):
    """Address text by the 16 raw bytes sock_diag sends. A hit is a C-level dict lookup (inside
    ``map``); only a miss runs ``inet_ntop``. Addresses repeat: every connection to a server
    shares its local address."""

    def __init__(self, family: int) -> None:
        super().__init__()
        self.family = family
        self.width = 4 if family == socket.AF_INET else 16

    def __missing__(self, raw: bytes) -> str:
        if len(self) >= _ADDRESS_CACHE:
            self.clear()  # bounded, on hosts talking to very many peers
        text = self[raw] = socket.inet_ntop(self.family, raw[: self.width])
        return text


_inet_structs: dict[int, struct.Struct] = {}
"""_INET_MSG padded to each message size seen (a handful: they differ only by attributes)."""


def _inet_struct(step: int) -> struct.Struct:
    found = _inet_structs.get(step)
    if found is None:
        found = _inet_structs[step] = struct.Struct(f"{_INET_MSG.format} {step - _INET_MSG.size}x")
    return found


def _inet_chunk(buf: bytes, addresses: _Addresses) -> tuple[InetChunk, _End]:
    """The sockets of one reply buffer, and how it ends the dump.

    Fast path: the kernel sends every socket of a table with the same attributes, so a buffer is
    usually N messages of one size (plus NLMSG_DONE at the end of the last): one ``iter_unpack``
    reads them all, and the lengths and types it returns prove the assumption. A buffer that mixes
    sizes (TIME-WAIT sockets carry no attributes) goes message by message.
    """
    length, kind = _NLMSG_HEADER.unpack_from(buf, 0)
    step = (length + 3) & ~3
    if kind != SOCK_DIAG_BY_FAMILY or step < _INET_MSG.size:
        return _inet_chunk_slowly(buf, addresses)
    count, rest = divmod(len(buf), step)
    body = count * step
    end: _End = None
    if rest:  # the last buffer: the sockets, then NLMSG_DONE
        if rest < _NLMSG_HEADER_SIZE:
            return _inet_chunk_slowly(buf, addresses)
        tail_length, tail_kind = _NLMSG_HEADER.unpack_from(buf, body)
        if tail_length != rest:
            return _inet_chunk_slowly(buf, addresses)
        end = _control(buf, body, tail_kind, tail_length)
    rows = _inet_struct(step).iter_unpack(memoryview(buf)[:body])
    lengths, kinds, state, sport, dport, src, dst, rq, wq, uid, inode = zip(*rows, strict=True)
    if set(lengths) != {length} or set(kinds) != {SOCK_DIAG_BY_FAMILY}:
        return _inet_chunk_slowly(buf, addresses)  # sizes differ: the guess was wrong
    local = list(map(addresses.__getitem__, src))
    remote = list(map(addresses.__getitem__, dst))
    return InetChunk(state, rq, wq, inode, local, _ports(sport), remote, _ports(dport), uid), end


def _ports(network_order: Sequence[int]) -> list[int]:
    ports = array.array("H", network_order)
    if sys.byteorder == "little":
        ports.byteswap()
    return ports.tolist()


def _inet_chunk_slowly(buf: bytes, addresses: _Addresses) -> tuple[InetChunk, _End]:
    rows: list[tuple[Any, ...]] = []
    offset, end = 0, len(buf)
    while offset < end:
        try:
            (length, kind, state, sport, dport, src, dst, rq, wq, uid, inode) = (
                _INET_MSG.unpack_from(buf, offset)
            )
        except struct.error:  # shorter than a socket's message: DONE or an error
            length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
        if kind != SOCK_DIAG_BY_FAMILY:
            status = _control(buf, offset, kind, length)
            if status is not None:
                return InetChunk.from_rows(rows), status
        else:
            rows.append((state, rq, wq, inode, addresses[src], sport, addresses[dst], dport, uid))
        offset += (length + 3) & ~3
    chunk = InetChunk.from_rows(rows)
    return chunk._replace(
        local_port=_ports(chunk.local_port), remote_port=_ports(chunk.remote_port)
    ), None


INET_DIAG_MEMINFO = 1
INET_DIAG_INFO = 2
INET_DIAG_CONG = 4
INET_DIAG_SKMEMINFO = 7
INET_DIAG_SHUTDOWN = 8
INET_DIAG_SKV6ONLY = 11
INET_DIAG_CGROUP_ID = 21
EXT_INFO = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1))
"""inet_diag_req_v2.idiag_ext bits for tcp_info and the congestion control's name (ss -i)."""
EXT_MEMORY = 1 << (INET_DIAG_SKMEMINFO - 1)
"""idiag_ext bit for sk_meminfo (ss -m)."""

_INET_DETAIL_MSG = struct.Struct("=IH10x xBBB HH16s16s 4xII I IIII")
"""inet_diag_msg with its timer, retransmits, cookie and timer expiry."""


def _meminfo(buf: bytes, at: int, length: int) -> list[int]:
    """sk_meminfo counters (SK_MEMINFO_*: rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc,
    wmem_queued, optmem, backlog, drops); as many as the kernel sent."""
    count = length // 4
    return list(struct.unpack_from(f"={count}I", buf, at))


def _inet_attributes(
    buf: bytes, at: int, stop: int
) -> tuple[bytes | None, str | None, list[int] | None, bool | None, int | None, int | None]:
    """A socket message's tcp_info (the kernel's struct, as it sent it), its congestion control's
    name, sk_meminfo, IPV6_V6ONLY (sent for every IPv6 socket), shutdown bits and cgroup id (sent
    for every socket)."""
    info: bytes | None = None
    congestion: str | None = None
    skmem: list[int] | None = None
    v6only: bool | None = None
    shutdown: int | None = None
    cgroup: int | None = None
    attr = _NLATTR.unpack_from
    while at + 4 <= stop:
        attr_len, attr_type = attr(buf, at)
        if attr_len < 4:
            break
        if attr_type == INET_DIAG_INFO:
            info = buf[at + 4 : at + attr_len]
        elif attr_type == INET_DIAG_CONG:
            congestion = buf[at + 4 : at + attr_len].split(b"\0", 1)[0].decode("ascii", "replace")
        elif attr_type == INET_DIAG_SKMEMINFO:
            skmem = _meminfo(buf, at + 4, attr_len - 4)
        elif attr_type == INET_DIAG_SKV6ONLY and attr_len > 4:
            v6only = buf[at + 4] != 0
        elif attr_type == INET_DIAG_SHUTDOWN and attr_len > 4:
            shutdown = buf[at + 4]
        elif attr_type == INET_DIAG_CGROUP_ID and attr_len >= 12:
            (cgroup,) = _U64.unpack_from(buf, at + 4)
        at += (attr_len + 3) & ~3
    return info, congestion, skmem, v6only, shutdown, cgroup


class _Layout(NamedTuple):
    """How one shape of socket message is laid out: a struct for the whole message (header, every
    attribute's header and payload) and where its parts land in the unpacked tuple. A dump's
    sockets come in a handful of shapes (listening, connected, per family), so one unpack per
    message replaces a walk through its attributes; the attribute headers it unpacks must equal
    those the layout was made from, else the message takes the walk."""

    unpack_from: Callable[[bytes, int], tuple[Any, ...]]
    headers: Callable[[tuple[Any, ...]], Any]
    expected: Any
    info: int | None
    congestion: int | None
    skmem: slice | None
    v6only: int | None
    shutdown: int | None
    cgroup: int | None


_MAX_LAYOUTS = 64
"""Layouts a dump may make (a message of a new shape costs one walk more): a bound for dumps
whose messages all differ, which then take the walk."""
_MSG_VALUES = 16  # the values _INET_DETAIL_MSG unpacks


def _layout(buf: bytes, offset: int, length: int) -> _Layout | None:
    """The layout of the message at ``offset`` (None when its attributes do not tile it)."""
    parts = [_INET_DETAIL_MSG.format.lstrip("=")]
    index, at, stop = _MSG_VALUES, offset + _INET_DETAIL_MSG.size, offset + length
    headers: list[int] = []
    expected: list[int] = []
    where: dict[str, int] = {}
    skmem: slice | None = None
    while at + 4 <= stop:
        attr_len, attr_type = _NLATTR.unpack_from(buf, at)
        if attr_len < 4 or at + attr_len > stop:
            return None
        size = attr_len - 4
        parts.append("HH")
        headers += (index, index + 1)
        expected += (attr_len, attr_type)
        index += 2
        if attr_type in (INET_DIAG_INFO, INET_DIAG_CONG):
            parts.append(f"{size}s")
            where["info" if attr_type == INET_DIAG_INFO else "congestion"] = index
            index += 1
        elif attr_type == INET_DIAG_SKMEMINFO:
            parts.append(f"{size // 4}I{size % 4}x")
            skmem = slice(index, index + size // 4)
            index += size // 4
        elif attr_type in (INET_DIAG_SHUTDOWN, INET_DIAG_SKV6ONLY) and size >= 1:
            parts.append(f"B{size - 1}x")
            where["shutdown" if attr_type == INET_DIAG_SHUTDOWN else "v6only"] = index
            index += 1
        elif attr_type == INET_DIAG_CGROUP_ID and size >= 8:
            parts.append(f"Q{size - 8}x")
            where["cgroup"] = index
            index += 1
        else:
            parts.append(f"{size}x")
        padded = min((attr_len + 3) & ~3, stop - at)
        parts.append(f"{padded - attr_len}x")
        at += padded
    parts.append(f"{stop - at}x")
    whole = struct.Struct("=" + "".join(parts))
    if whole.size != length:
        return None
    getter: Callable[[tuple[Any, ...]], Any] = (
        operator.itemgetter(*headers) if headers else (lambda values: ())
    )
    return _Layout(
        whole.unpack_from,
        getter,
        tuple(expected),
        where.get("info"),
        where.get("congestion"),
        skmem,
        where.get("v6only"),
        where.get("shutdown"),
        where.get("cgroup"),
    )


@functools.cache
def _congestion_name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _inet_detail_chunk(
    buf: bytes, addresses: _Addresses, layouts: dict[int, _Layout | None], made: list[int]
) -> tuple[InetChunk, _End]:
    """The sockets of one reply buffer with their :data:`Details`, message by message (the
    attributes differ from socket to socket); ``layouts`` (by message length) and ``made`` (how
    many were made) are the dump's."""
    rows: list[tuple[Any, ...]] = []
    offset, end = 0, len(buf)
    status: _End = None
    header = _NLMSG_HEADER.unpack_from
    while offset < end:
        length, kind = header(buf, offset)
        layout = layouts.get(length) if kind == SOCK_DIAG_BY_FAMILY else None
        if layout is not None and offset + length <= end:
            values = layout.unpack_from(buf, offset)
            if layout.headers(values) == layout.expected:
                (state, timer, retrans, sport, dport, src, dst, low, high, expires, rq, wq, uid,
                 inode) = values[2:_MSG_VALUES]  # fmt: skip
                at = layout.info
                info = None if at is None else values[at]
                at = layout.congestion
                congestion = None if at is None else _congestion_name(values[at])
                part = layout.skmem
                skmem = None if part is None else list(values[part])
                at = layout.v6only
                v6only = None if at is None else values[at] != 0
                at = layout.shutdown
                shutdown = None if at is None else values[at]
                at = layout.cgroup
                cgroup = None if at is None else values[at]
                timed = (timer, expires, retrans) if timer else None
                details = (
                    low | high << 32,
                    v6only,
                    timed,
                    info,
                    skmem,
                    shutdown,
                    congestion,
                    cgroup,
                )
                rows.append(
                    (
                        state,
                        rq,
                        wq,
                        inode,
                        addresses[src],
                        sport,
                        addresses[dst],
                        dport,
                        uid,
                        details,
                    )
                )
                offset += (length + 3) & ~3
                continue
        try:
            (length, kind, state, timer, retrans, sport, dport, src, dst, low, high, expires, rq, wq,
             uid, inode) = _INET_DETAIL_MSG.unpack_from(buf, offset)  # fmt: skip
        except struct.error:
            length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
        if kind != SOCK_DIAG_BY_FAMILY:
            status = _control(buf, offset, kind, length)
            if status is not None:
                break
            offset += (length + 3) & ~3
            continue
        info, congestion, skmem, v6only, shutdown, cgroup = _inet_attributes(
            buf, offset + _INET_DETAIL_MSG.size, offset + length
        )
        if made[0] < _MAX_LAYOUTS and offset + length <= end:
            layouts[length] = _layout(buf, offset, length)  # a new shape, or one that changed
            made[0] += 1
        timed = (timer, expires, retrans) if timer else None
        details = (low | high << 32, v6only, timed, info, skmem, shutdown, congestion, cgroup)
        rows.append(
            (state, rq, wq, inode, addresses[src], sport, addresses[dst], dport, uid, details)
        )
        offset += (length + 3) & ~3
    chunk = InetChunk.from_rows(rows)
    return chunk._replace(
        local_port=_ports(chunk.local_port), remote_port=_ports(chunk.remote_port)
    ), status


SKNLGRP_GROUPS: dict[tuple[int, int], int] = {
    (socket.AF_INET, socket.IPPROTO_TCP): 1,  # SKNLGRP_INET_TCP_DESTROY
    (socket.AF_INET, socket.IPPROTO_UDP): 2,
    (socket.AF_INET6, socket.IPPROTO_TCP): 3,
    (socket.AF_INET6, socket.IPPROTO_UDP): 4,
}
"""sock_diag's multicast groups (include/uapi/linux/sock_diag.h) by the sockets they report."""
INET_DIAG_PROTOCOL = 10
_EVENTS_BUFFER = 4 << 20


class DestroyEvents:
    """A sock_diag socket in the kernel's socket-destroy groups: what ``ss -E`` reads.

    The kernel sends one message per TCP/UDP socket it destroys (a dump's message, with the
    protocol as an attribute) to every socket of the namespace that joined the group. Joining
    needs CAP_NET_ADMIN over the namespace.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._addresses: dict[int, _Addresses] = {
            family: _Addresses(family) for family in (socket.AF_INET, socket.AF_INET6)
        }
        self._layouts: dict[int, _Layout | None] = {}
        self._made = [0]

    @classmethod
    def open(cls, tables: Iterable[tuple[int, int]]) -> "DestroyEvents":
        """Join the groups of ``tables`` ((family, protocol) pairs), in the calling thread's
        network namespace. Raises PermissionError without CAP_NET_ADMIN."""
        mask = 0
        for table in tables:
            mask |= 1 << (SKNLGRP_GROUPS[table] - 1)
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
        )
        try:
            with contextlib.suppress(PermissionError):  # a bigger buffer loses fewer in a burst
                sock.setsockopt(socket.SOL_SOCKET, 33, _EVENTS_BUFFER)  # SO_RCVBUFFORCE
            sock.bind((0, mask))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return cls(sock)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self) -> tuple[list[tuple[int, int, InetChunk]], bool]:
        """What is waiting: (family, protocol, one socket's chunk with its details) for each
        destroyed socket, and whether the kernel dropped some since the last read (ENOBUFS: its
        buffer overflowed)."""
        try:
            buf = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return [], False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return [], True
            raise
        found: list[tuple[int, int, InetChunk]] = []
        offset, end = 0, len(buf)
        while offset + _NLMSG_HEADER_SIZE <= end:
            length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
            if length < _NLMSG_HEADER_SIZE or offset + length > end:
                break
            if kind == SOCK_DIAG_BY_FAMILY and length > _INET_DETAIL_MSG.size:
                family = buf[offset + _NLMSG_HEADER_SIZE]
                protocol = _u8_attribute(
                    buf, offset + _INET_DETAIL_MSG.size, offset + length, INET_DIAG_PROTOCOL
                )
                if family in self._addresses and protocol is not None:
                    message = buf[offset : offset + length]
                    chunk, _ = _inet_detail_chunk(
                        message, self._addresses[family], self._layouts, self._made
                    )
                    if chunk.count():
                        found.append((family, protocol, chunk))
            offset += (length + 3) & ~3
        return found, False


def _u8_attribute(buf: bytes, at: int, stop: int, wanted: int) -> int | None:
    while at + 4 <= stop:
        attr_len, attr_type = _NLATTR.unpack_from(buf, at)
        if attr_len < 4:
            return None
        if attr_type == wanted and attr_len > 4:
            return buf[at + 4]
        at += (attr_len + 3) & ~3
    return None


def _inet_id_chunk(buf: bytes, addresses: _Addresses) -> "tuple[_IdChunk, _End]":
    """:func:`_inet_chunk_slowly` that also keeps each socket's raw sockid (for SOCK_DESTROY)."""
    rows: list[tuple[Any, ...]] = []
    ids: list[bytes] = []
    offset, end = 0, len(buf)
    status: _End = None
    while offset < end:
        try:
            (length, kind, state, sockid, rq, wq, uid, inode) = _INET_ID_MSG.unpack_from(
                buf, offset
            )
        except struct.error:
            length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
        if kind != SOCK_DIAG_BY_FAMILY:
            status = _control(buf, offset, kind, length)
            if status is not None:
                break
        else:
            sport, dport, src, dst = _SOCKID.unpack_from(sockid)
            rows.append((state, rq, wq, inode, addresses[src], sport, addresses[dst], dport, uid))
            ids.append(sockid)
        offset += (length + 3) & ~3
    chunk = InetChunk.from_rows(rows)
    chunk = chunk._replace(
        local_port=_ports(chunk.local_port), remote_port=_ports(chunk.remote_port)
    )
    return _IdChunk(chunk, ids), status


class _IdChunk(NamedTuple):
    """An InetChunk with its sockets' raw ids; counts like one (for DiagSocket._dump)."""

    chunk: InetChunk
    ids: list[bytes]

    def count(self) -> int:  # type: ignore[override]
        return len(self.ids)


def _unix_chunk(buf: bytes, details: bool = False) -> tuple[UnixChunk, _End]:
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    unpack = _UNIX_MSG.unpack_from
    size = _UNIX_MSG.size
    attr = _NLATTR.unpack_from
    u32 = _U32.unpack_from
    offset, end = 0, len(buf)
    while offset < end:
        try:
            length, kind, sock_type, state, inode = unpack(buf, offset)
        except struct.error:
            length, kind = _NLMSG_HEADER.unpack_from(buf, offset)
        if kind != SOCK_DIAG_BY_FAMILY:
            status = _control(buf, offset, kind, length)
            if status is not None:
                return UnixChunk.from_rows(rows), status
            offset += (length + 3) & ~3
            continue
        name: bytes | None = None
        peer = rq = wq = 0
        uid: int | None = None
        skmem: list[int] | None = None
        shutdown: int | None = None
        at, stop = offset + size, offset + length
        while at + 4 <= stop:
            attr_len, attr_type = attr(buf, at)
            if attr_len < 4:
                break
            if attr_type == _UNIX_DIAG_NAME:
                name = _unix_name(buf[at + 4 : at + attr_len])
            elif attr_type == _UNIX_DIAG_PEER:
                (peer,) = u32(buf, at + 4)
            elif attr_type == _UNIX_DIAG_RQLEN:
                rq, wq = _RQLEN.unpack_from(buf, at + 4)
            elif attr_type == _UNIX_DIAG_UID:
                (uid,) = u32(buf, at + 4)
            elif attr_type == _UNIX_DIAG_MEMINFO:
                skmem = _meminfo(buf, at + 4, attr_len - 4)
            elif attr_type == _UNIX_DIAG_SHUTDOWN and attr_len > 4:
                shutdown = buf[at + 4]
            at += (attr_len + 3) & ~3
        row = (sock_type, state, rq, wq, inode, name, peer, uid)
        append((*row, _unix_details(buf, offset, skmem, shutdown)) if details else row)
        offset += (length + 3) & ~3
    return UnixChunk.from_rows(rows), None


def _unix_details(
    buf: bytes, offset: int, skmem: list[int] | None, shutdown: int | None
) -> Details:
    low, high = _UNIX_COOKIE.unpack_from(buf, offset + _UNIX_MSG.size - 8)
    return (low | high << 32, None, None, None, skmem, shutdown, None, None)


def _unix_name(raw: bytes) -> bytes:
    """A pathname ends at its first NUL (binders may count the terminator in addrlen, as ss
    assumes); every byte of an abstract name (leading NUL) is significant."""
    if raw[:1] == b"\0":
        return raw
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _control(buf: bytes, offset: int, kind: int, length: int) -> _End:
    """A netlink control message inside a dump: True at NLMSG_DONE, the error for a failure,
    None for one to skip (NLMSG_NOOP)."""
    if kind == _NLMSG_DONE:
        # A dump that fails to start (no handler for the protocol: ENOENT) ends with an NLMSG_DONE
        # carrying the negative errno (net/netlink/af_netlink.c, netlink_dump_done).
        if length >= _NLMSG_HEADER_SIZE + 4:
            (code,) = _ERRNO.unpack_from(buf, offset + _NLMSG_HEADER_SIZE)
            if code < 0:
                return _translate(OSError(-code, f"sock_diag: {os.strerror(-code)}"))
        return True
    if kind == _NLMSG_ERROR:
        (code,) = _ERRNO.unpack_from(buf, offset + _NLMSG_HEADER_SIZE)
        return _translate(OSError(-code, f"sock_diag: {os.strerror(-code)}"))
    if length < _NLMSG_HEADER_SIZE:
        return OSError(errno.EPROTO, "sock_diag: malformed netlink message")
    return None


def _translate(exc: OSError) -> OSError:
    # ENOENT: no handler for this family/protocol (sock_diag_lock_handler, inet_diag_lock_handler);
    # EPROTONOSUPPORT: no NETLINK_SOCK_DIAG at all.
    if exc.errno in (errno.ENOENT, errno.EPROTONOSUPPORT, errno.EOPNOTSUPP):
        return SockDiagUnavailable(exc.errno, f"sock_diag unavailable: {exc.strerror}")
    return exc


# /proc/net fallback --------------------------------------------------------------------------------


def open_proc_net(name: str) -> IO[bytes]:
    """Open ``/proc/thread-self/net/NAME`` of the calling thread's namespace (see run_in_netns).

    The open file keeps reading that namespace's table after the thread is gone.
    """
    return open(f"/proc/thread-self/net/{name}", "rb")


def _hex_address(text: bytes, family: int) -> str:
    # /proc/net/{tcp,udp,raw}6? print each 32-bit word of the network-order address with %08X,
    # i.e. in host byte order (net/ipv4/tcp_ipv4.c get_tcp4_sock, net/ipv6/tcp_ipv6.c).
    raw = bytes.fromhex(text.decode())
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw)


_CHUNK_ROWS = 256


def proc_net_inet(file: IO[bytes], family: int, states: int) -> Iterator[InetChunk]:
    """The sockets of an open ``/proc/net/{tcp,udp,raw}{,6}`` file in ``states``, in chunks like
    :meth:`DiagSocket.inet`."""
    file.readline()  # the header
    rows: list[tuple[Any, ...]] = []
    for line in file:
        fields = line.split()
        if len(fields) < 10:
            continue
        state = int(fields[3], 16)
        if not states & (1 << state):
            continue
        local, _, lport = fields[1].partition(b":")
        remote, _, rport = fields[2].partition(b":")
        tx, _, rx = fields[4].partition(b":")
        rows.append(
            (
                state,
                int(rx, 16),
                int(tx, 16),
                int(fields[9]),
                _hex_address(local, family),
                int(lport, 16),
                _hex_address(remote, family),
                int(rport, 16),
                int(fields[7]),
            )
        )
        if len(rows) >= _CHUNK_ROWS:
            yield InetChunk.from_rows(rows)
            rows = []
    if rows:
        yield InetChunk.from_rows(rows)


_SO_ACCEPTCON = 0x10000  # __SO_ACCEPTCON: a listening socket (net/unix/af_unix.c unix_seq_show)


def proc_net_unix(file: IO[bytes], states: int) -> Iterator[UnixChunk]:
    """The sockets of an open ``/proc/net/unix``, in chunks; it has no peer, queues or uid.

    The kernel prints an abstract name with ``@`` for its NULs, so inner NULs cannot be recovered.
    """
    file.readline()
    rows: list[tuple[Any, ...]] = []
    for line in file:
        # Num RefCount Protocol Flags Type St Inode [Path]; the path may contain spaces.
        fields = line.rstrip(b"\n").split(maxsplit=7)
        if len(fields) < 7:
            continue
        flags, kind, st = int(fields[3], 16), int(fields[4], 16), int(fields[5], 16)
        # St is the socket_state: 1 unconnected, 2 connecting, 3 connected, 4 disconnecting.
        if flags & _SO_ACCEPTCON:
            state = TCP_LISTEN
        elif st == 3:
            state = TCP_ESTABLISHED
        elif st == 2:
            state = TCP_SYN_SENT
        else:
            state = TCP_CLOSE
        if not states & (1 << state):
            continue
        name: bytes | None = None
        if len(fields) > 7:
            path = fields[7]
            name = b"\0" + path[1:] if path.startswith(b"@") else path
        rows.append((kind, state, 0, 0, int(fields[6]), name, 0, None))
        if len(rows) >= _CHUNK_ROWS:
            yield UnixChunk.from_rows(rows)
            rows = []
    if rows:
        yield UnixChunk.from_rows(rows)


# Process attribution -------------------------------------------------------------------------------


@dataclass
class Holders:
    """Which processes hold which sockets, from one scan of the host's fd tables.

    Compact on purpose (a listing of 100 000 connections holds ~200 000 entries): the finds are
    two arrays of u64 -- socket inode and holder packed as ``pid << 32 | fd`` -- 16 bytes per
    entry, looked up through one sorted array of ``inode << 32 | row`` keys (bisect). A dict of
    Python ints took ~160 bytes per entry here (31 MiB at 200 000; bench/socklist.py's peak RSS).
    A socket held by several processes (after fork, or passed over SCM_RIGHTS) has several rows.
    ``names`` maps a pid to its command name (``/proc/PID/comm``, what ss -p shows). Socket inodes
    are unique on the host, so one map serves every namespace.
    """

    names: dict[int, str] = field(default_factory=dict)
    _inodes: "array.array[int]" = field(default_factory=lambda: array.array("Q"))
    _packed: "array.array[int]" = field(default_factory=lambda: array.array("Q"))
    _keys: "Sequence[int] | None" = None

    def add(self, inodes: Iterable[int], packed: Iterable[int]) -> None:
        if not self._inodes and _u64_array(inodes) and _u64_array(packed):
            self._inodes, self._packed = inodes, packed  # the first arrays: taken, not copied
        else:
            self._inodes.extend(inodes)
            self._packed.extend(packed)
        self._keys = None

    def _sorted(self) -> Sequence[int]:
        if self._keys is None:
            inodes = self._inodes
            if len(inodes) < _SORT_PART or max(inodes) >> 32:
                keys = sorted(inode << 32 | row for row, inode in enumerate(inodes))
                try:
                    self._keys = array.array("Q", keys)
                except OverflowError:  # an inode above 2**32 (not from today's kernels)
                    self._keys = keys
                return self._keys
            # Sorted a part at a time, split at sampled quantiles of the inodes: a sort holds a
            # Python int per key (~40 bytes: 8 MB at 200 000 holders), the array 8 bytes.
            parts = -(-len(inodes) // _SORT_PART)
            sample = sorted(inodes[:: max(1, len(inodes) // (64 * parts))])
            bounds = [0, *(sample[len(sample) * i // parts] for i in range(1, parts)), 1 << 32]
            sorted_keys = array.array("Q")
            for low, high in itertools.pairwise(bounds):
                sorted_keys.extend(
                    sorted(
                        inode << 32 | row for row, inode in enumerate(inodes) if low <= inode < high
                    )
                )
            self._keys = sorted_keys
        return self._keys

    def packed_of(self, inode: int) -> list[int]:
        """Each holder of ``inode`` as ``pid << 32 | fd``, once each, in the order found."""
        keys = self._sorted()
        at = bisect.bisect_left(keys, inode << 32)
        found: list[int] = []
        while at < len(keys) and keys[at] >> 32 == inode:
            packed = self._packed[keys[at] & 0xFFFFFFFF]
            if packed not in found:
                found.append(packed)
            at += 1
        return found

    def of(self, inode: int) -> list[tuple[int, int]]:
        """(pid, fd) of each holder of ``inode``."""
        return [(h >> 32, h & 0xFFFFFFFF) for h in self.packed_of(inode)]

    def inodes(self) -> set[int]:
        """Every socket inode with a holder."""
        return set(self._inodes)

    def held_by(self, pid: int) -> set[int]:
        """The inodes process ``pid`` holds."""
        return {
            inode
            for inode, packed in zip(self._inodes, self._packed, strict=True)
            if packed >> 32 == pid
        }

    def __len__(self) -> int:
        return len(self._inodes)


_SORT_PART = 65536
"""Holders sorted at a time: more are sorted in parts (see Holders._sorted)."""


def _u64_array(values: Iterable[int]) -> "typing.TypeGuard[array.array[int]]":
    return isinstance(values, array.array) and values.typecode == "Q"


_VANISHED = (FileNotFoundError, ProcessLookupError)
"""What /proc answers about a process that exited mid-scan (ENOENT, ESRCH)."""


def socket_holders(
    proc: str = "/proc",
    *,
    uid: int | None = None,
    pid: int | None = None,
    helpers: int | None = None,
    files: "taskfiles.TaskFiles | None" = None,
) -> Holders:
    """Map socket inodes to their holders: from the kernel's task_file iterator, or by scanning
    ``/proc/*/fd`` once.

    A whole-host scan (``uid`` and ``pid`` unset) asks ``files`` first: the BPF iterator walks
    every fd table in the kernel, ~10x faster than the readlinks below (:mod:`sockd.taskfiles`).
    Where it is unavailable (no BTF, no CAP_BPF, a container's pid namespace), ``/proc`` is read.

    ``uid`` limits the scan to processes whose ``/proc/PID`` belongs to that uid (their effective
    uid; a non-dumpable process shows as root's), ``pid`` to one process. Both shrink the work: the
    full scan costs a ``readlink`` per open file on the host (~3.5 µs each, nearly all of it in the
    kernel: a C loop is only ~15 % faster than this one).

    A process with at least :data:`_HELPER_MIN` fds (a server holding thousands of connections)
    is read by ``helpers`` helper processes (:class:`_Helper`; default: one per CPU, at most
    :data:`_HELPERS`), in chunks of :data:`_CHUNK` fds dealt in turn, while this thread lists
    the next processes and reads the small ones. Processes, not threads: two processes reading
    100 000 fds each took as long as one alone, while two threads of one interpreter gained only
    ~15 % (the GIL changes hands after every readlink), and the daemon's own thread, which dumps
    sockets meanwhile, would slow them further. A helper is only started for a whole-host scan
    (``uid`` and ``pid`` unset), the one that is big, and only if a slot is free.

    Processes exit and close fds while we walk: a vanished process or fd (ENOENT/ESRCH) is skipped on
    purpose, as ss does; its sockets are then listed without it. A process whose fds we may not read
    (EACCES: no CAP_SYS_PTRACE over it) is skipped too.
    """
    holders = Holders()
    found = files.scan() if files is not None and uid is None and pid is None else None
    if found is not None:
        _merge(holders, *found)
        _name_holders(holders, proc, found[1])
        return holders
    with contextlib.ExitStack() as stack:
        proc_fd = os.open(proc, _DIRECTORY)
        stack.callback(os.close, proc_fd)
        pids = [pid] if pid is not None else [int(n) for n in os.listdir(proc_fd) if n.isdigit()]
        pool: list[_Helper] = []
        wanted = _default_helpers() if helpers is None else helpers
        may_help = wanted > 0 and uid is None and pid is None
        dealt = 0
        for candidate in pids:
            opened = _open_process(proc_fd, candidate, uid)
            if opened is None:
                continue
            with contextlib.closing(opened):
                names = opened.names
                if not may_help or len(names) < _HELPER_MIN:  # most processes: here, at once
                    if _add(holders, [_readlinks(opened.fd_dir, candidate, names)]):
                        holders.names[candidate] = _comm(opened.pid_dir)
                    continue
                if not pool:
                    pool = _start_helpers(proc, wanted, stack)
                    if not pool:  # other scans have all the helpers: read it here
                        may_help = False
                        if _add(holders, [_readlinks(opened.fd_dir, candidate, names)]):
                            holders.names[candidate] = _comm(opened.pid_dir)
                        continue
                for i in range(0, len(names), _CHUNK):
                    pool[dealt % len(pool)].send(candidate, names[i : i + _CHUNK])
                    dealt += 1
                # Named now, while its directory is open: the helpers' finds need the name.
                holders.names[candidate] = _comm(opened.pid_dir)
        for helper in pool:
            _merge(holders, *helper.result())
    return holders


def _default_helpers() -> int:
    cpus = len(os.sched_getaffinity(0))
    return 0 if cpus < 2 else min(cpus, _HELPERS)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_CHUNK = 2048
"""Fds per chunk dealt to this thread or a helper (~7 ms of readlinks)."""
_HELPER_MIN = 4096
"""Fewest fds of a process that is shared with helpers: starting one costs ~15 ms, what ~4 000
readlinks cost."""

_Found = list[tuple[int, int]]
"""(socket inode, pid << 32 | fd) of the sockets among some fds."""


@dataclass
class _Opened:
    """A process being scanned: its /proc directory, its fd directory and the fd names in it."""

    pid: int
    pid_dir: int
    fd_dir: int
    names: list[str]

    def close(self) -> None:
        os.close(self.fd_dir)
        os.close(self.pid_dir)


def _open_process(proc_fd: int, pid: int, uid: int | None) -> _Opened | None:
    """Open ``pid``'s directories and list its fds; None if it vanished, is not ``uid``'s or we
    may not look. Any other error closes what was opened and propagates."""
    try:
        pid_dir = os.open(str(pid), _DIRECTORY, dir_fd=proc_fd)
    except (*_VANISHED, PermissionError):
        return None
    fd_dir = -1
    try:
        if uid is not None and os.fstat(pid_dir).st_uid != uid:
            os.close(pid_dir)
            return None
        fd_dir = os.open("fd", _DIRECTORY, dir_fd=pid_dir)
        return _Opened(pid, pid_dir, fd_dir, os.listdir(fd_dir))
    except BaseException as exc:
        if fd_dir >= 0:
            os.close(fd_dir)
        os.close(pid_dir)
        if isinstance(exc, (*_VANISHED, PermissionError)):
            return None
        raise


# What a helper runs (python -I -S -c): lines "PID FD FD ...\n" on stdin, one per chunk; on
# stdout, once stdin is closed, native-endian u64 pairs (socket inode, pid << 32 | fd). Vanished
# processes and fds and EACCES are skipped as in _readlinks; anything else ends it with status 1.
_HELPER_CODE = """
import array, os, sys
proc = sys.argv[1]
found = array.array("Q")
skip = (FileNotFoundError, ProcessLookupError, PermissionError)
for line in sys.stdin.buffer:
    pid, *names = line.split()
    try:
        fd_dir = os.open(b"%s/%s/fd" % (proc.encode(), pid), os.O_RDONLY | os.O_DIRECTORY)
    except skip:
        continue
    base = int(pid) << 32
    try:
        for name in names:
            try:
                target = os.readlink(name, dir_fd=fd_dir)
            except skip:
                continue
            if target.startswith(b"socket:["):
                found.append(int(target[8:-1]))
                found.append(base | int(name))
    finally:
        os.close(fd_dir)
sys.stdout.buffer.write(found.tobytes())
"""


_HELPERS = 4
"""Most helpers alive at once, over all concurrent scans."""
_HELPER_SLOTS = threading.BoundedSemaphore(_HELPERS)
"""Helpers alive at once, over all concurrent scans: a burst of listings must not start a
process each (an interpreter is ~10 MB); a scan that finds none free reads everything itself."""


def _start_helpers(proc: str, count: int, stack: contextlib.ExitStack) -> "list[_Helper]":
    """Up to ``count`` helpers, as many as there are free slots and can be started; ``stack``
    ends them."""
    pool = []
    for _ in range(count):
        if not _HELPER_SLOTS.acquire(blocking=False):
            break
        try:
            helper = _Helper(proc)
        except OSError:  # cannot start one (no interpreter, no processes left): read it here
            _HELPER_SLOTS.release()
            break
        stack.callback(_HELPER_SLOTS.release)
        pool.append(stack.enter_context(helper))
    return pool


class _Helper:
    """A helper process reading chunks of fds for :func:`socket_holders`.

    A fresh interpreter (``-I -S``: no site, no environment), not a fork of the daemon: the
    daemon has threads. It is killed and reaped on any error; :meth:`result` waits for it.
    """

    def __init__(self, proc: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HELPER_CODE, proc],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
        )

    def __enter__(self) -> "_Helper":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
            self._proc.communicate()

    def send(self, pid: int, names: list[str]) -> None:
        """Have it read fds ``names`` of ``pid``: it starts on them at once."""
        stdin = typing.cast(IO[bytes], self._proc.stdin)
        stdin.write(f"{pid} {' '.join(names)}\n".encode())
        stdin.flush()

    def result(self) -> "tuple[array.array[int], array.array[int]]":
        """What it found; raises OSError if it failed or took longer than _HELPER_TIMEOUT."""
        try:
            out, err = self._proc.communicate(timeout=_HELPER_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise OSError(errno.ETIMEDOUT, "the /proc scan helper took too long") from exc
        if self._proc.returncode != 0:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise OSError(
                errno.EIO, f"the /proc scan helper failed ({self._proc.returncode}): {reason[0]}"
            )
        found = array.array("Q")
        found.frombytes(out)
        return found[0::2], found[1::2]


_HELPER_TIMEOUT = 120.0
"""Seconds a helper may take: ~30x what 1 000 000 readlinks take here."""


def _readlinks(fd_dir: int, pid: int, names: list[str]) -> _Found:
    """The sockets among fds ``names`` of a process; fds closed meanwhile are skipped."""
    found = []
    base = pid << 32
    readlink = os.readlink
    for name in names:
        try:
            target = readlink(name, dir_fd=fd_dir)
        except (*_VANISHED, PermissionError):
            continue  # closed since listdir, or the process is gone or changed credentials
        if target.startswith("socket:["):
            found.append((int(target[8:-1]), base | int(name)))
    return found


def _merge(holders: Holders, inodes: Sequence[int], packed: Sequence[int]) -> None:
    """Add finds given as columns."""
    holders.add(inodes, packed)


def _add(holders: Holders, parts: list[_Found]) -> bool:
    """Add what was found to ``holders``; whether anything was."""
    any_found = False
    for found in parts:
        holders.add((inode for inode, _ in found), (packed for _, packed in found))
        any_found = any_found or bool(found)
    return any_found


def _name_holders(holders: Holders, proc: str, packed: "array.array[int]") -> None:
    """Name every pid in ``packed`` (``pid << 32 | fd``, as u64)."""
    with memoryview(packed) as view:  # the u64s as u32 pairs, not copied; the pids: high halves
        halves = view.cast("B").cast("I")
        pids = set(halves[1::2] if sys.byteorder == "little" else halves[0::2])
        halves.release()
    proc_fd = os.open(proc, _DIRECTORY)
    try:
        for pid in pids:
            try:
                pid_dir = os.open(str(pid), _DIRECTORY, dir_fd=proc_fd)
            except (*_VANISHED, PermissionError):
                holders.names[pid] = "?"  # gone since the scan: its sockets keep the pid
                continue
            try:
                holders.names[pid] = _comm(pid_dir)
            finally:
                os.close(pid_dir)
    finally:
        os.close(proc_fd)


def _comm(pid_dir: int) -> str:
    try:
        fd = os.open("comm", os.O_RDONLY | os.O_CLOEXEC, dir_fd=pid_dir)
    except (*_VANISHED, PermissionError):
        return "?"
    try:
        return os.read(fd, 64).rstrip(b"\n").decode(errors="replace")
    except (*_VANISHED, PermissionError):
        return "?"
    finally:
        os.close(fd)
