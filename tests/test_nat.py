"""A way out (issue 14): ``ns link --nat``, DNS, ping inside, ``ns publish``, crash repair.

Nothing leaves this machine. An "upstream" namespace made here stands for the outside world: the
host reaches it through a test veth (the daemon's only configured uplink) and routes only the test
prefix UPSTREAM_NET into it; every connection a test makes goes to an address in that prefix. The
test daemon's nft table has a name of its own, so a `make run` daemon's table is never touched;
every table, route, interface and sysctl made here is removed again, also when a test fails.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sockctl import AlreadyExists, Client, DaemonUnavailable, NotFound
from sockctl.errors import InvalidRequest
from tests.conftest import (
    CREATE_GID,
    DEFAULT_CONFIG,
    MEMBER,
    MONITOR_GID,
    OTHER_MEMBER,
    OUTSIDER,
    PREFIX,
    Daemon,
    Result,
    ns_name,
    sockctl,
    start_daemon,
)

UPLINK = f"sdtup{os.getpid() % 100000}"
"""The host end of the upstream veth: the test daemon's uplink."""
HOST_UPLINK_ADDRESS = "198.18.0.1"
UPSTREAM_ADDRESS = "198.18.0.2"
UPSTREAM_NET = "198.18.1.0/24"
"""The test-only prefix the host routes into the upstream namespace; servers listen here."""
SERVER = "198.18.1.1"
RESOLVER = "198.18.1.53"
TABLE = f"sockdt{os.getpid()}"
PYTHON = "/usr/bin/python3"


@dataclass
class Upstream:
    name: str

    def run(self, code: str, *args: str) -> "subprocess.Popen[str]":
        """A Python program inside the upstream namespace; its stdout is the test's to read."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, PYTHON, "-c", textwrap.dedent(code), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """The outside world: a namespace behind the test uplink, with the test prefix on its loopback."""
    name = f"{PREFIX}upstream"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", f"{HOST_UPLINK_ADDRESS}/30", "dev", UPLINK],
        ["ip", "link", "set", UPLINK, "up"],
        ["ip", "-n", name, "addr", "add", f"{UPSTREAM_ADDRESS}/30", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "addr", "add", f"{SERVER}/32", "dev", "lo"],
        ["ip", "-n", name, "addr", "add", f"{RESOLVER}/32", "dev", "lo"],
        ["ip", "route", "add", UPSTREAM_NET, "via", UPSTREAM_ADDRESS, "dev", UPLINK],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield Upstream(name)
    finally:
        subprocess.run(["ip", "route", "del", UPSTREAM_NET], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", UPLINK], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


NAT_CONFIG = (
    DEFAULT_CONFIG.replace(
        "namespace_quota = 4",
        f"namespace_quota = 4\npublish_quota = 2\nnat_groups = [{CREATE_GID}]",
    )
    + f"""
