"""The BPF task_file iterator (sockd.taskfiles) against /proc/*/fd, on the real kernel.

It needs what the daemon needs for it: root, a kernel with BTF (/sys/kernel/btf/vmlinux) and bpf()
allowed. This VM has them; where they are missing the first test fails and says which is missing,
rather than passing without having looked.
"""

import array
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockd import sockdiag, taskfiles
from sockd.taskfiles import TaskFiles

REPO = Path(__file__).resolve().parent.parent

HOLDER = r"""
import array, ctypes, os, signal, socket, sys, threading
kept = [socket.socketpair() for _ in range(int(sys.argv[1]))]
shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
shared.bind(("127.0.0.1", 0))
twice = shared.dup()                   # one socket in two fds of this process
far = socket.socket(fileno=int(sys.argv[2]))
msg, fds, _, _ = far.recvmsg(16, socket.CMSG_SPACE(4))  # a socket passed over SCM_RIGHTS
passed = array.array("i", fds[0][2])[0]
child = os.fork()                      # the child holds all of these too
if child == 0:
    signal.pause()
    os._exit(0)
apart, done = [], threading.Event()


def own_table():                       # a thread with its own fd table, and a socket only in it
    if ctypes.CDLL(None, use_errno=True).unshare(0x400) != 0:  # CLONE_FILES
        raise OSError(ctypes.get_errno(), "unshare(CLONE_FILES)")
    alone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    apart.append(os.fstat(alone.fileno()).st_ino)
    done.set()
    threading.Event().wait()           # lives (and keeps its table) until the process ends


threading.Thread(target=own_table, daemon=True).start()
done.wait()
print(child, shared.fileno(), twice.fileno(), passed, apart[0], flush=True)
try:
    sys.stdin.read()
finally:
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
"""


def _truth(pids: set[int]) -> dict[int, set[tuple[int, int]]]:
    """Socket inode -> {(pid, fd)} of ``pids``, by readlink, as ss and psutil find them."""
    found: dict[int, set[tuple[int, int]]] = {}
    for pid in pids:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except FileNotFoundError:  # the fd listdir itself used
                continue
            if target.startswith("socket:["):
                found.setdefault(int(target[8:-1]), set()).add((pid, int(name)))
    return found


def _of(holders: sockdiag.Holders, pids: set[int]) -> dict[int, set[tuple[int, int]]]:
    found: dict[int, set[tuple[int, int]]] = {}
    for inode in holders.inodes():
        mine = {(pid, fd) for pid, fd in holders.of(inode) if pid in pids}
        if mine:
            found[inode] = mine
    return found


@pytest.fixture
def holder() -> Iterator[dict[str, int]]:
    """A process holding socketpairs, a socket in two fds, a socket received over SCM_RIGHTS
    (which the test process holds too), a thread with its own fd table holding one more, and a
    forked child holding all but that one. They are one process group, killed together."""
    passed = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "300", str(theirs.fileno())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=[theirs.fileno()],
        start_new_session=True,
    )
    try:
        theirs.close()
        ours.sendmsg(
            [b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [passed.fileno()]))]
        )
        assert proc.stdout is not None
        child, shared, twice, received, apart = map(int, proc.stdout.readline().split())
        yield {
            "pid": proc.pid,
            "child": child,
            "shared": os.stat(f"/proc/{proc.pid}/fd/{shared}").st_ino,
            "passed": os.fstat(passed.fileno()).st_ino,
            "twice": twice,
            "received": received,
            "apart": apart,
        }
    finally:
        # Closing stdin lets the holder reap its child; if that fails, kill the group: the
        # child holds the stdout pipe, so killing only the holder would leave communicate() waiting.
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        ours.close()
        passed.close()


