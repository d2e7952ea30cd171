"""Who may do what: decided from the peer's kernel credentials and the configured policy."""

import enum
import ipaddress
from dataclasses import dataclass

from sockctl.errors import PermissionDenied, QuotaExceeded
from sockd.config import Config, PrivilegedPortRule, port_range, resolve_groups, resolve_users
from sockd.linux import Credentials

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVILEGED_PORTS = range(1, 1024)
"""Host ports that need a ``policy.privileged_ports`` grant: the classic Unix rule, fixed on purpose
(the host's ``net.ipv4.ip_unprivileged_port_start`` is the kernel's business, not the policy's)."""


class Access(enum.Enum):
    """The rule an operation needs before its handler runs."""

    ANYONE = "anyone"
    """Read-only: anyone who can connect."""
    CREATOR = "creator"
    """Mutating: root, or a member of ``policy.create_groups``. Owner checks follow in the handler."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One connected client, as the kernel described it when it connected."""

    creds: Credentials

    @property
    def uid(self) -> int:
        return self.creds.uid

    @property
    def pid(self) -> int:
        return self.creds.pid

    @property
    def root(self) -> bool:
        return self.creds.uid == 0

    def in_groups(self, gids: frozenset[int]) -> bool:
        return self.creds.gid in gids or not gids.isdisjoint(self.creds.groups)


