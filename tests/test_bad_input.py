"""Hostile and broken requests get named errors; the daemon keeps serving and leaks nothing."""

import array
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest

from sockctl.protocol import MAX_FDS, MAX_MESSAGE, PROTOCOL_VERSION
from tests.conftest import DEFAULT_CONFIG, Daemon, connect_raw, ns_name, raw_call, start_daemon


@pytest.fixture(scope="module")
def quick_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with a short idle timeout, so silent clients are dropped within the test."""
    directory = tmp_path_factory.mktemp("d", numbered=True)
    short = directory.parent / f"s{os.getpid()}"
    short.mkdir(exist_ok=True)
    short.chmod(0o755)
    config = DEFAULT_CONFIG.replace("idle_timeout = 30.0", "idle_timeout = 1.0")
    daemon = start_daemon(short, config=config)
    yield daemon
    daemon.stop()


def _error(reply: dict[str, object]) -> tuple[str, object]:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert isinstance(error, dict)
    return error["code"], error.get("field")


def _serves(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.ping().protocol == PROTOCOL_VERSION


BAD: list[tuple[bytes | dict[str, object], str, str | None]] = [
    (b"not json", "malformed_message", None),
    (b'{"proto": 2, "op": "ping"', "malformed_message", None),
    (b"[1, 2]", "malformed_message", None),
    (b"\xff\xfe", "malformed_message", None),
    (b"[" * 20000 + b"]" * 20000, "malformed_message", None),
    (b"{}", "unsupported_version", "proto"),
    ({"proto": 1, "op": "ping"}, "unsupported_version", "proto"),
    ({"proto": "2", "op": "ping"}, "unsupported_version", "proto"),
    ({"proto": 2}, "unknown_operation", "op"),
    ({"proto": 2, "op": "ns.explode"}, "unknown_operation", "op"),
    ({"proto": 2, "op": ["ping"]}, "unknown_operation", "op"),
    ({"proto": 2, "op": "ping", "extra": 1}, "invalid_request", "extra"),
    ({"proto": 2, "op": "ns.create", "name": 5}, "invalid_request", "name"),
    ({"proto": 2, "op": "ns.create"}, "invalid_request", "name"),
    (
        {"proto": 2, "op": "ns.create", "name": "a", "loopback_up": "yes"},
        "invalid_request",
        "loopback_up",
    ),
    ({"proto": 2, "op": "ns.delete", "name": "a", "force": 1}, "invalid_request", "force"),
    ({"proto": 2, "op": "ns.identify", "pid": 0}, "invalid_request", "pid"),
    ({"proto": 2, "op": "ns.identify", "pid": 2**40}, "invalid_request", "pid"),
    ({"proto": 2, "op": "ns.identify", "pid": 1.5}, "invalid_request", "pid"),
]


@pytest.mark.parametrize(("message", "code", "field"), BAD, ids=lambda v: repr(v)[:40])
def test_bad_requests_get_named_errors(
    quick_daemon: Daemon, message: bytes | dict[str, object], code: str, field: str | None
) -> None:
    with connect_raw(quick_daemon.socket) as sock:
        assert _error(raw_call(sock, message)) == (code, field)
        # Same connection, next request: still served.
        assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"] is True


HOSTILE_NAMES = [
    "../x",
    "a/b",
    "",
    "x" * 300,
    "a\x00b",
    "a\nb",
    "t\u0435st",
    "\uff54est",
    ".",
    "..",
    "-rf",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_names_are_refused_and_make_nothing(quick_daemon: Daemon, name: str) -> None:
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    with connect_raw(quick_daemon.socket) as sock:
        reply = raw_call(sock, {"proto": 2, "op": "ns.create", "name": name})
    assert _error(reply) == ("invalid_request", "name")
    assert "namespace name is" in reply["error"]["message"]
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert after == before


def test_message_at_the_limit_is_read_and_one_over_is_refused(quick_daemon: Daemon) -> None:
    base = {"proto": 2, "op": "ping", "pad": ""}
    padding = MAX_MESSAGE - len(json.dumps(base).encode())
    exact = json.dumps({**base, "pad": "x" * padding}).encode()
    assert len(exact) == MAX_MESSAGE
    with connect_raw(quick_daemon.socket) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
        # Exactly at the limit: parsed (and refused for its unknown field, not for its size).
        assert _error(raw_call(sock, exact)) == ("invalid_request", "pad")
        assert _error(raw_call(sock, exact + b" ")) == ("message_too_large", None)
        assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"] is True


def test_descriptors_sent_to_an_operation_that_takes_none(quick_daemon: Daemon) -> None:
    before = quick_daemon.settled_fd_count()
    r, w = os.pipe()
    try:
        with connect_raw(quick_daemon.socket) as sock:
            fds = array.array("i", [r, w]).tobytes()
            sock.sendmsg(
                [b'{"proto":2,"op":"ping"}'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
            )
            assert _error(json.loads(sock.recv(70000))) == ("invalid_request", "fds")
            many = array.array("i", [r] * (MAX_FDS + 4)).tobytes()
            sock.sendmsg(
                [b'{"proto":2,"op":"ping"}'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, many)]
            )
            assert _error(json.loads(sock.recv(70000))) == ("invalid_request", "fds")
            assert raw_call(sock, {"proto": 2, "op": "ping"})["ok"] is True
    finally:
        os.close(r)
        os.close(w)
    quick_daemon.wait_fd_count(before)


def test_silent_client_is_dropped_and_does_not_delay_others(quick_daemon: Daemon) -> None:
    before = quick_daemon.settled_fd_count()
    silent = connect_raw(quick_daemon.socket)
    try:
        started = time.monotonic()
        _serves(quick_daemon)
        assert time.monotonic() - started < 1.0
        silent.settimeout(5)
        assert silent.recv(100) == b""  # closed by the daemon after idle_timeout (1 s)
    finally:
        silent.close()
    quick_daemon.wait_fd_count(before)


def test_client_that_disconnects_mid_request(quick_daemon: Daemon) -> None:
    before = quick_daemon.settled_fd_count()
    name = ns_name("midreq")
    for _ in range(20):
        sock = connect_raw(quick_daemon.socket)
        sock.send(json.dumps({"proto": 2, "op": "ns.list"}).encode())
        sock.close()  # never reads the reply
    sock = connect_raw(quick_daemon.socket)
    sock.send(json.dumps({"proto": 2, "op": "ns.create", "name": name}).encode())
    sock.close()
    _serves(quick_daemon)
    with quick_daemon.client() as client:
        # The create went through even though nobody read the answer; it is owned and removable.
        deadline = time.monotonic() + 5
        while name not in {i.name for i in client.ns_list()}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.ns_delete(name)
    quick_daemon.wait_fd_count(before)


def test_no_fd_leak_over_many_bad_requests(quick_daemon: Daemon) -> None:
    _serves(quick_daemon)
    before = quick_daemon.settled_fd_count()
    for _ in range(10):
        for message, _, _ in BAD:
            with connect_raw(quick_daemon.socket) as sock:
                raw_call(sock, message)
    quick_daemon.wait_fd_count(before)


@pytest.mark.parametrize(
    ("op", "field"),
    [("ns.create", "name"), ("ns.delete", "name"), ("sock.list", "netns"), ("ns.link", "peer")],
)
def test_every_namespace_name_field_explains_the_rule(
    quick_daemon: Daemon, op: str, field: str
) -> None:
    message: dict[str, object] = {"proto": 2, "op": op, "name": "ok", field: "../x"}
    if op == "sock.list":
        del message["name"]
    with connect_raw(quick_daemon.socket) as sock:
        reply = raw_call(sock, message)
    assert _error(reply) == ("invalid_request", field)
    assert "namespace name is 1-64 characters" in reply["error"]["message"]
