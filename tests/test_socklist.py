"""sock.list / sock.summary against the real kernel and the real ss, with real uids.

A module fixture builds a namespace full of sockets (the "zoo"): TCP listeners and established pairs
over IPv4 and IPv6, a pending connection, TIME-WAIT leftovers, UDP sockets bound and connected, a
RAW socket, UNIX stream/dgram/seqpacket sockets bound to paths and to abstract names (with a NUL
inside), accepted connections and socketpairs. A root holder forks (so sockets have two holders), an
OUTSIDER holder owns some sockets, and the test process itself holds a listener it created inside
the namespace from the host (a holder outside the socket's namespace, as sockd's clients are).
"""

import base64
import contextlib
import errno
import functools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import typing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sockctl import InvalidRequest, NotFound, SockInfo
from sockctl._socktable import cells, detail_texts
from sockctl.protocol import (
    MAX_MESSAGE,
    MAX_SOCK_PROCESSES,
    MAX_TCP_INFO,
    SockBatch,
    SockListRequest,
    SockMemory,
    SockProcess,
    SockTimer,
    WireTypeError,
    from_wire,
    sock_batch_from_wire,
    sock_batch_processes,
    sock_batch_rows,
    tcp_info,
)
from sockd import linux, sockdiag
from tests.conftest import (
    DEFAULT_CONFIG,
    MONITOR,
    NETNS_DIR,
    OUTSIDER,
    Daemon,
    as_user,
    connect_raw,
    ns_name,
    sockctl,
    start_daemon,
)

ANY = "0.0.0.0"  # noqa: S104 -- an address as sockd reports it, not a bind
ZOO = r"""
import json, os, socket, sys, time
directory, raw = sys.argv[1], sys.argv[2] == "raw"
held = []
def keep(*socks):
    held.extend(socks)
    return socks[0]
l4 = keep(socket.create_server(("127.0.0.1", 0)))
l6 = keep(socket.create_server(("::1", 0), family=socket.AF_INET6))
for listener in (l4, l6):
    keep(socket.create_connection(listener.getsockname()[:2]))
    keep(listener.accept()[0])
keep(socket.create_connection(l4.getsockname()))  # never accepted: Recv-Q 1 on the listener
client = socket.create_connection(l4.getsockname())  # closed both ways: TIME-WAIT leftovers
server, _ = l4.accept()
client.close()
time.sleep(0.05)
server.close()
extra = keep(socket.create_server(("127.0.0.1", 0)))
half = keep(socket.create_connection(extra.getsockname()))
keep(extra.accept()[0])
half.shutdown(socket.SHUT_WR)  # half-closed: FIN-WAIT-2 here, CLOSE-WAIT at the other end
queued = keep(socket.create_connection(extra.getsockname()))
keep(extra.accept()[0])
queued.sendall(b"q" * 3000)  # never read: Recv-Q 3000 on the accepted end
queued.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # a timer: ss -o's keepalive
carrier = keep(*socket.socketpair())
flying = socket.socket()
flying.bind(("127.0.0.1", 0))
socket.send_fds(carrier, [b"f"], [flying.fileno()])  # in flight over SCM_RIGHTS: no holder
flying.close()
u4 = keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
u4.bind(("127.0.0.1", 0))
u6 = keep(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
u6.bind(("::", 0))
keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)).connect(u4.getsockname())
if raw:
    keep(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
tag = os.getpid()
for kind, name in ((socket.SOCK_STREAM, "st"), (socket.SOCK_DGRAM, "dg"), (socket.SOCK_SEQPACKET, "sq")):
    path = os.path.join(directory, f"{name}.sock")
    bound = keep(socket.socket(socket.AF_UNIX, kind))
    bound.bind(path)
    if kind != socket.SOCK_DGRAM:
        bound.listen()
        keep(socket.socket(socket.AF_UNIX, kind)).connect(path)
        keep(bound.accept()[0])
    keep(socket.socket(socket.AF_UNIX, kind)).bind(b"\0zoo-%d-%s\0x" % (tag, name.encode()))
    keep(*socket.socketpair(socket.AF_UNIX, kind))
child = 0
if raw:
    child = os.fork()
    if child == 0:
        sys.stdin.read()
        os._exit(0)
print(json.dumps({"pid": os.getpid(), "child": child, "l4": l4.getsockname()[1],
                  "l6": l6.getsockname()[1]}), flush=True)
sys.stdin.read()
"""


@dataclass
class Holder:
    proc: subprocess.Popen[str]
    info: dict[str, Any]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.communicate(timeout=10)  # reaps it and closes both pipes
        if self.info.get("child"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.info["child"], 9)


@dataclass
class Zoo:
    name: str
    root: Holder
    outsider: Holder
    host_listener: socket.socket
    """Created inside the namespace by this (host) process."""


def _start_holder(name: str, directory: str, prefix: list[str], raw: bool) -> Holder:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, *prefix, "-c", ZOO, directory, "raw" if raw else "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.communicate()  # reaps it and closes both pipes
        raise AssertionError(f"zoo holder failed in {name}")
    return Holder(proc, json.loads(line))


def _make_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def _delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def _in_netns(name: str, make: Any) -> Any:
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sockdiag.run_in_netns(fd, make)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def zoo(user_python: tuple[str, str]) -> Iterator[Zoo]:
    name = ns_name("zoo")
    directory = tempfile.mkdtemp(prefix="sockd-zoo-")
    Path(directory).chmod(0o755)  # the OUTSIDER holder must reach its subdirectory
    outsider_dir = os.path.join(directory, "outsider")
    os.mkdir(outsider_dir)
    os.chown(outsider_dir, OUTSIDER[0], OUTSIDER[1])
    holders: list[Holder] = []
    listener: socket.socket | None = None
    _make_netns(name)
    try:
        holders.append(_start_holder(name, directory, [sys.executable], raw=True))
        uid, gid, _ = OUTSIDER
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        holders.append(_start_holder(name, outsider_dir, [*setpriv, user_python[0]], raw=False))

        def make_listener() -> socket.socket:
            return socket.create_server(("127.0.0.1", 0))

        listener = _in_netns(name, make_listener)
        yield Zoo(name, holders[0], holders[1], listener)
    finally:
        if listener is not None:
            listener.close()
        for holder in holders:
            holder.stop()
        _delete_netns(name)
        shutil.rmtree(directory, ignore_errors=True)


# ss, parsed ----------------------------------------------------------------------------------------

_USERS = re.compile(r'\("((?:[^"\\]|\\.)*)",pid=(\d+),fd=(\d+)\)')
Key = tuple[str, str, str, str, int | None]


