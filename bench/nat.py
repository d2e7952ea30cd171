"""Benchmark: a namespace's way out -- sockd's ``ns link --nat`` against pasta and slirp4netns.

All in the same run, each path doing the same job: a process in a network namespace talks to a
server "upstream" (a namespace this script makes behind a test veth; the host routes only
198.18.1.0/24 into it, so nothing leaves the machine)::

    host (no namespace)  iperf3/round trips straight from the host: the kernel's ceiling
    sockd --nat          veth + forwarding + nftables masquerade (sockd's table)
    pasta                passt's userspace TCP/IP translation (pasta --netns PATH --config-net)
    slirp4netns          slirp's userspace stack on a tap (slirp4netns --configure --mtu=65520)

It reports TCP throughput (iperf3 -t SECONDS, one stream), TCP request/response latency (1 byte
each way, like netperf's TCP_RR: RUNS round trips on one connection, median and p99), and
``ns link --nat`` + ``ns unlink`` cycles per second against the same done with ``ip`` and ``nft``
commands (veth, addresses, up, default route, forwarding sysctl, a table with masquerade).

    sudo python bench/nat.py [--seconds 5] [--round-trips 20000] [--cycles 50]
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import median, percentile, running_sockd, table  # noqa: E402

from sockctl import Client  # noqa: E402

TAG = os.getpid() % 100000
UPSTREAM = f"sdbup{TAG}"
UPLINK = f"sdbu{TAG}"
SERVER = "198.18.1.1"
PREFIX = "198.18.1.0/24"
PORT = 5201
RR_PORT = 5301
PYTHON = "/usr/bin/python3"

RR_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(1)):
        c.sendall(b)
    c.close()
"""

RR_CLIENT = """
import json, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def quiet(*argv: str) -> None:
    subprocess.run(argv, check=False, capture_output=True)


@contextlib.contextmanager
def upstream() -> Iterator[None]:
    try:
        sh("ip", "netns", "add", UPSTREAM)
        sh("ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", UPSTREAM)
        sh("ip", "addr", "add", "198.18.0.1/30", "dev", UPLINK)
        sh("ip", "link", "set", UPLINK, "up")
        sh("ip", "-n", UPSTREAM, "addr", "add", "198.18.0.2/30", "dev", "eth0")
        sh("ip", "-n", UPSTREAM, "link", "set", "eth0", "up")
        sh("ip", "-n", UPSTREAM, "link", "set", "lo", "up")
        sh("ip", "-n", UPSTREAM, "addr", "add", f"{SERVER}/32", "dev", "lo")
        sh("ip", "route", "add", PREFIX, "via", "198.18.0.2", "dev", UPLINK)
        rr = subprocess.Popen(
            ["ip", "netns", "exec", UPSTREAM, PYTHON, "-c", RR_SERVER, SERVER, str(RR_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert rr.stdout is not None and rr.stdout.readline().strip() == "ready"
        try:
            yield
        finally:
            rr.kill()
            rr.wait()
    finally:
        quiet("ip", "route", "del", PREFIX)
        quiet("ip", "link", "del", UPLINK)
        quiet("ip", "netns", "del", UPSTREAM)


def in_ns(ns: str | None, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def throughput(ns: str | None, seconds: float) -> float:
    """Gbit/s received by the upstream iperf3 server from one stream out of ``ns``."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", UPSTREAM, "iperf3", "-s", "-1", "-B", SERVER, "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            time.sleep(0.05)
            done = subprocess.run(
                in_ns(ns, "iperf3", "-c", SERVER, "-p", str(PORT), "-t", str(seconds), "-J"),
                capture_output=True,
                text=True,
                check=False,
            )
            report = json.loads(done.stdout or "{}")
            if "error" not in report and "end" in report:
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
            if "unable to connect" not in report.get("error", ""):
                raise RuntimeError(done.stdout + done.stderr)
        raise RuntimeError("the iperf3 server did not come up")
    finally:
        server.kill()
        server.wait()