@dataclass(frozen=True, slots=True)
class PortGrant:
    """One ``policy.privileged_ports`` rule, with names resolved."""

    uids: frozenset[int]
    gids: frozenset[int]
    ranges: tuple[tuple[int, int], ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_rule(cls, rule: PrivilegedPortRule) -> tuple["PortGrant", tuple[str, ...]]:
        users = resolve_users(rule.users)
        groups = resolve_groups(rule.groups)
        grant = cls(
            uids=users.uids,
            gids=groups.gids,
            ranges=tuple(port_range(entry) for entry in rule.ports),
            networks=tuple(ipaddress.ip_network(a, strict=False) for a in rule.addresses),
        )
        return grant, users.unknown + groups.unknown

    def allows(self, peer: Peer, address: IPAddress, port: int) -> bool:
        return (
            (peer.uid in self.uids or peer.in_groups(self.gids))
            and any(low <= port <= high for low, high in self.ranges)
            and any(address in network for network in self.networks)
        )


@dataclass(frozen=True, slots=True)
class Policy:
    create_gids: frozenset[int]
    monitor_gids: frozenset[int]
    create_group_names: tuple[str, ...]
    namespace_quota: int
    unknown_groups: tuple[str, ...]
    link_quota: int = 16
    address_quota: int = 32
    socket_visibility: str = "all"
    exec_gids: frozenset[int] = frozenset()
    port_grants: tuple[PortGrant, ...] = ()
    nat_gids: frozenset[int] = frozenset()
    """Who may ``ns link --nat`` and ``ns publish`` (besides root)."""
    nat_group_names: tuple[str, ...] = ()
    publish_quota: int = 16
    kill_gids: frozenset[int] = frozenset()
    """Who may ``sock kill`` other users' sockets (besides root); anyone may kill their own."""

    @classmethod
    def from_config(cls, config: Config) -> "Policy":
        create = resolve_groups(config.policy.create_groups)
        monitor = resolve_groups(config.policy.monitor_groups)
        execute = resolve_groups(config.policy.exec_groups)
        grants = [PortGrant.from_rule(rule) for rule in config.policy.privileged_ports]
        nat = resolve_groups(config.policy.nat_groups)
        kill = resolve_groups(config.policy.kill_groups)
        return cls(
            create_gids=create.gids,
            monitor_gids=monitor.gids,
            create_group_names=tuple(str(g) for g in config.policy.create_groups),
            namespace_quota=config.policy.namespace_quota,
            unknown_groups=create.unknown
            + monitor.unknown
            + execute.unknown
            + nat.unknown
            + kill.unknown
            + tuple(name for _, unknown in grants for name in unknown),
            link_quota=config.policy.link_quota,
            address_quota=config.policy.address_quota,
            socket_visibility=config.policy.socket_visibility,
            exec_gids=execute.gids,
            port_grants=tuple(grant for grant, _ in grants),
            nat_gids=nat.gids,
            nat_group_names=tuple(str(g) for g in config.policy.nat_groups),
            publish_quota=config.policy.publish_quota,
            kill_gids=kill.gids,
        )

    def may_create(self, peer: Peer) -> bool:
        return peer.root or peer.in_groups(self.create_gids)

    def sees_all_processes(self, peer: Peer) -> bool:
        return peer.root or peer.in_groups(self.monitor_gids)

    def sees_all_sockets(self, peer: Peer) -> bool:
        """Whether sock.list shows ``peer`` every socket (addresses, not processes), or only its own.

        ``policy.socket_visibility = "all"`` (the default) shows everyone every socket, as ss does
        for any user on the host; ``"own"`` keeps other uids' sockets for root and monitors.
        """
        return self.socket_visibility == "all" or self.sees_all_processes(peer)

    def kills_any_socket(self, peer: Peer) -> bool:
        """Whether ``peer`` may close sockets of other uids (root, policy.kill_groups)."""
        return peer.root or peer.in_groups(self.kill_gids)

    def authorize(self, access: Access, peer: Peer, op: str) -> None:
        if access is Access.CREATOR and not self.may_create(peer):
            groups = ", ".join(self.create_group_names) or "(none configured)"
            raise PermissionDenied(
                f"{op} needs membership in group {groups}; uid {peer.uid} is not a member "
                f"(ask an administrator, then log in again)",
                details={"uid": peer.uid, "groups": list(self.create_group_names)},
            )

    def require_nat(self, peer: Peer, what: str) -> None:
        """``ns link --nat`` and ``ns publish``: root, or a member of policy.nat_groups."""
        if peer.root or peer.in_groups(self.nat_gids):
            return
        names = self.nat_group_names
        raise PermissionDenied(
            f"{what} needs membership in group {', '.join(names) or '(none configured: root only)'}"
            f" (policy.nat_groups); uid {peer.uid} is not a member",
            details={"uid": peer.uid, "groups": list(names)},
        )

    def allows_host_port(self, peer: Peer, port: int) -> bool:
        """Whether ``peer`` may have host port ``port`` on every address (a published port)."""
        if peer.root or port not in PRIVILEGED_PORTS:
            return True
        anywhere = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 -- a published port takes them all
        return any(grant.allows(peer, anywhere, port) for grant in self.port_grants)

    def check_publish_quota(self, peer: Peer, owned: int) -> None:
        if not peer.root and owned >= self.publish_quota:
            raise QuotaExceeded(
                f"uid {peer.uid} has {owned} published ports, the quota is {self.publish_quota}; "
                f"unpublish one first",
                details={"kind": "published", "owned": owned, "quota": self.publish_quota},
            )

    def require_owner(self, peer: Peer, owner_uid: int, what: str) -> None:
        if not peer.root and peer.uid != owner_uid:
            raise PermissionDenied(
                f"{what} belongs to uid {owner_uid}; only its owner or root may change it",
                details={"owner_uid": owner_uid, "uid": peer.uid},
            )

    def check_quota(self, peer: Peer, owned: int) -> None:
        if not peer.root and owned >= self.namespace_quota:
            raise QuotaExceeded(
                f"uid {peer.uid} owns {owned} namespaces, the quota is {self.namespace_quota}; "
                f"delete one first",
                details={"owned": owned, "quota": self.namespace_quota},
            )

    def check_link_quota(self, peer: Peer, owned: int) -> None:
        if not peer.root and owned >= self.link_quota:
            raise QuotaExceeded(
                f"uid {peer.uid} owns {owned} links, the link quota is {self.link_quota}; "
                f"unlink one first",
                details={"kind": "links", "owned": owned, "quota": self.link_quota},
            )

    def check_address_quota(self, peer: Peer, held: int, wanted: int) -> None:
        if not peer.root and held + wanted > self.address_quota:
            raise QuotaExceeded(
                f"uid {peer.uid} holds {held} pool addresses and a link takes {wanted}, the "
                f"address quota is {self.address_quota}; unlink one, or give addresses yourself "
                f"(--addr, or --no-addr)",
                details={"kind": "addresses", "owned": held, "quota": self.address_quota},
            )

    # Acting inside namespaces (issue 5) -----------------------------------------------------------

    def may_enter(self, peer: Peer, owner_uid: int) -> bool:
        """Whether ``peer`` may run commands and open sockets in a namespace owned by ``owner_uid``."""
        return peer.root or peer.uid == owner_uid or peer.in_groups(self.exec_gids)

    def require_enter(self, peer: Peer, owner_uid: int, name: str) -> None:
        if not self.may_enter(peer, owner_uid):
            raise PermissionDenied(
                f"namespace {name} belongs to uid {owner_uid}; only its owner, root or a member of "
                f"policy.exec_groups may act inside it",
                field="name",
                details={"owner_uid": owner_uid, "uid": peer.uid},
            )

    def require_host_port(self, peer: Peer, address: IPAddress, port: int) -> None:
        """Refuse a privileged port of the host unless a ``privileged_ports`` rule grants it."""
        if peer.root or port not in PRIVILEGED_PORTS:
            return
        if not any(grant.allows(peer, address, port) for grant in self.port_grants):
            raise PermissionDenied(
                f"port {port} on {address} of the host is privileged and no "
                f"policy.privileged_ports rule grants it to uid {peer.uid}; use a port >= 1024, "
                f"a namespace of your own, or ask an administrator",
                field="port",
                details={"uid": peer.uid, "port": port, "address": str(address)},
            )
