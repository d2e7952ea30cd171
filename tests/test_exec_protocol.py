"""The ns.exec session and sock.open descriptors on the wire, spoken by hand on a raw socket."""

import array
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sockctl.protocol import OPERATIONS
from sockd.dispatch import TABLE
from tests.conftest import Daemon, ns_name

TRUE = "/bin/true"


@pytest.fixture(scope="module")
def name(shared_daemon: Daemon) -> Iterator[str]:
    namespace = ns_name("wire")
    shared_daemon.client().ns_create(namespace)
    yield namespace
    shared_daemon.client().ns_delete(namespace, force=True)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps({"proto": 2, **message}).encode()
    if fds:
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(payload)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, ancillary, _, _ = sock.recvmsg(70000, socket.CMSG_SPACE(8 * 4))
    fds: list[int] = []
    for _, _, raw in ancillary:
        fds.extend(array.array("i", raw[: len(raw) - len(raw) % 4]))
    reply: dict[str, Any] = json.loads(data)
    return reply, fds


@pytest.fixture
def conn(shared_daemon: Daemon) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        sock.connect(shared_daemon.socket)
        yield sock


def wait_no_children(daemon: Daemon, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while daemon.children():
        assert time.monotonic() < deadline, daemon.children()
        time.sleep(0.01)


def test_every_operation_has_a_route_and_follow_ups_exist() -> None:
    assert set(TABLE) == set(OPERATIONS)
    for operation in OPERATIONS.values():
        assert set(operation.follow_ups) <= set(OPERATIONS)
        if operation.follow_ups:
            assert operation.item is not None  # sessions stream their events


def test_a_session_starts_then_ends_with_the_status(conn: socket.socket, name: str) -> None:
    send(
        conn,
        {"op": "ns.exec", "name": name, "argv": ["sh", "-c", "exit 3"], "env": {"PATH": "/bin"}},
    )
    started, _ = receive(conn)
    assert started["ok"] and started["more"] and started["items"][0]["pid"] > 0
    ended, _ = receive(conn)
    assert ended == {
        "ok": True,
        "more": False,
        "items": [],
        "result": {"pid": started["items"][0]["pid"], "exit_code": 3, "signal": None},
    }
    send(conn, {"op": "ping"})  # the connection serves ordinary requests again
    assert receive(conn)[0]["ok"]


def test_stdio_travels_as_descriptors(conn: socket.socket, name: str) -> None:
    read_end, write_end = os.pipe()
    try:
        send(
            conn,
            {"op": "ns.exec", "name": name, "argv": ["ls", "/proc/self/fd"], "stdout": 0},
            [write_end],
        )
        os.close(write_end)
        write_end = -1
        assert receive(conn)[0]["more"]
        assert receive(conn)[0]["result"]["exit_code"] == 0
        listing = os.read(read_end, 4096).decode().split()
        # 0-2 and ls's own directory: nothing of the daemon's leaked into the command.
        assert listing == ["0", "1", "2", "3"]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_exec_signal_outside_a_session_is_refused(conn: socket.socket) -> None:
    send(conn, {"op": "exec.signal", "signal": 15})
    reply, _ = receive(conn)
    assert (reply["error"]["code"], reply["error"]["field"]) == ("invalid_request", "op")


def test_follow_up_signals_reach_the_command(conn: socket.socket, name: str) -> None:
    send(conn, {"op": "ns.exec", "name": name, "argv": ["sleep", "60"], "env": {"PATH": "/bin"}})
    send(conn, {"op": "exec.signal", "signal": 10})  # queued before the start: still delivered
    assert receive(conn)[0]["more"]
    assert receive(conn)[0]["result"]["signal"] == 10


def test_any_other_request_ends_the_session_and_kills_the_command(
    shared_daemon: Daemon, conn: socket.socket, name: str
) -> None:
    send(conn, {"op": "ns.exec", "name": name, "argv": ["sleep", "60"], "env": {"PATH": "/bin"}})
    pid = receive(conn)[0]["items"][0]["pid"]
    send(conn, {"op": "ping"})
    reply, _ = receive(conn)
    assert reply["error"]["code"] == "invalid_request"
    assert "exec.signal" in reply["error"]["message"]
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped before the reply
    wait_no_children(shared_daemon)


def test_a_client_gone_before_the_start_leaves_nothing_behind(
    shared_daemon: Daemon, name: str
) -> None:
    def audited() -> int:
        return sum(1 for a in shared_daemon.audit() if a["SOCKD_OP"] == "ns.exec")

    before = audited()
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(shared_daemon.socket)
            send(sock, {"op": "ns.exec", "name": name, "argv": ["sleep", "60"]})
    deadline = time.monotonic() + 10
    while audited() < before + 20:  # each one ran (and was killed), and is on record
        assert time.monotonic() < deadline, shared_daemon.log()[-2000:]
        time.sleep(0.02)
    wait_no_children(shared_daemon)
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=True)
    assert pids.stdout == ""


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"argv": ["true"], "stdin": 0}, "stdin"),  # no descriptor sent
        ({"argv": [""]}, "argv"),
        ({"argv": []}, "argv"),
        ({"argv": ["tr\u0000ue"]}, "argv.0"),
        ({"argv": ["true"], "env": {"A=B": "c"}}, "env.A=B.[key]"),
        ({"argv": ["true"], "cwd": "relative"}, "cwd"),
        ({"argv": ["true"], "umask": 512}, "umask"),
    ],
)
def test_malformed_exec_requests_are_named(
    conn: socket.socket, name: str, message: dict[str, Any], field: str
) -> None:
    send(conn, {"op": "ns.exec", "name": name, **message})
    reply, _ = receive(conn)
    assert (reply["error"]["code"], reply["error"]["field"]) == ("invalid_request", field)


def test_sock_open_hands_over_exactly_one_descriptor(conn: socket.socket, name: str) -> None:
    send(
        conn,
        {"op": "sock.open", "ns": name, "family": "inet", "address": "127.0.0.1", "backlog": 4},
    )
    reply, fds = receive(conn)
    assert len(fds) == 1
    assert reply["result"]["fd"] == 0
    assert reply["result"]["listening"] is True
    with socket.socket(fileno=fds[0]) as sock:
        assert sock.getsockname() == ("127.0.0.1", reply["result"]["port"])
