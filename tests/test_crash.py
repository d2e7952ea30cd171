"""kill -9 at every step of create and delete; the next start repairs everything.

The daemon's hidden ``--pause-at STEP`` blocks a request at a named step so the kill lands exactly
there (sockd/netns.py, Faults).
"""

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from sockctl import Client, DaemonUnavailable
from sockd import linux
from sockd.netns import Faults
from tests.conftest import Daemon, ip_netns_list, ns_name, start_daemon

CREATE_STEPS = [s for s in Faults.STEPS if s.startswith("ns.create.")]


def _ip_netns_list_is_clean() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    assert out.stderr == "", out.stderr


def _call_in_background(socket_path: str, fn_name: str, name: str) -> threading.Thread:
    def run() -> None:
        # DaemonUnavailable is expected: the daemon is killed under the call.
        with Client(socket_path, timeout=30) as client, contextlib.suppress(DaemonUnavailable):
            getattr(client, fn_name)(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_kill_during_create_is_repaired_on_start(daemon_dir: Path, step: str) -> None:
    name = ns_name("crash")
    paused = start_daemon(daemon_dir, ["--pause-at", step])
    thread = _call_in_background(paused.socket, "ns_create", name)
    try:
        paused.wait_for_log(f"paused at {step}")
        paused.proc.send_signal(signal.SIGKILL)
        paused.proc.wait()
    finally:
        thread.join(10)
    path = f"/run/netns/{name}"
    record = Path(paused.state_dir, "namespaces", f"{name}.json")
    assert record.exists(), "ownership is recorded before anything is made"
    if step in ("ns.create.placeholder", "ns.create.unshared"):
        assert os.path.exists(path) and not linux.is_namespace_mount(path)

    restarted = start_daemon(daemon_dir, write_config=False)
    try:
        assert f"namespace {name}: its creation was interrupted" in restarted.log()
        assert not os.path.lexists(path)
        assert not record.exists()
        _ip_netns_list_is_clean()
        with restarted.client() as client:
            assert name not in {i.name for i in client.ns_list()}
            client.ns_create(name)  # the name is usable again
            client.ns_delete(name)
    finally:
        assert restarted.stop() == 0


def test_kill_during_delete_is_repaired_on_start(daemon_dir: Path) -> None:
    name = ns_name("crashdel")
    paused = start_daemon(daemon_dir, ["--pause-at", "ns.delete.unmounted"])
    with paused.client() as client:
        client.ns_create(name)
    thread = _call_in_background(paused.socket, "ns_delete", name)
    try:
        paused.wait_for_log("paused at ns.delete.unmounted")
        paused.proc.send_signal(signal.SIGKILL)
        paused.proc.wait()
    finally:
        thread.join(10)
    path = f"/run/netns/{name}"
    assert os.path.exists(path) and not linux.is_namespace_mount(path)  # a broken entry for ip

    restarted = start_daemon(daemon_dir, write_config=False)
    try:
        assert not os.path.lexists(path)
        assert name not in ip_netns_list()
        _ip_netns_list_is_clean()
        assert os.listdir(Path(restarted.state_dir, "namespaces")) == []
    finally:
        assert restarted.stop() == 0


def test_broken_placeholder_left_by_ip_is_removed_on_start(daemon: Daemon) -> None:
    # What `ip netns add` leaves when it dies between creating the file and mounting on it.
    name = ns_name("ipcrash")
    path = f"/run/netns/{name}"
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    restarted = daemon.restart()
    try:
        assert not os.path.lexists(path)
        assert f"removed broken placeholder {path}" in restarted.log()
    finally:
        restarted.stop()
