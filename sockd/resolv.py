"""resolv.conf for namespaces with a way out: name servers that answer from inside.

The host's /etc/resolv.conf often names a local stub (systemd-resolved's 127.0.0.53, a dnsmasq on
127.0.0.1) that a namespace cannot reach: its loopback is its own. So a ``--nat`` namespace gets its
own file, kept by sockd in ``<state>/etc/NAME/resolv.conf`` (users cannot write /etc) and bound over
/etc/resolv.conf by ``ns exec``, as ``ip netns exec`` binds /etc/netns/NAME/ (which, if an
administrator made one with a resolv.conf, still wins). Its servers are the ones the caller gave
(``--dns``), else the host's, with loopback stubs replaced by their upstream servers
(/run/systemd/resolve/resolv.conf, the file systemd-resolved writes for exactly this purpose).
"""

import ipaddress
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

HOST_RESOLV = "/etc/resolv.conf"
UPSTREAM_RESOLV = "/run/systemd/resolve/resolv.conf"
RESOLV = "resolv.conf"


def _servers_and_search(path: str) -> tuple[list[str], list[str]]:
    servers: list[str] = []
    search: list[str] = []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return [], []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1])
        elif words and words[0] in ("search", "domain"):
            search = words[1:]
    return servers, search


def _reachable(server: str) -> bool:
    """Not a loopback address (the namespace's loopback is its own). Scoped v6 (``fe80::1%eth0``)
    names a host interface, also useless inside."""
    try:
        return not ipaddress.ip_address(server).is_loopback
    except ValueError:
        return False


def contents(
    dns: Sequence[str], host: str = HOST_RESOLV, upstream: str = UPSTREAM_RESOLV
) -> tuple[str, list[str]]:
    """(resolv.conf text, warnings) for a namespace given ``dns`` servers (empty: the host's)."""
    warnings: list[str] = []
    search: list[str] = []
    if dns:
        servers = list(dns)
    else:
        servers, search = _servers_and_search(host)
        if not any(_reachable(s) for s in servers):
            stubbed = servers
            servers, upstream_search = _servers_and_search(upstream)
            search = search or upstream_search
            if not any(_reachable(s) for s in servers):
                warnings.append(
                    f"the host's name servers ({', '.join(stubbed) or 'none'}) are loopback stubs "
                    f"without known upstream servers; give some with --dns"
                )
        servers = [s for s in servers if _reachable(s)]
    lines = ["# Written by sockd for this namespace (ns link --nat); see `sockctl ns show`."]
    lines += [f"nameserver {s}" for s in servers[:3]]
    if search:
        lines.append("search " + " ".join(search))
    return "\n".join(lines) + "\n", warnings


def write(etc_dir: str, name: str, text: str) -> None:
    """Write ``<etc_dir>/<name>/resolv.conf`` (world-readable: the caller reads it as itself)."""
    directory = Path(etc_dir) / name
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = directory / f".{RESOLV}.tmp"
    temporary.write_text(text)
    temporary.chmod(0o644)
    os.replace(temporary, directory / RESOLV)


def remove(etc_dir: str, name: str) -> None:
    shutil.rmtree(Path(etc_dir) / name, ignore_errors=True)
