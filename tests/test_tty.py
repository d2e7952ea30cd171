"""``ns exec`` on a terminal: a real pty, job control inside, resizes, hang-ups, the user's modes kept.

Each test plays the user's terminal with a pty of its own: ``sockctl`` runs as a test uid with that
pty as its controlling terminal (``setsid --ctty``), exactly as under a terminal emulator, and the
test types into the master and reads the screen from it. Nothing is mocked.
"""

import contextlib
import os
import re
import select
import signal
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sockctl import CommandNotFound, InvalidRequest, PermissionDenied
from tests.conftest import MEMBER, Daemon, as_user, ns_name, sockctl, sockctl_command

PROMPT = "TTY-PROMPT> "


@pytest.fixture(scope="module")
def owned(shared_daemon: Daemon, user_python: tuple[str, str]) -> Iterator[str]:
    name = ns_name("tty")
    created = sockctl(shared_daemon, "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0, created.stderr
    yield name
    sockctl(shared_daemon, "ns", "delete", "--force", "-y", name)


class Screen:
    """The user's side of a terminal: a pty, with a shell-like parent running sockctl on it.

    As under a terminal emulator, sockctl is not the session leader: ``sh`` is (``setsid
    --ctty``), and sockctl its foreground child. When sockctl ends, ``sh`` prints its status and
    stays, so the terminal is not hung up and its modes can be compared afterwards.
    """

    def __init__(self, daemon: Daemon, user_python: tuple[str, str], *args: str) -> None:
        self.master, slave = os.openpty()
        termios.tcsetwinsize(self.master, (24, 80))
        self.modes = termios.tcgetattr(self.master)
        cmd, env = sockctl_command(daemon, *args, who=MEMBER, user_python=user_python)
        script = '"$@"; status=$?; echo "sockctl-ended-$status."; exec sleep 1000'
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", "sh", "-c", script, "sh", *cmd],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd="/",
        )
        os.close(slave)
        self.seen = ""

    def client_pid(self) -> int:
        """sockctl's pid: the child of the shell (the setpriv in front of it execs)."""
        children = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        wait_until(lambda: Path(children).read_text().split() != [])
        return int(Path(children).read_text().split()[0])

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Read the screen until ``pattern`` (a regex) shows up after what was matched before."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.seen)
            if found:
                self.seen = self.seen[found.end() :]
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"{pattern!r} did not show up; the screen has {self.seen!r}")
            try:
                self.seen += os.read(self.master, 65536).decode(errors="replace")
            except OSError as exc:  # EIO: everything on the terminal is gone
                raise AssertionError(
                    f"the terminal closed before {pattern!r}: {self.seen!r}"
                ) from exc

    def wait(self, timeout: float = 15.0) -> int:
        """sockctl's exit status, as the shell saw it."""
        return int(self.expect(r"sockctl-ended-(\d+)\.", timeout)[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


@contextlib.contextmanager
def screen(daemon: Daemon, user_python: tuple[str, str], *args: str) -> Iterator[Screen]:
    term = Screen(daemon, user_python, *args)
    try:
        yield term
    finally:
        term.close()


def shell(name: str) -> tuple[str, ...]:
    return (
        "ns", "exec", "-e", f"PS1={PROMPT}", "-e", "TERM=xterm", name, "--",
        "bash", "--norc", "--noprofile", "-i",
    )  # fmt: skip


def pids_in(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=True)
    return [int(pid) for pid in out.stdout.split()]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_a_shell_on_the_terminal_has_job_control(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    with screen(shared_daemon, user_python, *shell(owned)) as term:
        term.expect(PROMPT)
        assert "no job control" not in term.seen
        term.send("tty; ps -o tty= -p $$\n")
        found = term.expect(r"(/dev/pts/\d+)\r\n(pts/\d+)")
        assert found[1].removeprefix("/dev/") == found[2]  # the shell's controlling terminal
        term.send("sleep 100 &\n")
        term.expect(r"\[1\] \d+")
        term.send("jobs\n")
        term.expect(r"\[1\]\+\s+Running\s+sleep 100 &")
        term.send("fg\n")
        term.expect("sleep 100")
        time.sleep(0.5)  # until bash has handed the terminal to the job
        term.send("\x1a")  # Ctrl-Z: reaches the pty inside, which stops the foreground job
        term.expect(r"\[1\]\+\s+Stopped\s+sleep 100")
        term.send("bg\n")
        term.expect(r"\[1\]\+ sleep 100 &")
        term.send("kill %1; wait\n")
        term.expect(PROMPT)
        term.send("sleep 50\n")
        time.sleep(0.3)
        term.send("\x03")  # Ctrl-C: the foreground job only, the shell stays
        term.expect(PROMPT)
        term.send("echo alive-$((40+2))\n")
        term.expect("alive-42")
        term.send("exit 7\n")
        assert term.wait() == 7
    assert pids_in(owned) == []


def test_the_window_size_follows_the_user_s_terminal(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    with screen(shared_daemon, user_python, *shell(owned)) as term:
        term.expect(PROMPT)
        term.send("stty size; tput lines; tput cols\n")
        term.expect(r"24 80\r\n24\r\n80")
        termios.tcsetwinsize(term.master, (41, 132))  # SIGWINCH to sockctl, which passes it on
        time.sleep(0.2)
        term.send("stty size; tput cols\n")
        term.expect(r"41 132\r\n132")
        term.send("trap 'echo winch-$LINES-$COLUMNS' WINCH; shopt -s checkwinsize\n")
        term.expect(PROMPT)
        termios.tcsetwinsize(term.master, (30, 90))
        term.expect("winch-")
        term.send("stty size\n")
        term.expect(r"30 90")
        term.send("exit\n")
        assert term.wait() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_killing_sockctl_ends_the_command_and_restores_the_terminal(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str, sig: signal.Signals
) -> None:
    with screen(shared_daemon, user_python, *shell(owned)) as term:
        before = termios.tcgetattr(term.master)
        term.expect(PROMPT)
        assert termios.tcgetattr(term.master)[3] & termios.ECHO == 0  # raw while it runs
        term.send("sleep 200\n")
        wait_until(lambda: len(pids_in(owned)) == 2)  # bash and its sleep
        time.sleep(0.3)  # the sleep has the terminal now: the hang-up reaches it, not only bash
        os.kill(term.client_pid(), sig)
        # A hang-up ends bash by SIGHUP, whose status sockctl passes on; SIGKILL ends sockctl.
        assert term.wait() == 128 + (signal.SIGKILL if sig == signal.SIGKILL else signal.SIGHUP)
        wait_until(lambda: pids_in(owned) == [])  # the hang-up (or sockd's kill) ended both
        wait_until(lambda: termios.tcgetattr(term.master) == before, timeout=5.0)
        assert termios.tcgetattr(term.master) == term.modes


def test_without_a_terminal_nothing_changes_and_t_forces_one(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    piped = sockctl(
        shared_daemon, "ns", "exec", owned, "--", "tty", who=MEMBER, user_python=user_python
    )
    assert (piped.returncode, piped.stdout) == (1, "not a tty\n")
    forced = sockctl(
        shared_daemon, "ns", "exec", "-t", owned, "--", "tty", who=MEMBER, user_python=user_python
    )
    assert forced.returncode == 0, forced.stderr
    assert re.fullmatch(r"/dev/pts/\d+\n", forced.stdout)  # (text mode folds the \r)
    # Piped input ends with an end-of-file on the terminal inside: cat sees it and ends.
    fed = sockctl(
        shared_daemon,
        *("ns", "exec", "-t", owned, "--", "cat"),
        who=MEMBER,
        user_python=user_python,
        stdin="one\ntwo\n",
    )
    assert fed.returncode == 0, fed.stderr
    assert fed.stdout.count("two") == 2  # the terminal's echo, then cat's copy


def test_library_popen_on_a_terminal(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    code = f"""
import json, sockctl, time
client = sockctl.Client()
with client.popen({owned!r}, ["sh", "-c", "read go; stty size; tty"], tty=True) as proc:
    proc.resize(33, 99)
    proc.pty.write(b"go\\n")
    seen = b""
    while b"/dev/pts/" not in seen or not seen.endswith(b"\\n"):
        seen += proc.pty.read(4096)
    print(json.dumps({{"seen": seen.decode(), "status": proc.wait()}}))
"""
    result = as_user(MEMBER, user_python, code, shared_daemon.socket)
    assert result["status"] == 0
    assert "33 99\r\n/dev/pts/" in result["seen"]


def test_a_tty_request_needs_the_caller_s_own_terminal(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    from sockctl._client import _connect_socket
    from sockctl._exec import NsProcess

    read_end, write_end = os.pipe()
    try:
        proc = NsProcess(_connect_socket(shared_daemon.socket, 10), ["true"], 10)
        with pytest.raises(InvalidRequest) as refused, proc:
            proc.launch(owned, env={}, cwd="/", stdio=(read_end, None, None), tty=True)
        assert refused.value.field == "stdin"
    finally:
        os.close(read_end)
        os.close(write_end)
    # A terminal that belongs to root, handed to a member: not the member's to take over.
    master, slave = os.openpty()
    try:
        code = f"""
import json, sockctl
from sockctl._exec import NsProcess
from sockctl._client import _connect_socket
proc = NsProcess(_connect_socket({shared_daemon.socket!r}, 10), ["true"], 10)
try:
    proc.launch({owned!r}, env={{}}, cwd="/", stdio=(0, 0, 0), tty=True)
    print(json.dumps("started"))
except sockctl.PermissionDenied as exc:
    print(json.dumps([exc.field, exc.message]))
"""
        python, tree = user_python
        out = subprocess.run(
            [
                "setpriv",
                f"--reuid={MEMBER[0]}",
                f"--regid={MEMBER[1]}",
                "--groups=23100",
                python,
                "-c",
                code,
            ],
            stdin=slave,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": tree, "PATH": "/usr/bin:/bin"},
            timeout=30,
            check=True,
        )
        field, message = __import__("json").loads(out.stdout)
        assert field == "stdin"
        assert f"uid 0, not to uid {MEMBER[0]}" in message
    finally:
        os.close(master)
        os.close(slave)


def test_a_missing_command_is_a_file_not_found_error(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    for tty in (False, True):
        with pytest.raises(FileNotFoundError) as missing:
            client.popen(owned, ["no-such-command-here"], tty=tty, env={"PATH": "/usr/bin"})
        assert isinstance(missing.value, CommandNotFound)
        assert missing.value.filename == "no-such-command-here"
        assert missing.value.field == "argv"
    with pytest.raises(PermissionDenied, match="cannot execute /etc/passwd"):
        client.popen(owned, ["/etc/passwd"], tty=True)  # mode 0644: nobody may execute it


def test_run_is_subprocess_run(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    done = client.run(
        owned, ["sh", "-c", "cat; echo err >&2"], input="a\r\nb", capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "a\nb", "err\n")
    assert done.args == ["sh", "-c", "cat; echo err >&2"]
    raw = client.run(owned, ["printf", "\\377"], capture_output=True)
    assert raw.stdout == b"\xff"
    with pytest.raises(subprocess.CalledProcessError) as failed:
        client.run(
            owned, ["sh", "-c", "echo out; exit 3"], capture_output=True, check=True, text=True
        )
    assert (failed.value.returncode, failed.value.stdout) == (3, "out\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        client.run(owned, ["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 10
    wait_until(lambda: pids_in(owned) == [])  # the timed-out command was killed
    with client.popen(owned, ["cat"], stdin=-1, stdout=-1, text=True) as proc:
        assert proc.communicate("text\n") == ("text\n", None)


def test_the_audit_tells_the_whole_command_and_its_end(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    client.run(owned, ["sh", "-c", "exit 5", "arg with space"])
    shared_daemon.wait_for_log("ended (exit status 5)")
    log = shared_daemon.log()
    assert "runs sh -c 'exit 5' 'arg with space'" in log
    line = next(line for line in log.splitlines() if "ended (exit status 5)" in line)
    assert "SOCKD_EXIT_STATUS=5" in line
    assert "SOCKD_DURATION=" in line


def test_no_leaks_over_1000_commands_on_a_terminal(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    with client.popen(owned, ["true"], tty=True) as warm_up:
        warm_up.wait()
    fds, ptys, mine = shared_daemon.fd_count(), len(os.listdir("/dev/pts")), own_fds()
    for _ in range(1000):
        with client.popen(owned, ["true"], tty=True) as proc:
            assert proc.wait() == 0
    shared_daemon.wait_fd_count(fds)  # the last connection closes on the server's loop
    assert [state for _, state in shared_daemon.children()] == []
    assert len(os.listdir("/dev/pts")) == ptys
    assert own_fds() == mine
    assert pids_in(owned) == []


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
