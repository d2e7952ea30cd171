"""A way out for linked namespaces: source NAT, published ports and forwarding, in sockd's own table.

Everything sockd does to the host's firewall lives in one nftables table, ``ip sockd``, and that table
is *derived state*: :meth:`Firewall.sync` rebuilds it from the link records (which are written
before anything is made) in one nft transaction -- add the table, delete it, add it again with
every chain and rule -- so it is always exactly what the live ``--nat`` links and their published
ports need, never half of it, and a crash at any step is repaired by the next sync at start. sockd
never reads, changes or flushes any other table; the ruleset of the host's firewall (and of
docker, libvirt, ...) stays theirs. JSON in, through ``nft -j -f -`` (nftables' stable input format;
libnftables' Python binding is not on PyPI and would tie sockd to the system Python).

Forwarding is switched on per interface, never globally (``net.ipv4.ip_forward`` stays as it was):

- on each ``--nat`` link's host end (the namespace's packets may be routed on), set when the link is
  made; the setting goes with the interface;
- on the *uplinks* (``[nat] uplinks``, by default the interfaces of the host's IPv4 default
  routes), because the kernel decides whether to forward a packet by the interface it *came in* on,
  and the replies to NATed connections come in there. sockd records each uplink it switched on
  (``nat-forwarding.json`` in its state directory, before it writes the sysctl) and switches it off
  again when no link needs it; an uplink that was already forwarding is left alone. For the uplinks
  sockd switched on, its forward chain lets through only what it was switched on for (replies to
  the namespaces' connections and published ports) and drops the rest, so turning it on opens
  nothing else.

The rules, per ``--nat`` link with host end ``H`` and block ``B``:

- forward: from ``H`` only sources in ``B`` (a namespace whose owner is its admin could forge
  others) and only out through an uplink (not into other users' namespaces, not between links);
- postrouting: from ``B`` out through an uplink, masquerade (the uplink's address);
- per published port: prerouting and output DNAT of the host's own addresses' port to the
  namespace's address (``fib daddr type local``), not for 127.0.0.0/8 (the kernel would drop the
  DNATed packet as a martian, as it does for docker without its userland proxy).

IPv4 only: links get IPv4 pool blocks; IPv6 would need a ULA pool and NAT66 (or a routed prefix
the host does not have here), see README.
"""

import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sockctl.errors import InternalError
from sockd import linux
from sockd.log import Logger
from sockd.rtnl import Rtnl

TABLE = "sockd"
FAMILY = "ip"
NFT = "/usr/sbin/nft"


@dataclass(frozen=True, slots=True)
class Published:
    transport: str  # "tcp" or "udp"
    host_port: int
    port: int


@dataclass(frozen=True, slots=True)
class NatLink:
    """What the firewall needs to know of one live ``--nat`` link."""

    host_ifname: str
    block: str
    """The link's network (``10.213.0.0/30``)."""
    address: str
    """The namespace end's address (DNAT target), without prefix."""
    published: tuple[Published, ...] = ()


def ruleset(
    links: Sequence[NatLink],
    uplinks: Sequence[str],
    guarded: Iterable[str],
    *,
    table: str = TABLE,
    replace: bool = False,
) -> list[dict[str, object]]:
    """The nft JSON commands that replace sockd's table with what ``links`` need.

    ``guarded``: the uplinks whose forwarding sockd switched on, where only replies and published
    ports may be forwarded. Without links: no table. Otherwise the table, its four chains, a
    flush of their rules and the new rules, in one transaction; ``replace`` deletes the table
    first (for a table whose chains differ, e.g. one an older sockd made).
    """
    table_id = {"family": FAMILY, "name": table}
    if not links or replace:
        commands: list[dict[str, object]] = [
            {"add": {"table": table_id}},
            {"delete": {"table": table_id}},
        ]
        if not links:
            return commands
    else:
        commands = []
    commands.append({"add": {"table": table_id}})
    member = {"family": FAMILY, "table": table}  # how chains and rules name their table

    def chain(name: str, kind: str, hook: str, priority: int) -> None:
        commands.append(
            {
                "add": {
                    "chain": {
                        **member,
                        "name": name,
                        "type": kind,
                        "hook": hook,
                        "prio": priority,
                        "policy": "accept",
                    }
                }
            }
        )

    def rule(chain_name: str, *expr: dict[str, object]) -> None:
        commands.append({"add": {"rule": {**member, "chain": chain_name, "expr": list(expr)}}})

    def match(left: object, right: object, op: str = "==") -> dict[str, object]:
        return {"match": {"op": op, "left": left, "right": right}}

    def meta(key: str) -> dict[str, object]:
        return {"meta": {"key": key}}

    def prefix(network: str) -> dict[str, object]:
        address, length = network.split("/")
        return {"prefix": {"addr": address, "len": int(length)}}

    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    daddr = {"payload": {"protocol": "ip", "field": "daddr"}}
    uplink_set = {"set": list(uplinks)}
    ends = {"set": [link.host_ifname for link in links]}
    drop: dict[str, object] = {"drop": None}
    accept: dict[str, object] = {"accept": None}

    chain("forward", "filter", "forward", 0)
    chain("postrouting", "nat", "postrouting", 100)
    chain("prerouting", "nat", "prerouting", -100)
    chain("output", "nat", "output", -100)
    if not replace:
        # The chains stay (adding an existing one is a no-op), their rules go: cheap, where
        # deleting a table or a base chain waits for an RCU grace period (~15 ms) in the kernel.
        commands.append({"flush": {"table": table_id}})
    for link in links:
        rule(
            "forward",
            match(meta("iifname"), link.host_ifname),
            match(saddr, prefix(link.block), "!="),
            drop,
        )
        rule(
            "forward",
            match(meta("iifname"), link.host_ifname),
            match(meta("oifname"), uplink_set, "!="),
            drop,
        )
    for uplink in sorted(set(guarded)):
        rule(
            "forward",
            match(meta("iifname"), uplink),
            match(meta("oifname"), ends),
            match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "in"),
            accept,
        )
        rule(
            "forward",
            match(meta("iifname"), uplink),
            match(meta("oifname"), ends),
            match({"ct": {"key": "status"}}, "dnat", "in"),
            accept,
        )
        rule("forward", match(meta("iifname"), uplink), drop)

    for link in links:
        rule(
            "postrouting",
            match(saddr, prefix(link.block)),
            match(meta("oifname"), uplink_set),
            {"masquerade": None},
        )

    published = [(link, p) for link in links for p in link.published]
    if published:
        for link, port in published:
            for hook in ("prerouting", "output"):
                rule(
                    hook,
                    match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
                    match(daddr, prefix("127.0.0.0/8"), "!="),
                    match(
                        {"payload": {"protocol": port.transport, "field": "dport"}}, port.host_port
                    ),
                    {"dnat": {"family": "ip", "addr": link.address, "port": port.port}},
                )
    return commands


