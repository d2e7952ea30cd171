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

import ipaddress
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from types import TracebackType
from typing import Self

from sockctl.errors import (
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
)
from sockd import linux, rtnl
from sockd.config import LinksConfig
from sockd.log import Logger
from sockd.netns import Faults, Namespaces
from sockd.policy import Peer, Policy
from sockd.registry import LinkRecord, LinkRegistry
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
    ) -> None:
        self.registry = registry
        self.namespaces = namespaces
        self.policy = policy
        self.config = config
        self.log = log
        self.faults = faults
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
    ) -> LinkInfo:
        """Make a veth pair from ``name`` to the host (``peer_ns`` None) or to ``peer_ns``."""
        if peer_ns == name:
            raise InvalidRequest("a namespace cannot be linked to itself", field="peer")
        given = _parse_address(address, "address")
        peer_given = _parse_address(peer_address, "peer_address")
        if no_address and (given or peer_given):
            raise InvalidRequest("no_address excludes address and peer_address", field="no_address")
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
                    self.log.warning(
                        f"rolled back link {record.ns}:{record.ifname}: its creation was "
                        f"interrupted",
                        SOCKD_NS=record.ns,
                        SOCKD_LINK=record.id,
                        SOCKD_OWNER_UID=record.owner_uid,
                    )
            self._cull(self.registry.records(), socks)

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
