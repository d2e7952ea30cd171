"""Socket addresses as people write them (``tcp:0.0.0.0:80``), for ``sock.open`` and the CLI."""

import ipaddress
import os
import socket
from dataclasses import dataclass

from sockctl.errors import InvalidRequest
from sockctl.protocol import SocketFamily, SocketType, SockOpenReply, SockOpenRequest

_INET_KINDS: dict[str, tuple[SocketType, SocketFamily | None]] = {
    "tcp": ("stream", None),
    "udp": ("dgram", None),
    "tcp6": ("stream", "inet6"),
    "udp6": ("dgram", "inet6"),
}
_UNIX_KINDS: dict[str, SocketType] = {
    "unix": "stream",
    "unix-stream": "stream",
    "unix-dgram": "dgram",
    "unix-seqpacket": "seqpacket",
}
SYNTAX = (
    "tcp:HOST:PORT, udp:HOST:PORT (HOST an IP address, IPv6 in brackets), tcp, udp, tcp6, udp6 "
    "(unbound), unix:/path, unix:@abstract, unix-dgram:..., unix-seqpacket:..."
)


@dataclass(frozen=True, slots=True)
class SocketAddress:
    family: SocketFamily
    type: SocketType
    address: str | None
    port: int = 0

    def request(
        self,
        *,
        ns: str | None,
        backlog: int | None,
        reuseaddr: bool,
        reuseport: bool,
        v6only: bool | None,
    ) -> SockOpenRequest:
        """The ``sock.open`` request; what does not apply to this kind of socket is left out."""
        inet = self.family != "unix"
        return SockOpenRequest(
            ns=ns,
            family=self.family,
            type=self.type,
            address=self.address,
            port=self.port,
            # sockd never listens on unix sockets (see SockOpenRequest): finish() does it here.
            backlog=backlog if inet and self.type == "stream" and self.address else None,
            reuseaddr=reuseaddr and inet and self.address is not None,
            reuseport=reuseport,
            v6only=v6only if self.family == "inet6" else None,
        )


def parse(text: str) -> SocketAddress:
    """``tcp:127.0.0.1:80`` → SocketAddress("inet", "stream", "127.0.0.1", 80); see :data:`SYNTAX`."""
    kind, sep, rest = text.partition(":")
    if kind in _UNIX_KINDS:
        if not sep:
            return SocketAddress("unix", _UNIX_KINDS[kind], None)
        if not rest:
            raise _bad(text, "a unix address needs a path or @name")
        address = rest if rest.startswith("@") else os.path.abspath(rest)
        return SocketAddress("unix", _UNIX_KINDS[kind], address)
    if kind not in _INET_KINDS:
        raise _bad(text, f"unknown kind {kind!r}")
    sock_type, family = _INET_KINDS[kind]
    if not sep:
        return SocketAddress(family or "inet", sock_type, None)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not host:
        raise _bad(text, "expected HOST:PORT after the kind")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise _bad(text, "HOST must be an IP address and PORT a number") from None
    if not 0 <= port <= 65535:
        raise _bad(text, "PORT must be within 0-65535")
    detected: SocketFamily = "inet" if ip.version == 4 else "inet6"
    if family is not None and family != detected:
        raise _bad(text, f"{kind} needs an IPv6 address")
    return SocketAddress(detected, sock_type, host, port)


def finish(sock: socket.socket, reply: SockOpenReply, backlog: int | None) -> None:
    """Listen on a bound unix stream/seqpacket socket here, as the caller (its peer credentials)."""
    if reply.family == "unix" and reply.address and reply.type != "dgram" and backlog is not None:
        sock.listen(backlog)


def _bad(text: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{text!r}: {why}; addresses are {SYNTAX}", field="address")
