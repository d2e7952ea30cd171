"""Issue 6: veth links with pool addresses, quotas, attach, per-namespace hostname, nsid.

Real daemon, real uids, real veths. Traffic only ever goes between a namespace a test made and the
addresses sockd put on that namespace's own links (the host ends are veths the test asked for).

The "from inside the namespace" direction uses ``ip netns exec`` as root: ``ns exec`` (issue 5) is not
on this branch; once it is, these checks can run through ``sockctl ns exec`` as the member.
"""

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sockd import linux
from sockd.registry import LinkRecord, LinkRegistry
from sockd.rtnl import Rtnl
from tests.conftest import (
    DEFAULT_CONFIG,
    MEMBER,
    NETNS_DIR,
    OTHER_MEMBER,
    OUTSIDER,
    PREFIX,
    TEST_POOL,
    Daemon,
    Result,
    as_user,
    ip_netns_list,
    ns_name,
    sockctl,
    start_daemon,
    wait_exec,
    with_links,
)

UserPython = tuple[str, str]
TEST_UIDS = (MEMBER[0], OUTSIDER[0], OTHER_MEMBER[0], 23004)
POOL = ipaddress.IPv4Network(TEST_POOL)


# Helpers ------------------------------------------------------------------------------------------


def ok(result: Result) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.json() if result.stdout.lstrip().startswith(("{", "[")) else result.stdout


def refused(result: Result, exit_code: int) -> dict[str, Any]:
    """The --json error of a command that had to fail with ``exit_code``."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    error: dict[str, Any] = json.loads(result.stderr)["error"]
    return error


def member(daemon: Daemon, user_python: UserPython, *args: str) -> Result:
    return sockctl(daemon, "--json", *args, who=MEMBER, user_python=user_python)


def in_netns(name: str | None, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread inside namespace ``name`` (None: here); sockets it makes stay there."""
    if name is None:
        return fn()

    def work() -> Any:
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    return linux.run_in_thread(work)


def listener(ns: str | None, address: str) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen(1)
        sock.settimeout(5)
        return sock

    sock: socket.socket = in_netns(ns, make)
    return sock


def tcp_works(server_ns: str | None, address: str, client_ns: str | None) -> None:
    """A TCP connection from ``client_ns`` to ``address`` in ``server_ns`` carries a message."""
    with listener(server_ns, address) as server:
        port = server.getsockname()[1]
        client: socket.socket = in_netns(client_ns, socket.socket)
        with client:
            client.settimeout(5)
            client.connect((address, port))
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def tcp_from_inside_with_ip_netns_exec(ns: str, address: str) -> None:
    """A process started inside ``ns`` (``ip netns exec``) connects to ``address`` on the host."""
    with listener(None, address) as server:
        port = server.getsockname()[1]
        code = (
            "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5);"
            "s.sendall(b'pong')"
        )
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, address, str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        conn, _ = server.accept()
        with conn:
            assert conn.recv(4) == b"pong"


def ip_json(*args: str) -> Any:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def iface(ifname: str, ns: str | None = None) -> dict[str, Any] | None:
    """``ip -j addr show dev IFNAME`` (in ``ns``), or None if there is no such interface."""
    cmd = ["ip", "-j", *(["-n", ns] if ns else []), "addr", "show", "dev", ifname]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(out.stdout)
    return found[0] if found else None


def ipv4(info: dict[str, Any] | None) -> list[str]:
    assert info is not None
    return [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"]


def host_ends() -> list[str]:
    """Host interfaces named like the host end of a test uid's link (sd<uid>-<n>)."""
    return [
        link["ifname"]
        for link in ip_json("link", "show")
        if any(link["ifname"].startswith(f"sd{uid}-") for uid in TEST_UIDS)
    ]


def host_pool_addresses() -> list[str]:
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in ip_json("addr", "show")
        for a in link["addr_info"]
        if a["family"] == "inet" and ipaddress.IPv4Address(a["local"]) in POOL
    ]


def quotas(daemon: Daemon, user_python: UserPython, who: Any = MEMBER) -> tuple[int, int]:
    me = ok(sockctl(daemon, "--json", "whoami", who=who, user_python=user_python))
    return me["links_owned"], me["addresses_held"]


