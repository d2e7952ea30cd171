"""Raw rtnetlink (NETLINK_ROUTE): veth pairs, link state, addresses, nsids. Part of the Linux layer.

Why raw messages and not pyroute2's ``IPRoute`` (which issue 6 allows): ``import pyroute2`` alone costs
≈ 300 ms and 33 MB (measured, ../shared/DESIGN.md) that the daemon would pay at every start, including
each socket activation; its namespace helpers switch namespaces on a module-global stack that is not
thread-safe, which a thread-per-connection daemon cannot use. sockd needs eight message types
(RTM_NEWLINK for a veth pair and for "up", RTM_DELLINK, RTM_NEWADDR, RTM_GETLINK/RTM_GETADDR dumps,
RTM_NEWNSID) whose layouts are stable kernel ABI; ``struct`` builds and parses them in a few hundred
lines with no dependency. ``bench/links.py`` measures the result against ``ip`` (and pyroute2 when it is
installed) in the same run.

A netlink socket belongs to the network namespace it was created in, for its whole life, whichever thread
uses it (DESIGN.md). :meth:`Rtnl.inside` therefore creates the socket in a short-lived thread that
``setns``-ed into the target namespace (:func:`sockd.linux.run_in_thread`); the socket is then used from
the calling thread, which never leaves its own namespace.

Errors are ``OSError`` with the kernel's errno and, when the kernel gave one, its extended-ack message
(``NETLINK_EXT_ACK``), e.g. ``[Errno 17] RTM_NEWLINK: File exists``.

Layouts: include/uapi/linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, veth.h, net_namespace.h.
"""

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sockd import linux

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

_NETLINK_ROUTE = 0
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10  # do not echo our request back inside error messages
_NETLINK_EXT_ACK = 11  # ask for a text message with errors

# Message types.
_NLMSG_NOOP = 1
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTM_NEWNSID = 88
RTM_GETNSID = 90

# Header flags.
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack attributes follow
_NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: the request's payload was left out
_NLMSGERR_ATTR_MSG = 1

# Link attributes (IFLA_*), link info and veth.
_IFLA_IFNAME = 3
_IFLA_LINK = 5
_IFLA_OPERSTATE = 16
_IFLA_LINKINFO = 18
_IFLA_NET_NS_FD = 28
_IFLA_LINK_NETNSID = 37
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
_IFF_UP = 0x1

# Address attributes (IFA_*).
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_IFA_F_NODAD = 0x02

# Route attributes (RTA_*) and rtmsg values.
_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_RTA_TABLE = 15
_RT_TABLE_MAIN = 254
_RTPROT_BOOT = 3  # what `ip route add` marks its routes with
_RT_SCOPE_UNIVERSE = 0
_RTN_UNICAST = 1

# nsid attributes (NETNSA_*).
_NETNSA_NSID = 1
_NETNSA_FD = 3

_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLATTR = struct.Struct("=HH")  # len, type
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTGENMSG = struct.Struct("=B3x")
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, protocol, scope, type, flags

_RECV_SIZE = 1 << 17

OPERSTATES = {
    0: "unknown",
    1: "notpresent",
    2: "down",
    3: "lowerlayerdown",
    4: "testing",
    5: "dormant",
    6: "up",
}
"""IF_OPER_* (RFC 2863 operational states), as ``ip link`` names them in lower case."""


@dataclass(frozen=True, slots=True)
class Link:
    """One network interface as RTM_GETLINK describes it, in the namespace of the socket."""

    index: int
    name: str
    kind: str | None
    """IFLA_INFO_KIND ("veth", "dummy", ...); None for devices without link info (lo, most NICs)."""
    up: bool
    """Administratively up (IFF_UP)."""
    operstate: str
    peer_index: int | None
    """IFLA_LINK: for a veth, the ifindex of its peer, in the peer's namespace."""
    peer_netnsid: int | None
    """IFLA_LINK_NETNSID: the nsid (from this namespace) of the namespace the peer lives in."""


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    interface: IPInterface


