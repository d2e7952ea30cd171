"""Hostile clients: floods, stalls, slow readers, descriptor floods, churn, vanished callers.

Each test starts its own daemon (limits tuned to what it provokes), warms it up, takes a baseline of
its descriptors and memory, does the hostile thing, and then checks what the issue asks of every
case (:func:`assert_recovered`): a normal request is served within 100 ms, and the daemon's
descriptor count and RSS are back to the baseline (RSS within a stated bound: Python keeps freed
memory in its allocator's arenas, so "back" means "no growth that scales with the abuse").
"""

import array
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sockctl import Client, SockdError
from sockctl.protocol import MAX_FDS, MAX_MESSAGE
from sockd import linux
from tests.conftest import (
    CREATE_GID,
    DEFAULT_CONFIG,
    MEMBER,
    OUTSIDER,
    Daemon,
    as_user,
    ns_name,
    raw_call,
    sockctl,
    start_daemon,
)

PING = b'{"proto":2,"op":"ping"}'
SERVED_WITHIN = 0.100
"""Seconds a normal request may take after (or during) each abuse."""
RSS_BOUND_KIB = 4 * 1024
"""RSS growth allowed when an abuse is repeated (see :func:`survives_twice`)."""


def config(**limits: object) -> str:
    """DEFAULT_CONFIG with some [limits] keys replaced."""
    text = DEFAULT_CONFIG
    for key, value in limits.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        at = lines.index("[limits]") + 1
        lines.insert(at, f"{key} = {value}")
        text = "\n".join(lines) + "\n"
    return text


@contextlib.contextmanager
def hostile_daemon(extra: list[str] | None = None, **limits: object) -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="sockd-"))
    directory.chmod(0o755)
    daemon = start_daemon(directory, extra or [], config=config(**limits))
    try:
        warm_up(daemon, workers=min(20, int(str(limits.get("max_connections", 64))) - 2))
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def warm_up(daemon: Daemon, workers: int = 20) -> None:
    """Every read-only path once, and a few workers: what a fresh daemon allocates only once."""
    with daemon.client() as client:
        for _ in range(3):
            client.ping()
            client.whoami()
            client.status()
            client.ns_list()
    socks = [dial(daemon.socket) for _ in range(workers)]
    for sock in socks:
        sock.send(b'{"proto":2,"op":"status"}')
    for sock in socks:
        sock.recv(MAX_MESSAGE)
        sock.close()
    daemon.clients.clear()


@dataclass(frozen=True)
class Baseline:
    fds: int
    rss_kib: int


def settle(daemon: Daemon) -> Baseline:
    """The daemon's descriptors and RSS once nothing is going on."""
    return Baseline(daemon.settled_fd_count(), daemon.rss_kib())


def dial(path: str) -> socket.socket:
    """Connect as a patient client: a blocking connect waits for room in a full listen backlog."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def ping_seconds(path: str) -> float:
    """Connect, ping, read the answer: how long a normal client waits."""
    start = time.perf_counter()
    with dial(path) as sock:
        sock.send(PING)
        reply = json.loads(sock.recv(MAX_MESSAGE))
    elapsed = time.perf_counter() - start
    assert reply["ok"] is True, reply
    return elapsed


def assert_served(daemon: Daemon) -> None:
    # One retry absorbs a scheduler hiccup on a loaded two-core CI machine; a daemon that is
    # really stuck fails both.
    elapsed = min(ping_seconds(daemon.socket) for _ in range(2))
    assert elapsed < SERVED_WITHIN, f"ping took {elapsed * 1000:.0f} ms"


def assert_recovered(daemon: Daemon, baseline: Baseline, timeout: float = 15.0) -> None:
    """Once the daemon has closed what the abuse left (queued connections included), it is back."""
    daemon.wait_fd_count(baseline.fds, timeout)
    growth = daemon.rss_kib() - baseline.rss_kib
    assert growth <= RSS_BOUND_KIB, f"RSS grew by {growth} KiB"
    assert "internal error" not in daemon.log()
    assert "Traceback" not in daemon.log()
    assert_served(daemon)


def wait_connections(sock: socket.socket, count: int, timeout: float = 10.0) -> None:
    """Until the daemon counts ``count`` connections (``sock``'s included; closed ones gone)."""
    deadline = time.monotonic() + timeout
    while (now := raw_call(sock, {"proto": 2, "op": "status"})["result"]["connections"]) != count:
        assert time.monotonic() < deadline, f"{now} connections, expected {count}"
        time.sleep(0.05)


def survives_twice(daemon: Daemon, abuse: Callable[[], None]) -> None:
    """Run ``abuse`` twice; after each round the daemon must serve at once and hold no more fds.

    The first round may raise the high-water mark of the daemon's memory: Python keeps freed memory
    in its allocator's arenas, and glibc in one arena per worker thread (measured: +8 to +17 MiB
    after 20 concurrent 600 kB listings, +0.5 MiB after 1 000 idle connections). The second round
    must not add to it beyond ``RSS_BOUND_KIB``: memory that grows with the abuse is a leak.
    """
    before = settle(daemon)
    abuse()
    assert_recovered(daemon, Baseline(before.fds, 1 << 40))  # memory: see above
    first = settle(daemon)
    abuse()
    assert_recovered(daemon, Baseline(before.fds, first.rss_kib))


def refusal(sock: socket.socket) -> dict[str, object]:
    sock.settimeout(10)
    reply = json.loads(sock.recv(MAX_MESSAGE))
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, dict)
    return error


