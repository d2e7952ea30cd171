"""The daemon's configuration file (TOML), validated with pydantic; every key has a default.

Example, with the defaults (``systemd/sockd.toml`` is the installed copy)::

    [policy]
    create_groups = ["sockd"]            # may create namespaces (root always may)
    monitor_groups = ["sockd-monitor"]   # may see other users' processes and pids
    namespace_quota = 16                 # namespaces one non-root user may own (created or attached)
    link_quota = 16                      # veth links one non-root user may own
    address_quota = 32                   # pool addresses one non-root user may hold (2 per link)
    socket_visibility = "all"            # sock.list/summary for non-monitors: "all" sockets
                                         # (addresses, as ss shows anyone) or only their "own"
    exec_groups = []                     # may `ns exec`/`sock open` into ANY namespace (owners and
                                         # root always may into theirs / all)
    nat_groups = ["sockd"]               # may `ns link --nat` and `ns publish` ([]: root only)
    publish_quota = 16                   # published ports one non-root user may hold
    kill_groups = ["sockd-monitor"]      # may `sock kill` other users' sockets (anyone: their own)

    # Privileged ports (1-1023) in the HOST namespace, authbind's model: none for non-root users
    # unless a rule grants it (the default: no rules). Inside namespaces they may enter, users may
    # bind any port. An example rule:
    [[policy.privileged_ports]]
    users = ["alice", 1001]              # user names or uids ...
    groups = ["www"]                     # ... or groups (names or gids): either matches
    ports = [80, 443, "8000-8080"]       # single ports or inclusive ranges
    addresses = ["0.0.0.0/0", "::/0"]    # networks the bound address must fall in (default: any,
                                         # including the wildcards 0.0.0.0 and ::)

    [limits]
    max_connections = 512                # all clients together
    max_connections_per_uid = 32         # one uid's concurrent connections (root is exempt)
    idle_timeout = 60.0                  # seconds a connection may wait between requests
    send_timeout = 5.0                   # seconds a reply may wait for a slow reader
    idle_exit = 0.0                      # exit after this long without clients (0: never)

    [links]
    pool = "10.213.0.0/16"               # IPv4 pool `ns link` takes default addresses from
    block_prefix = 30                    # one block per link: /30 (.1 peer, .2 namespace) or /31

    [nat]
    table = "sockd"                      # sockd's own nftables table (ip family); no other is touched
    uplinks = []                         # interfaces NATed and published traffic may use; empty:
                                         # those of the host's IPv4 default routes, at each change

    [sockets]
    process_scan = "auto"                # how sock.list finds sockets' processes: "auto" (the
                                         # kernel's BPF task_file iterator where it loads, else
                                         # /proc/*/fd) or "proc" (always /proc/*/fd, as ss -p)

    [exec]
    spawn = "auto"                       # how `ns exec` starts commands: "unit" (a transient
                                         # service of systemd in the caller's user slice, outside
                                         # sockd's sandbox), "direct" (sockd forks them), or
                                         # "auto" (unit when systemd is PID 1 and answers)
    unit_prefix = "sockd-exec"           # names of those units: PREFIX-UID-RANDOM.service

    [log]
    level = "info"                       # debug, info, warning, error

Every pool block is either held by a link sockd made (recorded in the registry, released when the link
goes) or skipped because one of its addresses already shows up in the host namespace, so the pool never
hands out an address the host uses. Pick a range that is not routed anywhere on the host.
"""

import grp
import ipaddress
import pwd
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG = "/etc/sockd/sockd.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivilegedPortRule(_Section):
    """One grant of privileged host ports (see the module docstring)."""

    users: list[str | int] = []
    groups: list[str | int] = []
    ports: list[int | str]
    addresses: list[str] = ["0.0.0.0/0", "::/0"]

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int | str]) -> list[int | str]:
        for entry in ports:
            low, high = port_range(entry)
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"{entry!r} is not a port or a low-high range within 1-65535")
        return ports

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            ipaddress.ip_network(address, strict=False)  # ValueError names the bad one
        return addresses


def port_range(entry: int | str) -> tuple[int, int]:
    """``80`` or ``"80"`` → (80, 80); ``"8000-8080"`` → (8000, 8080)."""
    if isinstance(entry, int):
        return entry, entry
    low, sep, high = entry.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ValueError(f"{entry!r} is not a port or a low-high range") from None


