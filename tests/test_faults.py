"""Fault injection: kill -9 at every step, a full /run, pinned and stacked mounts, corrupt records.

The kill -9 tests of creation and deletion are in tests/test_crash.py, those of links in
tests/test_links.py; this module adds attach and checks that every pause point of the daemon
(``sockd --pause-at STEP``, sockd/netns.py ``Faults``) has one. After each fault the next start
repairs what it can and says loudly, with what to do, what it cannot; an owned namespace never
silently changes hands.
"""

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockctl import Client, DaemonUnavailable, InternalError
from sockd import linux
from sockd.netns import Faults
from sockd.registry import LinkRecord, LinkRegistry
from tests import test_crash, test_links, test_nat
from tests.conftest import (
    MEMBER,
    Daemon,
    Result,
    as_user,
    ip_netns_list,
    ns_name,
    sockctl,
    start_daemon,
)

ATTACH_STEPS = [s for s in Faults.STEPS if s.startswith("ns.attach.")]


def test_every_pause_point_has_a_kill9_test() -> None:
    covered = {
        *test_crash.CREATE_STEPS,
        "ns.delete.unmounted",  # test_crash.test_kill_during_delete_is_repaired_on_start
        *test_links.LINK_STEPS,
        *ATTACH_STEPS,
        *test_nat.NAT_STEPS,
    }
    assert covered == set(Faults.STEPS)


def _ip_netns_list_is_clean() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    assert out.stderr == "", out.stderr