# 1 000 idle connections from one uid --------------------------------------------------------------

HOLDER = """
import json, os, socket, sys
path, count = os.environ["SOCKD_SOCKET"], int(sys.argv[1])
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    held.append(s)
extra = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
extra.connect(path)
extra.settimeout(20)
print(json.dumps(json.loads(extra.recv(65536))), flush=True)
sys.stdin.read()  # hold every connection until the test closes our stdin
"""


@contextlib.contextmanager
def holder(
    daemon: Daemon, user_python: tuple[str, str], who: tuple[int, int, tuple[int, ...]], count: int
) -> Iterator[dict[str, object]]:
    """A process of ``who`` holding ``count`` idle connections; yields the refusal of one more."""
    python, tree = user_python
    uid, gid, groups = who
    group_arg = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    proc = subprocess.Popen(
        [
            *("setpriv", f"--reuid={uid}", f"--regid={gid}", group_arg),
            python,
            "-c",
            HOLDER,
            str(count),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        env={"PYTHONPATH": tree, "SOCKD_SOCKET": daemon.socket, "PATH": "/usr/bin:/bin"},
    )
    with proc:  # closes the pipes
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"the holder of uid {uid} died"
            yield json.loads(line)["error"]
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)


def test_thousand_idle_connections_of_one_uid_hit_a_named_limit_and_others_are_served(
    user_python: tuple[str, str],
) -> None:
    with hostile_daemon(max_connections=1010, max_connections_per_uid=1000) as daemon:

        def abuse() -> None:
            with holder(daemon, user_python, MEMBER, 1000) as per_uid:
                assert per_uid["code"] == "too_many_connections"
                assert per_uid["details"] == {"limit": 1000}
                assert f"uid {MEMBER[0]} has 1000 connections open" in str(per_uid["message"])
                assert daemon.fd_count() >= 2000  # a socket and a pidfd each
                # Others go on: root at once, another uid through the library.
                assert_served(daemon)
                ping = "import json; from sockctl import Client; print(json.dumps(Client().ping().version))"
                assert as_user(OUTSIDER, user_python, ping, daemon.socket)
                # The global limit: 1000 + 10 fills it, for root too (root is only exempt per uid).
                extra = [dial(daemon.socket)]
                try:
                    wait_connections(extra[0], 1001)  # until OUTSIDER's connection is gone
                    extra += [dial(daemon.socket) for _ in range(9)]
                    for sock in extra:
                        assert raw_call(sock, PING)["ok"] is True
                    with dial(daemon.socket) as one_more:
                        error = refusal(one_more)
                    assert error["code"] == "too_many_connections"
                    assert error["details"] == {"limit": 1010}
                    assert "serves 1010 connections already" in str(error["message"])
                finally:
                    for sock in extra:
                        sock.close()

        survives_twice(daemon, abuse)


