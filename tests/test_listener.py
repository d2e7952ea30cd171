"""Where the daemon listens: its own path (with stale-socket care) or systemd's socket; sd_notify."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, Daemon, connect_raw, raw_call, start_daemon


def _start_failing(daemon_dir: Path, *extra: str) -> tuple[int, str]:
    daemon = start_daemon(daemon_dir, list(extra), wait=False)
    code = daemon.proc.wait(15)
    return code, daemon.log()


def test_stale_socket_of_a_dead_daemon_is_replaced(daemon_dir: Path) -> None:
    path = daemon_dir / "sockd.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    daemon = start_daemon(daemon_dir)
    try:
        with connect_raw(daemon.socket) as sock:
            assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"]
    finally:
        assert daemon.stop() == 0


def test_path_that_is_not_a_socket_is_never_touched(daemon_dir: Path) -> None:
    path = daemon_dir / "sockd.sock"
    path.write_text("precious")
    code, log = _start_failing(daemon_dir)
    assert code == 1
    assert "exists and is not a socket" in log
    assert path.read_text() == "precious"


def test_second_daemon_refuses_when_the_first_answers(daemon: Daemon, daemon_dir: Path) -> None:
    other_state = daemon_dir / "state2"
    code, log = _start_failing(daemon_dir, "--state-dir", str(other_state))
    assert code == 1
    assert "another sockd answers on" in log
    with connect_raw(daemon.socket) as sock:  # the first one is unharmed
        assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"]


def test_second_daemon_refuses_a_state_dir_in_use(daemon: Daemon, daemon_dir: Path) -> None:
    code, log = _start_failing(daemon_dir, "--socket", str(daemon_dir / "other.sock"))
    assert code == 1
    assert "another sockd uses" in log


def test_sigterm_exits_zero_and_removes_the_socket(daemon_dir: Path) -> None:
    daemon = start_daemon(daemon_dir)
    assert daemon.stop(signal.SIGTERM) == 0
    assert not Path(daemon.socket).exists()
    assert "sockd stopped" in daemon.log()


def _activate(
    daemon_dir: Path, sock_path: str, *, seqpacket: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """sockd behind systemd-socket-activate, which plays systemd's socket-passing side."""
    (daemon_dir / "sockd.toml").write_text("")
    kind = ["--seqpacket"] if seqpacket else []
    with (daemon_dir / "activated.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "systemd-socket-activate",
                *kind,
                "-l",
                sock_path,
                "-E",
                "NOTIFY_SOCKET",
                "-E",
                "PYTHONPATH",
                sys.executable,
                "-m",
                "sockd",
                "--state-dir",
                str(daemon_dir / "state"),
                "--config",
                str(daemon_dir / "sockd.toml"),
                "--log-target",
                "stderr",
                "--socket",
                str(daemon_dir / "unused.sock"),
            ],
            env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
            stderr=log,
        )
    deadline = time.monotonic() + 10
    while not os.path.exists(sock_path):
        assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
        time.sleep(0.02)
    return proc


def test_socket_activation_and_notify(daemon_dir: Path) -> None:
    """The notify side is a datagram socket we read ourselves, as systemd would."""
    notify_path = str(daemon_dir / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)
    sock_path = str(daemon_dir / "activated.sock")
    proc = _activate(daemon_dir, sock_path, seqpacket=True, env={"NOTIFY_SOCKET": notify_path})
    try:
        # The first connection starts the daemon (systemd-socket-activate waits for it).
        with connect_raw(sock_path) as sock:
            assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"]
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        assert any("STATUS=Serving on the socket passed by systemd" in m for m in messages)
        assert not os.path.exists(daemon_dir / "unused.sock")  # it did not bind its own
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_socket_passed_by_systemd_of_the_wrong_type_is_refused(daemon_dir: Path) -> None:
    sock_path = str(daemon_dir / "stream.sock")
    proc = _activate(daemon_dir, sock_path, seqpacket=False)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(sock_path)
        probe.close()
        assert proc.wait(timeout=15) == 1
        assert "is not AF_UNIX SOCK_SEQPACKET" in (daemon_dir / "activated.log").read_text()
    finally:
        proc.kill()
        proc.wait()