def _ss(name: str, *args: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", name, "ss", "-H", *args], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def ss_view(name: str) -> dict[Key, set[tuple[str, int, int]]]:
    """(netid, state, local, peer, inode) -> holders, from ss -tanuwe -p and ss -xa -p, as root."""
    rows: dict[Key, set[tuple[str, int, int]]] = {}
    for line in _ss(name, "-tanuw", "-e", "-p"):
        kind, state, _rq, _sq, local, peer = line.split()[:6]
        inode = re.search(r"\bino:(\d+)", line)
        # ss prints the IPv6 "any" address as [::] for v6-only sockets and * otherwise; sockd's
        # table always shows *.
        local, peer = local.replace("[::]", "*"), peer.replace("[::]", "*")
        key = (kind, state, local, peer, int(inode.group(1)) if inode else None)
        rows[key] = {(n, int(pid), int(fd)) for n, pid, fd in _USERS.findall(line)}
    for line in _ss(name, "-xa", "-p"):
        kind, state, _rq, _sq, local, local_inode, peer, peer_inode = line.split()[:8]
        key = (kind, state, f"{local} {local_inode}", f"{peer} {peer_inode}", int(local_inode))
        rows[key] = {(n, int(pid), int(fd)) for n, pid, fd in _USERS.findall(line)}
    return rows


def sockd_view(batches: list[SockBatch]) -> dict[Key, set[tuple[str, int, int]]]:
    """The same keys from sock.list, rendered as sockctl renders them."""
    rows: dict[Key, set[tuple[str, int, int]]] = {}
    for batch in batches:
        netids, states, _rq, _sq, local, peer, users = cells(batch, processes=True)
        processes = sock_batch_processes(batch)
        for i, inode in enumerate(batch.inode):
            # ss reads RAW sockets from /proc/net/raw and prints no inode for them.
            key = (netids[i], states[i], local[i], peer[i], None if batch.kind == "raw" else inode)
            rows[key] = {(p.name, p.pid, p.fd) for p in processes[i] or []}
            # The CLI's Process column says the same as the decoded objects.
            shown = {(n, int(pid), int(fd)) for n, pid, fd in _USERS.findall(users[i])}
            assert shown == rows[key], (users[i], processes[i])
    return rows


_NETIDS = {"stream": "u_str", "dgram": "u_dgr", "seqpacket": "u_seq"}


def _netid(s: SockInfo) -> str:
    return _NETIDS[s.type] if s.kind == "unix" else s.kind


def _ss_lines(name: str, *args: str) -> list[str]:
    """ss's rows with their continuation lines (-i, -m: a tab, then more fields) joined."""
    out = subprocess.run(
        ["ip", "netns", "exec", name, "ss", "-H", *args], capture_output=True, text=True, check=True
    ).stdout
    rows: list[str] = []
    for line in out.splitlines():
        if line.startswith("\t") and rows:
            rows[-1] += " " + line.strip()
        elif line.strip():
            rows.append(line)
    return rows


_MOVING = re.compile(
    r"\b(?:send|pacing_rate|delivery_rate) \S+|\b(?:lastsnd|lastrcv|lastack|busy):\S+"
    r"|\b(?:bbr|cubic|dctcp|cgroup):\(?[^ )]*\)?|\bino:0\b"
)
"""What two looks at one idle socket may see differently (times since, rates), or what only ss
prints (its congestion module's own block, the cgroup path)."""


def _detail_tokens(text: str) -> set[str]:
    """A row's detail fields as comparable tokens: a timer without its expiry (it counts down)."""
    tokens = set(_MOVING.sub(" ", text).split())
    timers = {t for t in tokens if t.startswith("timer:(")}
    return (tokens - timers) | {re.sub(r",[^,]*,", ",", t) for t in timers}


# Parity ---------------------------------------------------------------------------------------------


def test_rows_and_processes_equal_ss(shared_daemon: Daemon, zoo: Zoo) -> None:
    """The default daemon: its processes come from the BPF task_file iterator on this machine
    (tests/test_taskfiles.py checks the machine can load it), as its log says."""
    _assert_equals_ss(shared_daemon, zoo)
    shared_daemon.wait_for_log("process attribution: the kernel's BPF task_file iterator")


def test_rows_and_processes_equal_ss_reading_proc(daemon_dir: Path, zoo: Zoo) -> None:
    """``process_scan = "proc"``: the same answer from /proc/*/fd, and no iterator loaded."""
    config = DEFAULT_CONFIG + '\n[sockets]\nprocess_scan = "proc"\n'
    daemon = start_daemon(daemon_dir, config=config)
    try:
        _assert_equals_ss(daemon, zoo)
        assert "process attribution" not in daemon.log()  # the iterator was never tried
    finally:
        code = daemon.stop()
    assert code == 0


def _assert_equals_ss(daemon: Daemon, zoo: Zoo) -> None:
    for _ in range(3):  # the zoo's TIME-WAIT leftover may expire between the two looks, once
        batches, result = daemon.client().sock_batches(netns=zoo.name)
        expected = ss_view(zoo.name)
        ours = sockd_view(batches)
        if set(ours) == set(expected):
            break
    sockets = [row for batch in batches for row in sock_batch_rows(batch)]
    assert set(ours) == set(expected)
    assert ours == expected  # process attribution, as root, equals ss -p's
    assert result.count == len(sockets)
    assert result.namespaces == [zoo.name]
    assert result.process_scope == "all"
    # Every kind of socket the zoo made is there, not just "whatever both tools agree on".
    kinds = Counter((_netid(s), s.state) for s in sockets)
    for wanted in [
        ("tcp", "listening"),
        ("tcp", "established"),
        ("udp", "closed"),
        ("udp", "established"),
        ("raw", "closed"),
        ("u_str", "listening"),
        ("u_seq", "listening"),
        ("u_dgr", "closed"),
        ("u_str", "established"),
        ("u_dgr", "established"),
        ("u_seq", "established"),
    ]:
        assert kinds[wanted], wanted
    assert len(ours) == len(sockets)


def test_details_equal_ss_e_o_i_m(shared_daemon: Daemon, zoo: Zoo) -> None:
    """-e -o -i -m: every field ss prints for a socket (uid, ino, sk, timer, skmem, tcp_info),
    but those that change between two looks, is in sockd's row for the same inode."""
    batches, _ = shared_daemon.client().sock_batches(
        netns=zoo.name, extended=True, timers=True, info=True, memory=True, processes=False
    )
    ours: dict[tuple[str, int], str] = {
        (batch.kind, inode): text
        for batch in batches
        for inode, text in zip(batch.inode, detail_texts(batch), strict=True)
        if inode
    }
    compared = Counter[str]()
    for line in _ss_lines(zoo.name, "-tuwan", "-e", "-o", "-i", "-m"):
        kind, found = line.split()[0], re.search(r"\bino:(\d+)", line)
        if found is None or found.group(1) == "0" or kind == "raw":
            continue  # TIME-WAIT entries (no socket), RAW (read from /proc/net by both)
        theirs = _detail_tokens(line.split(None, 6)[6])
        mine = _detail_tokens(ours[(kind, int(found.group(1)))])
        assert theirs <= mine, (line, sorted(theirs - mine))
        # Ours adds only what ss 6.1 does not know yet (newer tcp_info fields).
        assert {t.split(":")[0] for t in mine - theirs} <= {"rcv_wnd"}, (line, mine - theirs)
        compared.update(t.split(":")[0] for t in theirs)
    for field in ("ino", "sk", "skmem", "uid", "timer", "rto", "cwnd", "mss", "bytes_received",
                  "rcv_space", "wscale"):  # fmt: skip
        assert compared[field], (field, compared)
    for line in _ss_lines(zoo.name, "-xa", "-m"):
        inode = int(line.split()[5])
        (skmem,) = re.findall(r"skmem:\([^)]*\)", line)
        assert skmem in ours[("unix", inode)], (line, ours[("unix", inode)])
        compared["unix skmem"] += 1
    assert compared["unix skmem"] >= 10


def test_batches_encoded_while_the_scan_runs_get_the_same_holders(zoo: Zoo) -> None:
    """The daemon encodes batches while the /proc scan still runs and adds their holders when it
    is over. A scan held back until every batch is prepared (in-process, the listing code run
    directly: nothing makes a real scan slow on demand) gives the very items of a scan that is
    over before the first batch, in a namespace with every kind of socket."""
    from sockd import socklist

    class Scan:
        def __init__(self, holders: sockdiag.Holders, done_after: int) -> None:
            self.processes, self.calls, self.done_after = (
                socklist._Processes(holders),
                0,
                done_after,
            )

        def done(self) -> bool:
            self.calls += 1
            return self.calls > self.done_after

        def result(self) -> socklist._Processes:
            return self.processes

    holders = sockdiag.socket_holders()
    request = SockListRequest(netns=zoo.name)

    def items(scan: Scan) -> list[str]:
        stack = contextlib.ExitStack()
        fd = os.open(f"/run/netns/{zoo.name}", os.O_RDONLY | os.O_CLOEXEC)
        target = socklist._Target(zoo.name, fd)
        stack.callback(target.close)
        listing = socklist._Listing(
            request,
            socklist._filters(request),
            [target],
            typing.cast(socklist._Scan, scan),
            "all",
            stack,
        )
        listing._batch_rows = 1  # a batch per kernel message: many from a small namespace
        return list(listing.items())

    def rows(texts: list[str]) -> list[SockInfo]:
        batches = [sock_batch_from_wire(json.loads(text)) for text in texts]
        return sorted((row for b in batches for row in sock_batch_rows(b)), key=repr)

    over = Scan(holders, done_after=0)
    late = Scan(holders, done_after=10**9)
    prepared = items(late)
    assert late.calls > 5  # the batches were prepared while it "ran"
    assert rows(prepared) == rows(items(over))
    assert sum(bool(row.processes) for row in rows(prepared)) >= 10


def test_holders_outside_the_namespace_and_shared_after_fork(
    shared_daemon: Daemon, zoo: Zoo
) -> None:
    sockets, _ = shared_daemon.client().sock_list(netns=zoo.name, kinds=["tcp"])
    port = zoo.host_listener.getsockname()[1]
    (mine,) = [s for s in sockets if s.local_port == port and s.state == "listening"]
    assert [p.pid for p in mine.processes or []] == [os.getpid()]
    (forked,) = [
        s for s in sockets if s.local_port == zoo.root.info["l4"] and s.state == "listening"
    ]
    pids = {p.pid for p in forked.processes or []}
    assert pids == {zoo.root.info["pid"], zoo.root.info["child"]}


MANY_HOLDERS = """
import os, signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
children = []
for _ in range(int(sys.argv[1]) - 1):
    pid = os.fork()
    if pid == 0:
        signal.pause()
        os._exit(0)
    children.append(pid)
print(s.getsockname()[1], flush=True)
try:
    sys.stdin.read()
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
"""


def test_a_socket_held_by_more_processes_than_a_row_lists(shared_daemon: Daemon) -> None:
    """One socket inherited by MAX_SOCK_PROCESSES + 3 processes: the row lists 128 holders and
    counts the other 3, in the library and in the CLI's table (``+3 more``)."""
    holders = MAX_SOCK_PROCESSES + 3
    holder = subprocess.Popen(
        [sys.executable, "-c", MANY_HOLDERS, str(holders)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its children are killed with its process group
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        filters = {"kinds": ["udp"], "local_address": "127.0.0.1", "local_port": port}
        (row,) = shared_daemon.client().sock_list(**filters)[0]  # type: ignore[arg-type]
        assert row.processes is not None
        assert len(row.processes) == MAX_SOCK_PROCESSES
        assert row.processes_omitted == 3
        family = {p.pid for p in row.processes}
        assert len(family) == MAX_SOCK_PROCESSES
        assert all(Path(f"/proc/{pid}/status").exists() for pid in family)
        table = sockctl(
            shared_daemon, "sock", "list", "-u", "--src", "127.0.0.1", "--sport", str(port)
        )
        assert table.returncode == 0, table.stderr
        _, line = table.stdout.splitlines()
        assert line.endswith(" +3 more")
        assert len(_USERS.findall(line)) == MAX_SOCK_PROCESSES
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()


BIG_HOLDER = """
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = [socket.socketpair() for _ in range(int(sys.argv[1]))]
if len(sys.argv) > 2:  # an inherited socket, also held by the parent
    held.append(socket.socket(fileno=int(sys.argv[2])))
print("ready", flush=True)
for line in sys.stdin:  # "dup": one more fd of that socket
    held.append(held[-1].dup())
    print("ok", flush=True)
"""


def _children() -> set[int]:
    """This process's child pids (its threads' children files, Linux >= 3.5)."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):
            pids.update(map(int, Path(f"/proc/self/task/{tid}/children").read_text().split()))
    return pids


def test_helper_scan_finds_every_fd_of_a_big_process_once() -> None:
    """A big process's fds are shared between the scanning thread and a helper process in chunks:
    each socket fd is found once, as the in-thread scan and readlink itself find them, and the
    process is named. A helper that fails or hangs, or a failure on the scanning thread while
    it runs, propagates and leaves no descriptor and no process behind."""
    pairs = sockdiag._CHUNK + 7  # three chunks
    assert 2 * pairs >= sockdiag._HELPER_MIN
    shared, other_end = socket.socketpair()
    holder = subprocess.Popen(
        [sys.executable, "-c", BIG_HOLDER, str(pairs), str(shared.fileno())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=[shared.fileno()],
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        pid = holder.pid
        truth: dict[int, list[int]] = {}
        for name in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if target.startswith("socket:["):
                truth.setdefault(int(target[8:-1]), []).append(int(name))
        assert len(truth) == 2 * pairs + 1
        shared_inode = os.fstat(shared.fileno()).st_ino

        def of_holder(holders: sockdiag.Holders) -> dict[int, list[int]]:
            return {
                inode: sorted(fd for p, fd in holders.of(inode) if p == pid)
                for inode in holders.inodes()
                if any(p == pid for p, _ in holders.of(inode))
            }

        # The socket this (small) process holds too is listed with both holders.
        helped = sockdiag.socket_holders(helpers=1)
        assert of_holder(helped) == truth
        assert {p for p, _ in helped.of(shared_inode)} == {os.getpid(), pid}
        # And with a second fd of it in the holder (one helper finds the socket twice).
        assert holder.stdin is not None
        holder.stdin.write("dup\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ok"
        truth[shared_inode] = sorted(
            int(n)
            for n in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{n}") == f"socket:[{shared_inode}]"
        )
        assert len(truth[shared_inode]) == 2
        helped = sockdiag.socket_holders(helpers=1)
        assert of_holder(helped) == truth
        assert sorted(helped.of(shared_inode)) == sorted(
            [(os.getpid(), shared.fileno()), *((pid, fd) for fd in truth[shared_inode])]
        )
        assert of_holder(sockdiag.socket_holders(helpers=2)) == truth  # as many as there are slots
        assert of_holder(sockdiag.socket_holders(helpers=0)) == truth
        assert of_holder(sockdiag.socket_holders(pid=pid)) == truth
        assert helped.names[pid] == Path(f"/proc/{pid}/comm").read_text().strip()

        # Faults injected (nothing here makes readlink fail on demand, or a helper hang).
        children = _children()
        real_send, real_comm = sockdiag._Helper.send, sockdiag._comm
        sent: list[int] = []

        def send(helper: sockdiag._Helper, pid_: int, names: list[str]) -> None:
            sent.append(pid_)
            real_send(helper, pid_, names)

        def failing_here(pid_dir: int) -> str:
            if sent:  # a helper is reading: the scanning thread fails now
                raise OSError(errno.EMFILE, "injected here")
            return real_comm(pid_dir)

        # No helper can be started (fault injected: an interpreter that does not exist): this
        # scan reads it all itself.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "executable", "/nonexistent/python3")
            assert of_holder(sockdiag.socket_holders(helpers=2)) == truth

        # Every helper slot taken by other scans: this one reads it all itself.
        taken = 0
        while sockdiag._HELPER_SLOTS.acquire(blocking=False):
            taken += 1
        try:
            assert taken == sockdiag._HELPERS
            assert of_holder(sockdiag.socket_holders(helpers=1)) == truth
        finally:
            for _ in range(taken):
                sockdiag._HELPER_SLOTS.release()

        patch_sets: list[tuple[dict[str, Any], str]] = [
            ({"_HELPER_CODE": "import sys; sys.exit('injected in the helper')"}, "injected in"),
            ({"_HELPER_CODE": "import time; time.sleep(60)", "_HELPER_TIMEOUT": 0.5}, "too long"),
            ({"_comm": failing_here}, "injected here"),
        ]
        for patches, match in patch_sets:
            fds_before = len(os.listdir("/proc/self/fd"))
            with pytest.MonkeyPatch.context() as patch:
                sent.clear()
                patch.setattr(sockdiag._Helper, "send", send)
                for attribute, value in patches.items():
                    patch.setattr(sockdiag, attribute, value)
                with pytest.raises(OSError, match=match):
                    sockdiag.socket_holders(helpers=1)
            assert sent, "a helper was started"
            assert len(os.listdir("/proc/self/fd")) == fds_before
            assert _children() == children
    finally:
        holder.kill()
        holder.communicate()
        shared.close()
        other_end.close()


def test_unix_names_peers_and_peer_processes(shared_daemon: Daemon, zoo: Zoo) -> None:
    sockets, _ = shared_daemon.client().sock_list(netns=zoo.name, kinds=["unix"])
    by_inode = {s.inode: s for s in sockets}
    tag = zoo.root.info["pid"]
    abstract = {s.local for s in sockets if s.local and s.local.startswith("@")}
    assert f"@zoo-{tag}-st\0x" in abstract  # the NUL inside the name survives the wire
    connected = [s for s in sockets if s.peer_inode and s.peer_inode in by_inode]
    assert connected
    for s in connected:
        peer = by_inode[s.peer_inode]  # type: ignore[index]
        assert peer.peer_inode == s.inode
        assert s.peer_processes == peer.processes
    unnamed = [s for s in sockets if s.local is None]
    assert unnamed and all(s.local_port is None and s.remote is None for s in unnamed)


def _detail_buffers(diag: sockdiag.DiagSocket, family: int, protocol: int) -> list[bytes]:
    """The raw reply buffers of one dump with every detail."""
    addresses = diag._addresses[family]
    ext = sockdiag.EXT_INFO | sockdiag.EXT_MEMORY
    request = diag._inet_request(family, protocol, sockdiag.ALL_STATES, b"", 0, ext)
    buffers: list[bytes] = []

    def keep(buf: bytes) -> tuple[sockdiag.InetChunk, Any]:
        buffers.append(buf)
        return sockdiag._inet_detail_chunk(buf, addresses, {}, [0])

    list(diag._dump(request, keep))
    return buffers


def test_detail_layouts_read_what_the_attribute_walk_reads(zoo: Zoo) -> None:
    """The per-shape struct that reads a message in one unpack gives, for every message of real
    dumps (every TCP state and UDP of the zoo, both families, with every detail), the very
    details of the attribute-by-attribute walk over the same bytes; and a message whose
    attributes differ from its shape's (SKMEMINFO's type forged to an unknown one) takes the walk."""
    fd = os.open(os.path.join(NETNS_DIR, zoo.name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        diag = sockdiag.run_in_netns(fd, sockdiag.DiagSocket.open)
        with diag:
            compared = 0
            for family in (socket.AF_INET, socket.AF_INET6):
                addresses = diag._addresses[family]
                for protocol in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
                    layouts: dict[int, Any] = {}
                    made = [0]
                    for buf in _detail_buffers(diag, family, protocol):
                        walked, _ = sockdiag._inet_detail_chunk(
                            buf, addresses, {}, [sockdiag._MAX_LAYOUTS]
                        )
                        sockdiag._inet_detail_chunk(buf, addresses, layouts, made)  # learn
                        fast, _ = sockdiag._inet_detail_chunk(buf, addresses, layouts, made)
                        assert fast == walked
                        compared += walked.count()
                    assert made[0] == len(layouts)  # each shape learnt once: none mismatched
                    assert any(layout is not None for layout in layouts.values())
            assert compared >= 20
            (buf, *_) = _detail_buffers(diag, socket.AF_INET, socket.IPPROTO_TCP)
            addresses = diag._addresses[socket.AF_INET]
            layouts, made = {}, [0]
            before, _ = sockdiag._inet_detail_chunk(buf, addresses, layouts, made)
            assert before.details[0][4] is not None  # the first socket's skmem
            at = buf.index(struct.pack("=HH", 4 + 4 * 9, sockdiag.INET_DIAG_SKMEMINFO))
            forged = buf[:at] + struct.pack("=HH", 4 + 4 * 9, 0x7FFF) + buf[at + 4 :]
            walked, _ = sockdiag._inet_detail_chunk(forged, addresses, {}, [sockdiag._MAX_LAYOUTS])
            fast, _ = sockdiag._inet_detail_chunk(forged, addresses, layouts, made)
            assert fast == walked and fast.details[0][4] is None
            assert fast.details[1:] == before.details[1:]
    finally:
        os.close(fd)


def test_sock_diag_and_proc_net_agree(zoo: Zoo) -> None:
    fd = os.open(os.path.join(NETNS_DIR, zoo.name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        diag = sockdiag.run_in_netns(fd, sockdiag.DiagSocket.open)
        with diag:
            for family, protocol, table in [
                (socket.AF_INET, socket.IPPROTO_TCP, "tcp"),
                (socket.AF_INET6, socket.IPPROTO_TCP, "tcp6"),
                (socket.AF_INET, socket.IPPROTO_UDP, "udp"),
                (socket.AF_INET6, socket.IPPROTO_UDP, "udp6"),
            ]:
                kernel = {
                    r for c in diag.inet(family, protocol, sockdiag.ALL_STATES) for r in c.rows()
                }
                with sockdiag.run_in_netns(
                    fd, functools.partial(sockdiag.open_proc_net, table)
                ) as file:
                    parsed = {
                        r
                        for c in sockdiag.proc_net_inet(file, family, sockdiag.ALL_STATES)
                        for r in c.rows()
                    }

                # TIME-WAIT sockets (inode 0) show their sub-state in sock_diag, 6 in /proc; the
                # queues of listeners are counted differently (backlog vs 0).
                def key(r: tuple[Any, ...]) -> tuple[Any, ...]:
                    return (r[0], r[3], r[4], r[5], r[6], r[7], r[8])

                assert {key(r) for r in kernel if r[3]} == {key(r) for r in parsed if r[3]}, table
            unix = {r for c in diag.unix(sockdiag.ALL_STATES) for r in c.rows()}
            with sockdiag.run_in_netns(fd, lambda: sockdiag.open_proc_net("unix")) as file:
                parsed_unix = {
                    r for c in sockdiag.proc_net_unix(file, sockdiag.ALL_STATES) for r in c.rows()
                }

            # /proc/net/unix prints an abstract name's NULs as @.
            def unix_key(r: tuple[Any, ...]) -> tuple[Any, ...]:
                name = r[5]
                if name is not None and name[:1] == b"\0":
                    name = b"\0" + name[1:].replace(b"\0", b"@")
                return (r[0], r[1], r[4], name)

            assert {unix_key(r) for r in unix} == {unix_key(r) for r in parsed_unix}
    finally:
        os.close(fd)


def test_raw_sockets_fall_back_to_proc_net_and_say_so(shared_daemon: Daemon, zoo: Zoo) -> None:
    def has_raw_diag() -> bool:
        with sockdiag.DiagSocket.open() as diag:
            try:
                list(diag.inet(socket.AF_INET, socket.IPPROTO_RAW, sockdiag.ALL_STATES))
            except sockdiag.SockDiagUnavailable:
                return False
        return True

    sockets, result = shared_daemon.client().sock_list(netns=zoo.name, kinds=["raw"])
    assert [(s.kind, s.local, s.local_port) for s in sockets] == [("raw", ANY, 1)]
    assert ("raw" in result.proc_fallback) == (not has_raw_diag())
    assert "tcp" not in result.proc_fallback


# Policy, with real uids ------------------------------------------------------------------------------

LIST_AS_USER = """
import json
from sockctl import Client
rows, result = Client().sock_list(netns={name!r})
print(json.dumps({{"scope": result.process_scope, "rows": {{
    str(r.inode): [[p.pid, p.name] for p in r.processes or []] for r in rows if r.inode}}}}))
"""


def test_outsider_sees_every_address_but_only_own_processes(
    shared_daemon: Daemon, zoo: Zoo, user_python: tuple[str, str]
) -> None:
    root_view, _ = shared_daemon.client().sock_list(netns=zoo.name)
    seen = as_user(OUTSIDER, user_python, LIST_AS_USER.format(name=zoo.name), shared_daemon.socket)
    assert seen["scope"] == "own"
    assert set(seen["rows"]) == {str(s.inode) for s in root_view if s.inode}
    outsider = zoo.outsider.info["pid"]
    shown = {pid for held in seen["rows"].values() for pid, _ in held}
    assert shown == {outsider}
    for s in root_view:
        mine = [p.pid for p in s.processes or [] if p.pid == outsider]
        if s.inode:
            assert [pid for pid, _ in seen["rows"][str(s.inode)]] == mine


def test_monitor_sees_other_users_processes(
    shared_daemon: Daemon, zoo: Zoo, user_python: tuple[str, str]
) -> None:
    root_view, _ = shared_daemon.client().sock_list(netns=zoo.name)
    seen = as_user(MONITOR, user_python, LIST_AS_USER.format(name=zoo.name), shared_daemon.socket)
    assert seen["scope"] == "all"
    expected = {
        str(s.inode): sorted([p.pid, p.name] for p in s.processes or [])
        for s in root_view
        if s.inode
    }
    assert {k: sorted(v) for k, v in seen["rows"].items()} == expected


def test_pid_filter_never_reveals_other_users_sockets(
    shared_daemon: Daemon, zoo: Zoo, user_python: tuple[str, str]
) -> None:
    root_pid, outsider_pid = zoo.root.info["pid"], zoo.outsider.info["pid"]
    code = f"""
import json
from sockctl import Client
c = Client()
print(json.dumps([len(c.sock_list(netns={zoo.name!r}, pid=pid, processes=procs)[0])
                  for pid in ({root_pid}, {outsider_pid}) for procs in (True, False)]))
"""
    counts = as_user(OUTSIDER, user_python, code, shared_daemon.socket)
    assert counts[:2] == [0, 0]
    assert counts[2] == counts[3] > 0
    client = shared_daemon.client()
    held, _ = client.sock_list(netns=zoo.name, pid=outsider_pid)
    assert len(held) == counts[2]
    assert all(outsider_pid in {p.pid for p in s.processes or []} for s in held)


def test_socket_visibility_own_hides_other_uids_sockets(
    daemon_dir: Path, zoo: Zoo, user_python: tuple[str, str]
) -> None:
    from tests.conftest import DEFAULT_CONFIG

    config = DEFAULT_CONFIG.replace(
        "namespace_quota = 4", 'namespace_quota = 4\nsocket_visibility = "own"'
    )
    own = start_daemon(daemon_dir, config=config)
    try:
        code = f"""
import json
from sockctl import Client, PermissionDenied
c = Client()
rows, _ = c.sock_list(netns={zoo.name!r})
try:
    c.sock_list(netns={zoo.name!r}, uid=0)
    refused = None
except PermissionDenied as exc:
    refused = exc.field
print(json.dumps({{"uids": sorted({{r.uid for r in rows}}), "count": len(rows), "refused": refused}}))
"""
        seen = as_user(OUTSIDER, user_python, code, own.socket)
        assert seen["uids"] == [OUTSIDER[0]]
        assert seen["count"] > 0
        assert seen["refused"] == "uid"
        everything, _ = own.client().sock_list(netns=zoo.name)  # root still sees all
        assert {s.uid for s in everything} >= {0, OUTSIDER[0]}
    finally:
        own.stop()


# Namespaces -------------------------------------------------------------------------------------------


def test_all_namespaces_tags_each_row(shared_daemon: Daemon) -> None:
    names = [ns_name("all"), ns_name("all")]
    alias = ns_name("alias")
    listeners: list[socket.socket] = []
    try:
        for name in names:
            _make_netns(name)
            listeners.append(_in_netns(name, lambda: socket.create_server(("127.0.0.1", 0))))
        # A second name for the first namespace: its sockets must be listed once.
        alias_path = os.path.join(NETNS_DIR, alias)
        os.close(os.open(alias_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        linux.mount(os.path.join(NETNS_DIR, names[0]), alias_path, None, linux.MS_BIND)
        host = socket.create_server(("127.0.0.1", 0))
        listeners.append(host)
        sockets, result = shared_daemon.client().sock_list(
            all_netns=True, kinds=["tcp"], states=["listening"], processes=False
        )
        ports = [lst.getsockname()[1] for lst in listeners]
        tagged = sorted(
            ((s.local_port, s.netns) for s in sockets if s.local_port in ports), key=str
        )
        # A namespace with two names is listed once, under the first name in sorted order.
        first = min(names[0], alias)
        assert tagged == sorted(
            [(ports[0], first), (ports[1], names[1]), (ports[2], None)], key=str
        )
        assert result.namespaces[0] is None
        assert {first, names[1]} <= set(result.namespaces)
        assert max(names[0], alias) not in result.namespaces
    finally:
        for lst in listeners:
            lst.close()
        with contextlib.suppress(OSError):
            linux.umount2(os.path.join(NETNS_DIR, alias), linux.MNT_DETACH)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(NETNS_DIR, alias))
        for name in names:
            _delete_netns(name)


# Filters ----------------------------------------------------------------------------------------------


def test_filters_select_like_ss(shared_daemon: Daemon, zoo: Zoo) -> None:
    client = shared_daemon.client()
    port = zoo.root.info["l4"]
    by_port, _ = client.sock_list(netns=zoo.name, local_port=port, processes=False)
    assert by_port and all(s.local_port == port and s.kind == "tcp" for s in by_port)
    listening, _ = client.sock_list(netns=zoo.name, states=["listen"], kinds=["tcp", "unix"])
    assert listening and {s.state for s in listening} == {"listening"}
    connected, _ = client.sock_list(netns=zoo.name, states=["connected"], kinds=["tcp"])
    assert connected and not {s.state for s in connected} & {"listening", "closed"}
    v6, _ = client.sock_list(netns=zoo.name, families=["inet6"])
    assert v6 and {s.family for s in v6} == {"inet6"}
    to_l6, _ = client.sock_list(netns=zoo.name, remote_address="::1/128")
    assert to_l6 and all(s.remote == "::1" for s in to_l6)
    abstract, _ = client.sock_list(netns=zoo.name, local_address="@zoo-*")
    assert len(abstract) == 6 and all(s.kind == "unix" for s in abstract)
    outsider, _ = client.sock_list(netns=zoo.name, uid=OUTSIDER[0])
    assert outsider and {s.uid for s in outsider} == {OUTSIDER[0]}


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"states": ["bogus"]}, InvalidRequest, "states.0"),
        ({"local_port": 70000}, InvalidRequest, "local_port"),
        ({"remote_port": -1}, InvalidRequest, "remote_port"),
        ({"local_address": "10.0.0.300"}, InvalidRequest, "local_address"),
        ({"remote_address": "/run/*"}, InvalidRequest, "remote_address"),
        ({"kinds": ["sctp"]}, InvalidRequest, "kinds.0"),
        ({"netns": "no-such-namespace-here"}, NotFound, "netns"),
        ({"netns": "bad/name"}, InvalidRequest, "netns"),
        ({"netns": "x", "all_netns": True}, InvalidRequest, "netns"),
    ],
)
def test_bad_filters_are_named_errors(
    shared_daemon: Daemon, kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as caught:
        shared_daemon.client().sock_list(**kwargs)
    assert caught.value.field == field  # type: ignore[attr-defined]


def test_cli_bad_filters_exit_codes(shared_daemon: Daemon) -> None:
    bad_port = sockctl(shared_daemon, "sock", "list", "--sport", "70000")
    assert bad_port.returncode == 9
    assert "local_port" in bad_port.stderr
    unknown = sockctl(shared_daemon, "--json", "sock", "list", "-N", "no-such-namespace-here")
    assert unknown.returncode == 5
    assert json.loads(unknown.stderr)["error"]["field"] == "netns"
    state = sockctl(shared_daemon, "sock", "list", "--state", "bogus")
    assert state.returncode == 2  # names the option and the choices
    assert "'bogus' is not one of 'established'," in state.stderr and "--state" in state.stderr


def test_cli_s_alone_is_ss_summary(shared_daemon: Daemon, zoo: Zoo) -> None:
    """ss -s is its summary: `sock list -s` alone is `sock summary`; with a state it filters."""
    summary = sockctl(shared_daemon, "sock", "summary", "-N", zoo.name, "-t")
    alone = sockctl(shared_daemon, "sock", "list", "-N", zoo.name, "-t", "-s")
    assert summary.returncode == alone.returncode == 0, alone.stderr
    assert alone.stdout == summary.stdout and "estab" in alone.stdout
    listed = sockctl(shared_daemon, "sock", "list", "-N", zoo.name, "-t", "-s", "listening", "-H")
    assert listed.stdout and all(" LISTEN " in row for row in listed.stdout.splitlines())


def test_cli_ss_default_flags_and_no_header(shared_daemon: Daemon) -> None:
    """ss's -a -n -p are accepted as the defaults they are; -H drops only the header line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = str(udp.getsockname()[1])
        query = ["sock", "list", "-u", "--src", "127.0.0.1", "--sport", port]
        plain = sockctl(shared_daemon, *query)
        assert plain.returncode == 0, plain.stderr
        header, row = plain.stdout.splitlines()
        assert header.split()[:2] == ["Netid", "State"]
        assert f"127.0.0.1:{port}" in row
        ss_like = sockctl(shared_daemon, *query, "-a", "-n", "-p", "-H")
        assert ss_like.returncode == 0, ss_like.stderr
        assert ss_like.stdout.splitlines() == [row]
    empty = sockctl(shared_daemon, *query, "-H")  # the socket is closed: no rows, no header
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == ""


def test_cli_details_as_ss_prints_them(shared_daemon: Daemon) -> None:
    """-eoim as ss takes them: the row, then tcp_info and skmem on a tab-indented line; --json
    carries the same as typed fields; without the flags neither appears."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = str(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", int(port))) as conn, listener.accept()[0]:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            inode = os.fstat(conn.fileno()).st_ino
            query = ["sock", "list", "-t", "--dport", port, "-H"]
            shown = sockctl(shared_daemon, *query, "-eoim")
            assert shown.returncode == 0, shown.stderr
            row, info = shown.stdout.splitlines()
            shown_cgroup = re.search(
                rf"timer:\(keepalive,\d+min,0\) ino:{inode} sk:[0-9a-f]+ cgroup:(\S+) <->$", row
            )
            assert shown_cgroup, row
            # The host's namespace: ss finds the cgroup as sockd does (in `ip netns exec` it
            # cannot: that remounts /sys).
            theirs = subprocess.run(
                ["ss", "-tneH", "dport", "=", f":{port}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"ino:{inode} " in theirs and f" cgroup:{shown_cgroup.group(1)} " in theirs
            assert info.startswith("\t skmem:(r0,rb"), info
            assert re.search(r" cubic | bbr | reno ", info) and " cwnd:10" in info, info
            plain = sockctl(shared_daemon, *query)
            (plain_row,) = plain.stdout.splitlines()
            assert f"127.0.0.1:{port}" in plain_row
            assert not re.search(r"timer:|ino:|sk:|skmem|cwnd|<->", plain_row), plain_row
            typed = sockctl(shared_daemon, "--json", *query, "--extended", "--options", "--info",
                            "--memory").json()  # fmt: skip
            (sock,) = typed["sockets"]
            assert sock["inode"] == inode and sock["shutdown"] == 0 and sock["v6only"] is None
            assert sock["timer"]["name"] == "keepalive" and sock["timer"]["retrans"] == 0
            assert sock["tcp_info"]["snd_cwnd"] == 10 and sock["tcp_info"]["state"] == 1
            assert sock["memory"]["rcvbuf"] > 0 and f"sk:{sock['cookie']:x}" in row
            assert sock["cgroup"] == shown_cgroup.group(1)
            only = sockctl(shared_daemon, *query, "--cgroup").stdout
            assert only.rstrip().endswith(f"cgroup:{sock['cgroup']}") and "ino:" not in only
            bare = sockctl(shared_daemon, "--json", *query).json()
            assert bare["sockets"][0]["tcp_info"] is None and bare["sockets"][0]["cookie"] is None
            assert bare["sockets"][0]["cgroup"] is None


_NETIDS = {"stream": "u_str", "dgram": "u_dgr", "seqpacket": "u_seq"}


@pytest.mark.parametrize(
    "flags",
    [
        ["-A", "unix_dgram"],
        ["-A", "unix_stream,tcp"],
        ["-A", "unix_seqpacket", "-A", "udp"],
        ["-f", "inet6"],
        ["-f", "unix", "-f", "inet"],
        ["-A", "inet"],
        ["-A", "all"],
    ],
)
def test_cli_tables_as_ss_chooses_them(shared_daemon: Daemon, zoo: Zoo, flags: list[str]) -> None:
    """-f FAMILY and -A QUERY choose the very sockets ss's do (by inode, in the zoo)."""
    payload = sockctl(shared_daemon, "--json", "sock", "list", "-N", zoo.name, *flags).json()
    ours = {
        (_NETIDS[s["type"]] if s["kind"] == "unix" else s["kind"], s["inode"])
        for s in payload["sockets"]
        if s["inode"] and s["kind"] != "raw"  # ss reads RAW from /proc/net/raw: no inode shown
    }
    theirs = set()
    out = subprocess.run(
        ["ip", "netns", "exec", zoo.name, "ss", "-a", "-e", *flags],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, *lines = out.splitlines()
    only = None if header.startswith("Netid") else flags[-1].split(",")[-1]  # ss shows one table
    for line in lines:
        fields = line.split()
        netid = only or fields.pop(0)
        netid = {"unix_dgram": "u_dgr", "unix_stream": "u_str", "inet6": "tcp"}.get(netid, netid)
        found = re.search(r"\bino:(\d+)", line)
        inode = int(fields[4]) if netid.startswith("u_") else int(found.group(1)) if found else 0
        if inode and netid != "nl":  # ss's -A all has netlink sockets too; sockd lists none
            theirs.add((netid, inode))
    assert ours == theirs
    assert ours  # every case above matches some of the zoo's sockets


def test_cli_bad_tables_and_oneline(shared_daemon: Daemon, zoo: Zoo) -> None:
    for flags, hint in ((["-f", "link"], "-f"), (["-A", "packet,tcp"], "-A"), (["-A", "x"], "-A")):
        bad = sockctl(shared_daemon, "sock", "list", *flags)
        assert bad.returncode == 2, bad.stdout
        assert f"Invalid value for {hint}" in bad.stderr and repr(flags[1].split(",")[0]) in (
            bad.stderr
        ), bad.stderr
    two = sockctl(shared_daemon, "sock", "list", "-N", zoo.name, "-t", "-eim", "-H")
    one = sockctl(shared_daemon, "sock", "list", "-N", zoo.name, "-t", "-eim", "-H", "-O")
    assert two.returncode == one.returncode == 0, (two.stderr, one.stderr)
    rows = one.stdout.splitlines()
    assert not any(row.startswith("\t") for row in rows)
    full = [row for row in rows if "skmem:(" in row]  # TIME-WAIT entries have no details
    assert len(full) >= 20 and all(" cwnd:" in row for row in full)  # all on the socket's line
    first: list[str] = []
    second: list[str] = []  # without -O: tcp_info and skmem on a second line
    for line in two.stdout.splitlines():
        (second if line.startswith("\t ") else first).append(line)
    assert not any("skmem:(" in row for row in first)
    assert len(second) >= 20 and all("skmem:(" in line and " cwnd:" in line for line in second)
    # -A's tables add to -x's (ss's first -A clears the tables given before it: its order counts)
    every = sockctl(
        shared_daemon, "--json", "sock", "list", "-N", zoo.name, "-x", "-A", "unix_dgram"
    )
    assert {s["type"] for s in every.json()["sockets"]} == {"stream", "dgram", "seqpacket"}
    unix = sockctl(shared_daemon, "sock", "list", "-N", zoo.name, "-x", "-m", "-O", "-H")
    assert all(row.startswith("u_") and "skmem:(" in row for row in unix.stdout.splitlines())


def _cgroup2_root() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    pytest.fail("no cgroup2 mount on this machine: --cgroup cannot be tested")


def test_cgroup_of_a_socket_made_in_a_cgroup(shared_daemon: Daemon) -> None:
    """A socket made by a process in a cgroup of its own carries that cgroup's path, as ss shows
    it; once the cgroup is gone, the id is told unreachable, as ss does."""
    group = _cgroup2_root() / f"sockd-test-{os.getpid()}"
    group.mkdir()
    child = None
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _IN_CGROUP, str(group / "cgroup.procs")],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        port = child.stdout.readline().strip()
        (sock,) = shared_daemon.client().sock_list(
            kinds=["tcp"], local_port=int(port), cgroup=True, processes=False
        )[0]
        assert sock.cgroup == f"/{group.name}"
        theirs = subprocess.run(
            ["ss", "-tlneH", "sport", "=", f":{port}"], capture_output=True, text=True, check=True
        ).stdout
        assert f" cgroup:/{group.name} " in theirs
        table = sockctl(shared_daemon, "sock", "list", "-t", "--sport", port, "--cgroup", "-H")
        assert table.stdout.rstrip().endswith(f" cgroup:/{group.name}")
        assert child.stdin is not None
        child.stdin.write("out\n")  # back to the root cgroup; the socket stays
        child.stdin.flush()
        assert child.stdout.readline().strip() == "moved"
        group.rmdir()
        (sock,) = shared_daemon.client().sock_list(
            kinds=["tcp"], local_port=int(port), cgroup=True, processes=False
        )[0]
        assert sock.cgroup is not None and sock.cgroup.startswith("unreachable:")
    finally:
        if child is not None:
            child.kill()
            child.communicate()
        if group.exists():
            group.rmdir()


_IN_CGROUP = r"""
import os, socket, sys
procs = sys.argv[1]
with open(procs, "w") as f:
    f.write(str(os.getpid()))
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
sys.stdin.readline()
with open(os.path.join(os.path.dirname(os.path.dirname(procs)), "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
print("moved", flush=True)
sys.stdin.readline()
"""


def test_cli_resolve_names_like_ss_r(shared_daemon: Daemon) -> None:
    """-r: host names from /etc/hosts and service names, as ss -r prints them (the listing is
    narrowed to 127.0.0.1, which /etc/hosts names: no DNS query leaves this machine)."""
    hosts = Path("/etc/hosts").read_text()
    name = next(line.split()[1] for line in hosts.splitlines() if line.split()[:1] == ["127.0.0.1"])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), listener.accept()[0]:
            query = ["sock", "list", "-t", "--src", "127.0.0.1", "--dport", str(port), "-H"]
            (numeric,) = sockctl(shared_daemon, *query).stdout.splitlines()
            (named,) = sockctl(shared_daemon, *query, "-r").stdout.splitlines()
    assert f"127.0.0.1:{port}" in numeric and name not in numeric
    try:
        service = socket.getservbyport(port, "tcp")
    except OSError:
        service = str(port)  # no service has this port: it stays a number
    assert f"{name}:{service}" in named.split()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.connect(("127.0.0.1", 53))  # nothing is sent: connect only sets the peer
        query = ["sock", "list", "-u", "--src", "127.0.0.1", "--dport", "53", "-H", "-r"]
        rows = sockctl(shared_daemon, *query).stdout.splitlines()
    assert any(f"{name}:domain" in row.split() for row in rows), rows


def test_cli_port_and_user_names(shared_daemon: Daemon) -> None:
    """--sport/--dport take /etc/services names and --uid a user name, resolved in the client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        base = ["sock", "list", "-u", "-H", "--src", "127.0.0.1", "--sport", str(port)]
        mine = sockctl(shared_daemon, *base, "--uid", pwd.getpwuid(os.getuid()).pw_name)
        assert mine.returncode == 0, mine.stderr
        assert len(mine.stdout.splitlines()) == 1
        other = sockctl(shared_daemon, *base, "--uid", "nobody")  # not the owner
        assert other.returncode == 0, other.stderr
        assert other.stdout == ""
    by_name = sockctl(shared_daemon, "sock", "list", "-u", "-H", "--dport", "domain")
    assert by_name.returncode == 0, by_name.stderr
    bad_user = sockctl(shared_daemon, "sock", "list", "--uid", "no-such-user-here")
    assert bad_user.returncode == 2
    assert "'no-such-user-here' is neither a uid nor a user name" in bad_user.stderr
    bad_port = sockctl(shared_daemon, "sock", "list", "--dport", "no-such-service")
    assert bad_port.returncode == 2
    assert "'no-such-service' is neither a port number nor a service name" in bad_port.stderr


# Streaming ---------------------------------------------------------------------------------------------


def test_large_listing_streams_in_bounded_messages(shared_daemon: Daemon) -> None:
    name = ns_name("many")
    count = 3000
    sockets: list[socket.socket] = []
    _make_netns(name)
    try:

        def bind_all() -> list[socket.socket]:
            made = []
            for _ in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                made.append(s)
            return made

        sockets = _in_netns(name, bind_all)
        raw = connect_raw(shared_daemon.socket)
        try:
            raw.send(json.dumps({"proto": 2, "op": "sock.list", "netns": name}).encode())
            messages = []
            size = 0
            while True:
                data = raw.recv(MAX_MESSAGE + 1)
                assert 0 < len(data) <= MAX_MESSAGE
                size += len(data)
                message = json.loads(data)
                messages.append(message)
                if not message["more"]:
                    break
        finally:
            raw.close()
        assert size > 3 * MAX_MESSAGE  # the listing could not travel in fewer messages
        assert len(messages) >= 4
        batches = [batch for message in messages for batch in message["items"]]
        fast = [row for batch in batches for row in sock_batch_rows(sock_batch_from_wire(batch))]
        # The fast decoder agrees with the generic, field-by-field one.
        generic = [from_wire(SockBatch, batch) for batch in batches]
        assert sum(len(b.inode) for b in generic) == len(fast) == count
        assert [s.inode for s in fast] == [i for b in generic for i in b.inode]
        ports = {s.getsockname()[1] for s in sockets}
        assert {s.local_port for s in fast} == ports
        assert messages[-1]["result"]["count"] == count
        assert all(s.processes == [] or s.processes for s in fast)
        pids = {p.pid for s in fast for p in s.processes or []}
        assert pids == {os.getpid()}
    finally:
        for s in sockets:
            s.close()
        _delete_netns(name)


def test_state_names_agree_everywhere() -> None:
    """The Literal the daemon validates, the ss names and groups, and the CLI's choices."""
    import typing

    from sockctl import cli
    from sockctl.protocol import SOCK_STATE_GROUPS, SOCK_STATES, SockStateFilter

    names = [*SOCK_STATES, *SOCK_STATE_GROUPS]
    assert list(typing.get_args(SockStateFilter)) == names
    assert names == cli._STATE_CHOICES


def test_batch_decoder_rejects_contract_breaks() -> None:
    good = {
        "kind": "tcp",
        "family": "inet",
        "type": ["stream"],
        "state": ["listening"],
        "recv_q": [0],
        "send_q": [128],
        "local": ["127.0.0.1"],
        "local_port": [80],
        "remote": [ANY],
        "remote_port": [0],
        "inode": [1234],
        "uid": [0],
        "from_a_newer_daemon": [1],
    }
    (row,) = sock_batch_rows(sock_batch_from_wire(good))
    assert row == SockInfo(
        "tcp", "inet", "stream", "listening", 0, 128, "127.0.0.1", 80, ANY, 0, 1234, 0
    )
    table = {"holder_pid": [1, 2], "holder_name": ["x", "y"]}
    (row,) = sock_batch_rows(
        sock_batch_from_wire({**good, "holders": [[1, 3, 2, 4]], "holders_omitted": [5], **table})
    )
    assert row.processes == [SockProcess(pid=1, name="x", fd=3), SockProcess(pid=2, name="y", fd=4)]
    assert row.processes_omitted == 5
    (row,) = sock_batch_rows(sock_batch_from_wire({**good, "holders": [[]], **table}))
    assert row.processes == [] and row.peer_processes is None
    for broken in [
        {**good, "recv_q": [True]},
        {**good, "inode": ["1234"]},
        {**good, "uid": [0, 1]},
        {**good, "kind": "sctp"},
        {**good, "type": ["bogus"]},
        {**good, "holders": [[{"pid": 1, "name": "x", "fd": 3}]], **table},
        {**good, "holders": [[1, "3"]], **table},
        {**good, "holders": [[1, True]], **table},
        {**good, "holders": [[1, 3, 1]], **table},
        {**good, "holders": [[7, 3]], **table},
        {**good, "holders": [[1, 3]]},
        {**good, "holders": [[1, 3]], "holder_pid": [1], "holder_name": []},
        {**good, "holders": [[1, 3]], "holder_pid": [1]},
        {**good, "holders": [[1, 3]], "holder_pid": ["1"], "holder_name": ["x"]},
        {**good, "holders": [[1, 3] * (MAX_SOCK_PROCESSES + 1)], **table},
        {**good, "holders": [[1, 3], []], **table},
        {**good, "holders_omitted": [1, 2], "holders": [[1, 3]], **table},
        {k: v for k, v in good.items() if k != "state"},
        [good],
        *({**good, name: bad} for name, bad in _BROKEN_DETAILS),
    ]:
        with pytest.raises(WireTypeError):
            sock_batch_from_wire(broken)
    # tcp_info's lengths are checked with the batch, its base64 as it is decoded (which the client
    # does for every batch): either way the client's decoding refuses it.
    for bad in ["not base64!", "QUJ", "QUJD=", "QQ", "Q===", "!!!!"]:
        with pytest.raises(WireTypeError, match="tcp_info"):
            sock_batch_rows(sock_batch_from_wire({**good, "tcp_info": [bad]}))


_BROKEN_DETAILS: list[tuple[str, Any]] = [
    ("cookie", ["1"]),
    ("cookie", [1, 2]),
    ("v6only", [1]),
    ("timer", [[2, 1000]]),
    ("timer", [[9, 1000, 0]]),
    ("timer", [[2, "1000", 0]]),
    ("timer", [{"kind": 2}]),
    ("tcp_info", [[1]]),
    ("tcp_info", [{"rtt": 1}]),
    ("tcp_info", [base64.b64encode(bytes(MAX_TCP_INFO + 3)).decode()]),
    ("congestion", [1]),
    ("skmem", [["r0"]]),
    ("skmem", [0]),
    ("shutdown", [4]),
    ("shutdown", [-1]),
    ("shutdown", [True]),
    ("shutdown", ["1"]),
]
"""Detail columns (sock list -e -o -i -m) that break the contract, for the good batch above."""


def _kernel_tcp_info(rtt: int, snd_cwnd: int, size: int | None = None) -> bytes:
    """A struct tcp_info as the kernel lays it out (include/uapi/linux/tcp.h), written here by
    hand with struct, field offsets from the header: wscale 0x97, flags 0b101, snd_mss 5."""
    head = struct.pack("=8B", 0, 0, 0, 0, 0, 0, 0x97, 0b101)
    u32 = [0] * 21  # rto .. reordering
    u32[2] = 5  # snd_mss
    u32[15], u32[18] = rtt, snd_cwnd  # tcpi_rtt, tcpi_snd_cwnd
    raw = head + struct.pack("=21I", *u32) + bytes(256 - 8 - 84)
    assert len(raw) == 256  # sizeof(struct tcp_info) on Linux 6.10
    return raw if size is None else raw[:size]


def test_tcp_info_of_older_and_newer_kernels() -> None:
    """An older kernel's shorter struct leaves its missing fields None; a newer kernel's longer
    one is read up to what this client knows."""
    older = tcp_info(_kernel_tcp_info(21, 10, size=128))  # Linux 4.1's: ends at bytes_acked
    assert (older.rtt, older.snd_cwnd, older.bytes_acked) == (21, 10, 0)
    assert older.bytes_received is None and older.received_ce is None
    newer = tcp_info(_kernel_tcp_info(21, 10) + bytes(40), "bbr")
    assert (newer.rtt, newer.received_ce, newer.congestion) == (21, 0, "bbr")
    tiny = tcp_info(b"\x01\x00\x00\x00\x00\x00")
    assert tiny.state == 1 and tiny.snd_wscale is None and tiny.rto is None


def test_batch_decoder_reads_details() -> None:
    """Each detail column lands in its SockInfo field; fields a newer daemon adds are dropped,
    counters an older kernel leaves out stay None."""
    batch = {
        "kind": "tcp",
        "family": "inet6",
        "type": ["stream", "stream"],
        "state": ["established", "listening"],
        "recv_q": [0, 0],
        "send_q": [0, 128],
        "local": ["::1", "::"],
        "local_port": [40000, 80],
        "remote": ["::1", "::"],
        "remote_port": [80, 0],
        "inode": [1, 2],
        "uid": [0, 0],
        "cookie": [0x1A, 0x2B],
        "v6only": [False, True],
        "timer": [[2, 7_200_000, 0], None],
        "tcp_info": [base64.b64encode(_kernel_tcp_info(rtt=21, snd_cwnd=10)).decode(), None],
        "congestion": ["cubic", None],
        "skmem": [[0, 131072, 0, 16384], None],
        "shutdown": [1, 0],
    }
    first, second = sock_batch_rows(sock_batch_from_wire(batch))
    assert (first.cookie, first.v6only, first.shutdown) == (0x1A, False, 1)
    assert first.timer == SockTimer(name="keepalive", expires_ms=7_200_000, retrans=0)
    assert first.tcp_info is not None
    assert first.tcp_info._replace(rtt=21, snd_cwnd=10, congestion="cubic") == first.tcp_info
    assert (first.tcp_info.snd_wscale, first.tcp_info.rcv_wscale) == (7, 9)
    assert (first.tcp_info.delivery_rate_app_limited, first.tcp_info.fastopen_client_fail) == (1, 2)
    assert first.tcp_info.received_ce == 0  # the whole struct (6.10's), every field
    assert set(first.tcp_info) - {0, 21, 10, 7, 9, 1, 2, 5} == {"cubic"}
    assert first.memory == SockMemory(rmem_alloc=0, rcvbuf=131072, wmem_alloc=0, sndbuf=16384)
    assert (second.cookie, second.v6only, second.shutdown) == (0x2B, True, 0)
    assert (second.timer, second.tcp_info, second.memory) == (None, None, None)
    texts = detail_texts(sock_batch_from_wire(batch))
    assert texts[0].startswith(" timer:(keepalive,120min,0) ino:1 sk:1a v6only:0 -->\n\t skmem:(")
    assert "cubic rtt:0.021/0 mss:5 cwnd:10 send 19047619bps app_limited" in texts[0]
    assert texts[1] == " ino:2 sk:2b v6only:1 <->"


# Summary and CLI ---------------------------------------------------------------------------------------


def test_summary_counts_what_list_lists(shared_daemon: Daemon, zoo: Zoo) -> None:
    client = shared_daemon.client()
    for _ in range(3):  # the zoo's TIME-WAIT leftover may expire between the two looks, once
        sockets, _ = client.sock_list(netns=zoo.name, processes=False)
        counts, result = client.sock_summary(netns=zoo.name)
        listed = Counter((s.kind, s.family, s.state) for s in sockets)
        if result.total == len(sockets):
            break
    assert {(c.kind, c.family, c.state): c.count for c in counts} == dict(listed)
    assert result.total == len(sockets)
    assert {c.netns for c in counts} == {zoo.name}


def test_cli_prometheus_and_table(
    shared_daemon: Daemon, zoo: Zoo, user_python: tuple[str, str]
) -> None:
    sample = re.compile(
        r'^sockd_sockets\{netns="([^"]*)",kind="(\w+)",family="(\w+)",state="([a-z0-9-]+)"\} (\d+)$'
    )
    for _ in range(3):  # the zoo's TIME-WAIT leftover may expire between the two looks, once
        text = sockctl(shared_daemon, "sock", "summary", "-N", zoo.name, "--prometheus")
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith("# HELP sockd_sockets ")
        assert lines[1] == "# TYPE sockd_sockets gauge"
        parsed = [sample.match(line) for line in lines[2:]]
        assert all(parsed), lines
        total = sum(int(m.group(5)) for m in parsed if m)
        _, result = shared_daemon.client().sock_summary(netns=zoo.name)
        if total == result.total:
            break
    assert total == result.total
    assert {m.group(1) for m in parsed if m} == {zoo.name}

    table = sockctl(
        shared_daemon, "sock", "list", "-N", zoo.name, who=OUTSIDER, user_python=user_python
    )
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["Netid", "State", "Recv-Q", "Send-Q"]
    assert any(f"pid={zoo.outsider.info['pid']}," in row for row in rows)
    assert not any(f"pid={zoo.root.info['pid']}," in row for row in rows)
    assert "other users hidden" in table.stderr
    as_json = sockctl(shared_daemon, "--json", "sock", "list", "-N", zoo.name, "--no-processes")
    payload = as_json.json()
    assert payload["result"]["process_scope"] == "none"
    assert all(row["processes"] is None for row in payload["sockets"])