def config_with(policy: str = "", links: str = "") -> str:
    """DEFAULT_CONFIG with extra keys in [policy] and a [links] section."""
    config = DEFAULT_CONFIG.replace("namespace_quota = 4\n", f"namespace_quota = 4\n{policy}\n")
    return with_links(config, links)


@contextlib.contextmanager
def running(directory: Path, config: str, *extra: str) -> Iterator[Daemon]:
    daemon = start_daemon(directory, extra, config=config)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def sleeper(argv: list[str]) -> Iterator[int]:
    """A process (``argv`` ending in a long sleep) that sits in its own namespace; its pid."""
    proc = subprocess.Popen([*argv, "sleep", "600"], stdin=subprocess.DEVNULL)
    try:
        yield wait_exec(proc, "sleep")
    finally:
        proc.kill()
        proc.wait()


def _netns_ino(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def as_uid(who: tuple[int, int, tuple[int, ...]]) -> list[str]:
    uid, gid, groups = who
    group_arg = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", group_arg]


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """After the module: no test uid's host end, no pool address, namespace or UTS mount remains."""
    yield
    leftovers = {
        "host ends": host_ends(),
        "pool addresses": host_pool_addresses(),
        "namespaces": [n for n in ip_netns_list() if n.startswith(PREFIX)],
        "uts mounts": [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "/state/uts/" in line.split()[4] and "/sockd-" in line.split()[4]
        ],
    }
    for name in leftovers["host ends"]:
        subprocess.run(["ip", "link", "del", name], check=False)
    for path in leftovers["uts mounts"]:
        with contextlib.suppress(OSError):
            linux.umount2(path, linux.MNT_DETACH)
    assert not any(leftovers.values()), leftovers


# Links to the host ----------------------------------------------------------------------------------


def test_member_links_namespace_to_host_and_traffic_flows(
    daemon: Daemon, user_python: UserPython
) -> None:
    a = ns_name("a")
    ok(member(daemon, user_python, "ns", "create", a))
    link = ok(member(daemon, user_python, "ns", "link", a))

    assert link["owner_uid"] == MEMBER[0]
    assert link["end"] | {"addresses": None} == {
        "namespace": a,
        "ifname": "eth0",
        "up": True,
        "state": "up",
        "addresses": None,
    }
    host_end = link["peer"]["ifname"]
    assert host_end == f"sd{MEMBER[0]}-0"
    assert link["peer"]["namespace"] is None
    assert link["peer"]["state"] == "up"
    block = link["pool_block"]
    assert ipaddress.IPv4Network(block).subnet_of(POOL)
    assert block.endswith("/30")
    host_addr, ns_addr = link["peer"]["addresses"][0], link["end"]["addresses"][0]

    # What `ip` sees agrees: both ends up, with the pool's two addresses.
    host_info, ns_info = iface(host_end), iface("eth0", a)
    assert host_info is not None
    assert ns_info is not None
    assert host_info["operstate"] == ns_info["operstate"] == "UP"
    assert ipv4(host_info) == [host_addr]
    assert ipv4(ns_info) == [ns_addr]
    # Host ends ignore router advertisements and redirects from the namespace.
    assert Path(f"/proc/sys/net/ipv6/conf/{host_end}/accept_ra").read_text().strip() == "0"
    assert Path(f"/proc/sys/net/ipv4/conf/{host_end}/accept_redirects").read_text().strip() == "0"

    # Traffic: host -> namespace, and from a process inside the namespace -> host end.
    tcp_works(a, ns_addr.split("/")[0], None)
    tcp_from_inside_with_ip_netns_exec(a, host_addr.split("/")[0])

    listed = {i["name"]: i for i in ok(member(daemon, user_python, "ns", "list"))}
    assert listed[a]["links"] == 1
    shown = ok(member(daemon, user_python, "ns", "show", a))
    eth0 = next(i for i in shown["interfaces"] if i["ifname"] == "eth0")
    assert eth0["addresses"] == [ns_addr]
    assert eth0["link"]["peer"]["ifname"] == host_end
    assert eth0["link"]["peer"]["addresses"] == [host_addr]
    assert quotas(daemon, user_python) == (1, 2)
    text = sockctl(daemon, "ns", "show", a, who=MEMBER, user_python=user_python).stdout
    assert f"host:{host_end}" in text

    unlinked = ok(member(daemon, user_python, "ns", "unlink", a))
    assert unlinked["released"] == block
    assert iface(host_end) is None
    assert iface("eth0", a) is None
    assert quotas(daemon, user_python) == (0, 0)
    ok(member(daemon, user_python, "ns", "delete", a))


def test_link_between_two_owned_namespaces_carries_traffic(
    daemon: Daemon, user_python: UserPython
) -> None:
    a, b = ns_name("a"), ns_name("b")
    ok(member(daemon, user_python, "ns", "create", a))
    ok(member(daemon, user_python, "ns", "create", b))
    link = ok(member(daemon, user_python, "ns", "link", a, "--peer", b))
    assert (link["end"]["namespace"], link["end"]["ifname"]) == (a, "eth0")
    assert (link["peer"]["namespace"], link["peer"]["ifname"]) == (b, "eth0")
    a_addr = link["end"]["addresses"][0].split("/")[0]
    b_addr = link["peer"]["addresses"][0].split("/")[0]
    assert not host_ends()  # nothing of this link is on the host

    tcp_works(b, b_addr, a)
    tcp_works(a, a_addr, b)

    # Seen from b, the same link points back at a.
    shown = ok(member(daemon, user_python, "ns", "show", b))
    eth0 = next(i for i in shown["interfaces"] if i["ifname"] == "eth0")
    assert eth0["link"]["end"]["namespace"] == a
    # A second link from a to the host is eth1 in a, and unlink needs to be told which one.
    ok(member(daemon, user_python, "ns", "link", a))
    which = refused(member(daemon, user_python, "ns", "unlink", a), 9)
    assert which["field"] == "ifname"
    assert which["details"]["ifnames"] == ["eth0", "eth1"]

    # Deleting b takes the link with it, on a's side too, and frees its addresses.
    ok(member(daemon, user_python, "ns", "delete", b))
    assert iface("eth0", a) is None
    assert quotas(daemon, user_python) == (1, 2)
    ok(member(daemon, user_python, "ns", "delete", a))
    assert quotas(daemon, user_python) == (0, 0)


def test_third_user_cannot_link_unlink_or_attach(daemon: Daemon, user_python: UserPython) -> None:
    a, b, c = ns_name("a"), ns_name("b"), ns_name("c")
    ok(member(daemon, user_python, "ns", "create", a))
    ok(member(daemon, user_python, "ns", "create", b))
    ok(member(daemon, user_python, "ns", "link", a))

    def other(*args: str) -> Result:
        return sockctl(daemon, "--json", *args, who=OTHER_MEMBER, user_python=user_python)

    refused(other("ns", "link", a), 4)
    refused(other("ns", "link", b), 4)
    ok(other("ns", "create", c))
    refused(other("ns", "link", c, "--peer", a), 4)
    refused(other("ns", "unlink", a, "eth0"), 4)
    refused(other("ns", "set-nsid", a, "auto"), 4)
    outsider = sockctl(daemon, "--json", "ns", "link", a, who=OUTSIDER, user_python=user_python)
    refused(outsider, 4)
    # A user may not pick the host end's address (it would become a host address).
    host_addr = refused(
        member(daemon, user_python, "ns", "link", b, "--peer-addr", "192.0.2.77/32"), 4
    )
    assert host_addr["field"] == "peer_address"

    # A process running as the member inside a (root put it there): not attachable by the third
    # user (not theirs), nor by the member (the namespace is root's, not one they made).
    inside_a = ["ip", "netns", "exec", a, *as_uid(MEMBER)]
    with sleeper(inside_a) as pid:
        assert _netns_ino(pid) == os.stat(os.path.join(NETNS_DIR, a)).st_ino
        assert refused(other("ns", "attach", ns_name("x"), str(pid)), 4)["field"] == "pid"
        assert refused(member(daemon, user_python, "ns", "attach", ns_name("x"), str(pid)), 4)
    assert sorted(n for n in ip_netns_list() if n.startswith(PREFIX)) == sorted([a, b, c])
    assert quotas(daemon, user_python, OTHER_MEMBER) == (0, 0)

    # What root links into the member's namespace, the member may unlink (or delete with it).
    by_root = ok(sockctl(daemon, "--json", "ns", "link", b))
    assert by_root["owner_uid"] == 0
    refused(other("ns", "unlink", b), 4)
    ok(member(daemon, user_python, "ns", "unlink", b))

    ok(other("ns", "delete", c))
    ok(member(daemon, user_python, "ns", "delete", a))
    ok(member(daemon, user_python, "ns", "delete", b))


def test_link_requests_are_validated(daemon: Daemon, user_python: UserPython) -> None:
    a = ns_name("a")
    ok(member(daemon, user_python, "ns", "create", a))
    cases = [
        (["--addr", "10.0.0.300/24"], "address"),
        (["--addr", "224.0.0.1/4"], "address"),
        (["--addr", "not an address"], "address"),
        (["--addr", "10.1.2.3/24", "--no-addr"], "no_address"),
        (["--peer", a], "peer"),
    ]
    for args, field in cases:
        error = refused(member(daemon, user_python, "ns", "link", a, *args), 9)
        assert error["field"] == field, (args, error)
    assert refused(member(daemon, user_python, "ns", "link", ns_name("nope")), 5)["field"] == "name"
    assert refused(member(daemon, user_python, "ns", "unlink", a), 5)
    # Given addresses instead of the pool: any address inside the member's own namespace.
    link = ok(member(daemon, user_python, "ns", "link", a, "--addr", "fd42::2/64"))
    assert link["pool_block"] is None
    assert link["end"]["addresses"] == ["fd42::2/64"]
    assert link["peer"]["addresses"] == []
    assert quotas(daemon, user_python) == (1, 0)
    ok(member(daemon, user_python, "ns", "delete", a))


# Quotas, pool, crashes --------------------------------------------------------------------------------


def test_link_quota_and_release(daemon_dir: Path, user_python: UserPython) -> None:
    with running(daemon_dir, config_with("link_quota = 2")) as daemon:
        a = ns_name("a")
        ok(member(daemon, user_python, "ns", "create", a))
        first = ok(member(daemon, user_python, "ns", "link", a))
        ok(member(daemon, user_python, "ns", "link", a, "--no-addr"))
        over = refused(member(daemon, user_python, "ns", "link", a), 7)
        assert over["code"] == "quota_exceeded"
        assert over["details"] == {"kind": "links", "owned": 2, "quota": 2}
        assert "link quota" in over["message"]
        # Unlinking frees quota: the next link gets the name and the pool block back.
        ok(member(daemon, user_python, "ns", "unlink", a, "eth0"))
        again = ok(member(daemon, user_python, "ns", "link", a))
        assert again["end"]["ifname"] == "eth0"
        assert again["pool_block"] == first["pool_block"]
        # Root has no quota.
        ok(sockctl(daemon, "--json", "ns", "link", a))
        ok(member(daemon, user_python, "ns", "delete", a))
        assert quotas(daemon, user_python) == (0, 0)
        assert not host_ends()


def test_address_quota_and_pool_exhaustion(daemon_dir: Path, user_python: UserPython) -> None:
    pool = 'pool = "10.213.250.0/29"\nblock_prefix = 30'  # two blocks
    with running(daemon_dir, config_with("address_quota = 2", pool)) as daemon:
        a, c = ns_name("a"), ns_name("c")
        ok(member(daemon, user_python, "ns", "create", a))
        first = ok(member(daemon, user_python, "ns", "link", a))
        assert first["pool_block"] == "10.213.250.0/30"
        assert first["peer"]["addresses"] == ["10.213.250.1/30"]
        assert first["end"]["addresses"] == ["10.213.250.2/30"]
        over = refused(member(daemon, user_python, "ns", "link", a), 7)
        assert over["details"]["kind"] == "addresses"
        # Links that bring their own addresses (or none) take nothing from the pool.
        ok(member(daemon, user_python, "ns", "link", a, "--no-addr"))
        given = ok(member(daemon, user_python, "ns", "link", a, "--addr", "192.168.77.2/24"))
        assert given["end"]["addresses"] == ["192.168.77.2/24"]

        other = ("--json",)
        ok(sockctl(daemon, *other, "ns", "create", c, who=OTHER_MEMBER, user_python=user_python))
        second = ok(
            sockctl(daemon, *other, "ns", "link", c, who=OTHER_MEMBER, user_python=user_python)
        )
        assert second["pool_block"] == "10.213.250.4/30"
        # The pool is empty now: even root, who has no quota, gets a named error.
        empty = refused(sockctl(daemon, "--json", "ns", "link", c), 7)
        assert empty["details"]["kind"] == "pool"

        # Deleting a namespace gives its blocks back; the lowest free one is handed out next.
        ok(member(daemon, user_python, "ns", "delete", a))
        assert quotas(daemon, user_python) == (0, 0)
        third = ok(sockctl(daemon, "--json", "ns", "link", c))
        assert third["pool_block"] == "10.213.250.0/30"
        ok(sockctl(daemon, *other, "ns", "delete", c, who=OTHER_MEMBER, user_python=user_python))
        assert host_pool_addresses() == []


def test_kill9_and_restart_leave_quotas_and_pool_consistent(
    daemon_dir: Path, user_python: UserPython
) -> None:
    config = config_with("link_quota = 3")
    daemon = start_daemon(daemon_dir, config=config)
    a, b = ns_name("a"), ns_name("b")
    try:
        ok(member(daemon, user_python, "ns", "create", a))
        ok(member(daemon, user_python, "ns", "create", b))
        kept = ok(member(daemon, user_python, "ns", "link", a))
        lost = ok(member(daemon, user_python, "ns", "link", b))
        daemon.stop(signal.SIGKILL)
        # Behind the dead daemon's back, root deletes b's link.
        subprocess.run(["ip", "link", "del", lost["peer"]["ifname"]], check=True)

        # A link request killed half-way: the veth exists, its addresses are not there yet.
        daemon = start_daemon(daemon_dir, ["--pause-at", "link.created"], write_config=False)
        assert f"forgot link {b}:eth0: its veth pair is gone" in daemon.log()
        env = {"SOCKD_SOCKET": daemon.socket, "PYTHONPATH": user_python[1]}
        hanging = subprocess.Popen(
            [*as_uid(MEMBER), user_python[0], "-m", "sockctl", "ns", "link", a],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon.wait_for_log("paused at link.created")
        half_made = [n for n in host_ends() if n not in (kept["peer"]["ifname"],)]
        assert half_made, "the interrupted link should exist in the kernel before the crash"
        daemon.stop(signal.SIGKILL)
        hanging.wait(10)

        daemon = start_daemon(daemon_dir, write_config=False)
        log = daemon.log()
        assert f"rolled back link {a}:eth1" in log
        # Kernel and registry agree: only the one complete link is left, and counted.
        assert host_ends() == [kept["peer"]["ifname"]]
        assert host_pool_addresses() == kept["peer"]["addresses"]
        assert iface("eth1", a) is None
        assert iface("eth0", b) is None
        assert len(list(Path(daemon.state_dir, "links").glob("*.json"))) == 1
        assert quotas(daemon, user_python) == (1, 2)
        # The freed block and quota are usable again: the lowest free block goes to the next link.
        again = ok(member(daemon, user_python, "ns", "link", b))
        assert again["pool_block"] == lost["pool_block"]
        ok(member(daemon, user_python, "ns", "link", b, "--no-addr"))
        refused(member(daemon, user_python, "ns", "link", b), 7)
    finally:
        for name in (a, b):
            sockctl(daemon, "ns", "delete", name, who=MEMBER, user_python=user_python)
        daemon.stop()
    assert not host_ends()


def recorded_links(daemon: Daemon) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in Path(daemon.state_dir, "links").glob("*.json")]


def assert_kernel_matches_registry(daemon: Daemon, user_python: UserPython) -> None:
    """Every recorded link exists with its pool addresses, nothing else does, quotas agree."""
    records = recorded_links(daemon)
    assert all(r["state"] == "ready" for r in records)
    assert sorted(host_ends()) == sorted(r["peer_ifname"] for r in records if r["peer_ns"] is None)
    pool = [r["peer_address"] for r in records if r["pool_block"] is not None]
    assert sorted(host_pool_addresses()) == sorted(pool)
    for r in records:
        end = iface(r["ifname"], r["ns"])
        assert end is not None
        assert end["operstate"] == "UP"
    assert quotas(daemon, user_python) == (len(records), 2 * len(pool))


LINK_STEPS = ["link.recorded", "link.created", "link.configured", "unlink.deleted"]


@pytest.mark.parametrize("step", LINK_STEPS)
def test_kill9_at_every_link_step_is_repaired_at_start(
    daemon_dir: Path, user_python: UserPython, step: str
) -> None:
    daemon = start_daemon(daemon_dir, ["--pause-at", step])
    a = ns_name("k")
    try:
        ok(member(daemon, user_python, "ns", "create", a))
        if step == "unlink.deleted":
            ok(member(daemon, user_python, "ns", "link", a))
        args = ["ns", "unlink", a] if step == "unlink.deleted" else ["ns", "link", a]
        hanging = subprocess.Popen(
            [*as_uid(MEMBER), user_python[0], "-m", "sockctl", *args],
            env={"SOCKD_SOCKET": daemon.socket, "PYTHONPATH": user_python[1]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemon.wait_for_log(f"paused at {step}")
        daemon.stop(signal.SIGKILL)
        hanging.wait(10)
        daemon = start_daemon(daemon_dir, write_config=False)
        assert_kernel_matches_registry(daemon, user_python)
        # Whatever the crash left is gone, so a fresh link gets eth0 and the first pool block.
        link = ok(member(daemon, user_python, "ns", "link", a))
        assert link["end"]["ifname"] == "eth0"
        assert_kernel_matches_registry(daemon, user_python)
    finally:
        sockctl(daemon, "ns", "delete", a, who=MEMBER, user_python=user_python)
        daemon.stop()
    assert not host_ends()


def test_delete_then_recreate_and_link_twenty_times(
    daemon: Daemon, user_python: UserPython
) -> None:
    name = ns_name("churn")
    code = f"""
import json
from sockctl import Client
names, errors = [], []
with Client() as client:
    for _ in range(20):
        try:
            client.ns_create({name!r})
            link = client.ns_link({name!r})
            names.append((link.end.ifname, link.peer.ifname, link.peer.state))
            client.ns_delete({name!r})
        except Exception as exc:
            errors.append(repr(exc))
            break
print(json.dumps({{"names": names, "errors": errors}}))
"""
    try:
        result = as_user(MEMBER, user_python, code, daemon.socket, timeout=120)
    finally:
        sockctl(daemon, "ns", "delete", name, who=MEMBER, user_python=user_python)
    assert result["errors"] == []
    # The same host name, re-created right after each delete: no EEXIST from async teardown.
    assert result["names"] == [["eth0", f"sd{MEMBER[0]}-0", "up"]] * 20
    assert not host_ends()


# Hostname, attach, nsid ---------------------------------------------------------------------------------


def test_create_with_hostname_keeps_its_own_uts_namespace(
    daemon: Daemon, user_python: UserPython
) -> None:
    before = socket.gethostname()
    a = ns_name("h")
    created = ok(member(daemon, user_python, "ns", "create", a, "--hostname", "box-a.test"))
    assert created["hostname"] == "box-a.test"
    uts = os.path.join(daemon.state_dir, "uts", a)
    inside = subprocess.run(
        ["nsenter", f"--uts={uts}", "hostname"], capture_output=True, text=True, check=True
    )
    assert inside.stdout.strip() == "box-a.test"
    assert socket.gethostname() == before

    shown = ok(member(daemon, user_python, "ns", "show", a))
    assert shown["info"]["hostname"] == "box-a.test"
    assert shown["uts_path"] == uts
    listed = {i["name"]: i for i in ok(member(daemon, user_python, "ns", "list"))}
    assert listed[a]["hostname"] == "box-a.test"
    bad = refused(member(daemon, user_python, "ns", "create", ns_name(), "--hostname", "a_b!"), 9)
    assert bad["field"] == "hostname"

    ok(member(daemon, user_python, "ns", "delete", a))
    assert not os.path.lexists(uts)
    assert socket.gethostname() == before


def test_interrupted_create_with_hostname_is_rolled_back(
    daemon_dir: Path, user_python: UserPython
) -> None:
    daemon = start_daemon(daemon_dir, ["--pause-at", "ns.create.mounted"])
    a = ns_name("h")
    env = {"SOCKD_SOCKET": daemon.socket, "PYTHONPATH": user_python[1]}
    hanging = subprocess.Popen(
        [*as_uid(MEMBER), user_python[0], "-m", "sockctl", "ns", "create", a, "--hostname", "hx"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon.wait_for_log("paused at ns.create.mounted")
    uts = os.path.join(daemon.state_dir, "uts", a)
    assert linux.is_namespace_mount(uts)
    daemon.stop(signal.SIGKILL)
    hanging.wait(10)
    daemon = start_daemon(daemon_dir, write_config=False)
    try:
        assert not os.path.lexists(uts)
        assert a not in ip_netns_list()
    finally:
        daemon.stop()


def test_attach_own_unprivileged_namespace_and_use_it(
    daemon: Daemon, user_python: UserPython
) -> None:
    att = ns_name("att")
    with sleeper([*as_uid(MEMBER), "unshare", "-rn"]) as pid:
        attached = ok(member(daemon, user_python, "ns", "attach", att, str(pid)))
        assert attached["attached"] is True
        assert attached["owner_uid"] == MEMBER[0]
        assert attached["id"] == _netns_ino(pid)
        assert att in ip_netns_list()

        link = ok(member(daemon, user_python, "ns", "link", att))
        tcp_works(att, link["end"]["addresses"][0].split("/")[0], None)
        tcp_from_inside_with_ip_netns_exec(att, link["peer"]["addresses"][0].split("/")[0])

        # Deleting removes the name and the link; the process keeps its namespace.
        deleted = ok(member(daemon, user_python, "ns", "delete", att))
        assert deleted["still_alive"] is True
        assert pid in deleted["pids"]
        assert att not in ip_netns_list()
        assert not host_ends()
        assert Path(f"/proc/{pid}").exists()
    assert quotas(daemon, user_python) == (0, 0)


def test_attach_the_calling_process_itself(daemon: Daemon, user_python: UserPython) -> None:
    me = ns_name("me")
    python, tree = user_python
    proc = subprocess.run(
        [*as_uid(MEMBER), "unshare", "-rn", python, "-m", "sockctl", "--json", "ns", "attach", me],
        env={"SOCKD_SOCKET": daemon.socket, "PYTHONPATH": tree},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["owner_uid"] == MEMBER[0]
    # The process is gone, the name keeps its namespace alive and usable.
    link = ok(member(daemon, user_python, "ns", "link", me))
    tcp_works(me, link["end"]["addresses"][0].split("/")[0], None)
    ok(member(daemon, user_python, "ns", "delete", me))


def test_attach_refuses_other_users_and_roots_processes(
    daemon: Daemon, user_python: UserPython
) -> None:
    def attach(pid: int) -> dict[str, Any]:
        return refused(member(daemon, user_python, "ns", "attach", ns_name("x"), str(pid)), 4)

    with sleeper([*as_uid(OTHER_MEMBER), "unshare", "-rn"]) as pid:
        assert "does not run as uid" in attach(pid)["message"]
        # Root may attach anyone's.
        name = ns_name("byroot")
        ok(sockctl(daemon, "--json", "ns", "attach", name, str(pid)))
        ok(sockctl(daemon, "--json", "ns", "delete", name))
    with sleeper(["unshare", "-n"]) as pid:
        assert "does not run as uid" in attach(pid)["message"]
    # The member's own process, but in the host's namespace: not theirs to name.
    with sleeper(as_uid(MEMBER)) as pid:
        assert "user namespace of uid 0" in attach(pid)["message"]
    assert refused(member(daemon, user_python, "ns", "attach", ns_name("x"), "4194000"), 5)
    assert not [n for n in ip_netns_list() if n.startswith(PREFIX)]


def test_set_nsid(daemon: Daemon, user_python: UserPython) -> None:
    a, b, c, d = (ns_name(t) for t in "abcd")
    for name in (a, b, c, d):
        ok(member(daemon, user_python, "ns", "create", name))
    wanted = 100000 + os.getpid() % 100000
    assert ok(member(daemon, user_python, "ns", "set-nsid", a, str(wanted)))["nsid"] == wanted
    listed = {i["name"]: i for i in ok(member(daemon, user_python, "ns", "list"))}
    assert listed[a]["nsid"] == wanted
    ip_list = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert f"{a} (id: {wanted})" in ip_list

    assert refused(member(daemon, user_python, "ns", "set-nsid", a, "7"), 6)["field"] == "name"
    auto = ok(member(daemon, user_python, "ns", "set-nsid", b, "auto"))
    assert isinstance(auto["nsid"], int)
    assert auto["nsid"] != wanted
    taken = refused(member(daemon, user_python, "ns", "set-nsid", c, str(wanted)), 6)
    assert taken["field"] == "nsid"
    # A link crossing into a namespace makes the kernel assign one: set it before linking.
    ok(member(daemon, user_python, "ns", "link", d))
    assert ok(member(daemon, user_python, "ns", "show", d))["info"]["nsid"] is not None
    refused(member(daemon, user_python, "ns", "set-nsid", d, "auto"), 6)
    assert member(daemon, user_python, "ns", "set-nsid", c, "x").returncode == 2
    for name in (a, b, c, d):
        ok(member(daemon, user_python, "ns", "delete", name))


# The Linux layer on its own -------------------------------------------------------------------------


def test_rtnl_agrees_with_ip() -> None:
    """Our rtnetlink dumps list what `ip` lists, inside a namespace made with `ip netns add`."""
    name = ns_name("rt")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "-n", name]
        subprocess.run(
            [*run, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True
        )
        subprocess.run([*run, "addr", "add", "10.213.254.1/24", "dev", "v0"], check=True)
        subprocess.run([*run, "addr", "add", "fd99::1/64", "dev", "v0", "nodad"], check=True)
        subprocess.run([*run, "link", "set", "v0", "up"], check=True)
        with Rtnl.inside(os.path.join(NETNS_DIR, name)) as nl:
            links = {link.name: link for link in nl.links()}
            addresses = {str(a.interface) for a in nl.addresses(links["v0"].index)}
            assert nl.link("nope") is None
            assert nl.delete_link("nope") is False
        theirs = {link["ifname"]: link for link in ip_json("-n", name, "-d", "link", "show")}
        assert set(links) == set(theirs)
        for ifname, link in links.items():
            assert link.index == theirs[ifname]["ifindex"]
            assert link.operstate == theirs[ifname]["operstate"].lower()
            assert link.kind == theirs[ifname].get("linkinfo", {}).get("info_kind")
        assert links["v0"].peer_index == links["v1"].index
        assert links["v0"].up
        assert not links["v1"].up
        assert {"10.213.254.1/24", "fd99::1/64"} <= addresses
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_rtnl_reports_kernel_errors_with_their_message() -> None:
    with Rtnl.here() as nl:
        lo = nl.link("lo")
        assert lo is not None
        with pytest.raises(FileExistsError, match="RTM_NEWLINK"):
            nl.create_veth("lo", "lo")


def test_link_registry_quarantines_corrupt_files(tmp_path: Path) -> None:
    errors: list[str] = []
    registry = LinkRegistry(str(tmp_path), on_corrupt=errors.append)
    record = LinkRecord(
        id="abc",
        owner_uid=1,
        ns="n",
        ifname="eth0",
        peer_ns=None,
        peer_ifname="sd1-0",
        address="10.213.0.2/30",
        peer_address="10.213.0.1/30",
        pool_block="10.213.0.0/30",
        created=1.0,
    )
    registry.write(record.ready())
    (tmp_path / "bad.json").write_text("{not json")
    assert registry.records() == [record.ready()]
    assert len(errors) == 1
    assert (tmp_path / "bad.corrupt").exists()
