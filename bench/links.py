"""Benchmark: make and remove one configured link (veth host <-> namespace, two addresses, both up).

Everything is measured in the same run, on the same namespace (run as root)::

    sockd library     Client.ns_link + Client.ns_unlink over the daemon's socket
    sockctl CLI       `sockctl ns link` + `sockctl ns unlink` (process start included: what a person feels)
    raw rtnl          sockd.rtnl in-process without the daemon (the floor the daemon's work sits on)
    iproute2          the `ip` commands a script runs for the same result (6 processes per cycle)
    pyroute2          IPRoute doing the same, when an interpreter with pyroute2 is given

plus the import cost of ``sockd.rtnl`` against ``pyroute2`` (why the daemon speaks raw rtnetlink).

    sudo python bench/links.py [--cycles 200] [--cli-cycles 20] [--pyroute2-python PATH]

Addresses come from 10.213.255.0/30 (and the daemon's pool, set to 10.213.128.0/17 here): they exist
only on the veths this script makes and removes; no packet is sent.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import running_sockd  # noqa: E402 -- after the path set-up above

from sockctl import Client  # noqa: E402
from sockd import rtnl  # noqa: E402

NS = f"sdbench-{os.getpid()}"
HOST_ADDR = "10.213.255.1/30"
NS_ADDR = "10.213.255.2/30"

PYROUTE2_CYCLE = """
import json, sys, time
from pyroute2 import IPRoute
ns, cycles = sys.argv[1], int(sys.argv[2])
times = []
with IPRoute() as ipr, IPRoute(netns=ns) as inside:
    for _ in range(cycles):
        t = time.perf_counter()
        ipr.link("add", ifname="sdb-pr2", kind="veth",
                 peer={"ifname": "eth9", "net_ns_fd": "/run/netns/" + ns})
        (host,) = ipr.link_lookup(ifname="sdb-pr2")
        ipr.addr("add", index=host, address="10.213.255.1", prefixlen=30)
        ipr.link("set", index=host, state="up")
        (end,) = inside.link_lookup(ifname="eth9")
        inside.addr("add", index=end, address="10.213.255.2", prefixlen=30)
        inside.link("set", index=end, state="up")
        ipr.link("del", index=host)
        times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def timed(cycles: int, fn: Callable[[], None]) -> list[float]:
    times = []
    for _ in range(cycles):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_command(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def ip_cycle() -> None:
    run_command("ip", "link", "add", "sdb-ip", "type", "veth", "peer", "name", "eth9", "netns", NS)
    run_command("ip", "addr", "add", HOST_ADDR, "dev", "sdb-ip")
    run_command("ip", "-n", NS, "addr", "add", NS_ADDR, "dev", "eth9")
    run_command("ip", "link", "set", "sdb-ip", "up")
    run_command("ip", "-n", NS, "link", "set", "eth9", "up")
    run_command("ip", "link", "del", "sdb-ip")


def raw_cycle() -> None:
    import ipaddress

    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rtnl.Rtnl.here() as host:
            host.create_veth("eth9", "sdb-raw", netns_fd=fd)
            end = host.link("sdb-raw")
            assert end is not None
            host.add_address(end.index, ipaddress.ip_interface(HOST_ADDR))
            with rtnl.Rtnl.inside(f"/run/netns/{NS}") as inside:
                far = inside.link("eth9")
                assert far is not None
                inside.add_address(far.index, ipaddress.ip_interface(NS_ADDR))
                inside.set_up(far.index)
            host.set_up(end.index)
            host.delete_link("sdb-raw")
    finally:
        os.close(fd)


def import_time(python: str, module: str, env: dict[str, str], after: str = "os") -> float:
    """Median seconds to import ``module`` once ``after`` (already loaded by the daemon) is."""
    code = (
        f"import time, {after}; t = time.perf_counter(); import {module}; "
        f"print(time.perf_counter() - t)"
    )
    samples = [
        float(
            subprocess.run(
                [python, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
        )
        for _ in range(5)
    ]
    return statistics.median(samples)


def row(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
    median = statistics.median(ms)
    return f"| {name} | {len(ms)} | {median:.2f} | {p90:.2f} | {1000 / median:.0f} |"


def run(cycles: int = 200, cli_cycles: int = 20, pyroute2_python: str | None = None) -> str:
    """Measure every method in one run; the markdown tables."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes namespaces and veths")

    with running_sockd('[links]\npool = "10.213.128.0/17"\n') as (sock, _):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
        cli_env = {**env, "SOCKD_SOCKET": sock}
        results: list[tuple[str, list[float]]] = []
        try:
            with Client(sock) as client:
                client.ns_create(NS)

                def library_cycle() -> None:
                    client.ns_link(NS)
                    client.ns_unlink(NS)

                def cli_cycle() -> None:
                    run_command(sys.executable, "-m", "sockctl", "ns", "link", NS, env=cli_env)
                    run_command(sys.executable, "-m", "sockctl", "ns", "unlink", NS, env=cli_env)

                timed(5, library_cycle)  # warm-up: first thread, first pool scan
                results.append(("sockd library (link + unlink)", timed(cycles, library_cycle)))
                results.append(("raw rtnl in-process", timed(cycles, raw_cycle)))
                results.append(("iproute2, 6 `ip` runs", timed(max(cli_cycles, 20), ip_cycle)))
                results.append(("sockctl CLI (2 runs)", timed(cli_cycles, cli_cycle)))
                if pyroute2_python:
                    out = subprocess.run(
                        [pyroute2_python, "-c", PYROUTE2_CYCLE, NS, str(cycles)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    results.append(("pyroute2 IPRoute in-process", json.loads(out.stdout)))
                client.ns_delete(NS)
            # What each adds on top of the Linux layer the daemon had before links (sockd.linux).
            imports = [
                ("sockd.rtnl", import_time(sys.executable, "sockd.rtnl", env, "sockd.linux"))
            ]
            if pyroute2_python:
                imports.append(("pyroute2", import_time(pyroute2_python, "pyroute2", env)))
        finally:
            subprocess.run(["ip", "netns", "del", NS], check=False, stderr=subprocess.DEVNULL)

    lines = [
        f"Link make + remove cycle ({os.uname().release}, Python {sys.version.split()[0]})",
        "",
        "| method | cycles | median ms | p90 ms | cycles/s |",
        "|---|---|---|---|---|",
        *(row(name, times) for name, times in results),
        "",
        "| import (on top of a loaded daemon) | median ms |",
        "|---|---|",
        *(f"| `import {name}` | {seconds * 1000:.1f} |" for name, seconds in imports),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--cli-cycles", type=int, default=20)
    parser.add_argument("--pyroute2-python", help="an interpreter that can import pyroute2")
    args = parser.parse_args()
    print(run(args.cycles, args.cli_cycles, args.pyroute2_python))


if __name__ == "__main__":
    main()