def _attr(kind: int, payload: bytes) -> bytes:
    data = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _str_attr(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, b"".join(attrs))


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in ``data[offset:]`` by type (the last one wins), payloads unpadded."""
    found: dict[int, bytes] = {}
    while offset + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > len(data):
            break
        found[kind & _NLA_TYPE_MASK] = data[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def _cstr(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def _ifinfo(index: int = 0, *, up: bool | None = None) -> bytes:
    flags = _IFF_UP if up else 0
    change = _IFF_UP if up is not None else 0
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    """One NETLINK_ROUTE socket; every call acts in the namespace the socket was created in.

    ::

        with Rtnl.inside("/run/netns/test") as nl:
            print([link.name for link in nl.links()])

    Not thread-safe: one user at a time (sockd makes one per request and namespace).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0
        self._lock = threading.Lock()

    @classmethod
    def here(cls) -> "Rtnl":
        """A socket in the calling thread's own network namespace (the daemon's: the host's)."""
        return cls(_open_socket())

    @classmethod
    def inside(cls, netns_path: str) -> "Rtnl":
        """A socket in the network namespace mounted (or linked, /proc/PID/ns/net) at ``netns_path``."""

        def make() -> socket.socket:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            finally:
                os.close(fd)
            return _open_socket()

        return cls(linux.run_in_thread(make))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Links ----------------------------------------------------------------------------------------

    def links(self) -> list[Link]:
        """Every interface of the namespace (RTM_GETLINK dump)."""
        return [_parse_link(body) for _, body in self._dump(RTM_GETLINK, _ifinfo())]

    def link(self, name: str) -> Link | None:
        """The interface called ``name``, or None."""
        try:
            replies = self._request(RTM_GETLINK, _ifinfo() + _str_attr(_IFLA_IFNAME, name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        for kind, body in replies:
            if kind == RTM_NEWLINK:
                return _parse_link(body)
        return None

    def create_veth(
        self,
        name: str,
        peer_name: str,
        *,
        netns_fd: int | None = None,
        peer_netns_fd: int | None = None,
    ) -> None:
        """Create the veth pair ``name`` <-> ``peer_name``, both down.

        Each end is created directly in the namespace of its fd (``IFLA_NET_NS_FD``), or in this
        socket's namespace when the fd is None, so no end ever shows up with a temporary name in the
        wrong namespace. Fails with EEXIST when a name is taken in its namespace.
        """
        peer = _ifinfo() + _str_attr(_IFLA_IFNAME, peer_name)
        if peer_netns_fd is not None:
            peer += _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        body = _ifinfo() + _str_attr(_IFLA_IFNAME, name)
        if netns_fd is not None:
            body += _attr(_IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
        body += _nest(
            _IFLA_LINKINFO,
            _str_attr(_IFLA_INFO_KIND, "veth"),
            _nest(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer)),
        )
        self._request(RTM_NEWLINK, body, flags=_NLM_F_CREATE | _NLM_F_EXCL)

    def set_up(self, index: int) -> None:
        """Bring interface ``index`` administratively up."""
        self._request(RTM_NEWLINK, _ifinfo(index, up=True))

    def delete_link(self, name: str) -> bool:
        """Delete the interface ``name`` (both ends, for a veth); False if there is none."""
        try:
            self._request(RTM_DELLINK, _ifinfo() + _str_attr(_IFLA_IFNAME, name))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        return True

    # Addresses -------------------------------------------------------------------------------------

    def addresses(self, index: int | None = None) -> list[Address]:
        """IPv4 and IPv6 addresses of the namespace, or of interface ``index`` (RTM_GETADDR dump)."""
        request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        found = []
        for _, body in self._dump(RTM_GETADDR, request):
            address = _parse_address(body)
            if address is not None and (index is None or address.index == index):
                found.append(address)
        return found

    def add_address(self, index: int, interface: IPInterface) -> None:
        """Add ``interface`` (address/prefix) to interface ``index``, as ``ip addr add`` does.

        IPv6 addresses skip duplicate address detection (IFA_F_NODAD): a veth has exactly one
        neighbour, and DAD would leave the address unusable ("tentative") for about two seconds.
        """
        packed = interface.ip.packed
        if interface.version == 4:
            header = _IFADDRMSG.pack(socket.AF_INET, interface.network.prefixlen, 0, 0, index)
            body = header + _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        else:
            header = _IFADDRMSG.pack(
                socket.AF_INET6, interface.network.prefixlen, _IFA_F_NODAD, 0, index
            )
            body = header + _attr(_IFA_ADDRESS, packed)
        self._request(RTM_NEWADDR, body, flags=_NLM_F_CREATE | _NLM_F_EXCL)

    # Routes --------------------------------------------------------------------------------------------

    def add_default_route(self, gateway: ipaddress.IPv4Address) -> None:
        """``ip route add default via GATEWAY`` in the main table (EEXIST if there is one)."""
        body = _RTMSG.pack(
            socket.AF_INET,
            0,
            0,
            0,
            _RT_TABLE_MAIN,
            _RTPROT_BOOT,
            _RT_SCOPE_UNIVERSE,
            _RTN_UNICAST,
            0,
        ) + _attr(_RTA_GATEWAY, gateway.packed)
        self._request(RTM_NEWROUTE, body, flags=_NLM_F_CREATE | _NLM_F_EXCL)

    def default_route_interfaces(self) -> list[int]:
        """Indexes of the interfaces the main table's IPv4 default routes leave by."""
        found = []
        for kind, body in self._dump(
            RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        ):
            if kind != RTM_NEWROUTE or len(body) < _RTMSG.size:
                continue
            _, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(body)
            attrs = _attrs(body, _RTMSG.size)
            if _RTA_TABLE in attrs:
                table = struct.unpack_from("=I", attrs[_RTA_TABLE])[0]
            if (
                dst_len == 0
                and table == _RT_TABLE_MAIN
                and rtype == _RTN_UNICAST
                and _RTA_OIF in attrs
            ):
                found.append(struct.unpack_from("=i", attrs[_RTA_OIF])[0])
        return found

    # nsid ------------------------------------------------------------------------------------------

    def new_nsid(self, netns_fd: int, nsid: int | None) -> None:
        """Assign ``nsid`` (None: the lowest free one) to the namespace ``netns_fd``, as seen from
        this socket's namespace (``ip netns set NAME N|auto``). EEXIST: it has one, or N is taken."""
        body = (
            _RTGENMSG.pack(socket.AF_UNSPEC)
            + _attr(_NETNSA_FD, struct.pack("=I", netns_fd))
            + _attr(_NETNSA_NSID, struct.pack("=i", -1 if nsid is None else nsid))
        )
        self._request(RTM_NEWNSID, body)

    def get_nsid(self, netns_fd: int) -> int | None:
        """The nsid this socket's namespace gave the namespace ``netns_fd``; None if it has none.

        The query behind ``ip netns list``'s "(id: N)" (net/core/net_namespace.c)."""
        body = _RTGENMSG.pack(socket.AF_UNSPEC) + _attr(_NETNSA_FD, struct.pack("=I", netns_fd))
        for kind, reply in self._request(RTM_GETNSID, body):
            nsid = _attrs(reply, _RTGENMSG.size).get(_NETNSA_NSID) if kind == RTM_NEWNSID else None
            if nsid is not None:
                value: int = struct.unpack_from("=i", nsid)[0]
                return None if value < 0 else value
        return None

    # Transport -------------------------------------------------------------------------------------

    def _request(self, kind: int, body: bytes, *, flags: int = 0) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK; return the messages before the ack. Raises OSError."""
        with self._lock:
            seq = self._send(kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, body)
            return list(self._receive(seq, kind))

    def _dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one dump request; return every message of the answer."""
        with self._lock:
            seq = self._send(kind, _NLM_F_REQUEST | _NLM_F_DUMP, body)
            return list(self._receive(seq, kind))

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self._sock.send(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, self._seq, 0) + body
        )
        return self._seq

    def _receive(self, seq: int, request: int) -> Iterator[tuple[int, bytes]]:
        """The data messages answering ``seq``, up to its ack, error or NLMSG_DONE."""
        while True:
            data = self._sock.recv(_RECV_SIZE)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, flags, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                body = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq or kind == _NLMSG_NOOP:
                    continue  # a late answer to an earlier, abandoned request
                if kind in (_NLMSG_ERROR, _NLMSG_DONE):
                    # An ack is an NLMSG_ERROR with error 0; a dump that failed ends with
                    # NLMSG_DONE carrying the negative errno.
                    _raise_if_error(body, flags, request)
                    return
                yield kind, body


def get_nsid(netns_fd: int) -> int | None:
    """:meth:`Rtnl.get_nsid` from the calling thread's namespace (the daemon's: the host's)."""
    with Rtnl.here() as nl:
        return nl.get_nsid(netns_fd)


def _open_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
    try:
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_GETADDR: "RTM_GETADDR",
    RTM_NEWNSID: "RTM_NEWNSID",
    RTM_GETNSID: "RTM_GETNSID",
}


