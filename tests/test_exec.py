"""``sockctl ns exec``: a command inside a namespace, as the caller, end to end with real uids.

Commands run as test uids must be world-executable system binaries (/usr/bin/id, /usr/bin/python3).
"""

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sockctl import PIPE, InvalidRequest
from tests.conftest import (
    MEMBER,
    MONITOR,
    MONITOR_GID,
    OTHER_MEMBER,
    OUTSIDER,
    Daemon,
    Result,
    as_user,
    ns_name,
    sockctl,
    sockctl_command,
)

ETC_NETNS = Path("/etc/netns")


@pytest.fixture(scope="module")
def owned(shared_daemon: Daemon, user_python: tuple[str, str]) -> Iterator[str]:
    """A namespace created (and so owned) by MEMBER, for the whole module."""
    name = ns_name("exec")
    created = sockctl(shared_daemon, "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0, created.stderr
    yield name
    sockctl(shared_daemon, "ns", "delete", "--force", "-y", name)


def run(
    daemon: Daemon,
    user_python: tuple[str, str],
    name: str,
    *command: str,
    who: tuple[int, int, tuple[int, ...]] = MEMBER,
    stdin: str | None = None,
    options: tuple[str, ...] = (),
) -> Result:
    return sockctl(
        daemon,
        "ns",
        "exec",
        *options,
        name,
        "--",
        *command,
        who=who,
        user_python=user_python,
        stdin=stdin,
    )


def pids_in(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=True)
    return [int(pid) for pid in out.stdout.split()]


def commands_in(name: str) -> list[str]:
    names = []
    for pid in pids_in(name):
        with contextlib.suppress(FileNotFoundError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> float:
    """Poll ``predicate`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# Identity and privileges ------------------------------------------------------------------------


def test_command_runs_as_the_caller(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    result = run(shared_daemon, user_python, owned, "/usr/bin/id")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"uid={MEMBER[0]} gid={MEMBER[1]} ")
    assert "groups=23001,23100" in result.stdout
    only_uid = run(shared_daemon, user_python, owned, "id", "-u")
    assert only_uid.stdout == f"{MEMBER[0]}\n"


def test_command_has_no_capabilities(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    result = run(shared_daemon, user_python, owned, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    status = status_fields(result.stdout)
    for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"] == "1"
    # The bounding set is a normal user's (the daemon's, not emptied: see the next test).
    daemon_status = status_fields(Path(f"/proc/{shared_daemon.proc.pid}/status").read_text())
    assert status["CapBnd"] == daemon_status["CapBnd"]
    assert status["Uid"].split() == [str(MEMBER[0])] * 4  # real, effective, saved, filesystem
    assert status["Gid"].split() == [str(MEMBER[1])] * 4


def test_file_capability_programs_run_without_their_capabilities(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sockd-fcaps-"))
    try:
        directory.chmod(0o755)
        program = directory / "capcat"
        shutil.copy("/usr/bin/cat", program)
        program.chmod(0o755)
        subprocess.run(["setcap", "cap_net_raw+ep", str(program)], check=True)
        result = run(shared_daemon, user_python, owned, str(program), "/proc/self/status")
        assert result.returncode == 0, result.stderr  # an emptied bounding set would give EPERM
        assert int(status_fields(result.stdout)["CapEff"], 16) == 0  # no_new_privs: no gain
    finally:
        shutil.rmtree(directory)


def test_command_is_inside_the_namespace(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    listed = {
        i["name"]: i for i in json.loads(sockctl(shared_daemon, "--json", "ns", "list").stdout)
    }
    result = run(shared_daemon, user_python, owned, "readlink", "/proc/self/ns/net")
    assert result.stdout == f"net:[{listed[owned]['id']}]\n"


def test_links_and_sysfs_are_the_namespace_s(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    inside = run(shared_daemon, user_python, owned, "ip", "-br", "link")
    assert inside.returncode == 0, inside.stderr
    expected = subprocess.run(
        ["ip", "netns", "exec", owned, "ip", "-br", "link"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert inside.stdout == expected
    assert [line.split()[0] for line in inside.stdout.splitlines()] == ["lo"]
    sysfs = run(shared_daemon, user_python, owned, "ls", "/sys/class/net")
    assert sysfs.stdout.split() == ["lo"]
    # The /sys swap happened in the command's own mount namespace only.
    assert os.path.ismount("/sys")
    assert sorted(os.listdir("/sys/class/net")) != ["lo"]


@pytest.fixture
def etc_netns(owned: str) -> Iterator[Path]:
    """/etc/netns/<owned>, made for one test and removed after it, even on failure."""
    made_parent = not ETC_NETNS.exists()
    directory = ETC_NETNS / owned
    directory.mkdir(parents=True)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()


def test_etc_netns_files_replace_etc_inside(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str, etc_netns: Path
) -> None:
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    (etc_netns / "resolv.conf").write_text(f"nameserver 192.0.2.53\n# {owned}\n")
    (etc_netns / "resolv.conf").chmod(0o644)
    result = run(shared_daemon, user_python, owned, "cat", "/etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"nameserver 192.0.2.53\n# {owned}\n"
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv
    mounts = Path("/proc/self/mountinfo").read_text()
    assert " /etc/resolv.conf " not in mounts  # the bind stayed in the command's mount namespace


# Streams, statuses, signals ---------------------------------------------------------------------


def test_stdin_and_stdout_pipe_both_ways(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    result = run(shared_daemon, user_python, owned, "tr", "a-z", "A-Z", stdin="hello\nworld\n")
    assert (result.returncode, result.stdout) == (0, "HELLO\nWORLD\n")
    errors = run(shared_daemon, user_python, owned, "sh", "-c", "cat; echo oops >&2", stdin="in\n")
    assert (errors.stdout, errors.stderr) == ("in\n", "oops\n")


def test_exit_codes_and_signal_deaths_propagate(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    assert run(shared_daemon, user_python, owned, "sh", "-c", "exit 42").returncode == 42
    assert run(shared_daemon, user_python, owned, "false").returncode == 1
    killed = run(shared_daemon, user_python, owned, "sh", "-c", "kill -KILL $$")
    assert killed.returncode == 128 + signal.SIGKILL
    terminated = run(shared_daemon, user_python, owned, "sh", "-c", "kill -TERM $$")
    assert terminated.returncode == 128 + signal.SIGTERM


def test_argv_is_never_a_shell_string(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    result = run(shared_daemon, user_python, owned, "echo", "$(id)", ";", "&&", "`id`", "*")
    assert result.stdout == "$(id) ; && `id` *\n"


def start_exec(
    daemon: Daemon, user_python: tuple[str, str], name: str, *command: str
) -> "subprocess.Popen[str]":
    cmd, env = sockctl_command(
        daemon, "ns", "exec", name, "--", *command, who=MEMBER, user_python=user_python
    )
    return subprocess.Popen(
        cmd, env=env, cwd="/", text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_sigint_to_sockctl_stops_the_command(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    proc = start_exec(shared_daemon, user_python, owned, "sleep", "60")
    try:
        wait_for(lambda: pids_in(owned))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 128 + signal.SIGINT
        assert pids_in(owned) == []
    finally:
        proc.kill()
        proc.communicate()


def test_sigterm_is_forwarded_to_the_command(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    script = 'trap "echo caught TERM; exit 5" TERM; sleep 60 & echo ready; wait'
    proc = start_exec(shared_daemon, user_python, owned, "sh", "-c", script)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        # A signal between dash's fork and its exec of sleep is swallowed by dash: wait for sleep.
        wait_for(lambda: "sleep" in commands_in(owned))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert (proc.returncode, out) == (5, "caught TERM\n")
        wait_for(lambda: pids_in(owned) == [])  # the group's sleep got it too
    finally:
        proc.kill()
        proc.communicate()


def test_kill_9_of_sockctl_kills_the_command_within_a_second(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    proc = start_exec(shared_daemon, user_python, owned, "sh", "-c", "sleep 60 & sleep 60")
    try:
        wait_for(lambda: commands_in(owned) == ["sh", "sleep", "sleep"])
        # Timed on pidfds, not by polling `ip netns pids` (a walk of /proc per poll, which on a
        # loaded machine alone can take a good part of the second).
        pidfds = [os.pidfd_open(pid) for pid in pids_in(owned)]
        try:
            start = time.monotonic()
            proc.kill()
            proc.wait()
            for pidfd in pidfds:
                select.select([pidfd], [], [], 5)
            assert time.monotonic() - start < 1.0
        finally:
            for pidfd in pidfds:
                os.close(pidfd)
        wait_for(lambda: pids_in(owned) == [], timeout=5)
    finally:
        proc.kill()
        proc.communicate()


# Policy ------------------------------------------------------------------------------------------


def test_non_owners_are_refused(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    for who in (OTHER_MEMBER, OUTSIDER, MONITOR):
        result = run(shared_daemon, user_python, owned, "id", "-u", who=who)
        assert result.returncode == 4, (who, result)
        assert f"belongs to uid {MEMBER[0]}" in result.stderr
        assert result.stdout == ""
    root = sockctl(shared_daemon, "ns", "exec", owned, "--", "id", "-u")
    assert (root.returncode, root.stdout) == (0, "0\n")


def test_exec_groups_lets_a_group_in(daemon: Daemon, user_python: tuple[str, str]) -> None:
    name = ns_name("grp")
    assert (
        sockctl(daemon, "ns", "create", name, who=MEMBER, user_python=user_python).returncode == 0
    )
    try:
        assert run(daemon, user_python, name, "true", who=MONITOR).returncode == 4
        config = daemon.config.read_text().replace(
            "namespace_quota = 4", f"namespace_quota = 4\nexec_groups = [{MONITOR_GID}]"
        )
        daemon.config.write_text(config)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("configuration reloaded")
        allowed = run(daemon, user_python, name, "id", "-u", who=MONITOR)
        assert (allowed.returncode, allowed.stdout) == (0, f"{MONITOR[0]}\n")
        assert run(daemon, user_python, name, "true", who=OTHER_MEMBER).returncode == 4
    finally:
        sockctl(daemon, "ns", "delete", "--force", "-y", name)


def test_a_cwd_the_caller_cannot_enter_is_refused(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    private = Path(tempfile.mkdtemp(prefix="sockd-private-"))
    try:
        private.chmod(0o700)  # root's: uid 23001 may not enter it
        refused = run(shared_daemon, user_python, owned, "pwd", options=("--cwd", str(private)))
        assert refused.returncode == 4, refused
        assert "may not enter the working directory" in refused.stderr
        assert refused.stdout == ""
        missing = run(shared_daemon, user_python, owned, "pwd", options=("--cwd", f"{private}/x"))
        assert missing.returncode in (4, 5)  # the parent is not searchable: EACCES first
        private.chmod(0o755)
        entered = run(shared_daemon, user_python, owned, "pwd", options=("--cwd", str(private)))
        assert (entered.returncode, entered.stdout) == (0, f"{private}\n")
    finally:
        private.rmdir()


def test_the_environment_is_exactly_the_client_s_and_smuggles_nothing(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    exact = run(
        shared_daemon, user_python, owned, "/usr/bin/env", options=("--clear-env", "-e", "A=1")
    )
    assert exact.stdout == "A=1\n"
    # The loader honours LD_PRELOAD and friends for the command as for any unprivileged process:
    # first, the command *is* unprivileged; then, what the variables do happens to it alone.
    smuggling = (
        "-e",
        "LD_PRELOAD=/nonexistent/libevil.so",
        "-e",
        "LD_LIBRARY_PATH=/nonexistent",
        "-e",
        "PATH=/nonexistent:/usr/bin:/bin",
        "-e",
        "SOCKD_SOCKET=/dev/null",
    )
    result = run(shared_daemon, user_python, owned, "cat", "/proc/self/status", options=smuggling)
    assert result.returncode == 0, result.stderr
    status = status_fields(result.stdout)
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    assert status["Uid"].split() == [str(MEMBER[0])] * 4
    assert status["NoNewPrivs"] == "1"
    assert "libevil.so" in result.stderr  # the loader did try it, unprivileged


def test_unknown_command_and_namespace_are_named_errors(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    missing = run(shared_daemon, user_python, owned, "no-such-command-here")
    assert missing.returncode == 5
    assert "command not found: no-such-command-here" in missing.stderr
    denied = run(shared_daemon, user_python, owned, "/root")
    assert denied.returncode == 4
    unknown = run(shared_daemon, user_python, ns_name("none"), "true")
    assert unknown.returncode == 5
    assert "no namespace named" in unknown.stderr


# UTS namespace (kept by issue 6's `ns create --hostname` under <state_dir>/uts/NAME) -------------


def test_a_uts_namespace_kept_for_the_namespace_is_entered(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    uts_dir = Path(shared_daemon.state_dir) / "uts"
    uts_dir.mkdir(exist_ok=True)
    keeper = uts_dir / owned
    keeper.touch()
    try:
        subprocess.run(["unshare", f"--uts={keeper}", "hostname", "sockd-uts-test"], check=True)
        result = run(shared_daemon, user_python, owned, "hostname")
        assert result.stdout == "sockd-uts-test\n"
        assert os.uname().nodename != "sockd-uts-test"
    finally:
        subprocess.run(["umount", str(keeper)], check=False, capture_output=True)
        keeper.unlink()
    assert run(shared_daemon, user_python, owned, "hostname").stdout == f"{os.uname().nodename}\n"


# The library -------------------------------------------------------------------------------------


def test_library_popen_handle(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    code = f"""
import json, signal, subprocess
import sockctl
from sockctl import Client, PIPE
client = Client()
with client.popen({owned!r}, ["tr", "a-z", "A-Z"], stdin=PIPE, stdout=PIPE) as proc:
    out, err = proc.communicate(b"piped\\n")
piped = (out.decode(), err, proc.returncode)
proc = client.popen({owned!r}, ["sleep", "60"])
running = proc.poll()
try:
    proc.wait(timeout=0.2)
    timed_out = False
except subprocess.TimeoutExpired:
    timed_out = True
proc.send_signal(signal.SIGUSR1)
killed = proc.wait()
exit = proc.exit
status = client.exec({owned!r}, ["sh", "-c", "exit 3"], stdout=sockctl.DEVNULL)
print(json.dumps([piped, running, timed_out, killed, exit.signal, exit.status, status]))
"""
    result = as_user(MEMBER, user_python, code, shared_daemon.socket)
    assert result == [["PIPED\n", None, 0], None, True, -10, 10, 138, 3]


def test_library_refusals_are_sockd_errors(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    code = f"""
import json
from sockctl import Client, PermissionDenied
try:
    Client().exec({owned!r}, ["true"])
except PermissionDenied as exc:
    print(json.dumps([exc.code, exc.field]))
"""
    assert as_user(OTHER_MEMBER, user_python, code, shared_daemon.socket) == [
        "permission_denied",
        "name",
    ]


# Daemon side: stopping, leaks ---------------------------------------------------------------------


def test_stopping_the_daemon_terminates_running_commands(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("stop")
    assert (
        sockctl(daemon, "ns", "create", name, who=MEMBER, user_python=user_python).returncode == 0
    )
    proc = start_exec(daemon, user_python, name, "sleep", "60")
    try:
        wait_for(lambda: pids_in(name))
        assert daemon.stop() == 0
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert pids_in(name) == []
    finally:
        proc.kill()
        proc.communicate()
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_what_json_cannot_carry_is_left_out_or_refused(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    env = {"GOOD": "ok", "BAD": "x\udc80y", "BAD\udc80NAME": "v"}  # os.environ's undecodable bytes
    with client.popen(owned, ["/usr/bin/env"], env=env, stdout=PIPE) as proc:
        out, _ = proc.communicate()
    assert out == b"GOOD=ok\n"
    with pytest.raises(InvalidRequest) as caught:
        client.exec(owned, ["echo", "caf\udce9"])
    assert caught.value.field == "argv"