[nat]
table = "{TABLE}"
uplinks = ["{UPLINK}"]
"""
)


def _table_gone() -> None:
    subprocess.run(["nft", "delete", "table", "ip", TABLE], check=False, capture_output=True)


@pytest.fixture
def nat_daemon(daemon_dir: Path, upstream: Upstream) -> Iterator[Daemon]:
    running = start_daemon(daemon_dir, config=NAT_CONFIG)
    try:
        yield running
    finally:
        running.stop()
        _table_gone()
        _forwarding(UPLINK, "0")


def _forwarding(ifname: str, value: str | None = None) -> str:
    path = Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding")
    if value is not None and path.exists():
        path.write_text(value)
    return path.read_text().strip() if path.exists() else "missing"


def _ruleset() -> dict[str, list[str]]:
    """sockd's test table by chain: each rule as nft prints it (empty if there is no table)."""
    done = subprocess.run(
        ["nft", "-j", "list", "table", "ip", TABLE], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {}
    chains: dict[str, list[str]] = {}
    for item in json.loads(done.stdout)["nftables"]:
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        if "rule" in item:
            chains.setdefault(item["rule"]["chain"], []).append(json.dumps(item["rule"]["expr"]))
    return chains


def _as(
    who: tuple[int, int, tuple[int, ...]], user_python: tuple[str, str]
) -> Callable[..., Result]:
    def run(daemon: Daemon, *args: str) -> Result:
        return sockctl(daemon, *args, who=who, user_python=user_python)

    return run


def _tcp_server(upstream: Upstream, address: str, port: int) -> "subprocess.Popen[str]":
    """Accepts one connection, prints the peer's address and what it sent, answers "pong"."""
    server = upstream.run(
        """
        import socket, sys
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); s.settimeout(15)
        print("ready", flush=True)
        c, peer = s.accept(); data = c.recv(100); c.sendall(b"pong")
        print(peer[0], data.decode(), flush=True)
        """,
        address,
        str(port),
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready", (
        server.stderr.read() if server.stderr else ""
    )
    return server


def _udp_resolver(upstream: Upstream) -> "subprocess.Popen[str]":
    """Answers one DNS query (any answer will do): prints the asker's address and the query id."""
    server = upstream.run(
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{RESOLVER}", 53))
        s.settimeout(15); print("ready", flush=True)
        query, peer = s.recvfrom(512)
        s.sendto(query[:2] + b"\\x81\\x80" + query[4:], peer)
        print(peer[0], query[:2].hex(), flush=True)
        """
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    return server


CLIENT = """
import json, socket, sys
result = {}
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    c.sendall(b"ping"); result["tcp"] = c.recv(100).decode()
except OSError as exc:
    result["tcp_error"] = exc.__class__.__name__ + ": " + str(exc)
servers = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
result["nameservers"] = servers
if len(sys.argv) > 3 and servers:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
    query = bytes.fromhex("beef01000001000000000000") + b"\\x07example\\x00\\x00\\x01\\x00\\x01"
    try:
        u.sendto(query, (servers[0], 53)); answer = u.recv(512); result["dns_id"] = answer[:2].hex()
    except OSError as exc:
        result["dns_error"] = str(exc)
print(json.dumps(result))
"""


def _member_ns(
    daemon: Daemon, user_python: tuple[str, str], *link_args: str
) -> tuple[str, dict[str, Any]]:
    name = ns_name("nat")
    run = _as(MEMBER, user_python)
    created = run(daemon, "ns", "create", name)
    assert created.returncode == 0, created.stderr
    linked = run(daemon, "--json", "ns", "link", name, *link_args)
    assert linked.returncode == 0, linked.stderr
    return name, json.loads(linked.stdout)


def _client_inside(
    daemon: Daemon, user_python: tuple[str, str], name: str, port: int, *dns: str
) -> dict[str, Any]:
    done = _as(MEMBER, user_python)(
        daemon, "ns", "exec", name, "--", PYTHON, "-c", CLIENT, SERVER, str(port), *dns
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_nat_namespace_reaches_upstream_by_tcp_and_dns_as_the_host(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, link = _member_ns(nat_daemon, user_python, "--nat", "--dns", RESOLVER)
    assert link["nat"] is True
    server = _tcp_server(upstream, SERVER, 7001)
    resolver = _udp_resolver(upstream)
    result = _client_inside(nat_daemon, user_python, name, 7001, "dns")
    assert result.get("tcp") == "pong", result
    assert result["nameservers"] == [RESOLVER]
    assert result.get("dns_id") == "beef", result
    assert server.communicate(timeout=10)[0].split() == [HOST_UPLINK_ADDRESS, "ping"]
    assert resolver.communicate(timeout=10)[0].split() == [HOST_UPLINK_ADDRESS, "beef"]
    # Forwarding: on the link's host end and the uplink, never globally.
    host_end = link["peer"]["ifname"]
    assert _forwarding(host_end) == "1"
    assert _forwarding(UPLINK) == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    done = _as(MEMBER, user_python)(nat_daemon, "ns", "delete", name)
    assert done.returncode == 0, done.stderr
    assert _ruleset() == {}, "the last --nat link took sockd's table with it"
    assert _forwarding(UPLINK) == "0", "the uplink's forwarding is switched off again"
    assert not Path(nat_daemon.state_dir, "etc", name).exists()


def test_without_nat_upstream_is_unreachable(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, link = _member_ns(nat_daemon, user_python)
    assert link["nat"] is False
    result = _client_inside(nat_daemon, user_python, name, 7002)
    assert "Network is unreachable" in result["tcp_error"], result
    assert _ruleset() == {}
    assert _forwarding(link["peer"]["ifname"]) == "0"
    _as(MEMBER, user_python)(nat_daemon, "ns", "delete", name)


def test_unprivileged_ping_works_inside(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, _ = _member_ns(nat_daemon, user_python, "--nat")
    code = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.settimeout(3)
s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"sockd", ("{SERVER}", 0))
reply, peer = s.recvfrom(100)
print(peer[0], reply[0])
"""
    done = _as(MEMBER, user_python)(nat_daemon, "ns", "exec", name, "--", PYTHON, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [SERVER, "0"]  # an echo reply
    inside = subprocess.run(
        ["ip", "netns", "exec", name, "cat", "/proc/sys/net/ipv4/ping_group_range"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert inside.stdout.split() == ["0", "2147483647"]  # the namespace's own sysctl
    _as(MEMBER, user_python)(nat_daemon, "ns", "delete", name)


def test_forged_sources_and_other_namespaces_are_not_forwarded(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, _ = _member_ns(nat_daemon, user_python, "--nat")
    other, other_link = _member_ns(nat_daemon, user_python, "--nat")
    server = _tcp_server(upstream, SERVER, 7003)
    # As root inside (what an owner with admin rights could do): a source outside the link's block.
    subprocess.run(["ip", "-n", name, "addr", "add", "10.99.9.9/32", "dev", "eth0"], check=True)
    forged = f"""
import socket
s = socket.socket(); s.settimeout(2); s.bind(("10.99.9.9", 0))
try:
    s.connect(("{SERVER}", 7003)); print("connected")
except OSError as exc:
    print("refused", exc)
"""
    done = subprocess.run(
        ["ip", "netns", "exec", name, PYTHON, "-c", forged],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.startswith("refused"), done.stdout
    # The other namespace's address, through the host: not forwarded between links.
    their_address = other_link["end"]["addresses"][0].split("/")[0]
    probe = f"""
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("{their_address}", 9)); print("connected")
except OSError as exc:
    print("refused", exc)
"""
    done = subprocess.run(
        ["ip", "netns", "exec", name, PYTHON, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.startswith("refused timed out"), done.stdout
    result = _client_inside(nat_daemon, user_python, name, 7003)
    assert result.get("tcp") == "pong", result  # its own address still goes out
    server.communicate(timeout=10)
    for ns in (name, other):
        _as(MEMBER, user_python)(nat_daemon, "ns", "delete", ns)


def test_a_published_port_reaches_a_server_inside_from_upstream(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, link = _member_ns(nat_daemon, user_python, "--nat")
    inside = link["end"]["addresses"][0].split("/")[0]
    run = _as(MEMBER, user_python)
    done = run(nat_daemon, "--json", "ns", "publish", name, "18080:8080")
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)
    assert (published["host_port"], published["port"], published["address"]) == (
        18080,
        8080,
        inside,
    )
    shown = run(nat_daemon, "ns", "show", name)
    assert f"host :18080/tcp -> {inside}:8080" in shown.stdout
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            name,
            PYTHON,
            "-c",
            textwrap.dedent(
                """
            import socket
            s = socket.socket(); s.bind(("0.0.0.0", 8080)); s.listen(); s.settimeout(15)
            print("ready", flush=True)
            for _ in range(2):
                c, peer = s.accept(); c.sendall(b"inside"); c.close(); print(peer[0], flush=True)
            """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    client = upstream.run(
        f"""
        import socket
        c = socket.create_connection(("{HOST_UPLINK_ADDRESS}", 18080), timeout=3)
        print(c.recv(100).decode())
        """
    )
    assert client.communicate(timeout=10)[0].strip() == "inside"
    # And from the host itself, to one of its own addresses (the output hook's DNAT).
    with socket.create_connection((HOST_UPLINK_ADDRESS, 18080), timeout=3) as local:
        assert local.recv(100) == b"inside"
    seen = server.communicate(timeout=10)[0].split()
    assert seen == [UPSTREAM_ADDRESS, HOST_UPLINK_ADDRESS]  # each client's own address
    done = run(nat_daemon, "ns", "unpublish", name, "18080")
    assert done.returncode == 0, done.stderr
    assert not any("18080" in r for r in _ruleset().get("prerouting", []))
    refused = upstream.run(
        f"""
        import socket
        try:
            socket.create_connection(("{HOST_UPLINK_ADDRESS}", 18080), timeout=2); print("open")
        except OSError as exc:
            print("closed", exc.__class__.__name__)
        """
    )
    assert refused.communicate(timeout=10)[0].startswith("closed")
    run(nat_daemon, "ns", "delete", name)


def test_publish_refusals_are_named(
    nat_daemon: Daemon, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    name, _ = _member_ns(nat_daemon, user_python, "--nat")
    plain, _ = _member_ns(nat_daemon, user_python)
    member = _as(MEMBER, user_python)

    def error(result: Result) -> dict[str, Any]:
        assert result.returncode != 0
        got: dict[str, Any] = json.loads(result.stderr)["error"]
        return got

    with socket.socket() as listener:  # a host port something already listens on
        listener.bind(("0.0.0.0", 0))  # noqa: S104 -- a host port, taken
        listener.listen()
        busy = listener.getsockname()[1]
        got = error(member(nat_daemon, "--json", "ns", "publish", name, str(busy)))
        assert (
            got["code"] == "already_exists" and f"host port {busy}/tcp is in use" in got["message"]
        )
    assert (
        error(member(nat_daemon, "--json", "ns", "publish", name, "80"))["code"]
        == "permission_denied"
    )
    got = error(member(nat_daemon, "--json", "ns", "publish", plain, "18081"))
    assert got["code"] == "not_found" and "no way out" in got["message"]
    assert member(nat_daemon, "ns", "publish", name, "18082").returncode == 0
    got = error(member(nat_daemon, "--json", "ns", "publish", name, "18082"))
    assert got["code"] == "already_exists" and "already published" in got["message"]
    assert member(nat_daemon, "ns", "publish", name, "--udp", "18082").returncode == 0
    got = error(member(nat_daemon, "--json", "ns", "publish", name, "18083"))
    assert got["code"] == "quota_exceeded"  # publish_quota = 2
    other = _as(OTHER_MEMBER, user_python)
    assert (
        error(other(nat_daemon, "--json", "ns", "publish", name, "18084"))["code"]
        == "permission_denied"
    )
    assert (
        error(other(nat_daemon, "--json", "ns", "unpublish", name, "18082"))["code"]
        == "permission_denied"
    )
    outsider = _as(OUTSIDER, user_python)
    assert (
        error(outsider(nat_daemon, "--json", "ns", "publish", name, "18085"))["code"]
        == "permission_denied"
    )
    # Root may have privileged ports.
    with Client(nat_daemon.socket) as client:
        assert client.ns_publish(name, 80, 8080).host_port == 80
        with pytest.raises(NotFound):
            client.ns_unpublish(name, 18099)
    bad = member(nat_daemon, "ns", "publish", name, "0")
    assert bad.returncode == 2
    for ns in (name, plain):
        member(nat_daemon, "ns", "delete", ns)
    assert _ruleset() == {}


def test_nat_link_requests_are_validated(nat_daemon: Daemon) -> None:
    name = ns_name("natbad")
    peer_ns = ns_name("natpeer")
    with Client(nat_daemon.socket) as client:
        client.ns_create(name)
        client.ns_create(peer_ns)
        try:
            cases: list[tuple[dict[str, Any], str]] = [
                ({"nat": True, "peer": peer_ns}, "nat"),
                ({"nat": True, "no_address": True}, "nat"),
                ({"nat": True, "address": "192.168.77.2/24"}, "nat"),
                ({"dns": ["198.18.1.53"]}, "dns"),
                ({"nat": True, "dns": ["127.0.0.53"]}, "dns"),
                ({"nat": True, "dns": ["not-an-address"]}, "dns"),
            ]
            for kwargs, field in cases:
                with pytest.raises(InvalidRequest) as raised:
                    client.ns_link(name, **kwargs)
                assert raised.value.field == field or field in str(raised.value), kwargs
            client.ns_link(name, nat=True)
            with pytest.raises(AlreadyExists, match="already has a way out"):
                client.ns_link(name, nat=True)
            assert len(_ruleset()["postrouting"]) == 1
        finally:
            client.ns_delete(name)
            client.ns_delete(peer_ns)
    assert _ruleset() == {}


def test_nat_groups_decide_who_may(
    daemon_dir: Path, upstream: Upstream, user_python: tuple[str, str]
) -> None:
    config = NAT_CONFIG.replace(f"nat_groups = [{CREATE_GID}]", f"nat_groups = [{MONITOR_GID}]")
    running = start_daemon(daemon_dir, config=config)
    try:
        member = _as(MEMBER, user_python)
        name = ns_name("natpol")
        assert member(running, "ns", "create", name).returncode == 0
        refused = member(running, "--json", "ns", "link", name, "--nat")
        error = json.loads(refused.stderr)["error"]
        assert error["code"] == "permission_denied" and "nat_groups" in error["message"]
        assert member(running, "ns", "link", name).returncode == 0  # a plain link is still fine
        member(running, "ns", "delete", name)
    finally:
        running.stop()
        _table_gone()


def _ns_rules() -> list[str]:
    return [r for rules in _ruleset().values() for r in rules]


@pytest.mark.parametrize(
    "step", ["link.configured", "link.nat.resolv", "link.nat.synced"]
)  # NAT_STEPS
def test_kill_during_a_nat_link_is_repaired_on_start(
    daemon_dir: Path, upstream: Upstream, step: str
) -> None:
    name = ns_name("natcrash")
    paused = start_daemon(daemon_dir, ["--pause-at", step], config=NAT_CONFIG)
    try:
        with paused.client() as client:
            client.ns_create(name)

        def link() -> None:
            with (
                Client(paused.socket, timeout=30) as client,
                contextlib.suppress(DaemonUnavailable),
            ):
                client.ns_link(name, nat=True)

        thread = threading.Thread(target=link)
        thread.start()
        paused.wait_for_log(f"paused at {step}")
        paused.proc.send_signal(signal.SIGKILL)
        paused.proc.wait()
        thread.join(10)
        restarted = start_daemon(daemon_dir, write_config=False)
        try:
            # The client never got an answer: the link is rolled back, rules and all.
            assert "rolled back link" in restarted.log()
            assert _ruleset() == {}
            assert _forwarding(UPLINK) == "0"
            assert not Path(restarted.state_dir, "etc", name).exists()
            with restarted.client() as client:
                info = client.ns_link(name, nat=True)  # and it can be made again
                assert info.nat
                client.ns_publish(name, 18090)
            assert len(_ns_rules()) > 0
        finally:
            restarted.stop(signal.SIGKILL)
        # The table lost behind sockd's back (an administrator's `nft flush ruleset`, a firewall
        # reload): the next start rebuilds it, exactly, from the records.
        _table_gone()
        rebuilt = start_daemon(daemon_dir, write_config=False)
        try:
            assert any("18090" in r for r in _ns_rules())
            assert _forwarding(UPLINK) == "1"
            with rebuilt.client() as client:
                client.ns_delete(name)
            assert _ruleset() == {}
            assert _forwarding(UPLINK) == "0"
        finally:
            rebuilt.stop()
    finally:
        paused.stop(signal.SIGKILL)
        _table_gone()
        _forwarding(UPLINK, "0")
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


ROOT = None
MATRIX = [
    # (who, operation on a namespace of OTHER_MEMBER's unless "mine", exit code, audit result)
    (ROOT, ("ns", "link", "{others}", "--nat"), 0, "ok"),
    (MEMBER, ("ns", "link", "{mine}", "--nat"), 0, "ok"),
    (MEMBER, ("ns", "link", "{others}", "--nat"), 4, "permission_denied"),
    (OUTSIDER, ("ns", "link", "{others}", "--nat"), 4, "permission_denied"),
    (ROOT, ("ns", "publish", "{others_nat}", "18100"), 0, "ok"),
    (OTHER_MEMBER, ("ns", "publish", "{others_nat}", "18101"), 0, "ok"),
    (MEMBER, ("ns", "publish", "{others_nat}", "18102"), 4, "permission_denied"),
    (OUTSIDER, ("ns", "publish", "{others_nat}", "18103"), 4, "permission_denied"),
    (MEMBER, ("ns", "unpublish", "{others_nat}", "18104"), 4, "permission_denied"),
    (OTHER_MEMBER, ("ns", "unpublish", "{others_nat}", "18104"), 0, "ok"),
]


@pytest.mark.parametrize(
    ("who", "args", "exit_code", "audited"),
    MATRIX,
    ids=[f"{'root' if w is None else w[0]}:{' '.join(a)}" for w, a, _, _ in MATRIX],
)
def test_policy_matrix(
    nat_daemon: Daemon,
    user_python: tuple[str, str],
    who: tuple[int, int, tuple[int, ...]] | None,
    args: tuple[str, ...],
    exit_code: int,
    audited: str,
) -> None:
    names = {"mine": ns_name("mine"), "others": ns_name("others"), "others_nat": ns_name("onat")}
    owner = _as(OTHER_MEMBER, user_python)
    assert _as(MEMBER, user_python)(nat_daemon, "ns", "create", names["mine"]).returncode == 0
    for key in ("others", "others_nat"):
        assert owner(nat_daemon, "ns", "create", names[key]).returncode == 0
    assert owner(nat_daemon, "ns", "link", names["others_nat"], "--nat").returncode == 0
    assert owner(nat_daemon, "ns", "publish", names["others_nat"], "18104").returncode == 0
    try:
        before = len(nat_daemon.audit())
        argv = [a.format(**names) for a in args]
        done = sockctl(nat_daemon, "--json", *argv, who=who, user_python=user_python)
        assert done.returncode == exit_code, done.stderr
        deadline = time.monotonic() + 5  # the record is logged just after the reply
        while not (
            records := [r for r in nat_daemon.audit()[before:] if r["SOCKD_OP"] == f"ns.{args[1]}"]
        ):
            assert time.monotonic() < deadline, nat_daemon.log()[-3000:]
            time.sleep(0.02)
        assert [r["SOCKD_RESULT"] for r in records] == [audited]
        assert records[0]["SOCKD_NS"] == argv[2]
    finally:
        with Client(nat_daemon.socket) as client:
            for name in names.values():
                client.ns_delete(name, force=True)
    assert _ruleset() == {}


def test_resolv_conf_replaces_loopback_stubs_by_their_upstream_servers(tmp_path: Path) -> None:
    from sockd import resolv

    host = tmp_path / "resolv.conf"
    upstream = tmp_path / "upstream.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\nsearch corp.example\n")
    upstream.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
    text, warnings = resolv.contents([], str(host), str(upstream))
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "nameserver 192.0.2.53",
        "nameserver 2001:db8::53",
        "search corp.example",
    ]
    assert warnings == []
    upstream.unlink()
    text, warnings = resolv.contents([], str(host), str(upstream))
    assert "nameserver" not in text and "give some with --dns" in warnings[0]
    host.write_text("nameserver 10.255.255.53\n")
    assert "nameserver 10.255.255.53" in resolv.contents([], str(host), str(upstream))[0]
    assert resolv.contents(["198.18.1.53"], str(host))[0].count("nameserver") == 1


NAT_STEPS = ["link.configured", "link.nat.resolv", "link.nat.synced", "publish.recorded"]
"""The pause points test_nat kills the daemon at (test_faults checks that every one has a test)."""


def test_kill_after_a_publish_is_recorded_keeps_it_owned_and_consistent(
    daemon_dir: Path, upstream: Upstream
) -> None:
    name = ns_name("pubcrash")
    paused = start_daemon(daemon_dir, ["--pause-at", "publish.recorded"], config=NAT_CONFIG)
    try:
        with paused.client() as client:
            client.ns_create(name)
            client.ns_link(name, nat=True)

        def publish() -> None:
            with (
                Client(paused.socket, timeout=30) as client,
                contextlib.suppress(DaemonUnavailable),
            ):
                client.ns_publish(name, 18095)

        thread = threading.Thread(target=publish)
        thread.start()
        paused.wait_for_log("paused at publish.recorded")
        assert not any("18095" in r for r in _ns_rules())  # recorded, not yet made
        paused.proc.send_signal(signal.SIGKILL)
        paused.proc.wait()
        thread.join(10)
        restarted = start_daemon(daemon_dir, write_config=False)
        try:
            # Recorded before it was made: after the restart it is there, owned and listed, and
            # the table matches the record; withdrawing it takes its rules away.
            assert any("18095" in r for r in _ns_rules())
            with restarted.client() as client:
                (way_out,) = [i.link for i in client.ns_show(name).interfaces if i.link]
                assert [p.host_port for p in way_out.published] == [18095]
                client.ns_unpublish(name, 18095)
                assert not any("18095" in r for r in _ns_rules())
                client.ns_delete(name)
            assert _ruleset() == {}
        finally:
            restarted.stop()
    finally:
        paused.stop(signal.SIGKILL)
        _table_gone()
        _forwarding(UPLINK, "0")
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
