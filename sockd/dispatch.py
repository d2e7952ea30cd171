"""The dispatch table: every operation's access rule and handler, in one place.

Each handler has the same shape: the request arrives validated against its wire model (names, types,
bounds); the table's access rule has been checked against the peer's kernel credentials; the handler
checks ownership and quotas, acts, and returns the reply (or, for a listing, its items and summary;
for a reply carrying descriptors, :class:`WithFds`; for a session, :class:`Session`).
"""

import os
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sockctl import _wire
from sockctl import protocol as p
from sockctl.errors import InvalidRequest
from sockd import socklist
from sockd.policy import Access, Peer

if TYPE_CHECKING:
    from sockd.daemon import Daemon


@dataclass(frozen=True, slots=True)
class Listing:
    """A handler's streamed answer: items sent in as many messages as needed, then the summary.

    ``result`` may be a zero-argument callable, called after the last item: a summary counted while
    streaming. ``encoded`` says the items are already JSON text (one item's object each), made by a
    handler whose listings are too large for per-item ``to_wire`` (sock.list: 100 000 sockets).
    """

    items: Iterable[Any]
    result: Any = None
    encoded: bool = False


@dataclass(frozen=True, slots=True)
class WithFds:
    """A reply that hands descriptors to the client, as SCM_RIGHTS; ``reply`` names them by index.

    The daemon owns ``fds`` until then and closes its copies once the reply is sent (or is not).
    """

    reply: Any
    fds: list[int]


class Fds:
    """The descriptors that came with a request. The daemon closes them all after the handler.

    A session borrows them with :meth:`get` and may close them early with :meth:`close` (``ns.exec``
    does, once the command holds its own copies); a descriptor is never closed twice.
    """

    def __init__(self, fds: list[int]) -> None:
        self._fds: list[int] = list(fds)

    def get(self, index: int | None, field: str) -> int | None:
        """The descriptor at ``index`` (None for None); a missing one is the request's error."""
        if index is None:
            return None
        if index >= len(self._fds):
            raise InvalidRequest(
                f"{field} refers to descriptor {index}, but {len(self._fds)} came with the request",
                field=field,
            )
        return self._fds[index]

    def close(self) -> None:
        fds, self._fds = self._fds, []
        _wire.close_all(fds)


class Channel(Protocol):
    """The connection of a running session, for its follow-up requests."""

    def fileno(self) -> int:
        """Poll this for follow-ups and for the client going away."""
        ...

    def receive(self) -> Any | None:
        """The next follow-up request, validated; None once the client has gone."""
        ...


@dataclass(frozen=True, slots=True)
class Call:
    """What a session gets besides its request: the request's descriptors and the connection."""

    fds: Fds
    channel: Channel


@dataclass(frozen=True, slots=True)
class Session:
    """A handler's answer that goes on: ``run`` yields events (each sent at once) and returns the reply.

    The daemon closes the generator if the client goes away while an event is being sent, so ``run``
    cleans up in ``finally``.
    """

    run: Callable[[Call], Generator[Any, None, Any]]


UNDER_WAY = object()
"""What a session may yield to send a message without items: it has started (sock.events: the
kernel now reports to it), so the client knows that nothing from then on is missed."""

Handler = Callable[["Daemon", Peer, Any], Any]


@dataclass(frozen=True, slots=True)
class Route:
    access: Access
    handler: Handler
    inline: bool = False
    """Run on the server's event loop. Only for handlers that never block: no locks that slow
    operations hold, no waiting on the kernel or the disk. Everything else gets its own thread."""


def ping(daemon: "Daemon", peer: Peer, request: p.PingRequest) -> p.PingReply:
    return p.PingReply(version=p.VERSION, protocol=p.PROTOCOL_VERSION)


def whoami(daemon: "Daemon", peer: Peer, request: p.WhoAmIRequest) -> p.WhoAmIReply:
    policy = daemon.policy
    links_owned, addresses_held = daemon.links.owned(peer.uid)
    return p.WhoAmIReply(
        uid=peer.uid,
        gid=peer.creds.gid,
        groups=list(peer.creds.groups),
        pid=peer.pid,
        pidfd=peer.creds.pidfd is not None,
        root=peer.root,
        may_create=policy.may_create(peer),
        sees_all_processes=policy.sees_all_processes(peer),
        namespace_quota=policy.namespace_quota,
        namespaces_owned=daemon.namespaces.owned_by(peer.uid),
        link_quota=policy.link_quota,
        links_owned=links_owned,
        address_quota=policy.address_quota,
        addresses_held=addresses_held,
    )


def status(daemon: "Daemon", peer: Peer, request: p.StatusRequest) -> p.StatusReply:
    return p.StatusReply(
        version=p.VERSION,
        protocol=p.PROTOCOL_VERSION,
        pid=os.getpid(),
        uptime=round(time.monotonic() - daemon.started, 3),
        connections=daemon.stats.connections,
        requests=daemon.stats.requests,
        namespaces_managed=daemon.namespaces.count_managed(),
        config=daemon.config_path,
    )


def ns_create(daemon: "Daemon", peer: Peer, request: p.NsCreateRequest) -> p.NsInfo:
    return daemon.namespaces.create(
        peer,
        request.name,
        loopback_up=request.loopback_up,
        hostname=request.hostname,
        admin=request.admin,
    )


def ns_scan(daemon: "Daemon", peer: Peer, request: p.NsScanRequest) -> Listing:
    return Listing(daemon.namespaces.scan(peer))


def ns_delete(daemon: "Daemon", peer: Peer, request: p.NsDeleteRequest) -> p.NsDeleteReply:
    return daemon.namespaces.delete(peer, request.name, force=request.force)