class PolicyConfig(_Section):
    create_groups: list[str | int] = ["sockd"]
    monitor_groups: list[str | int] = ["sockd-monitor"]
    namespace_quota: int = Field(default=16, ge=0, le=100000)
    link_quota: int = Field(default=16, ge=0, le=100000)
    address_quota: int = Field(default=32, ge=0, le=1 << 24)
    socket_visibility: Literal["all", "own"] = "all"
    # issue 5: who may act inside namespaces they do not own, and privileged host ports.
    exec_groups: list[str | int] = []
    privileged_ports: list[PrivilegedPortRule] = []
    # issue 14: who may give their namespaces a way out, and publish host ports into them.
    nat_groups: list[str | int] = ["sockd"]
    publish_quota: int = Field(default=16, ge=0, le=100000)
    # issue 15: who may close other users' sockets (SOCK_DESTROY); everyone may close their own.
    kill_groups: list[str | int] = ["sockd-monitor"]


class LimitsConfig(_Section):
    max_connections: int = Field(default=512, ge=1, le=100000)
    max_connections_per_uid: int = Field(default=32, ge=1, le=100000)
    idle_timeout: float = Field(default=60.0, gt=0, le=86400)
    send_timeout: float = Field(default=5.0, gt=0, le=3600)
    idle_exit: float = Field(default=0.0, ge=0)


class LinksConfig(_Section):
    pool: IPv4Network = IPv4Network("10.213.0.0/16")
    block_prefix: int = Field(default=30, ge=8, le=31)

    @model_validator(mode="after")
    def _block_fits(self) -> "LinksConfig":
        if self.block_prefix < self.pool.prefixlen:
            raise ValueError(
                f"block_prefix /{self.block_prefix} is larger than the pool {self.pool}"
            )
        return self


class NatConfig(_Section):
    table: str = Field(default="sockd", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    """The name of sockd's own nftables table (family ip); sockd touches no other."""
    uplinks: list[str] = Field(default=[], max_length=64)
    """Interfaces NATed traffic may leave by; empty: those of the host's IPv4 default routes."""

    @model_validator(mode="after")
    def _names(self) -> "NatConfig":
        for name in self.uplinks:
            if not re.fullmatch(r"[^/\s\x00]{1,15}", name) or name in (".", ".."):
                raise ValueError(f"uplinks: {name!r} is not an interface name")
        return self


class SocketsConfig(_Section):
    process_scan: Literal["auto", "proc"] = "auto"


class ExecConfig(_Section):
    spawn: Literal["auto", "unit", "direct"] = "auto"
    unit_prefix: str = Field(default="sockd-exec", pattern=r"^[a-z][a-z0-9-]{0,40}$")


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    policy: PolicyConfig = PolicyConfig()
    limits: LimitsConfig = LimitsConfig()
    links: LinksConfig = LinksConfig()
    nat: NatConfig = NatConfig()
    sockets: SocketsConfig = SocketsConfig()
    exec: ExecConfig = ExecConfig()
    log: LogConfig = LogConfig()


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


def load(path: str | None) -> Config:
    """Read and validate ``path``; a missing file at the default location means all defaults."""
    if path is None:
        path = DEFAULT_CONFIG
        if not Path(path).exists():
            return Config()
    try:
        with Path(path).open("rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"config {path}: {problems}") from exc


@dataclass(frozen=True, slots=True)
class Groups:
    """Group names resolved to gids when the config is loaded; unknown names are reported."""

    gids: frozenset[int]
    unknown: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Users:
    """User names resolved to uids when the config is loaded; unknown names are reported."""

    uids: frozenset[int]
    unknown: tuple[str, ...]


def resolve_users(names: list[str | int]) -> Users:
    uids, unknown = _resolve(names, lambda name: pwd.getpwnam(name).pw_uid)
    return Users(uids, unknown)


def resolve_groups(names: list[str | int]) -> Groups:
    gids, unknown = _resolve(names, lambda name: grp.getgrnam(name).gr_gid)
    return Groups(gids, unknown)


def _resolve(
    names: list[str | int], lookup: Callable[[str], int]
) -> tuple[frozenset[int], tuple[str, ...]]:
    ids: set[int] = set()
    unknown: list[str] = []
    for name in names:
        if isinstance(name, int):
            ids.add(name)
            continue
        try:
            ids.add(lookup(name))
        except KeyError:
            unknown.append(name)
    return frozenset(ids), tuple(unknown)