def test_library_client_waits_for_room_in_a_full_listen_backlog() -> None:
    # The backlog full (a burst of clients while the daemon is busy), the library's connect used
    # to fail at once with EAGAIN ("full backlog; try again"); now it waits within its timeout.
    # And once the daemon goes on, the thousands of closed connections queued before it (8 may be
    # open at once here) must not get it refused with too_many_connections: they used to, counted
    # as open until the daemon had read their hang-up.
    with hostile_daemon(max_connections=8) as daemon:

        def abuse() -> None:
            fillers: list[socket.socket] = []
            outcome: list[object] = []
            daemon.proc.send_signal(signal.SIGSTOP)
            try:
                while True:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    sock.setblocking(False)
                    try:
                        sock.connect(daemon.socket)
                    except BlockingIOError:
                        sock.close()
                        break
                    fillers.append(sock)
                assert len(fillers) >= 128
                caller = threading.Thread(target=lambda: outcome.append(_ping(daemon.socket)))
                caller.start()
                time.sleep(0.5)
                # The burst has given up by the time the daemon works through it, ahead of our
                # client. (Closed after SIGCONT, a preempted test could leave 8 fillers open long
                # enough for the daemon to admit them: max_connections, and a refused caller.)
                for sock in fillers:
                    sock.close()
            finally:
                daemon.proc.send_signal(signal.SIGCONT)
            caller.join(30)
            assert outcome == ["pong"], outcome

        survives_twice(daemon, abuse)


def _ping(path: str) -> object:
    try:
        with Client(path, timeout=20) as client:
            client.ping()
    except SockdError as exc:
        return exc
    return "pong"


# Half requests that stall ----------------------------------------------------------------------------


def test_stalled_and_truncated_requests_delay_nobody_and_are_dropped() -> None:
    with hostile_daemon(idle_timeout=2.0, max_connections=1000) as daemon:

        def abuse() -> None:
            silent = [dial(daemon.socket) for _ in range(200)]
            truncated = [dial(daemon.socket) for _ in range(200)]
            try:
                for i, sock in enumerate(truncated):
                    # A datagram is atomic: "half a request" is a cut-off JSON document.
                    whole = json.dumps({"proto": 2, "op": "ns.create", "name": f"x{i}"}).encode()
                    sock.send(whole[: 1 + i % (len(whole) - 1)])
                for sock in truncated:
                    assert refusal(sock)["code"] == "malformed_message"
                assert_served(daemon)
                # Nobody speaks again: the daemon closes all 400 after idle_timeout.
                for sock in silent + truncated:
                    sock.settimeout(10)
                    assert sock.recv(100) == b""
            finally:
                for sock in silent + truncated:
                    sock.close()

        survives_twice(daemon, abuse)


# Clients that never read their replies ----------------------------------------------------------------


@contextlib.contextmanager
def crowded_netns_dir(entries: int) -> Iterator[str]:
    """A private netns directory with ``entries`` names, all bind mounts of one fresh namespace."""
    directory = tempfile.mkdtemp(prefix="sockd-netns-")
    first = os.path.join(directory, "n0")
    made: list[str] = []
    try:
        os.close(os.open(first, os.O_RDONLY | os.O_CREAT, 0))
        made.append(first)
        linux.new_netns_bound_to(first, loopback_up=False, before_mount=lambda: None)
        for i in range(1, entries):
            path = os.path.join(directory, f"n{i}")
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0))
            made.append(path)
            linux.mount(first, path, None, linux.MS_BIND)
        yield directory
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                linux.umount2(path, linux.MNT_DETACH)
        with contextlib.suppress(OSError):
            linux.umount2(directory, linux.MNT_DETACH)  # the daemon may have made it a mount point
        subprocess.run(["rm", "-rf", directory], check=False)


def test_clients_that_never_read_a_large_listing_are_dropped_after_send_timeout() -> None:
    with (
        crowded_netns_dir(3000) as netns_dir,
        hostile_daemon(["--netns-dir", netns_dir], send_timeout=1.0) as daemon,
    ):
        with daemon.client() as client:
            assert len(client.ns_list()) == 3000  # ~600 kB: more than a socket buffer holds

        def abuse() -> None:
            readers = [dial(daemon.socket) for _ in range(20)]
            try:
                for sock in readers:
                    sock.send(b'{"proto":2,"op":"ns.list"}')
                flooders = [dial(daemon.socket) for _ in range(5)]
                readers += flooders
                for sock in flooders:  # pings answered on the event loop, never read
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        for _ in range(5000):
                            sock.send(PING)
                # While 25 replies are stuck, everyone else is served at once.
                assert_served(daemon)
                with daemon.client() as client:
                    assert len(client.ns_list()) == 3000
                daemon.wait_for_log("client does not read its replies", timeout=10)
            finally:
                for sock in readers:
                    sock.close()

        survives_twice(daemon, abuse)


# Descriptor floods ----------------------------------------------------------------------------------------