def ns_list(daemon: "Daemon", peer: Peer, request: p.NsListRequest) -> Listing:
    return Listing(daemon.links.annotate(daemon.namespaces.infos()))


def ns_identify(daemon: "Daemon", peer: Peer, request: p.NsIdentifyRequest) -> p.NsIdentifyReply:
    return daemon.namespaces.identify(peer, request.pid)


def ns_pids(daemon: "Daemon", peer: Peer, request: p.NsPidsRequest) -> Listing:
    pids, result = daemon.namespaces.pids(peer, request.name)
    return Listing(pids, result)


# Links, attach, nsid, show (issue 6) ------------------------------------------------------------


def ns_link(daemon: "Daemon", peer: Peer, request: p.NsLinkRequest) -> p.LinkInfo:
    return daemon.links.link(
        peer,
        request.name,
        peer_ns=request.peer,
        address=request.address,
        peer_address=request.peer_address,
        no_address=request.no_address,
        nat=request.nat,
        dns=request.dns,
    )


def ns_publish(daemon: "Daemon", peer: Peer, request: p.NsPublishRequest) -> p.PublishedPort:
    return daemon.links.publish(
        peer, request.name, request.transport, request.host_port, request.port
    )


def ns_unpublish(daemon: "Daemon", peer: Peer, request: p.NsUnpublishRequest) -> p.PublishedPort:
    return daemon.links.unpublish(peer, request.name, request.transport, request.host_port)


def ns_unlink(daemon: "Daemon", peer: Peer, request: p.NsUnlinkRequest) -> p.NsUnlinkReply:
    return daemon.links.unlink(peer, request.name, request.ifname)


def ns_show(daemon: "Daemon", peer: Peer, request: p.NsShowRequest) -> p.NsDetail:
    return daemon.links.show(request.name)


def ns_attach(daemon: "Daemon", peer: Peer, request: p.NsAttachRequest) -> p.NsInfo:
    return daemon.namespaces.attach(peer, request.name, request.pid)


def ns_set_nsid(daemon: "Daemon", peer: Peer, request: p.NsSetNsidRequest) -> p.NsInfo:
    return daemon.links.annotate_one(daemon.namespaces.set_nsid(peer, request.name, request.nsid))


# Socket inspection (sockd/socklist.py) ----------------------------------------------------------


def sock_list(daemon: "Daemon", peer: Peer, request: p.SockListRequest) -> Listing:
    items, result = socklist.list_sockets(daemon, peer, request)
    return Listing(items, result, encoded=True)


def sock_summary(daemon: "Daemon", peer: Peer, request: p.SockSummaryRequest) -> Listing:
    counts, result = socklist.summarize_sockets(daemon, peer, request)
    return Listing(counts, result)


def sock_kill(daemon: "Daemon", peer: Peer, request: p.SockKillRequest) -> p.SockKillReply:
    return socklist.kill_sockets(daemon, peer, request)


# Acting inside a namespace as the caller (issue 5) -------------------------------------------------


def ns_exec(daemon: "Daemon", peer: Peer, request: p.NsExecRequest) -> Session:
    return daemon.executor.session(peer, request)


def exec_signal(daemon: "Daemon", peer: Peer, request: p.ExecSignalRequest) -> None:
    # A running ns.exec session reads its follow-ups itself; one that arrives here has nothing to go to.
    raise InvalidRequest(
        "exec.signal is only valid while ns.exec runs on the same connection", field="op"
    )


def sock_open(daemon: "Daemon", peer: Peer, request: p.SockOpenRequest) -> WithFds:
    return daemon.sockets.open(peer, request)


TABLE: dict[str, Route] = {
    "ping": Route(Access.ANYONE, ping, inline=True),
    "whoami": Route(Access.ANYONE, whoami),
    "status": Route(Access.ANYONE, status),
    "ns.create": Route(Access.CREATOR, ns_create),
    "ns.delete": Route(Access.CREATOR, ns_delete),
    "ns.list": Route(Access.ANYONE, ns_list),
    "ns.scan": Route(Access.ANYONE, ns_scan),
    "ns.identify": Route(Access.ANYONE, ns_identify),
    "ns.pids": Route(Access.ANYONE, ns_pids),
    # issue 6
    "ns.link": Route(Access.CREATOR, ns_link),
    "ns.unlink": Route(Access.CREATOR, ns_unlink),
    "ns.show": Route(Access.ANYONE, ns_show),
    "ns.attach": Route(Access.CREATOR, ns_attach),
    "ns.set_nsid": Route(Access.CREATOR, ns_set_nsid),
    "ns.publish": Route(Access.CREATOR, ns_publish),
    "ns.unpublish": Route(Access.CREATOR, ns_unpublish),
    # Socket inspection: policy on processes and sockets is applied in socklist.
    "sock.list": Route(Access.ANYONE, sock_list),
    "sock.summary": Route(Access.ANYONE, sock_summary),
    # issue 15: who may close which socket (own uid; root, policy.kill_groups) is checked there.
    "sock.kill": Route(Access.ANYONE, sock_kill),
    "sock.events": Route(Access.ANYONE, socklist.watch_sockets),
    # issue 5: ownership (exec) and port grants (sock.open) are checked in the handlers.
    "ns.exec": Route(Access.ANYONE, ns_exec),
    "exec.signal": Route(Access.ANYONE, exec_signal),
    "sock.open": Route(Access.ANYONE, sock_open),
}
"""op → (access rule, handler). protocol.OPERATIONS says what each takes and returns."""