@contextlib.contextmanager
def process_in_new_netns() -> Iterator[int]:
    """A sleeping process in a network namespace of its own; its pid."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "600"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("step", ATTACH_STEPS)
def test_kill_during_attach_is_repaired_on_start(daemon_dir: Path, step: str) -> None:
    name = ns_name("crashattach")
    path = f"/run/netns/{name}"
    with process_in_new_netns() as pid:
        paused = start_daemon(daemon_dir, ["--pause-at", step])

        def attach() -> None:
            # DaemonUnavailable: the daemon is killed under the call.
            with (
                Client(paused.socket, timeout=30) as client,
                contextlib.suppress(DaemonUnavailable),
            ):
                client.ns_attach(name, pid)

        thread = threading.Thread(target=attach)
        thread.start()
        try:
            paused.wait_for_log(f"paused at {step}")
            paused.proc.send_signal(signal.SIGKILL)
            paused.proc.wait()
        finally:
            thread.join(10)
        record = Path(paused.state_dir, "namespaces", f"{name}.json")
        assert record.exists(), "ownership is recorded before anything is made"
        if step == "ns.attach.placeholder":
            assert os.path.exists(path) and not linux.is_namespace_mount(path)

        restarted = start_daemon(daemon_dir, write_config=False)
        try:
            assert f"rolled back namespace {name}: its creation was interrupted" in restarted.log()
            assert not os.path.lexists(path)
            assert not record.exists()
            _ip_netns_list_is_clean()
            with restarted.client() as client:
                assert client.ns_attach(name, pid).attached  # the name is usable again
                client.ns_delete(name)
        finally:
            assert restarted.stop() == 0


# A full /run ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs() -> Iterator[Path]:
    """A 256 kB tmpfs with 48 inodes, standing in for /run: the state and netns directories."""
    where = Path(tempfile.mkdtemp(prefix="sockd-run-"))
    linux.mount(
        "tmpfs", str(where), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=256k,nr_inodes=48"
    )
    try:
        yield where
    finally:
        for entry in (where / "netns").glob("*") if (where / "netns").exists() else []:
            with contextlib.suppress(OSError):
                linux.umount2(str(entry), linux.MNT_DETACH)
        with contextlib.suppress(OSError):
            linux.umount2(str(where / "netns"), linux.MNT_DETACH)
        linux.umount2(str(where), linux.MNT_DETACH)
        where.rmdir()


def fill(fs: Path) -> list[Path]:
    """Use every block and inode of ``fs``; the files that did it."""
    made = [fs / "filler"]
    fd = os.open(made[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) == 4096:
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    for i in range(10_000):
        try:
            os.close(os.open(fs / f"inode{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            break
        made.append(fs / f"inode{i}")
    return made


def leftovers(state: Path, name: str) -> list[Path]:
    return list(state.rglob(f"{name}.*"))


def test_full_run_refuses_cleanly_keeps_serving_and_recovers(daemon_dir: Path) -> None:
    with tiny_tmpfs() as run:
        state, netns = run / "sockd", run / "netns"
        args = ["--state-dir", str(state), "--netns-dir", str(netns)]
        daemon = start_daemon(daemon_dir, args)
        kept, refused = ns_name("kept"), ns_name("full")
        try:
            with daemon.client() as client:
                client.ns_create(kept)
                fillers = fill(run)
                with pytest.raises(InternalError) as info:
                    client.ns_create(refused)
                assert "No space left on device" in info.value.message
                assert info.value.details == {"errno": "ENOSPC"}
                # Nothing half-made, nothing half-written; the daemon goes on, and deleting
                # (which writes nothing) works on a full filesystem.
                assert not (netns / refused).exists()
                assert leftovers(state, refused) == []
                assert client.ping()
                assert [i.name for i in client.ns_list()] == [kept]
                client.ns_delete(kept)
                assert not (netns / kept).exists()
                for path in fillers:
                    path.unlink()
                client.ns_create(refused)  # room again: it works
                client.ns_delete(refused)
        finally:
            assert daemon.stop() == 0
        assert "Traceback" not in daemon.log()

        # A start on a full /run that needs to write refuses with what to do, not a traceback.
        fillers = fill(run)
        fresh = start_daemon(
            daemon_dir,
            ["--state-dir", str(run / "fresh"), "--netns-dir", str(netns)],
            write_config=False,
            wait=False,
        )
        assert fresh.proc.wait(15) == 1
        log = fresh.log()
        assert "cannot start:" in log and "No space left on device" in log, log
        assert f"df -h -i {run / 'fresh'}" in log, log
        assert "Traceback" not in log
        for path in fillers:
            path.unlink()


# Mounts that keep a namespace busy -----------------------------------------------------------------------


def test_delete_peels_off_mounts_stacked_on_the_namespace_file(daemon: Daemon) -> None:
    name = ns_name("stacked")
    path = f"/run/netns/{name}"
    with daemon.client() as client:
        client.ns_create(name)
        linux.mount(path, path, None, linux.MS_BIND)  # `mount --bind X X`: two mounts on one file
        reply = client.ns_delete(name)  # used to fail: unlink of a mount point is EBUSY
    assert not os.path.lexists(path)
    assert not reply.still_alive
    assert list(Path(daemon.state_dir, "namespaces").iterdir()) == []
    _ip_netns_list_is_clean()


PIN = """
mount --bind "$1" "$2" && echo pinned && exec sleep 600
"""


def test_delete_of_a_namespace_pinned_in_another_mount_namespace(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("pinned")
    path = f"/run/netns/{name}"
    created = sockctl(daemon, "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0, created.stderr
    ino = os.stat(path).st_ino
    with tempfile.NamedTemporaryFile() as target:
        pinner = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                PIN,
                "-",
                path,
                target.name,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert pinner.stdout is not None
            assert pinner.stdout.readline().strip() == "pinned"
            deleted = sockctl(
                daemon, "--json", "ns", "delete", name, who=MEMBER, user_python=user_python
            )
            assert deleted.returncode == 0, deleted.stderr
            reply = deleted.json()
            # The name is gone (for sockd, for ip, from the owner's quota), and the reply says
            # the namespace itself lives on, held by the mount sockd cannot reach.
            assert reply["still_alive"] is True
            assert reply["pinned_mounts"] >= 1
            assert target.name in daemon.log()
            assert not os.path.lexists(path)
            assert name not in ip_netns_list()
            _ip_netns_list_is_clean()
            assert list(Path(daemon.state_dir, "namespaces").iterdir()) == []
            text = sockctl(daemon, "ns", "list")
            assert name not in text.stdout
            mountinfo = Path(f"/proc/{pinner.pid}/mountinfo").read_text()
            assert f"net:[{ino}]" in mountinfo
        finally:
            pinner.kill()
            pinner.wait()
            assert pinner.stdout is not None
            pinner.stdout.close()


def test_placeholder_of_a_namespace_being_made_is_left_alone_at_start(daemon_dir: Path) -> None:
    # `ip netns add` (or another sockd) holds the netns directory's flock from placeholder to
    # mount. A daemon starting meanwhile used to judge the placeholder broken before taking the
    # lock, then remove it (or crash on EBUSY) once the namespace was mounted on it.
    import fcntl

    name = ns_name("inflight")
    path = f"/run/netns/{name}"
    fd = os.open("/run/netns", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        starting = start_daemon(daemon_dir, wait=False)
        time.sleep(1.0)  # the daemon is now waiting for the lock, in its start-up repair
        linux.new_netns_bound_to(path, loopback_up=False, before_mount=lambda: None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        starting.wait_for_log("serving on")
        assert linux.is_namespace_mount(path)
        assert f"removed broken placeholder {path}" not in starting.log()
        assert starting.stop() == 0
    finally:
        os.close(fd)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_pin_scan_skips_processes_that_vanish_mid_walk(tmp_path: Path) -> None:
    # Found by the soak: a process exiting between the stat of its ns/mnt and the read of its
    # mountinfo (EINVAL for a fresh zombie) made ns.delete answer internal_error.
    for pid, mnt_ns in ((100, "a"), (200, "b"), (300, "c")):
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        (tmp_path / str(pid) / "ns" / "mnt").write_text(mnt_ns)
    (tmp_path / "100" / "mountinfo").mkdir()  # unreadable as a file: EISDIR stands in for EINVAL
    (tmp_path / "200" / "mountinfo").write_text(
        "36 25 0:4 net:[4026532999] /tmp/pin rw shared:1 - nsfs nsfs rw\n"
    )
    # 300: no mountinfo at all, as for a process gone after the stat.
    holders = linux.netns_mount_holders((4, 4026532999), str(tmp_path))
    assert holders == [(200, "/tmp/pin")]


# Corrupt registry files -----------------------------------------------------------------------------------


def _owned(daemon: Daemon, user_python: tuple[str, str]) -> int:
    code = "import json; from sockctl import Client; print(Client().whoami().namespaces_owned)"
    owned: int = as_user(MEMBER, user_python, code, daemon.socket)
    return owned


def _member(daemon: Daemon, user_python: tuple[str, str], *args: str) -> Result:
    return sockctl(daemon, *args, who=MEMBER, user_python=user_python)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other name", "deleted"])
def test_damaged_record_is_restored_from_its_mirror(
    daemon_dir: Path, user_python: tuple[str, str], damage: str
) -> None:
    name = ns_name("mirror")
    daemon = start_daemon(daemon_dir)
    try:
        assert _member(daemon, user_python, "ns", "create", name).returncode == 0
        daemon.stop()
        record = Path(daemon.state_dir, "namespaces", f"{name}.json")
        good = record.read_bytes()
        if damage == "deleted":
            record.unlink()
        else:
            record.write_bytes(
                {
                    "garbage": b"\x00\xffnot json",
                    "truncated": good[: len(good) // 2],
                    "other name": good.replace(name.encode(), b"someone-else"),
                }[damage]
            )
        daemon = start_daemon(daemon_dir, write_config=False)
        assert f"restored it from {Path(daemon.state_dir, 'mirror', 'namespaces')}" in daemon.log()
        assert record.read_bytes() == good
        # Ownership survived: counted in the owner's quota, and the owner may delete it.
        assert _owned(daemon, user_python) == 1
        assert _member(daemon, user_python, "ns", "delete", name).returncode == 0
    finally:
        daemon.stop()
        sockctl(daemon, "ns", "delete", name)


def test_record_and_mirror_both_damaged_is_loud_and_can_be_repaired(
    daemon_dir: Path, user_python: tuple[str, str]
) -> None:
    name = ns_name("lost")
    daemon = start_daemon(daemon_dir)
    try:
        assert _member(daemon, user_python, "ns", "create", name).returncode == 0
        daemon.stop()
        state = Path(daemon.state_dir)
        good = json.loads((state / "namespaces" / f"{name}.json").read_text())
        for path in (
            state / "namespaces" / f"{name}.json",
            state / "mirror" / "namespaces" / f"{name}.json",
        ):
            path.write_text("{")
        daemon = start_daemon(daemon_dir, write_config=False)
        aside = state / "namespaces" / f"{name}.corrupt"
        log = daemon.log()
        # Loud (an error, at start), and it says what happened and what to do about it.
        assert f"error: registry file {state / 'namespaces' / name}.json is unreadable" in log, log
        assert f"moved to {aside}" in log
        assert "its owner can no longer delete it" in log
        assert f"move it to {aside.with_suffix('.json')}, then restart sockd" in log
        assert aside.exists()
        # Until then it is root's: shown as unmanaged, and the former owner may not delete it.
        with daemon.client() as client:
            (info,) = [i for i in client.ns_list() if i.name == name]
        assert (info.managed, info.owner_uid) == (False, 0)
        assert _member(daemon, user_python, "ns", "delete", name).returncode == 4
        # Doing what the message says gives it back.
        aside.write_text(json.dumps(good))
        aside.rename(aside.with_suffix(".json"))
        daemon.stop()
        daemon = start_daemon(daemon_dir, write_config=False)
        assert _owned(daemon, user_python) == 1
        assert _member(daemon, user_python, "ns", "delete", name).returncode == 0
    finally:
        daemon.stop()
        sockctl(daemon, "ns", "delete", name)


def test_link_records_are_mirrored_too(tmp_path: Path) -> None:
    errors: list[str] = []
    registry = LinkRegistry(str(tmp_path / "links"), on_corrupt=errors.append)
    record = LinkRecord(
        id="abc",
        owner_uid=23001,
        ns="n",
        ifname="eth0",
        peer_ns=None,
        peer_ifname="sd23001-0",
        address="10.213.0.2/30",
        peer_address="10.213.0.1/30",
        pool_block="10.213.0.0/30",
        created=1.0,
    ).ready()
    registry.write(record)
    (tmp_path / "links" / "abc.json").write_text("[]")
    assert registry.records() == [record]
    assert "restored it from" in errors[0]
    for path in (tmp_path / "links" / "abc.json", tmp_path / "mirror" / "links" / "abc.json"):
        path.write_text("")
    assert registry.records() == []
    assert "ip link del" in errors[1]
    assert (tmp_path / "links" / "abc.corrupt").exists()


def test_sigterm_as_soon_as_ready_is_a_clean_stop(
    daemon_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by CI: READY=1 (and "serving on") came before the SIGTERM handler was installed, so a
    # stop right after readiness, as systemd may send one, killed the daemon (-15) instead of
    # draining it. SIGTERM goes out the moment READY=1 arrives, several times.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(daemon_dir / "notify"))
    notify.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", str(daemon_dir / "notify"))
    try:
        for _ in range(5):
            starting = start_daemon(daemon_dir, wait=False)
            try:
                while b"READY=1" not in notify.recv(4096):
                    pass
                starting.proc.send_signal(signal.SIGTERM)
            finally:
                assert starting.stop() == 0, starting.log()
    finally:
        notify.close()