def apply(commands: list[dict[str, object]], nft: str = NFT) -> None:
    """Run ``commands`` as one nft transaction (all or nothing). Raises InternalError."""
    try:
        done = subprocess.run(
            [nft, "-j", "-f", "-"],
            input=json.dumps({"nftables": commands}),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InternalError(f"cannot run nft: {exc}") from exc
    if done.returncode != 0:
        raise InternalError(f"nft refused sockd's table: {done.stderr.strip()[:2000]}")


def table_exists(table: str = TABLE, nft: str = NFT) -> bool:
    done = subprocess.run([nft, "list", "table", FAMILY, table], capture_output=True, check=False)
    return done.returncode == 0


class Firewall:
    """sockd's nft table and the uplinks' forwarding switches; see the module docstring."""

    def __init__(
        self,
        state_dir: str,
        uplinks: Sequence[str],
        log: Logger,
        *,
        table: str = TABLE,
        nft: str = NFT,
    ) -> None:
        self._state = Path(state_dir) / "nat-forwarding.json"
        self._configured_uplinks = list(uplinks)
        self.table = table
        self.log = log
        self.nft = nft

    def configure(self, uplinks: Sequence[str], table: str) -> None:
        """New settings (reload). A renamed table: the old one is removed at the next sync."""
        self._configured_uplinks = list(uplinks)
        if table != self.table:
            apply(ruleset([], [], [], table=self.table), self.nft)
            self.table = table

    def uplinks(self) -> list[str]:
        """The configured uplinks, or the interfaces of the host's IPv4 default routes."""
        if self._configured_uplinks:
            return list(self._configured_uplinks)
        with Rtnl.here() as nl:
            names = {link.index: link.name for link in nl.links()}
            return sorted({names[i] for i in nl.default_route_interfaces() if i in names})

    def sync(self, links: Sequence[NatLink]) -> None:
        """Make the table and the uplinks' forwarding exactly what ``links`` need."""
        uplinks = self.uplinks() if links else []
        switched = self._switched()
        if switched and _forwarding("all") == "1":
            # Someone switched the host's global forwarding on since (net.ipv4.ip_forward: docker,
            # libvirt, an administrator): every interface forwards by their decision now, and
            # sockd's guards would drop their traffic. Forget ours; the host routes.
            self.log.info("nat: the host forwards globally now; sockd no longer guards uplinks")
            switched = []
            self._record(switched)
        for uplink in uplinks:
            if uplink not in switched and _forwarding(uplink) == "0":
                switched.append(uplink)
                self._record(switched)  # before the write: a crash leaves it recorded, not lost
                linux.set_interface_sysctl("ipv4", uplink, "forwarding", "1")
                self.log.info(
                    f"nat: forwarding on uplink {uplink} switched on", SOCKD_IFNAME=uplink
                )
        if uplinks or not links:
            guarded = [u for u in switched if u in uplinks]
            try:
                apply(ruleset(links, uplinks, guarded, table=self.table), self.nft)
            except InternalError:
                commands = ruleset(links, uplinks, guarded, table=self.table, replace=True)
                apply(commands, self.nft)
        else:
            raise InternalError(
                "nat: no uplink: the host has no IPv4 default route and [nat] uplinks is empty"
            )
        # Only after the table stops guarding them: switch off what no link needs any more.
        for uplink in [u for u in switched if u not in uplinks]:
            linux.set_interface_sysctl("ipv4", uplink, "forwarding", "0")
            switched.remove(uplink)
            self._record(switched)
            self.log.info(f"nat: forwarding on uplink {uplink} switched off", SOCKD_IFNAME=uplink)

    def _switched(self) -> list[str]:
        try:
            data = json.loads(self._state.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            self.log.error(f"nat: unreadable {self._state} ({exc}); assuming no uplink switched on")
            return []
        return [str(u) for u in data] if isinstance(data, list) else []

    def _record(self, switched: list[str]) -> None:
        if not switched:
            self._state.unlink(missing_ok=True)
            return
        temporary = self._state.with_suffix(".tmp")
        temporary.write_text(json.dumps(switched))
        os.replace(temporary, self._state)


def _forwarding(ifname: str) -> str:
    try:
        return Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding").read_text().strip()
    except FileNotFoundError:
        return "missing"
