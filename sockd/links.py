"""Veth links between a named namespace and the host or another named namespace, with addresses.

Names (stable; user documentation in README.md, "Connecting namespaces"):

- the end inside a namespace is ``eth<N>``, the lowest N free in that namespace;
- the host end is ``sd<uid>-<N>``: the owner's uid, then the lowest N free for that uid. Names embed the
  uid, so two users can never compete for one, and ``ip link`` shows whose link it is. The longest,
  ``sd4294967294-99``, still fits IFNAMSIZ (15 characters); typical uids leave room for millions of N.

Addresses: unless the caller gives its own, a link takes one block of the configured pool
(``[links] pool``/``block_prefix``, default 10.213.0.0/16 in /30s): the peer end (host or other namespace)
gets the block's first usable address and the namespace's end the second. Blocks are recorded in the link's
registry record and given back when the link goes. A host end only ever gets a pool address (unless root
asks otherwise): an arbitrary address on a host interface would let a user steal the host's traffic.

Host ends are created down, told to ignore router advertisements and redirects (a process with
CAP_NET_RAW in an attached, user-owned namespace could otherwise send some and change the host's routes),
then addressed and brought up.

Every mutation holds the namespace lock (:attr:`sockd.netns.Namespaces.lock`), and a link's record is
written *before* the veth exists, so a crash leaves nothing unowned: at start, :meth:`Links.reconcile`
rolls back records still ``creating`` and culls those whose veths are gone, which frees their quota and
pool blocks. Deleting a namespace deletes its veths first, synchronously: the kernel tears a namespace down
asynchronously, and a host end that outlived it would make re-creating the same name fail with EEXIST.
"""

import contextlib
import errno
import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from types import TracebackType
from typing import Self