def test_descriptor_floods_are_refused_and_every_descriptor_closed() -> None:
    with hostile_daemon() as daemon:

        def abuse() -> None:
            r, w = os.pipe()
            try:
                full = array.array("i", [r] * MAX_FDS).tobytes()
                over = array.array("i", [w] * (MAX_FDS + 1)).tobytes()
                with dial(daemon.socket) as sock:
                    for i in range(500):
                        fds = over if i % 5 == 0 else full
                        sock.sendmsg([PING], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                        error = refusal(sock)
                        assert (error["code"], error["field"]) == ("invalid_request", "fds")
                    assert raw_call(sock, PING)["ok"] is True
                # An empty datagram reads as the end of the stream: the connection goes, and so must
                # the descriptors that came with it (they used to leak).
                for _ in range(50):
                    with dial(daemon.socket) as sock:
                        sock.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, full)])
                        assert sock.recv(100) == b""
            finally:
                os.close(r)
                os.close(w)

        survives_twice(daemon, abuse)


def test_empty_datagram_with_descriptors_during_an_exec_session() -> None:
    # A session (ns.exec) reads its follow-ups itself; an empty datagram there reads as hang-up,
    # and its descriptors used to stay open in the daemon.
    with hostile_daemon() as daemon:
        name = ns_name("session")
        with daemon.client() as client:
            client.ns_create(name)
        r, w = os.pipe()
        try:

            def abuse() -> None:
                with dial(daemon.socket) as sock:
                    request = {
                        "proto": 2,
                        "op": "ns.exec",
                        "name": name,
                        "argv": ["/bin/sleep", "30"],
                    }
                    sock.send(json.dumps(request).encode())
                    started = json.loads(sock.recv(MAX_MESSAGE))
                    assert started["ok"] is True and started["more"] is True, started
                    fds = array.array("i", [r, w] * (MAX_FDS // 2)).tobytes()
                    sock.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                    # Read as a hang-up: the command is killed, and the session ends.
                    while (reply := json.loads(sock.recv(MAX_MESSAGE))).get("more"):
                        pass
                    assert reply["ok"] is True and reply["result"]["signal"] == signal.SIGKILL

            survives_twice(daemon, abuse)
        finally:
            os.close(r)
            os.close(w)
            with daemon.client() as client:
                client.ns_delete(name, force=True)


# Out of descriptors ---------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    utime, stime = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return int(utime) + int(stime)


def test_out_of_descriptors_refuses_by_name_without_spinning() -> None:
    # A daemon whose LimitNOFILE is below what its limits admit. It used to spin on a listener
    # that stayed readable (accept: EMFILE), at ~70 % of a CPU and 100 000 log lines a second.
    with hostile_daemon() as daemon:
        # Settled: the warm-up's 20 connections, already closed by their clients, may still hold
        # 40 descriptors in the daemon; counted in, they let ~35 of the 40 clients in, not ~15.
        limit = daemon.settled_fd_count() + 30
        subprocess.run(["prlimit", f"--pid={daemon.proc.pid}", f"--nofile={limit}"], check=True)

        def abuse() -> None:
            held = [dial(daemon.socket) for _ in range(40)]
            try:
                time.sleep(0.5)
                before, lines = cpu_ticks(daemon.proc.pid), len(daemon.log().splitlines())
                time.sleep(2.0)
                assert cpu_ticks(daemon.proc.pid) - before < 20  # < 10 % of a CPU
                assert len(daemon.log().splitlines()) - lines < 10
                refused = [json.loads(s.recv(MAX_MESSAGE)) for s in held[-5:]]
                for reply in refused:
                    assert reply["error"]["code"] == "too_many_connections", reply
                    assert "out of file descriptors" in reply["error"]["message"]
            finally:
                for sock in held:
                    sock.close()

        survives_twice(daemon, abuse)


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """A lower soft RLIMIT_NOFILE for what this process starts meanwhile (systemd's is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_limits_beyond_the_descriptor_limit_are_reported_at_start() -> None:
    with soft_nofile(1024), hostile_daemon(max_connections=50_000) as daemon:
        assert "limits.max_connections = 50000 needs about 100064 file descriptors" in daemon.log()
        (line,) = [
            line
            for line in Path(f"/proc/{daemon.proc.pid}/limits").read_text().splitlines()
            if line.startswith("Max open files")
        ]
        soft, hard = line.split()[3:5]
        assert soft == hard  # raised from a lower soft limit (systemd's default is 1024)


# Connection churn -----------------------------------------------------------------------------------------


def test_ten_thousand_rapid_connect_disconnect_cycles() -> None:
    with hostile_daemon() as daemon:

        def abuse() -> None:
            for i in range(10_000):
                with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
                    sock.connect(daemon.socket)
                    if i % 10 == 0:
                        sock.send(PING)

        survives_twice(daemon, abuse)
        with daemon.client() as client:
            assert client.status().connections == 1


# Messages at the size limit ------------------------------------------------------------------------------


def test_messages_at_the_size_limit_and_one_byte_over() -> None:
    base = {"proto": 2, "op": "ping", "pad": ""}
    exact = json.dumps({**base, "pad": "x" * (MAX_MESSAGE - len(json.dumps(base)))}).encode()
    assert len(exact) == MAX_MESSAGE
    with hostile_daemon() as daemon:

        def abuse() -> None:
            with dial(daemon.socket) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
                for _ in range(200):
                    assert (refusal_of(sock, exact)) == ("invalid_request", "pad")
                    assert (refusal_of(sock, exact + b" ")) == ("message_too_large", None)
                assert raw_call(sock, PING)["ok"] is True

        survives_twice(daemon, abuse)


def refusal_of(sock: socket.socket, message: bytes) -> tuple[object, object]:
    sock.send(message)
    error = refusal(sock)
    return error["code"], error["field"]


# Callers that vanished ----------------------------------------------------------------------------------

GHOST = (23999, 23999, (CREATE_GID,))
"""A uid with no passwd entry (none of the test uids has one), in the create group."""

VANISHING = """
import json, os, socket, sys
for message in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(os.environ["SOCKD_SOCKET"])
    s.send(message.encode())
    s.detach()  # left open: the kernel closes it when this process exits, right now
"""


def test_requests_from_a_caller_that_exited_before_the_daemon_read_them(
    user_python: tuple[str, str],
) -> None:
    name = ns_name("ghost")
    requests = [
        {"proto": 2, "op": "ns.create", "name": name},
        {"proto": 2, "op": "ns.identify"},
        {"proto": 2, "op": "ns.attach", "name": ns_name("ghostattach")},
    ]
    with hostile_daemon() as daemon:

        def abuse() -> None:
            python, tree = user_python
            uid, gid, groups = GHOST
            # Stopped, the daemon cannot accept or read: the caller connects, sends and exits first.
            daemon.proc.send_signal(signal.SIGSTOP)
            try:
                subprocess.run(
                    [
                        *("setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={groups[0]}"),
                        *(python, "-c", VANISHING, *(json.dumps(r) for r in requests)),
                    ],
                    check=True,
                    timeout=30,
                    cwd="/",
                    env={"PYTHONPATH": tree, "SOCKD_SOCKET": daemon.socket},
                )
            finally:
                daemon.proc.send_signal(signal.SIGCONT)
            try:
                # The create was sent while its caller lived: it is carried out and owned by that uid.
                deadline = time.monotonic() + 10
                while not (info := _listed(daemon, name)):
                    assert time.monotonic() < deadline, daemon.log()
                    time.sleep(0.05)
                assert info["owner_uid"] == uid
                # ... and audited, though its reply could not be delivered.
                daemon.wait_for_log(f"audit: ns.create by uid {uid}: ok")
                # Its pid may name another process by now: nothing is done in its name. (Three
                # connections, three workers: these come in any order, and only once round 1.)
                daemon.wait_for_log("ns.identify refused: the calling process")
                daemon.wait_for_log(f"ns.attach by uid {uid}: not_found: the calling process")
                # A uid without a passwd entry is shown as its number, and may delete what it owns.
                listing = sockctl(daemon, "ns", "list")
                assert listing.returncode == 0
                assert f"{name}" in listing.stdout and str(uid) in listing.stdout
                deleted = sockctl(daemon, "ns", "delete", name, who=GHOST, user_python=user_python)
                assert deleted.returncode == 0, deleted.stderr
            finally:
                sockctl(daemon, "ns", "delete", name)

        survives_twice(daemon, abuse)


def _listed(daemon: Daemon, name: str) -> dict[str, object] | None:
    with Client(daemon.socket) as client:
        for info in client.ns_list():
            if info.name == name:
                return {"owner_uid": info.owner_uid}
    return None


@pytest.mark.parametrize("who", [OUTSIDER, GHOST], ids=["outsider", "ghost"])
def test_uids_without_passwd_entries_are_served(
    user_python: tuple[str, str], who: tuple[int, int, tuple[int, ...]]
) -> None:
    with hostile_daemon() as daemon:
        me = as_user(
            who,
            user_python,
            "import json; from sockctl import Client; w = Client().whoami(); "
            "print(json.dumps([w.uid, w.may_create]))",
            daemon.socket,
        )
        assert me == [who[0], bool(who[2])]
