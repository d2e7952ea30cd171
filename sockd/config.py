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

    [limits]
    max_connections = 512                # all clients together
    max_connections_per_uid = 32         # one uid's concurrent connections (root is exempt)
    idle_timeout = 60.0                  # seconds a connection may wait between requests
    send_timeout = 5.0                   # seconds a reply may wait for a slow reader
    idle_exit = 0.0                      # exit after this long without clients (0: never)

    [links]
    pool = "10.213.0.0/16"               # IPv4 pool `ns link` takes default addresses from
    block_prefix = 30                    # one block per link: /30 (.1 peer, .2 namespace) or /31

    [log]
    level = "info"                       # debug, info, warning, error

Every pool block is either held by a link sockd made (recorded in the registry, released when the link
goes) or skipped because one of its addresses already shows up in the host namespace, so the pool never
hands out an address the host uses. Pick a range that is not routed anywhere on the host.
"""

import grp
import tomllib
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = "/etc/sockd/sockd.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(_Section):
    create_groups: list[str | int] = ["sockd"]
    monitor_groups: list[str | int] = ["sockd-monitor"]
    namespace_quota: int = Field(default=16, ge=0, le=100000)
    link_quota: int = Field(default=16, ge=0, le=100000)
    address_quota: int = Field(default=32, ge=0, le=1 << 24)
    socket_visibility: Literal["all", "own"] = "all"


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


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    policy: PolicyConfig = PolicyConfig()
    limits: LimitsConfig = LimitsConfig()
    links: LinksConfig = LinksConfig()
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


def resolve_groups(names: list[str | int]) -> Groups:
    gids: set[int] = set()
    unknown: list[str] = []
    for name in names:
        if isinstance(name, int):
            gids.add(name)
            continue
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            unknown.append(name)
    return Groups(frozenset(gids), tuple(unknown))
