"""``sock.open``: a socket made by the daemon inside a namespace (or the host), handed to the caller.

What authbind and setuid wrappers are used for, and what an unprivileged user cannot do at all: get a
socket that lives in a root-owned network namespace. The daemon creates it on a short-lived thread
that joined the namespace and took on the caller's filesystem identity, binds it (a privileged port
needs CAP_NET_BIND_SERVICE, which that identity keeps), and sends the descriptor back (SCM_RIGHTS).

Identity: the socket is the caller's (``ss -e`` shows the caller's uid, netfilter's owner match
matches the caller, SO_REUSEPORT groups it with the caller's own sockets); a unix path is created with
the caller's permissions and owned by the caller. A unix socket is never listened on here: a
listener's SO_PEERCRED is taken from whoever calls listen() (net/unix/af_unix.c, ``unix_listen``),
and would name root.

Policy (:meth:`sockd.policy.Policy.require_enter`, ``require_host_port``): in a namespace the caller
may enter, any port; in the host, ports 1-1023 only as ``policy.privileged_ports`` grants.
"""

import errno
import ipaddress
import os
import socket
from collections.abc import Callable
from functools import partial

from sockctl.errors import (
    Busy,
    InternalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RequestError,
)
from sockctl.protocol import SockOpenReply, SockOpenRequest
from sockd import enter, linux
from sockd.dispatch import WithFds
from sockd.netns import Namespaces
from sockd.policy import Peer, Policy

_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}
_TYPES = {
    "stream": socket.SOCK_STREAM,
    "dgram": socket.SOCK_DGRAM,
    "seqpacket": socket.SOCK_SEQPACKET,
}
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes; a path needs its terminating NUL


class SocketOpener:
    def __init__(self, namespaces: Namespaces, policy: Callable[[], Policy]) -> None:
        self.namespaces = namespaces
        self.policy = policy

    def open(self, peer: Peer, request: SockOpenRequest) -> WithFds:
        address = _check(request)
        netns_fd = None
        if request.ns is not None:
            netns_fd = self.namespaces.open_for_entry(peer, request.ns)
        elif isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            self.policy().require_host_port(peer, address, request.port)
        try:
            sock = linux.run_in_thread(partial(_make, peer, request, netns_fd))
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
        try:
            reply = _describe(sock, request)
        except BaseException:
            sock.close()
            raise
        return WithFds(reply, [sock.detach()])


def _check(request: SockOpenRequest) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str | None:
    """Semantic checks the wire model cannot express; returns the parsed address."""
    if request.v6only is not None and request.family != "inet6":
        raise InvalidRequest("v6only applies to inet6 sockets only", field="v6only")
    if request.family == "unix":
        return _check_unix(request)
    if request.type == "seqpacket":
        raise InvalidRequest("inet sockets are stream (tcp) or dgram (udp)", field="type")
    if request.backlog is not None and request.type != "stream":
        raise InvalidRequest("only stream sockets listen", field="backlog")
    if request.address is None:
        if request.port or request.backlog is not None:
            raise InvalidRequest("a port or a backlog needs an address to bind", field="address")
        return None
    try:
        address = ipaddress.ip_address(request.address)
    except ValueError as exc:
        raise InvalidRequest(f"{request.address!r} is not an IP address", field="address") from exc
    if address.version != (4 if request.family == "inet" else 6):
        raise InvalidRequest(
            f"{request.address} is not an address of family {request.family}", field="address"
        )
    return address


def _check_unix(request: SockOpenRequest) -> str | None:
    for option in ("reuseaddr", "reuseport"):
        if getattr(request, option):
            raise InvalidRequest(f"{option} does not apply to unix sockets", field=option)
    if request.port:
        raise InvalidRequest("unix sockets have no port", field="port")
    if request.backlog is not None:
        raise InvalidRequest(
            "sockd does not listen on unix sockets: a listener's peer credentials name whoever "
            "called listen(); call listen() yourself (sockctl's open_socket does)",
            field="backlog",
        )
    if request.address is not None:
        _check_unix_address(request.address)
    return request.address


def _check_unix_address(address: str) -> None:
    name = address[1:] if address.startswith("@") else address
    if not address.startswith(("@", "/")):
        raise InvalidRequest(
            "a unix address is an absolute path or @name (abstract)", field="address"
        )
    if len(name.encode()) > _UNIX_PATH_MAX:
        raise InvalidRequest(f"a unix address has at most {_UNIX_PATH_MAX} bytes", field="address")


def _make(peer: Peer, request: SockOpenRequest, netns_fd: int | None) -> socket.socket:
    """On a short-lived thread: join the namespace, become the caller on the filesystem, build."""
    try:
        if netns_fd is not None:
            enter.join_netns(netns_fd)
        enter.adopt_fs_identity(peer.uid, peer.creds.gid, peer.creds.groups)
    except OSError as exc:
        where = f"namespace {request.ns}" if request.ns else "the host namespace"
        raise InternalError(f"cannot act in {where}: {exc.strerror}") from exc
    try:
        sock = socket.socket(_FAMILIES[request.family], _TYPES[request.type] | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot create a {request.family} {request.type} socket: {exc.strerror}",
            field="family",
        ) from exc
    try:
        _configure(sock, request)
    except OSError as exc:
        sock.close()
        raise _bind_error(request, exc) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _configure(sock: socket.socket, request: SockOpenRequest) -> None:
    if request.reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if request.reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if request.v6only is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(request.v6only))
    if request.address is None:
        return
    if request.family == "unix":
        name = request.address
        sock.bind(b"\0" + name[1:].encode() if name.startswith("@") else name)
    else:
        sock.bind((request.address, request.port))
    if request.backlog is not None:
        sock.listen(request.backlog)


def _bind_error(request: SockOpenRequest, exc: OSError) -> RequestError:
    where = request.address if request.family == "unix" else f"{request.address}:{request.port}"
    if exc.errno == errno.EADDRINUSE:
        return Busy(f"{where} is in use", field="address")
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidRequest(
            f"{request.address} is not an address of {request.ns or 'the host'}", field="address"
        )
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"no permission to bind {where}", field="address")
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"the directory of {where} does not exist", field="address")
    return InvalidRequest(f"cannot bind {where}: {exc.strerror}", field="address")


def _describe(sock: socket.socket, request: SockOpenRequest) -> SockOpenReply:
    name = sock.getsockname()
    address: str | None
    port: int | None = None
    if request.family == "unix":
        if isinstance(name, bytes):  # abstract names come back as bytes with a leading NUL
            address = "@" + name[1:].decode(errors="replace") if name else None
        else:
            address = name or None
    else:
        address, port = name[0], name[1]
        if request.address is None:
            address, port = None, None
    return SockOpenReply(
        fd=0,
        ns=request.ns,
        family=request.family,
        type=request.type,
        address=address,
        port=port,
        listening=bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)),
    )
