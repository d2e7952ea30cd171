"""``ns list --all`` (issue 15): every network namespace of the host, named or not, like lsns -t net.

Real namespaces held by real processes (``unshare -n`` as root, ``unshare -rn`` as a test uid);
who sees which is checked as real other uids.
"""

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from sockctl import Client
from tests.conftest import (
    MEMBER,
    MONITOR,
    OTHER_MEMBER,
    Daemon,
    Result,
    ns_name,
    sockctl,
    wait_exec,
)


def _holder(argv: list[str]) -> subprocess.Popen[bytes]:
    """A sleeping process in a namespace of its own; returned once it is in it."""
    proc = subprocess.Popen([*argv, "sleep", "120"], stdin=subprocess.DEVNULL)
    try:
        wait_exec(proc, "sleep")
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.fixture
def holders() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    roots = _holder(["unshare", "--net"])
    uid, gid, _ = MEMBER
    members = _holder(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "unshare", "-rn"]
    )
    try:
        yield roots, members
    finally:
        for proc in (roots, members):
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _scan(
    daemon: Daemon, who: tuple[int, int, tuple[int, ...]] | None, user_python: tuple[str, str]
) -> dict[int, dict[str, Any]]:
    done: Result = sockctl(
        daemon, "--json", "ns", "list", "--all", who=who, user_python=user_python
    )
    assert done.returncode == 0, done.stderr
    return {entry["id"]: entry for entry in json.loads(done.stdout)}


def _ns(proc: subprocess.Popen[bytes]) -> int:
    return os.stat(f"/proc/{proc.pid}/ns/net").st_ino


def test_root_and_monitors_see_unnamed_namespaces_tagged_with_a_pid_and_command(
    shared_daemon: Daemon,
    user_python: tuple[str, str],
    holders: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    roots, members = holders
    named = ns_name("scan")
    with Client(shared_daemon.socket) as client:
        client.ns_create(named)
        try:
            for who in (None, MONITOR):
                seen = _scan(shared_daemon, who, user_python)
                entry = seen[_ns(roots)]
                assert (entry["pid"], entry["uid"], entry["processes"]) == (roots.pid, 0, 1)
                assert entry["command"] == "sleep 120" and entry["name"] is None
                assert seen[_ns(members)]["uid"] == MEMBER[0]
                assert seen[_ns(members)]["owner_uid"] == MEMBER[0]  # its own user namespace
                host = [e for e in seen.values() if e["host"]]
                assert len(host) == 1 and host[0]["id"] == os.stat("/proc/self/ns/net").st_ino
                named_entry = seen[os.stat(f"/run/netns/{named}").st_ino]
                assert named_entry["name"] == named and named_entry["processes"] == 0
        finally:
            client.ns_delete(named)


def test_others_see_named_namespaces_and_their_own_processes_only(
    shared_daemon: Daemon,
    user_python: tuple[str, str],
    holders: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
) -> None:
    roots, members = holders
    mine = _scan(shared_daemon, MEMBER, user_python)
    assert _ns(members) in mine and mine[_ns(members)]["pid"] == members.pid
    assert _ns(roots) not in mine
    theirs = _scan(shared_daemon, OTHER_MEMBER, user_python)
    assert _ns(members) not in theirs and _ns(roots) not in theirs
    # The host's namespace is listed for everyone, with one of the caller's own processes.
    host = [e for e in theirs.values() if e["host"]]
    assert len(host) == 1 and host[0]["uid"] == OTHER_MEMBER[0]


def test_the_table_names_the_host_and_unnamed_namespaces(
    shared_daemon: Daemon, holders: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]
) -> None:
    roots, _ = holders
    done = sockctl(shared_daemon, "ns", "list", "--all")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NS", "NSID", "PROCS", "PID", "USER", "NAME", "COMMAND"]
    row = next(r.split() for r in rows if r.startswith(str(_ns(roots))))
    assert row[2:6] == ["1", str(roots.pid), "root", "-"] and row[6:] == ["sleep", "120"]
    assert any("(host)" in r for r in rows)


LISTENER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
time.sleep(120)
"""


def _listener_in_new_netns(prefix: list[str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*prefix, "/usr/bin/python3", "-c", LISTENER, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_sock_list_all_netns_includes_unnamed_namespaces_by_policy(
    shared_daemon: Daemon, user_python: tuple[str, str]
) -> None:
    uid, gid, _ = MEMBER
    roots = _listener_in_new_netns(["unshare", "--net"], 47101)
    members = _listener_in_new_netns(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "unshare", "-rn"], 47102
    )
    try:

        def rows(who: tuple[int, int, tuple[int, ...]] | None) -> dict[int, str | None]:
            done = sockctl(
                shared_daemon, "--json", "sock", "list", "-t", "--all-netns", "--no-processes",
                who=who, user_python=user_python,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            # Rows of the two namespaces (a host socket may have one of these ports too: every
            # namespace is listed, the host's TIME-WAITs of earlier tests included).
            ours = (f"pid:{roots.pid}", f"pid:{members.pid}")
            return {
                row["local_port"]: row["netns"]
                for row in json.loads(done.stdout)["sockets"]
                if row["netns"] in ours
            }

        everything = {47101: f"pid:{roots.pid}", 47102: f"pid:{members.pid}"}
        assert rows(None) == everything
        assert rows(MONITOR) == everything
        assert rows(MEMBER) == {47102: f"pid:{members.pid}"}
        assert rows(OTHER_MEMBER) == {}
        table = sockctl(shared_daemon, "sock", "list", "-t", "--all-netns", "--no-processes")
        assert any(
            f"pid:{roots.pid}" in line and "47101" in line for line in table.stdout.splitlines()
        )
    finally:
        for proc in (roots, members):
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