def _raise_if_error(body: bytes, flags: int, request: int) -> None:
    if len(body) < 4:
        return
    (code,) = struct.unpack_from("=i", body)
    if code >= 0:
        return
    err = -code
    message = os.strerror(err)
    if flags & _NLM_F_ACK_TLVS:
        # struct nlmsgerr: the error, then the request's header (and its payload unless capped).
        start = 4 + _NLMSGHDR.size
        if not flags & _NLM_F_CAPPED:
            start = 4 + ((_NLMSGHDR.unpack_from(body, 4)[0] + 3) & ~3)
        text = _attrs(body, start).get(_NLMSGERR_ATTR_MSG)
        if text:
            message = f"{message} ({_cstr(text)})"
    raise OSError(err, f"{_NAMES.get(request, request)}: {message}")


def _parse_link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    attrs = _attrs(body, _IFINFOMSG.size)
    kind = None
    if _IFLA_LINKINFO in attrs:
        info = _attrs(attrs[_IFLA_LINKINFO])
        if _IFLA_INFO_KIND in info:
            kind = _cstr(info[_IFLA_INFO_KIND])
    peer_index = None
    if _IFLA_LINK in attrs:
        peer_index = struct.unpack_from("=I", attrs[_IFLA_LINK])[0]
    peer_netnsid = None
    if _IFLA_LINK_NETNSID in attrs:
        peer_netnsid = struct.unpack_from("=i", attrs[_IFLA_LINK_NETNSID])[0]
    operstate = 0
    if _IFLA_OPERSTATE in attrs:
        operstate = attrs[_IFLA_OPERSTATE][0]
    return Link(
        index=index,
        name=_cstr(attrs.get(_IFLA_IFNAME, b"")),
        kind=kind,
        up=bool(flags & _IFF_UP),
        operstate=OPERSTATES.get(operstate, str(operstate)),
        peer_index=peer_index,
        peer_netnsid=peer_netnsid,
    )


def _parse_address(body: bytes) -> Address | None:
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(body)
    attrs = _attrs(body, _IFADDRMSG.size)
    raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    ip = ipaddress.ip_address(raw)
    return Address(index=index, interface=ipaddress.ip_interface(f"{ip}/{prefixlen}"))
