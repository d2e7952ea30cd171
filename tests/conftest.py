"""Shared fixtures: a real sockd on a private socket/state dir, clients as real other uids.

Nothing here is mocked: the daemon runs as root in a subprocess, namespaces are real ``/run/netns``
entries (named with a per-run prefix so cleanup can find them), and unprivileged clients run under
``setpriv`` with uids that need no passwd entry.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sockctl import Client, DaemonUnavailable
from sockd import linux

REPO = Path(__file__).resolve().parent.parent
NETNS_DIR = "/run/netns"
PREFIX = f"sdt{os.getpid()}-"
"""Every namespace a test makes starts with this, so the session sweep can remove leftovers."""
SESSION = str(os.getpid())
os.environ["SOCKD_TEST_SESSION"] = SESSION  # inherited by every daemon and helper a test starts
SESSION_LOCK = "/run/sockd-test-session.lock"
"""Each test session holds a shared flock on it; the one that gets it exclusively is alone."""

# Test identities. None of them needs a passwd entry.
MEMBER = (23001, 23001, (23100,))  # uid, gid, supplementary groups: in the create group
OUTSIDER = (23002, 23002, ())  # no groups at all
OTHER_MEMBER = (23003, 23003, (23100,))
MONITOR = (23004, 23004, (23100, 23101))
CREATE_GID = 23100
MONITOR_GID = 23101

DEFAULT_CONFIG = f"""
[policy]
create_groups = [{CREATE_GID}]
monitor_groups = [{MONITOR_GID}]
namespace_quota = 4

[limits]
max_connections = 64
max_connections_per_uid = 16
idle_timeout = 30.0
send_timeout = 2.0

[links]
pool = "10.213.128.0/17"
"""
"""Test daemons' configuration. The pool is not the shipped one (10.213.0.0/16 from its bottom
up), so that the links of a `make run` daemon on the same host are not taken for this suite's
leftovers; [links] is last so that keys added at the end belong to it (:func:`with_links`)."""

TEST_POOL = "10.213.128.0/17"


def with_links(config: str, keys: str) -> str:
    """``config`` (DEFAULT_CONFIG or one made from it) with [links] ``keys`` added; a ``pool`` among
    them replaces the test pool, which must stay inside TEST_POOL for the leftover checks."""
    if any(line.startswith("pool =") for line in keys.splitlines()):
        config = config.replace(f'pool = "{TEST_POOL}"\n', "")
    return f"{config}{keys}\n"


_counter = iter(range(1_000_000))


def ns_name(tag: str = "ns") -> str:
    """A fresh namespace name owned by this test run."""
    return f"{PREFIX}{tag}{next(_counter)}"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (real namespaces, setpriv); run them as root")


TEST_UIDS = (MEMBER[0], OUTSIDER[0], OTHER_MEMBER[0], MONITOR[0], 23999)
"""Every uid a test acts as; a host end named ``sd<uid>-<n>`` for one of them is a test's."""
_STALE_PREFIX = re.compile(r"sdt\d+-")
_HOST_END = re.compile(rf"sd({'|'.join(map(str, TEST_UIDS))})-\d+")
_OUTCOME = pytest.StashKey[dict[str, pytest.TestReport]]()