def round_trips(ns: str | None, runs: int) -> tuple[float, float]:
    """(median, p99) of 1-byte request/response round trips, in microseconds."""
    done = subprocess.run(
        in_ns(ns, PYTHON, "-c", RR_CLIENT, SERVER, str(RR_PORT), str(runs)),
        capture_output=True,
        text=True,
        check=True,
    )
    times = json.loads(done.stdout)[runs // 10 :]  # the first tenth warms up
    return median(times) * 1e6, percentile(times, 0.99) * 1e6


@contextlib.contextmanager
def sockd_nat() -> Iterator[tuple[str, Client]]:
    config = f'[nat]\ntable = "sockdbench{TAG}"\nuplinks = ["{UPLINK}"]\n'
    with running_sockd(config) as (sock, _), Client(sock) as client:
        name = f"sdbnat{TAG}"
        client.ns_create(name)
        try:
            client.ns_link(name, nat=True)
            yield name, client
        finally:
            client.ns_delete(name, force=True)


@contextlib.contextmanager
def helper_ns(kind: str) -> Iterator[str]:
    name = f"sdb{kind}{TAG}"
    sh("ip", "netns", "add", name)
    path = f"/run/netns/{name}"
    if kind == "slirp":
        argv = ["slirp4netns", "--configure", "--mtu=65520", "--netns-type=path", path, "tap0"]
    else:
        argv = ["pasta", "-q", "-4", "--config-net", "--runas", "0", "--netns", path, "-f"]
    helper = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while (
            b"default"
            not in subprocess.run(
                ["ip", "-n", name, "route"], capture_output=True, check=False
            ).stdout
        ):
            if time.monotonic() > deadline or helper.poll() is not None:
                raise RuntimeError(f"{argv[0]} did not configure {name}")
            time.sleep(0.05)
        yield name
    finally:
        helper.terminate()
        helper.wait(10)
        quiet("ip", "netns", "del", name)


def nat_cycles_sockd(client: Client, name: str, cycles: int) -> float:
    client.ns_unlink(name)
    start = time.perf_counter()
    for _ in range(cycles):
        client.ns_link(name, nat=True)
        client.ns_unlink(name)
    elapsed = time.perf_counter() - start
    client.ns_link(name, nat=True)
    return cycles / elapsed


def nat_cycles_commands(cycles: int) -> float:
    """The same link, route, forwarding and masquerade by hand, with ip, sysctl and nft."""
    name = f"sdbman{TAG}"
    sh("ip", "netns", "add", name)
    table_name = f"sdbman{TAG}"
    masquerade = (
        f"add table ip {table_name}; "
        f"add chain ip {table_name} post {{ type nat hook postrouting priority srcnat; }}; "
        f"add rule ip {table_name} post ip saddr 10.213.254.0/30 oifname {UPLINK} masquerade"
    )
    steps: list[Callable[[], None]] = [
        lambda: sh(
            "ip", "link", "add", "sdbman0", "type", "veth", "peer", "name", "eth0", "netns", name
        ),
        lambda: sh("sysctl", "-q", "-w", "net.ipv4.conf.sdbman0.forwarding=1"),
        lambda: sh("ip", "addr", "add", "10.213.254.1/30", "dev", "sdbman0"),
        lambda: sh("ip", "-n", name, "addr", "add", "10.213.254.2/30", "dev", "eth0"),
        lambda: sh("ip", "link", "set", "sdbman0", "up"),
        lambda: sh("ip", "-n", name, "link", "set", "eth0", "up"),
        lambda: sh("ip", "-n", name, "route", "add", "default", "via", "10.213.254.1"),
        lambda: sh("nft", masquerade),
        lambda: sh("nft", "delete", "table", "ip", table_name),
        lambda: sh("ip", "link", "del", "sdbman0"),
    ]
    try:
        start = time.perf_counter()
        for _ in range(cycles):
            for step in steps:
                step()
        return cycles / (time.perf_counter() - start)
    finally:
        quiet("nft", "delete", "table", "ip", table_name)
        quiet("ip", "link", "del", "sdbman0")
        quiet("ip", "netns", "del", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it makes namespaces, veths and an nft table")
    rows = []
    with upstream():
        results: dict[str, tuple[float, float, float]] = {}
        rate = throughput(None, args.seconds)
        results["host (no namespace)"] = (rate, *round_trips(None, args.round_trips))
        with sockd_nat() as (name, client):
            rate = throughput(name, args.seconds)
            results["sockd --nat"] = (rate, *round_trips(name, args.round_trips))
            sockd_cycles = nat_cycles_sockd(client, name, args.cycles)
        for kind, label in (("pasta", "pasta"), ("slirp", "slirp4netns")):
            with helper_ns(kind) as name:
                rate = throughput(name, args.seconds)
                results[label] = (rate, *round_trips(name, args.round_trips))
        manual_cycles = nat_cycles_commands(args.cycles)
    ours = results["sockd --nat"][0]
    for label, (gbits, rr_median, rr_p99) in results.items():
        rows.append(
            (label, f"{gbits:.2f}", f"{ours / gbits:.1f}x", f"{rr_median:.1f}", f"{rr_p99:.1f}")
        )
    print(
        f"namespace -> upstream, one TCP stream for {args.seconds:g} s; {args.round_trips} 1-byte round trips"
    )
    print(table(("path", "Gbit/s", "sockd is", "RR median us", "RR p99 us"), rows))
    print()
    print(
        table(
            ("link with a way out + unlink", "cycles/s"),
            [
                ("sockd Client.ns_link(nat=True) + ns_unlink", f"{sockd_cycles:.1f}"),
                ("ip + sysctl + nft commands (10 processes)", f"{manual_cycles:.1f}"),
            ],
        )
    )


if __name__ == "__main__":
    main()
