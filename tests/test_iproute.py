"""Interoperability with iproute2: both tools see and handle each other's namespaces."""

import os
import signal
import subprocess

import pytest

from sockctl import Busy
from tests.conftest import MEMBER, Daemon, ip_netns_list, ns_name, sockctl, wait_exec


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def test_sockctl_namespace_works_with_ip_netns(shared_daemon: Daemon) -> None:
    name = ns_name("ip")
    with shared_daemon.client() as client:
        info = client.ns_create(name)
        assert name in ip_netns_list()
        assert "LOOPBACK,UP" in ip("netns", "exec", name, "ip", "link", "show", "lo")
        identified = ip("netns", "identify", str(_sleeper_pid(name)))
        assert identified.split() == [name]
        link = subprocess.run(
            ["ip", "netns", "exec", name, "readlink", "/proc/self/ns/net"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert link == f"net:[{info.id}]"
        client.ns_delete(name, force=True)
        assert name not in ip_netns_list()


_sleepers: dict[str, subprocess.Popen[bytes]] = {}


def _sleeper_pid(name: str) -> int:
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "30"])
    _sleepers[name] = proc
    return wait_exec(proc, "sleep")


@pytest.fixture(autouse=True)
def _reap_sleepers() -> object:
    yield
    for proc in _sleepers.values():
        proc.kill()
        proc.wait()
    _sleepers.clear()


def test_loopback_can_stay_down(shared_daemon: Daemon) -> None:
    name = ns_name("nolo")
    with shared_daemon.client() as client:
        client.ns_create(name, loopback_up=False)
        try:
            assert ",UP" not in ip("netns", "exec", name, "ip", "link", "show", "lo")
        finally:
            client.ns_delete(name)


def test_ip_netns_add_shows_up_as_unmanaged_root_namespace(shared_daemon: Daemon) -> None:
    name = ns_name("byip")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with shared_daemon.client() as client:
            (info,) = [i for i in client.ns_list() if i.name == name]
            assert (info.owner_uid, info.managed, info.created) == (0, False, None)
            assert info.id == os.stat(f"/run/netns/{name}").st_ino
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_ip_netns_del_behind_sockds_back_is_reconciled(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("gone")
    created = sockctl(daemon, "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0
    owned = sockctl(daemon, "--json", "whoami", who=MEMBER, user_python=user_python)
    assert owned.json()["namespaces_owned"] == 1
    subprocess.run(["ip", "netns", "del", name], check=True)
    with daemon.client() as client:
        assert name not in {i.name for i in client.ns_list()}
    # The quota is free again at once, and the registry forgot the namespace.
    after = sockctl(daemon, "--json", "whoami", who=MEMBER, user_python=user_python)
    assert after.json()["namespaces_owned"] == 0
    assert "deleted outside sockd" in daemon.log()
    assert os.listdir(f"{daemon.state_dir}/namespaces") == []


def test_start_up_forgets_namespaces_deleted_while_sockd_was_down(daemon: Daemon) -> None:
    name = ns_name("down")
    with daemon.client() as client:
        client.ns_create(name)
    daemon.stop()
    subprocess.run(["ip", "netns", "del", name], check=True)
    restarted = daemon.restart()
    try:
        assert "deleted outside sockd" in restarted.log()
        assert os.listdir(f"{daemon.state_dir}/namespaces") == []
    finally:
        restarted.stop()


def test_processes_inside_block_delete_until_forced(shared_daemon: Daemon) -> None:
    name = ns_name("busy")
    with shared_daemon.client() as client:
        client.ns_create(name)
        pid = _sleeper_pid(name)
        pids, summary = client.ns_pids(name)
        assert pid in pids and summary.hidden == 0
        assert client.ns_identify(pid).names == [name]
        with pytest.raises(Busy) as refused:
            client.ns_delete(name)
        assert pid in refused.value.details["pids"]
        assert name in ip_netns_list()
        reply = client.ns_delete(name, force=True)
        assert reply.still_alive and pid in reply.pids
        assert name not in ip_netns_list()
        # The process keeps its (now nameless) namespace.
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        os.kill(pid, signal.SIGKILL)


def test_identify_default_is_the_caller(shared_daemon: Daemon) -> None:
    name = ns_name("self")
    with shared_daemon.client() as client:
        client.ns_create(name)
        try:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    *_sockctl_root(shared_daemon),
                    "--json",
                    "ns",
                    "identify",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert '"names"' in out and name in out
        finally:
            client.ns_delete(name)


def _sockctl_root(daemon: Daemon) -> list[str]:
    import sys

    from tests.conftest import REPO

    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "sockctl", "--socket", daemon.socket]