def _remove_namespace(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    with contextlib.suppress(OSError):
        linux.umount2(path, linux.MNT_DETACH)
    with contextlib.suppress(OSError):
        os.unlink(path)


def _host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _stale_processes() -> list[int]:
    """Processes an earlier test session started (daemons, holders, sleepers) that outlived it."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                tags = [e for e in environ if e.startswith(b"SOCKD_TEST_SESSION=")]
                if tags and tags[0] != f"SOCKD_TEST_SESSION={SESSION}".encode():
                    found.append(int(entry))
    return found


def _sweep_stale_state() -> None:
    """Remove what an earlier, killed test session left: it would otherwise fail this one.

    Called only when no other test session is alive (see ``SESSION_LOCK``), and only for things
    with the suite's names: its processes, namespaces ``sdt<pid>-…``, host ends of the test uids,
    and UTS mounts of test daemons' state directories under /tmp.
    """
    for pid in _stale_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            if _STALE_PREFIX.match(name):
                _remove_namespace(name)
    for ifname in _host_links():
        if _HOST_END.fullmatch(ifname):
            subprocess.run(["ip", "link", "del", ifname], check=False, capture_output=True)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        if target.startswith("/tmp/sockd-") and "/state/uts/" in target:
            with contextlib.suppress(OSError):
                linux.umount2(target, linux.MNT_DETACH)


@pytest.fixture(scope="session", autouse=True)
def _sweep_namespaces() -> Iterator[None]:
    """Start from a clean host, and remove any namespace this run left behind, even after failures.

    The start sweep runs only if no other test session is alive: it cannot tell another live
    session's host ends and mounts from a dead one's. (Two sessions at once still disturb each
    other: they share the test uids and host-end names.)
    """
    if os.geteuid() != 0:  # unit tests may run; the others fail in require_root
        yield
        return
    global _session_lock
    lock = os.open(SESSION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(lock, fcntl.LOCK_SH)
        else:
            _sweep_stale_state()
            fcntl.flock(lock, fcntl.LOCK_SH)
        _session_lock = lock
        yield
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(NETNS_DIR):
                if name.startswith(PREFIX):
                    _remove_namespace(name)
    finally:
        _session_lock = None
        os.close(lock)


_session_lock: int | None = None
"""This session's shared flock on SESSION_LOCK, while it runs as root."""


def _alone() -> bool:
    """Whether no other test session is alive now: our shared lock converts to an exclusive one.

    (flock's conversion may drop the shared lock before it fails; it is then taken again.)
    """
    if _session_lock is None:
        return False
    try:
        fcntl.flock(_session_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(_session_lock, fcntl.LOCK_SH)
        return False
    fcntl.flock(_session_lock, fcntl.LOCK_SH)
    return True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, for fixtures that need to know how the test went."""
    report: pytest.TestReport = yield
    item.stash.setdefault(_OUTCOME, {})[report.when] = report
    return report


@pytest.fixture(autouse=True)
def _cleans_up_after_itself(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test made and left (namespaces, test uids' host ends) is removed after it.

    Runs after the test's own daemon has stopped. A test that passed but left something behind
    fails here: leaking is a bug in the test or the daemon. A test that failed is only cleaned up.
    Host ends are named after the test uids, not the session: they are looked at only while no
    other test session (e.g. a `make soak` beside it) may be making its own.
    """
    namespaces = set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()
    alone = _alone()
    links = _host_links()
    yield
    if not (alone and _alone()):
        links = _host_links()  # another session's host ends are not this test's to judge
    left_namespaces = sorted(
        n
        for n in (os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else [])
        if n.startswith(PREFIX) and n not in namespaces
    )
    left_links = sorted(n for n in _host_links() - links if _HOST_END.fullmatch(n))
    for name in left_namespaces:
        _remove_namespace(name)
    for ifname in left_links:
        subprocess.run(["ip", "link", "del", ifname], check=False, capture_output=True)
    call = request.node.stash.get(_OUTCOME, {}).get("call")
    if call is not None and call.passed and (left_namespaces or left_links):
        pytest.fail(f"the test left namespaces {left_namespaces} and host links {left_links}")


@pytest.fixture(scope="session")
def user_python() -> Iterator[tuple[str, str]]:
    """(interpreter, PYTHONPATH) that unprivileged uids can run sockctl with.

    The pyenv interpreters and a checkout under /root are unreadable for other uids, so the client
    packages are copied to a world-readable directory and run with a system-Python venv.
    """
    python = os.environ.get("SOCKD_TEST_USER_PYTHON", "/var/cache/sockd-test/py3.11/bin/python")
    if not os.access(python, os.X_OK):
        pytest.fail(f"{python} missing: run `make test-venv` (or set SOCKD_TEST_USER_PYTHON)")
    tree = tempfile.mkdtemp(prefix="sockd-src-")
    for package in ("sockctl", "sockd"):
        shutil.copytree(
            REPO / package, Path(tree) / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for path in [Path(tree), *Path(tree).rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield python, tree
    shutil.rmtree(tree, ignore_errors=True)


@dataclass
class Daemon:
    """A running sockd subprocess with its own socket, state dir and config."""

    directory: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra_args: Sequence[str] = ()
    clients: list[Client] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return str(self.directory / "sockd.sock")

    @property
    def state_dir(self) -> str:
        return str(self.directory / "state")

    @property
    def config(self) -> Path:
        return self.directory / "sockd.toml"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def audit(self) -> list[dict[str, str]]:
        """The audit records logged so far, as dicts of their SOCKD_* fields."""
        return [_fields(line) for line in self.log().splitlines() if "SOCKD_AUDIT=1" in line]

    def client(self, timeout: float = 10.0) -> Client:
        client = Client(self.socket, timeout=timeout)
        self.clients.append(client)
        return client

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def settled_fd_count(self) -> int:
        """The fd count once the clients made so far are closed and the count stops moving (the
        server closes a connection on its own loop, some time after the client has its reply)."""
        for client in self.clients:
            client.close()
        previous = -1
        while (count := self.fd_count()) != previous:
            previous = count
            time.sleep(0.2)
        return count

    def wait_fd_count(self, at_most: int, timeout: float = 5.0) -> None:
        """Wait until the daemon holds no more than ``at_most`` fds; still more after ``timeout``
        is a leak, reported with what the extra descriptors are."""
        deadline = time.monotonic() + timeout
        while self.fd_count() > at_most:
            if time.monotonic() > deadline:
                fds = sorted(os.readlink(f) for f in Path(f"/proc/{self.proc.pid}/fd").iterdir())
                raise AssertionError(f"{len(fds)} fds, expected at most {at_most}: {fds}")
            time.sleep(0.02)

    def children(self) -> list[tuple[int, str]]:
        """(pid, state) of the daemon's child processes; a zombie has state "Z"."""
        found = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                for pid in (task / "children").read_text().split():
                    with contextlib.suppress(FileNotFoundError):
                        stat = Path(f"/proc/{pid}/stat").read_text()
                        found.append((int(pid), stat.rsplit(")", 1)[1].split()[0]))
        return found

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"sockd exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the daemon log:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self, *extra: str) -> "Daemon":
        self.stop()
        return start_daemon(self.directory, extra or self.extra_args, write_config=False)


def _fields(line: str) -> dict[str, str]:
    fields = {}
    for token in line.split(" "):
        key, sep, value = token.partition("=")
        if sep and key.startswith("SOCKD_"):
            fields[key] = value
    return fields


def start_daemon(
    directory: Path,
    extra_args: Sequence[str] = (),
    *,
    config: str = DEFAULT_CONFIG,
    write_config: bool = True,
    wait: bool = True,
) -> Daemon:
    require_root()
    if write_config:
        (directory / "sockd.toml").write_text(config)
    log_path = directory / f"sockd-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sockd",
                "--socket",
                str(directory / "sockd.sock"),
                "--state-dir",
                str(directory / "state"),
                "--config",
                str(directory / "sockd.toml"),
                "--log-target",
                "stderr",
                "--log-level",
                "debug",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            # This checkout, whatever the venv's editable install points at.
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    daemon = Daemon(directory, proc, log_path, extra_args)
    if wait:
        daemon.wait_for_log("serving on")
    return daemon


@pytest.fixture
def daemon_dir() -> Iterator[Path]:
    # A short path: AF_UNIX socket paths are limited to 108 bytes. World-traversable, so that
    # test uids can reach the socket.
    directory = Path(tempfile.mkdtemp(prefix="sockd-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def daemon(daemon_dir: Path) -> Iterator[Daemon]:
    """A fresh sockd for one test; stopped (and checked to exit 0) afterwards."""
    running = [start_daemon(daemon_dir)]
    yield running[0]
    running[0].stop()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[Daemon]:
    """One sockd for a whole module of tests that do not disturb each other."""
    directory = Path(tempfile.mkdtemp(prefix="sockd-"))
    directory.chmod(0o755)
    daemon = start_daemon(directory)
    yield daemon
    daemon.stop()
    shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def sockctl_command(
    daemon: Daemon,
    *args: str,
    who: tuple[int, int, tuple[int, ...]] | None = None,
    user_python: tuple[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run the sockctl CLI against ``daemon`` as root or ``who``."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SOCKD_SOCKET": daemon.socket,
        "LANG": "C.UTF-8",
    }
    if who is None:
        env["PYTHONPATH"] = str(REPO)
        return [sys.executable, "-m", "sockctl", *args], env
    assert user_python is not None, "pass the user_python fixture to run as another uid"
    python, tree = user_python
    uid, gid, groups = who
    group_arg = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    env["PYTHONPATH"] = tree
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", group_arg, python, "-m", "sockctl", *args]
    return cmd, env


def sockctl(
    daemon: Daemon,
    *args: str,
    who: tuple[int, int, tuple[int, ...]] | None = None,
    user_python: tuple[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 30.0,
) -> Result:
    """Run the sockctl CLI against ``daemon``, as root or as the identity ``who``."""
    cmd, env = sockctl_command(daemon, *args, who=who, user_python=user_python)
    proc = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd="/",
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def as_user(
    who: tuple[int, int, tuple[int, ...]],
    user_python: tuple[str, str],
    code: str,
    socket_path: str,
    timeout: float = 60.0,
) -> Any:
    """Run Python ``code`` as ``who``; it must print one JSON document, which is returned."""
    python, tree = user_python
    uid, gid, groups = who
    group_arg = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", group_arg, python, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
        env={"PYTHONPATH": tree, "SOCKD_SOCKET": socket_path, "PATH": "/usr/bin:/bin"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"as uid {uid} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout)


def wait_gone(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still exists")
        time.sleep(0.02)


def wait_exec(proc: "subprocess.Popen[bytes]", comm: str, timeout: float = 10.0) -> int:
    """Until ``proc`` has exec'd ``comm``; its pid. setpriv, unshare and `ip netns exec` set up,
    then exec in the same process: once it is ``comm`` it has its final uid and namespace."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == comm:
                return proc.pid
        except (FileNotFoundError, ProcessLookupError):  # not there yet, or exiting
            pass
        assert proc.poll() is None, (
            f"{proc.args!r} exited ({proc.returncode}) before exec'ing {comm}"
        )
        assert time.monotonic() < deadline, f"{proc.args!r} did not get to exec {comm}"
        time.sleep(0.01)


def connect_raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def raw_call(sock: socket.socket, message: bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(message, dict):
        message = json.dumps(message).encode()
    sock.send(message)
    reply: dict[str, Any] = json.loads(sock.recv(70000))
    return reply


def ip_netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


__all__ = ["DaemonUnavailable"]