from sockctl.errors import (
    AlreadyExists,
    InternalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from sockctl.protocol import (
    InterfaceInfo,
    LinkEnd,
    LinkInfo,
    NsDetail,
    NsInfo,
    NsUnlinkReply,
    PublishedPort,
)
from sockd import linux, resolv, rtnl
from sockd.config import LinksConfig
from sockd.log import Logger
from sockd.nat import Firewall, NatLink, Published
from sockd.netns import Faults, Namespaces
from sockd.policy import Peer, Policy
from sockd.registry import LinkRecord, LinkRegistry, PortRecord
from sockd.rtnl import IPInterface, Link, Rtnl

IFNAMSIZ = 16
NS_IFNAME = "eth{n}"
HOST_IFNAME = "sd{uid}-{n}"
_ATTEMPTS = 8
"""Tries at a fresh pair of names when one is taken between our look and the kernel's create."""


def host_ifname(uid: int, n: int) -> str:
    """The host end of a link of ``uid`` (``sd<uid>-<n>``)."""
    return HOST_IFNAME.format(uid=uid, n=n)


def pool_ends(block: IPv4Network) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """(peer end, namespace end) addresses of a pool block: .1 and .2, or both of a /31 (RFC 3021)."""
    first = 0 if block.prefixlen >= 31 else 1
    return (
        ipaddress.IPv4Interface((block[first], block.prefixlen)),
        ipaddress.IPv4Interface((block[first + 1], block.prefixlen)),
    )


class _Sockets:
    """rtnetlink sockets for one request, one per namespace (None: the host), opened on first use."""

    def __init__(self, namespaces: Namespaces) -> None:
        self._namespaces = namespaces
        self._open: dict[str | None, Rtnl | None] = {}
        self._addresses: dict[str | None, dict[int, list[str]]] = {}

    def get(self, ns: str | None) -> Rtnl | None:
        """The socket for ``ns``, or None if no namespace is mounted under that name."""
        if ns not in self._open:
            if ns is None:
                self._open[ns] = Rtnl.here()
            else:
                path = self._namespaces.path(ns)
                self._open[ns] = Rtnl.inside(path) if linux.is_namespace_mount(path) else None
        return self._open[ns]

    def host(self) -> Rtnl:
        nl = self.get(None)
        assert nl is not None  # noqa: S101 -- the host's socket always opens
        return nl

    def link(self, ns: str | None, ifname: str) -> Link | None:
        nl = self.get(ns)
        return None if nl is None else nl.link(ifname)

    def addresses(self, ns: str | None, index: int) -> list[str]:
        """Addresses on interface ``index`` of ``ns``, IPv4 first, without IPv6 link-local ones."""
        if ns not in self._addresses:
            nl = self.get(ns)
            by_index: dict[int, list[str]] = {}
            for address in nl.addresses() if nl is not None else []:
                if not address.interface.ip.is_link_local or address.interface.version == 4:
                    by_index.setdefault(address.index, []).append(str(address.interface))
            self._addresses[ns] = by_index
        return sorted(
            self._addresses[ns].get(index, []), key=lambda a: (":" in a, a)
        )  # IPv4 before IPv6

    def forget_addresses(self) -> None:
        self._addresses.clear()

    def close(self) -> None:
        for nl in self._open.values():
            if nl is not None:
                nl.close()
        self._open.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Links:
    """Make, remove, show and reconcile veth links; see the module docstring for the rules."""

    def __init__(
        self,
        registry: LinkRegistry,
        namespaces: Namespaces,
        policy: Callable[[], Policy],
        config: Callable[[], LinksConfig],
        log: Logger,
        faults: Faults,
        firewall: Firewall | None = None,
        etc_dir: str | None = None,
    ) -> None:
        self.registry = registry
        self.namespaces = namespaces
        self.policy = policy
        self.config = config
        self.log = log
        self.faults = faults
        self.firewall = firewall
        self.etc_dir = etc_dir
        namespaces.before_discard.append(self._remove_all_of)

    # Operations -----------------------------------------------------------------------------------

    def link(
        self,
        peer: Peer,
        name: str,
        *,
        peer_ns: str | None = None,
        address: str | None = None,
        peer_address: str | None = None,
        no_address: bool = False,
        nat: bool = False,
        dns: Iterable[str] = (),
    ) -> LinkInfo:
        """Make a veth pair from ``name`` to the host (``peer_ns`` None) or to ``peer_ns``."""
        if peer_ns == name:
            raise InvalidRequest("a namespace cannot be linked to itself", field="peer")
        given = _parse_address(address, "address")
        peer_given = _parse_address(peer_address, "peer_address")
        if no_address and (given or peer_given):
            raise InvalidRequest("no_address excludes address and peer_address", field="no_address")
        servers = _parse_servers(dns, nat)
        if nat:
            _check_nat_addressing(peer_ns, no_address, given, peer_given)
            self.policy().require_nat(peer, f"a way out for {name} (--nat)")
        if peer_ns is None and peer_given is not None and not peer.root:
            raise PermissionDenied(
                "only root may choose the host end's address; host ends get pool addresses",
                field="peer_address",
            )
        use_pool = not no_address and given is None and peer_given is None
        with self.namespaces.lock, _Sockets(self.namespaces) as socks:
            self.namespaces.require_owned(peer, name)
            if peer_ns is not None:
                self.namespaces.require_owned(peer, peer_ns)
            if nat:
                self._require_no_way_out(name)
            # Only the caller's records are checked against the kernel: they are what its quota
            # counts. Stale records of others merely keep their names and blocks reserved.
            records = self.registry.records()
            mine = self._cull([r for r in records if r.owner_uid == peer.uid], socks)
            records = [r for r in records if r.owner_uid != peer.uid] + mine
            policy = self.policy()
            policy.check_link_quota(peer, len(mine))
            block = None
            if use_pool:
                policy.check_address_quota(peer, _pool_addresses(mine), 2)
                block = self._allocate(records, socks)
                peer_given, given = pool_ends(block)
            ifname, peer_ifname = self._free_names(peer.uid, name, peer_ns, records, socks)
            # Ownership first: from here on, whatever a crash leaves behind is recorded, owned and
            # removed at the next start (reconcile), and its pool block stays reserved until then.
            record = LinkRecord(
                id=secrets.token_hex(6),
                owner_uid=peer.uid,
                ns=name,
                ifname=ifname,
                peer_ns=peer_ns,
                peer_ifname=peer_ifname,
                address=None if given is None else str(given),
                peer_address=None if peer_given is None else str(peer_given),
                pool_block=None if block is None else str(block),
                created=time.time(),
                nat=nat,
            )
            self.registry.write(record)
            self.faults.point("link.recorded")
            try:
                record = self._make(record, records, socks)
            except BaseException as exc:
                self.registry.remove(record.id)
                if isinstance(exc, OSError):
                    raise InternalError(f"cannot link {name}: {exc}") from exc
                raise
            if nat:
                # Still "creating": a crash from here on is rolled back at start, rules and all.
                self._open_way_out(record, servers, socks)
            record = record.ready()
            self.registry.write(record)
            socks.forget_addresses()
            info = self._view(record, socks)
        self.log.info(
            f"linked {name}:{record.ifname} to "
            f"{record.peer_ns or 'host'}:{record.peer_ifname}"
            f"{' with pool block ' + record.pool_block if record.pool_block else ''}",
            SOCKD_NS=name,
            SOCKD_LINK=record.id,
            SOCKD_OWNER_UID=peer.uid,
        )
        return info

    def unlink(self, peer: Peer, name: str, ifname: str | None) -> NsUnlinkReply:
        """Remove the link whose end in ``name`` is ``ifname`` (or its only link)."""
        with self.namespaces.lock, _Sockets(self.namespaces) as socks:
            record = self._find(name, ifname)
            # The namespace's owner may unlink what root linked into it: they could delete the
            # whole namespace anyway.
            if peer.uid not in self._owners(record):
                self.policy().require_owner(
                    peer, record.owner_uid, f"link {name}:{ifname or record.ifname}"
                )
            self._destroy(record, socks)
            self.faults.point("unlink.deleted")
            self.registry.remove(record.id)
            if record.nat:
                self._close_way_out(record)
        near, far = _oriented(record, name)
        self.log.info(
            f"unlinked {name}:{near[1]}", SOCKD_NS=name, SOCKD_LINK=record.id, SOCKD_UID=peer.uid
        )
        return NsUnlinkReply(
            id=record.id,
            name=name,
            ifname=near[1],
            peer_namespace=far[0],
            peer_ifname=far[1],
            released=record.pool_block,
        )

    def show(self, name: str) -> NsDetail:
        """``name`` with every interface inside, its addresses and state, and sockd's links' peers."""
        info = self.annotate_one(self.namespaces.info(name))
        uts = self.namespaces.uts_path(name)
        has_uts = linux.is_namespace_mount(uts)
        if has_uts:
            info = replace(info, hostname=linux.hostname_in(uts))
        records = [r for r in self.registry.records() if r.touches(name) and r.state == "ready"]
        interfaces = []
        with _Sockets(self.namespaces) as socks:
            nl = socks.get(name)
            for link in nl.links() if nl is not None else []:
                record = next(
                    (r for r in records if _oriented(r, name)[0] == (name, link.name)), None
                )
                interfaces.append(
                    InterfaceInfo(
                        ifname=link.name,
                        index=link.index,
                        kind=link.kind,
                        up=link.up,
                        state=link.operstate,
                        addresses=socks.addresses(name, link.index),
                        link=None if record is None else self._view(record, socks),
                    )
                )
        return NsDetail(info=info, interfaces=interfaces, uts_path=uts if has_uts else None)

    # Queries for other operations --------------------------------------------------------------------

    def annotate(self, infos: Iterable[NsInfo]) -> Iterator[NsInfo]:
        """``infos`` with their ``links`` counts filled in (one registry read for all)."""
        counts: dict[str, int] = {}
        for record in self.registry.records():
            for ns in {record.ns, record.peer_ns} - {None}:
                assert ns is not None  # noqa: S101 -- for mypy; None was removed above
                counts[ns] = counts.get(ns, 0) + 1
        for info in infos:
            yield replace(info, links=counts.get(info.name, 0))

    def annotate_one(self, info: NsInfo) -> NsInfo:
        return next(self.annotate([info]))

    def owned(self, uid: int) -> tuple[int, int]:
        """(links, pool addresses) ``uid`` holds now; records of pairs gone behind our back go."""
        with self.namespaces.lock, _Sockets(self.namespaces) as socks:
            mine = self._cull([r for r in self.registry.records() if r.owner_uid == uid], socks)
        return len(mine), _pool_addresses(mine)

    # Start-up repair ----------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make link records agree with the kernel again, after a crash or changes behind our back.

        - a record still ``creating`` is rolled back (whatever veth it made is deleted): its client
          never got an answer;
        - a record whose veth pair is gone or broken (namespace deleted outside sockd, ``ip link
          del``, an attached namespace's processes all gone) is culled, its other end deleted.

        Either way the record goes, and with it the link's quota and pool block.
        """
        with self.namespaces.lock, _Sockets(self.namespaces) as socks:
            for record in self.registry.records():
                if record.state == "creating":
                    self._destroy(record, socks)
                    self.registry.remove(record.id)
                    if record.nat and self.etc_dir is not None:
                        resolv.remove(self.etc_dir, record.ns)  # the sync below drops its rules
                    self.log.warning(
                        f"rolled back link {record.ns}:{record.ifname}: its creation was "
                        f"interrupted",
                        SOCKD_NS=record.ns,
                        SOCKD_LINK=record.id,
                        SOCKD_OWNER_UID=record.owner_uid,
                    )
            self._cull(self.registry.records(), socks)
            # Always: the table of an earlier run may hold rules of links that are gone now.
            try:
                self.sync_firewall()
            except InternalError as exc:
                self.log.error(f"cannot restore the way out of --nat links: {exc.message}")

    # A way out (issue 14) ------------------------------------------------------------------------------

    def publish(
        self, peer: Peer, name: str, transport: str, host_port: int, port: int | None
    ) -> PublishedPort:
        """DNAT host port ``host_port`` into ``name`` (its ``--nat`` link's address, ``port``)."""
        policy = self.policy()
        policy.require_nat(peer, f"publishing a port into {name}")
        if not policy.allows_host_port(peer, host_port):
            raise PermissionDenied(
                f"host port {host_port} is privileged (below 1024); publishing it needs a "
                f"policy.privileged_ports grant",
                field="host_port",
                details={"port": host_port},
            )
        with self.namespaces.lock:
            self.namespaces.require_owned(peer, name)
            records = [r for r in self.registry.records() if r.state == "ready"]
            link = self._way_out(name, records)
            mine = sum(1 for r in records for p in r.published if p.owner_uid == peer.uid)
            policy.check_publish_quota(peer, mine)
            for record in records:
                for taken in record.published:
                    if (taken.transport, taken.host_port) == (transport, host_port):
                        raise AlreadyExists(
                            f"host port {host_port}/{transport} is already published into "
                            f"namespace {record.ns}",
                            field="host_port",
                            details={"namespace": record.ns},
                        )
            _require_free_host_port(transport, host_port)
            entry = PortRecord(
                transport=transport,
                host_port=host_port,
                port=port or host_port,
                owner_uid=peer.uid,
            )
            updated = replace(link, published=(*link.published, entry))
            self.registry.write(updated)  # recorded first: a crash leaves it owned, not lost
            self.faults.point("publish.recorded")
            try:
                self.sync_firewall()
            except BaseException:
                self.registry.write(link)
                self.sync_firewall()
                raise
        self.log.info(
            f"published host port {host_port}/{transport} into {name}:{entry.port}",
            SOCKD_NS=name,
            SOCKD_LINK=link.id,
            SOCKD_HOST_PORT=host_port,
        )
        return _published_view(updated, entry)

    def unpublish(self, peer: Peer, name: str, transport: str, host_port: int) -> PublishedPort:
        with self.namespaces.lock:
            for record in self.registry.records():
                if record.state != "ready" or record.ns != name:
                    continue
                for entry in record.published:
                    if (entry.transport, entry.host_port) != (transport, host_port):
                        continue
                    if peer.uid not in {entry.owner_uid, *self._owners(record)}:
                        self.policy().require_owner(
                            peer, entry.owner_uid, f"published port {host_port}/{transport}"
                        )
                    kept = tuple(p for p in record.published if p is not entry)
                    self.registry.write(replace(record, published=kept))
                    self.sync_firewall()
                    self.log.info(
                        f"withdrew host port {host_port}/{transport} from {name}",
                        SOCKD_NS=name,
                        SOCKD_LINK=record.id,
                        SOCKD_HOST_PORT=host_port,
                    )
                    return _published_view(record, entry)
        raise NotFound(
            f"host port {host_port}/{transport} is not published into namespace {name}",
            field="host_port",
        )

    def sync_firewall(self) -> None:
        """Make sockd's nft table exactly what the live ``--nat`` links need (see sockd.nat)."""
        if self.firewall is None:
            return
        links = [
            NatLink(
                host_ifname=r.peer_ifname,
                block=str(ipaddress.ip_interface(r.address).network),
                address=str(ipaddress.ip_interface(r.address).ip),
                published=tuple(
                    Published(transport=p.transport, host_port=p.host_port, port=p.port)
                    for p in r.published
                ),
            )
            # "creating" ones too: a link gets its rules before it is ready (and a crash before
            # that rolls it back at start, then syncs again without it).
            for r in self.registry.records()
            if r.nat and r.address is not None
        ]
        self.firewall.sync(links)

    def _require_no_way_out(self, name: str) -> None:
        for record in self.registry.records():
            if record.nat and record.ns == name:
                raise AlreadyExists(
                    f"namespace {name} already has a way out (link {record.ifname}); unlink it "
                    f"first",
                    field="nat",
                    details={"ifname": record.ifname},
                )

    def _way_out(self, name: str, records: list[LinkRecord]) -> LinkRecord:
        for record in records:
            if record.nat and record.ns == name:
                return record
        raise NotFound(
            f"namespace {name} has no way out: publishing needs a link made with --nat (the "
            f"replies leave that way)",
            field="name",
        )

    def _open_way_out(self, record: LinkRecord, servers: list[str], socks: _Sockets) -> None:
        """The firewall's half of a new ``--nat`` link, and its resolv.conf; undone on failure."""
        try:
            if self.etc_dir is not None:
                text, warnings = resolv.contents(servers)
                for warning in warnings:
                    self.log.warning(f"ns link --nat {record.ns}: {warning}", SOCKD_NS=record.ns)
                resolv.write(self.etc_dir, record.ns, text)
            self.faults.point("link.nat.resolv")
            self.sync_firewall()
            self.faults.point("link.nat.synced")
        except BaseException as exc:
            self._destroy(record, socks)
            self.registry.remove(record.id)
            # The table holds what the last good sync made, which did not include this link.
            with contextlib.suppress(InternalError):
                self._close_way_out(record)
            if isinstance(exc, OSError):
                raise InternalError(f"cannot give {record.ns} a way out: {exc}") from exc
            raise

    def _close_way_out(self, record: LinkRecord) -> None:
        if self.etc_dir is not None:
            resolv.remove(self.etc_dir, record.ns)
        self.sync_firewall()

    # Internals ----------------------------------------------------------------------------------------

    def _make(self, record: LinkRecord, records: list[LinkRecord], socks: _Sockets) -> LinkRecord:
        """Create, address and bring up the pair; returns the record with the names that worked.

        On failure, deletes whatever it made (under the names it last recorded) and re-raises.
        """
        try:
            for attempt in range(_ATTEMPTS):
                try:
                    self._create_pair(record)
                    break
                except FileExistsError:
                    # A name was taken between our look and the kernel's create (`ip link add`,
                    # another daemon, the owner inside an attached namespace): record fresh names.
                    if attempt == _ATTEMPTS - 1:
                        raise
                    ifname, peer_ifname = self._free_names(
                        record.owner_uid, record.ns, record.peer_ns, [*records, record], socks
                    )
                    record = replace(record, ifname=ifname, peer_ifname=peer_ifname)
                    self.registry.write(record)
            self.faults.point("link.created")
            self._configure(record, socks)
            self.faults.point("link.configured")
        except BaseException:
            self._destroy(record, socks)
            raise
        return record

    @staticmethod
    def _configure(record: LinkRecord, socks: _Sockets) -> None:
        """Address both ends, then bring them up (a host end is hardened first, while down)."""
        ends = [
            (record.ns, record.ifname, record.address),
            (record.peer_ns, record.peer_ifname, record.peer_address),
        ]
        made_up = []
        for ns, ifname, address in ends:
            nl = socks.get(ns)
            link = nl.link(ifname) if nl is not None else None
            if nl is None or link is None:
                raise InternalError(f"the new interface {ifname} vanished")
            if ns is None:
                _harden_host_end(ifname)
            if address is not None:
                nl.add_address(link.index, ipaddress.ip_interface(address))
            made_up.append((nl, link.index))
        for nl, index in made_up:
            nl.set_up(index)
        if record.nat and record.peer_address is not None:
            # Forwarding on the host end only: the namespace's packets may be routed on; the
            # host's global switch stays as it was. The setting goes with the interface.
            linux.set_interface_sysctl("ipv4", record.peer_ifname, "forwarding", "1")
            nl = socks.get(record.ns)
            gateway = ipaddress.ip_interface(record.peer_address).ip
            if nl is None or not isinstance(gateway, ipaddress.IPv4Address):
                raise InternalError(f"namespace {record.ns} vanished while being linked")
            try:
                nl.add_default_route(gateway)
            except FileExistsError as exc:
                raise AlreadyExists(
                    f"namespace {record.ns} already has a default route; remove it for --nat",
                    field="nat",
                ) from exc

    def _create_pair(self, record: LinkRecord) -> None:
        fds: list[int] = []
        try:
            # One open at a time, so that the finally closes the first if the second fails.
            for ns in (record.ns, record.peer_ns):
                if ns is not None:
                    fd = os.open(self.namespaces.path(ns), os.O_RDONLY | os.O_CLOEXEC)
                    fds.append(fd)
            with Rtnl.here() as host:
                host.create_veth(
                    record.ifname,
                    record.peer_ifname,
                    netns_fd=fds[0],
                    peer_netns_fd=fds[1] if len(fds) > 1 else None,
                )
        finally:
            for fd in fds:
                os.close(fd)

    def _free_names(
        self,
        uid: int,
        ns: str,
        peer_ns: str | None,
        records: list[LinkRecord],
        socks: _Sockets,
    ) -> tuple[str, str]:
        """Names for a new pair: ``eth<N>`` inside each namespace, ``sd<uid>-<N>`` on the host."""
        ifname = _lowest_free(NS_IFNAME, self._taken(ns, records, socks))
        if peer_ns is not None:
            return ifname, _lowest_free(NS_IFNAME, self._taken(peer_ns, records, socks))
        taken = self._taken(None, records, socks)
        digits = IFNAMSIZ - 1 - len(HOST_IFNAME.format(uid=uid, n=""))  # room left for N
        for n in range(10**digits):
            name = host_ifname(uid, n)
            if name not in taken:
                return ifname, name
        raise QuotaExceeded(
            f"no host interface name is left for uid {uid}", details={"kind": "names"}
        )

    @staticmethod
    def _taken(ns: str | None, records: list[LinkRecord], socks: _Sockets) -> set[str]:
        """Interface names in use in ``ns`` (None: the host), live or reserved by a record."""
        nl = socks.get(ns)
        taken = {link.name for link in nl.links()} if nl is not None else set()
        for record in records:
            if record.ns == ns:
                taken.add(record.ifname)
            if record.peer_ns == ns:
                taken.add(record.peer_ifname)
        return taken

    def _allocate(self, records: list[LinkRecord], socks: _Sockets) -> IPv4Network:
        """The lowest pool block that no record holds and no host address falls in."""
        config = self.config()
        prefix = config.block_prefix
        taken: set[IPv4Network] = set()
        for record in records:
            if record.pool_block is not None:
                taken.update(_blocks_of(IPv4Network(record.pool_block), prefix))
        for address in socks.host().addresses():
            ip = address.interface.ip
            if isinstance(ip, ipaddress.IPv4Address) and ip in config.pool:
                taken.add(IPv4Network((ip, prefix), strict=False))
        for block in config.pool.subnets(new_prefix=prefix):
            if block not in taken:
                return block
        raise QuotaExceeded(
            f"the address pool {config.pool} is exhausted; unlink something, or give addresses "
            f"yourself (--addr, or --no-addr)",
            details={"kind": "pool", "pool": str(config.pool)},
        )

    def _find(self, name: str, ifname: str | None) -> LinkRecord:
        """The ready link with an end ``ifname`` in ``name``; the only one if ``ifname`` is None."""
        candidates = [
            r
            for r in self.registry.records()
            if r.state == "ready"
            and r.touches(name)
            and (ifname is None or _oriented(r, name)[0][1] == ifname)
        ]
        if not candidates:
            what = f"{name} has no link {ifname}" if ifname else f"{name} has no links"
            raise NotFound(f"namespace {what} made by sockd", field="ifname" if ifname else "name")
        if len(candidates) > 1:
            names = sorted(_oriented(r, name)[0][1] for r in candidates)
            raise InvalidRequest(
                f"namespace {name} has {len(candidates)} links ({', '.join(names)}); say which",
                field="ifname",
                details={"ifnames": names},
            )
        return candidates[0]

    def _owners(self, record: LinkRecord) -> set[int]:
        """Who may remove ``record``: its owner and the owners of the namespaces it ends in."""
        owners = {record.owner_uid}
        for ns in (record.ns, record.peer_ns):
            ns_record = self.namespaces.registry.get(ns) if ns is not None else None
            if ns_record is not None:
                owners.add(ns_record.owner_uid)
        return owners

    def _remove_all_of(self, name: str) -> None:
        """Delete every link with an end in ``name`` (called with the lock held, before its delete)."""
        with _Sockets(self.namespaces) as socks:
            for record in self.registry.records():
                if record.touches(name):
                    self._destroy(record, socks)
                    self.registry.remove(record.id)
                    if record.nat:
                        self._close_way_out(record)
                    self.log.info(
                        f"removed link {record.ns}:{record.ifname} with namespace {name}",
                        SOCKD_NS=name,
                        SOCKD_LINK=record.id,
                    )

    def _cull(self, records: list[LinkRecord], socks: _Sockets) -> list[LinkRecord]:
        """Drop ready records whose veth pair no longer exists; return the others."""
        kept = []
        for record in records:
            if record.state == "creating" or self._alive(record, socks):
                kept.append(record)
                continue
            self._destroy(record, socks)
            self.registry.remove(record.id)
            if record.nat:
                self._close_way_out(record)
            self.log.info(
                f"forgot link {record.ns}:{record.ifname}: its veth pair is gone",
                SOCKD_NS=record.ns,
                SOCKD_LINK=record.id,
                SOCKD_OWNER_UID=record.owner_uid,
            )
        return kept

    @staticmethod
    def _alive(record: LinkRecord, socks: _Sockets) -> bool:
        """Both ends exist under their recorded names and are each other's peers."""
        end = socks.link(record.ns, record.ifname)
        far = socks.link(record.peer_ns, record.peer_ifname)
        return (
            end is not None
            and far is not None
            and end.kind == far.kind == "veth"
            and end.peer_index == far.index
            and far.peer_index == end.index
        )

    def _destroy(self, record: LinkRecord, socks: _Sockets) -> None:
        """Delete whatever exists of the record's pair. Deleting one veth end deletes both."""
        end_nl = socks.get(record.ns)
        end = end_nl.link(record.ifname) if end_nl is not None else None
        if end_nl is not None and end is not None and end.kind == "veth":
            end_nl.delete_link(end.name)
        far_nl = socks.get(record.peer_ns)
        far = far_nl.link(record.peer_ifname) if far_nl is not None else None
        if (
            far_nl is not None
            and far is not None
            and far.kind == "veth"
            and self._far_end_is_ours(record, far)
        ):
            far_nl.delete_link(far.name)

    def _far_end_is_ours(self, record: LinkRecord, far: Link) -> bool:
        """Whether a veth under the recorded peer name is really this link's, before deleting it.

        Inside a namespace the caller owns, it is. On the host, a name we only reserved (a crash
        before the create) may since have been taken by someone else: it is ours if its peer lives
        in our namespace (its link-netnsid is that namespace's nsid), or, with our namespace gone,
        if we had finished making it.
        """
        if record.peer_ns is not None:
            return True
        path = self.namespaces.path(record.ns)
        if not linux.is_namespace_mount(path):
            return record.state == "ready"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            nsid = rtnl.get_nsid(fd)
        finally:
            os.close(fd)
        return nsid is not None and far.peer_netnsid == nsid

    def _view(self, record: LinkRecord, socks: _Sockets) -> LinkInfo:
        return LinkInfo(
            id=record.id,
            owner_uid=record.owner_uid,
            end=self._end(record.ns, record.ifname, socks),
            peer=self._end(record.peer_ns, record.peer_ifname, socks),
            pool_block=record.pool_block,
            created=record.created,
            nat=record.nat,
            published=[_published_view(record, p) for p in record.published],
        )

    @staticmethod
    def _end(ns: str | None, ifname: str, socks: _Sockets) -> LinkEnd:
        link = socks.link(ns, ifname)
        if link is None:
            return LinkEnd(namespace=ns, ifname=ifname, up=False, state="absent", addresses=[])
        return LinkEnd(
            namespace=ns,
            ifname=ifname,
            up=link.up,
            state=link.operstate,
            addresses=socks.addresses(ns, link.index),
        )


def _harden_host_end(ifname: str) -> None:
    """Keep a host end from changing the host's routing: no RAs, no redirects (set while down)."""
    for family, key in (
        ("ipv6", "accept_ra"),
        ("ipv6", "accept_redirects"),
        ("ipv4", "accept_redirects"),
    ):
        linux.set_interface_sysctl(family, ifname, key, "0")


def _parse_address(value: str | None, field: str) -> IPInterface | None:
    if value is None:
        return None
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}", field=field) from exc
    ip = interface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise InvalidRequest(
            f"{field}: {ip} is a multicast, unspecified or loopback address", field=field
        )
    return interface


def _parse_servers(dns: Iterable[str], nat: bool) -> list[str]:
    servers = []
    for server in dns:
        try:
            address = ipaddress.ip_address(server)
        except ValueError as exc:
            raise InvalidRequest(f"dns: {exc}", field="dns") from exc
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            raise InvalidRequest(
                f"dns: {address} cannot be a name server from inside a namespace", field="dns"
            )
        servers.append(str(address))
    if servers and not nat:
        raise InvalidRequest("dns: name servers come with a way out (--nat)", field="dns")
    return servers


def _check_nat_addressing(
    peer_ns: str | None, no_address: bool, given: IPInterface | None, peer_given: IPInterface | None
) -> None:
    if peer_ns is not None:
        raise InvalidRequest("nat: a way out goes through the host; link to the host", field="nat")
    if no_address:
        raise InvalidRequest("nat: a way out needs addresses on both ends", field="nat")
    if (given is None) != (peer_given is None) or (
        given is not None
        and peer_given is not None
        and (given.version != 4 or given.network != peer_given.network)
    ):
        raise InvalidRequest(
            "nat: give both ends IPv4 addresses of one network, or none (pool addresses)",
            field="nat",
        )


def _require_free_host_port(transport: str, port: int) -> None:
    """Refuse a host port something on the host already holds (a listener, a bound socket)."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104
        with socket.socket(family, kind | socket.SOCK_CLOEXEC) as probe:
            if transport == "tcp":
                # Connections in TIME_WAIT on that port do not count; a listener or a bound socket does.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((anywhere, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AlreadyExists(
                        f"host port {port}/{transport} is in use on the host (see `sockctl sock "
                        f"list --sport {port}`)",
                        field="host_port",
                        details={"port": port},
                    ) from exc
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise


def _published_view(record: LinkRecord, entry: PortRecord) -> PublishedPort:
    return PublishedPort(
        name=record.ns,
        transport=entry.transport,
        host_port=entry.host_port,
        address=str(ipaddress.ip_interface(record.address).ip) if record.address else "",
        port=entry.port,
        owner_uid=entry.owner_uid,
    )


def _pool_addresses(records: Iterable[LinkRecord]) -> int:
    return sum(2 for r in records if r.pool_block is not None)


def _blocks_of(network: IPv4Network, prefix: int) -> set[IPv4Network]:
    if network.prefixlen >= prefix:
        return {network.supernet(new_prefix=prefix)}
    return set(network.subnets(new_prefix=prefix))


def _lowest_free(pattern: str, taken: set[str]) -> str:
    n = 0
    while pattern.format(n=n) in taken:
        n += 1
    return pattern.format(n=n)


def _oriented(
    record: LinkRecord, name: str
) -> tuple[tuple[str | None, str], tuple[str | None, str]]:
    """((namespace, ifname) of the end in ``name``, (namespace, ifname) of the other end)."""
    end = (record.ns, record.ifname)
    far = (record.peer_ns, record.peer_ifname)
    return (far, end) if record.peer_ns == name else (end, far)