def test_iterator_finds_what_proc_finds(holder: dict[str, int]) -> None:
    """Every socket fd of the holder, its child and this process, as readlink finds them: a
    socket in two fds of one process, one shared after fork, one passed over SCM_RIGHTS; not
    the socket only a thread with its own fd table holds (/proc/PID/fd and ss -p do not show
    it either). And the names. Scans leave no fd behind; the link is the one fd kept."""
    fds_before = len(os.listdir("/proc/self/fd"))
    errors: list[str] = []
    files = TaskFiles(on_error=errors.append)
    try:
        found = files.scan()
        assert found is not None, f"this machine should load the iterator: {files.unavailable}"
        via_bpf = sockdiag.Holders()
        sockdiag._merge(via_bpf, *found)
        sockdiag._name_holders(via_bpf, "/proc", found[1])
        assert Counter(found[1]).most_common(1)[0][1] == 1  # no (pid, fd) twice
        pids = {holder["pid"], holder["child"], os.getpid()}
        truth = _truth(pids)
        assert len(truth) >= 600
        assert _of(via_bpf, pids) == truth
        assert holder["apart"] not in truth
        assert holder["apart"] not in via_bpf.inodes()
        assert _of(sockdiag.socket_holders(files=files), pids) == truth  # the daemon's call
        assert _of(sockdiag.socket_holders(helpers=0), pids) == truth  # the /proc way agrees
        pid, child = holder["pid"], holder["child"]
        shared = Counter(p for p, _ in via_bpf.of(holder["shared"]))
        assert shared == {pid: 2, child: 2}  # dup'ed, then forked
        assert {p for p, _ in via_bpf.of(holder["passed"])} == {os.getpid(), pid, child}
        assert (pid, holder["received"]) in via_bpf.of(holder["passed"])
        for p in pids:
            assert via_bpf.names[p] == Path(f"/proc/{p}/comm").read_text().strip()
        for _ in range(3):
            assert files.scan() is not None
        assert len(os.listdir("/proc/self/fd")) == fds_before + 1  # the link
    finally:
        files.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert files.scan() is None  # closed: no scan reopens it
    assert errors == []


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "the kernel has no BTF"),
        ("garbage", "not BTF"),
        ("truncated", "lacks"),
        ("cut", "truncated at"),
        ("refused", "BPF program refused"),
    ],
)
def test_without_the_iterator_the_scan_reads_proc(
    case: str, reason: str, tmp_path: Path, holder: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No BTF, BTF that is not BTF or lacks what the program needs, a program the verifier
    refuses: scans return None, the reason is told once, and socket_holders reads /proc instead.
    (The refusal is injected: an offset past the end of struct file, which the verifier checks
    against the kernel's own BTF.)"""
    btf = tmp_path / "vmlinux"
    if case == "garbage":
        btf.write_bytes(b"\x00" * 64)
    elif case == "truncated":  # a real header and types, cut before the types we need
        real = Path("/sys/kernel/btf/vmlinux").read_bytes()
        btf.write_bytes(_cut_btf(real, 2000))
    elif case == "cut":  # a file that ends before its header says: read in pieces, told
        btf.write_bytes(Path("/sys/kernel/btf/vmlinux").read_bytes()[:300_000])
    elif case == "refused":
        btf = Path("/sys/kernel/btf/vmlinux")
        real_layout = taskfiles._btf_layout

        def beyond(path: str) -> dict[str, int]:
            return {**real_layout(path), "file.f_inode": 1 << 14}

        monkeypatch.setattr(taskfiles, "_btf_layout", beyond)
    told: list[str | None] = []
    fds_before = len(os.listdir("/proc/self/fd"))
    files = TaskFiles(str(btf), on_load=told.append)
    assert files.scan() is None
    assert files.scan() is None  # a failure is final: not retried per scan
    assert files.unavailable is not None
    assert reason in files.unavailable
    assert told == [files.unavailable]
    pids = {holder["pid"], holder["child"]}
    assert _of(sockdiag.socket_holders(files=files), pids) == _truth(pids)
    assert len(os.listdir("/proc/self/fd")) == fds_before


def _cut_btf(data: bytes, types: int) -> bytes:
    """``data`` (BTF) keeping its first ``types`` types and all its strings."""
    header = taskfiles._BTF_HEADER
    magic, version, flags, length, type_off, _type_len, str_off, str_len = header.unpack_from(data)
    position = end = length + type_off
    for _ in range(types):
        _, info, _ = taskfiles._BTF_TYPE.unpack_from(data, position)
        kind, count = info >> 24 & 0x1F, info & 0xFFFF
        position += 12 + taskfiles._KIND_EXTRA[kind] + taskfiles._KIND_ITEM[kind] * count
    kept = data[end:position]
    strings = data[length + str_off : length + str_off + str_len]
    fields = (magic, version, flags, length, 0, len(kept), len(kept), str_len)
    return header.pack(*fields) + data[header.size : length] + kept + strings


def test_not_used_in_a_child_pid_namespace() -> None:
    """In another pid namespace the iterator's pids (the kernel's global ones) would not be the
    daemon's: it is not loaded there, and says why."""
    code = (
        "from sockd.taskfiles import TaskFiles; t = TaskFiles(); "
        "print(t.scan() is None, t.unavailable)"
    )
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert out.startswith("True not in the initial pid namespace"), out
