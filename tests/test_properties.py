"""Property-based tests of everything that parses untrusted bytes, on both sides of the socket.

- the daemon's request path (``Daemon.prepare``/``handle``, in-process, with a private netns and state
  directory): every request model of ``protocol.OPERATIONS`` accepted when valid, refused with a named
  error naming the bad field when mutated; any bytes at all get a reply, never an internal error;
- ``_wire.recv`` on real SEQPACKET socketpairs: sizes around the limit, descriptor counts around
  ``MAX_FDS``, no descriptor leaks;
- the client: ``from_wire`` on every reply type, and ``Client`` against a fake daemon that answers
  garbage: only :class:`sockctl.errors.SockdError` subclasses escape.

Examples per property: ``SOCKD_HYPOTHESIS_EXAMPLES`` (default 60, a few seconds in all); the long
coverage-guided run is ``bench/fuzz.py``.
"""

import array
import contextlib
import dataclasses
import io
import json
import os
import queue
import socket
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockctl import Client, DaemonUnavailable, SockdError, _wire
from sockctl.errors import ERROR_CLASSES, InvalidRequest, MessageTooLarge, RequestError
from sockctl.protocol import (
    MAX_FDS,
    MAX_MESSAGE,
    OPERATIONS,
    ErrorCode,
    ErrorInfo,
    WireTypeError,
    from_wire,
    to_wire,
)
from sockd.config import Config
from sockd.daemon import Daemon
from sockd.dispatch import TABLE
from sockd.linux import Credentials
from sockd.log import Logger
from sockd.policy import Access, Peer
from tests.conftest import DEFAULT_CONFIG, OUTSIDER
from tests.strategies import JSON, mutated_request, reply_value, request_fields, valid_request

EXAMPLES = int(os.environ.get("SOCKD_HYPOTHESIS_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ROOT = Peer(Credentials(os.getpid(), 0, 0, (), None))
STRANGER = Peer(Credentials(os.getpid(), OUTSIDER[0], OUTSIDER[1], (), None))
"""No create group: every mutating request stops at the policy, before anything is made."""

CHANNEL, _PEER_END = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
"""The connection a session (ns.exec) reads its follow-ups from; nothing is ever sent on it."""

OPS = sorted(OPERATIONS)
READ_ONLY = [op for op in OPS if not OPERATIONS[op].mutating]


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """The daemon's request path in-process, on an empty private netns and state directory."""
    with tempfile.TemporaryDirectory(prefix="sockd-prop-") as tmp:
        config = Config.model_validate(tomllib.loads(DEFAULT_CONFIG))
        log = Logger("stderr", "debug", stream=io.StringIO())
        yield Daemon(
            config,
            config_path=None,
            state_dir=str(Path(tmp, "state")),
            log=log,
            netns_dir=str(Path(tmp, "netns")),
        )


ENDLESS = {"sock.events"}
"""Operations whose answer goes on until the client leaves: only their first message is read."""


def _replies(daemon: Daemon, peer: Peer, data: bytes, op: str = "") -> list[dict[str, Any]]:
    """Every reply datagram to ``data``, decoded; each must be a contract-conforming envelope.
    For an endless stream (sock.events), its first: an error, or "under way" without items."""
    replies = []
    with contextlib.closing(daemon.handle(peer, data, [], channel=CHANNEL)) as messages:
        for message in messages:
            assert len(message.payload) <= MAX_MESSAGE
            _wire.close_all(list(message.fds))
            reply = json.loads(message.payload)
            assert isinstance(reply, dict)
            replies.append(reply)
            if not reply["ok"]:
                error = from_wire(ErrorInfo, reply["error"])
                assert error.code is not ErrorCode.INTERNAL_ERROR, reply
            if op in ENDLESS:
                assert not reply["ok"] or (reply["more"] and reply["items"] == []), reply
                break  # closing the stream ends the session and its cleanup runs
    assert replies
    assert all(r.get("more") for r in replies[:-1])
    return replies


def _refusal(daemon: Daemon, peer: Peer, data: bytes) -> RequestError | None:
    prepared = daemon.prepare(peer, data, [])
    error = prepared.error
    if error is not None:
        assert type(error) in ERROR_CLASSES.values()
        assert error.code is not ErrorCode.INTERNAL_ERROR
        assert error.message
    return error


# Requests: the daemon's decoder and every request model -------------------------------------------


@pytest.mark.parametrize("op", OPS)
@PROPERTY
@given(data=st.data())
def test_valid_requests_are_accepted_as_sent(daemon: Daemon, op: str, data: st.DataObject) -> None:
    case = data.draw(valid_request(op))
    prepared = daemon.prepare(ROOT, case.encode(), [])
    assert prepared.error is None, prepared.error
    assert prepared.op == op
    decoded = to_wire(prepared.request)
    for key, value in case.message.items():
        assert decoded[key] == value


@pytest.mark.parametrize("op", OPS)
@PROPERTY
@given(data=st.data())
def test_mutated_requests_are_refused_naming_the_field(
    daemon: Daemon, op: str, data: st.DataObject
) -> None:
    case = data.draw(mutated_request(op))
    error = _refusal(daemon, ROOT, case.encode())
    assert error is not None, case
    assert error.code == case.code, (case, error)
    assert error.field == case.field or (error.field or "").startswith(f"{case.field}."), (
        case,
        error,
    )


@pytest.mark.parametrize("op", READ_ONLY)
@PROPERTY
@given(data=st.data())
def test_valid_read_only_requests_are_answered(
    daemon: Daemon, op: str, data: st.DataObject
) -> None:
    case = data.draw(valid_request(op))
    for peer in (ROOT, STRANGER):
        _replies(daemon, peer, case.encode(), op)


@PROPERTY
@given(data=st.data())
def test_mutating_requests_of_a_stranger_make_nothing(daemon: Daemon, data: st.DataObject) -> None:
    op = data.draw(st.sampled_from([op for op in OPS if OPERATIONS[op].mutating]))
    case = data.draw(valid_request(op))
    replies = _replies(daemon, STRANGER, case.encode())
    if TABLE[op].access is Access.CREATOR:
        assert [r["error"]["code"] for r in replies] == ["permission_denied"]
    # Whatever the outcome (ns.exec, sock.open are open to anyone, for their own namespaces),
    # nothing was made in the daemon's (empty, private) netns directory or registry.
    netns_dir = daemon.namespaces.netns_dir
    assert not os.path.isdir(netns_dir) or os.listdir(netns_dir) == []
    assert daemon.namespaces.registry.records() == []


@PROPERTY
@given(payload=st.binary(max_size=512) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_get_a_named_error_or_an_answer(daemon: Daemon, payload: bytes) -> None:
    _replies(daemon, STRANGER, payload)
    _refusal(daemon, ROOT, payload)


@PROPERTY
@given(data=st.data())
def test_known_op_with_arbitrary_fields(daemon: Daemon, data: st.DataObject) -> None:
    op = data.draw(st.sampled_from(OPS))
    names = [*request_fields(op), "proto", "x"]
    message = data.draw(st.dictionaries(st.sampled_from(names), JSON, max_size=4))
    message.setdefault("proto", 1)
    message["op"] = op
    _replies(daemon, STRANGER, json.dumps(message).encode())
    _refusal(daemon, ROOT, json.dumps(message).encode())


@PROPERTY
@given(depth=st.integers(1, 100_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_a_malformed_message(daemon: Daemon, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    payload = (opener * depth + "1" + closer * depth).encode()
    if len(payload) > MAX_MESSAGE:
        return
    (reply,) = _replies(daemon, STRANGER, payload)
    assert reply["ok"] is False


# The datagram layer on real sockets ---------------------------------------------------------------


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


SIZES = st.sampled_from([0, 1, MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1, MAX_MESSAGE + 64]) | (
    st.integers(0, MAX_MESSAGE + 100)
)


@PROPERTY
@given(size=SIZES, nfds=st.integers(0, MAX_FDS + 4))
def test_wire_recv_gives_data_and_descriptors_or_a_named_error(size: int, nfds: int) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
        before = _fd_count()
        payload = os.urandom(size)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w] * nfds).tobytes())]
        a.sendmsg([payload], ancillary if nfds else [])
        try:
            data, fds = _wire.recv(b)
        except InvalidRequest as exc:
            assert nfds > MAX_FDS or size > MAX_MESSAGE
            assert isinstance(exc, MessageTooLarge) or exc.field == "fds"
            assert _fd_count() == before
            return
        assert size <= MAX_MESSAGE
        assert nfds <= MAX_FDS
        assert data == payload
        assert len(fds) == nfds
        _wire.close_all(fds)
        assert _fd_count() == before
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


# The client: replies from a daemon that breaks the contract ---------------------------------------


def _reply_types() -> list[Any]:
    types: list[Any] = [ErrorInfo]
    for operation in OPERATIONS.values():
        types += [t for t in (operation.reply, operation.item) if t is not None]
    return types


REPLY_TYPES = _reply_types()


@pytest.mark.parametrize("tp", REPLY_TYPES, ids=lambda t: getattr(t, "__name__", repr(t)))
@PROPERTY
@given(data=st.data())
def test_from_wire_decodes_every_reply_the_daemon_may_send(tp: Any, data: st.DataObject) -> None:
    raw = data.draw(reply_value(tp))
    value = from_wire(tp, json.loads(json.dumps(raw)))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        assert isinstance(value, tp)
    _same_where_given(raw, to_wire(value))
    assert from_wire(tp, to_wire(value)) == value


def _same_where_given(raw: Any, decoded: Any) -> None:
    """``decoded`` (defaults filled in) agrees with ``raw`` on everything ``raw`` has."""
    if isinstance(raw, dict) and isinstance(decoded, dict):
        for key, value in raw.items():
            _same_where_given(value, decoded[key])
    elif isinstance(raw, list):
        assert len(raw) == len(decoded)
        for a, b in zip(raw, decoded, strict=True):
            _same_where_given(a, b)
    else:
        assert raw == decoded


@pytest.mark.parametrize("tp", REPLY_TYPES, ids=lambda t: getattr(t, "__name__", repr(t)))
@PROPERTY
@given(raw=JSON)
def test_from_wire_refuses_garbage_with_wire_type_error(tp: Any, raw: Any) -> None:
    with contextlib.suppress(WireTypeError):
        from_wire(tp, raw)


class FakeDaemon:
    """A listening socket that answers each connection's first request with scripted datagrams."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scripts: queue.Queue[list[bytes]] = queue.Queue()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(MAX_MESSAGE)
                    for datagram in self.scripts.get(timeout=5):
                        conn.send(datagram)
                except OSError:
                    continue

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def fake_daemon() -> Iterator[FakeDaemon]:
    with tempfile.TemporaryDirectory(prefix="sockd-fake-") as tmp:
        fake = FakeDaemon(str(Path(tmp, "s.sock")))
        yield fake
        fake.close()


def _envelope() -> st.SearchStrategy[bytes]:
    """Reply datagrams: envelopes with arbitrary parts, any JSON, or any bytes."""
    envelope = st.fixed_dictionaries(
        {},
        optional={
            "ok": JSON_OR(st.booleans()),
            "more": JSON_OR(st.booleans()),
            "items": JSON_OR(st.lists(JSON, max_size=3)),
            "result": JSON,
            "error": JSON_OR(
                st.fixed_dictionaries(
                    {"code": JSON_OR(st.sampled_from([c.value for c in ErrorCode]))},
                    optional={"message": JSON, "field": JSON, "details": JSON},
                )
            ),
        },
    )
    return (
        envelope.map(lambda v: json.dumps(v).encode())
        | JSON.map(lambda v: json.dumps(v).encode())
        | st.binary(max_size=64)
    )


def JSON_OR(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:  # noqa: N802
    return strategy | JSON


@PROPERTY
@given(data=st.data())
def test_client_raises_only_sockd_errors_on_any_reply(
    fake_daemon: FakeDaemon, data: st.DataObject
) -> None:
    op = data.draw(st.sampled_from(OPS))
    case = data.draw(valid_request(op))
    fields = {k: v for k, v in case.message.items() if k != "proto"}
    request = OPERATIONS[op].request(**fields)
    script = data.draw(st.lists(_envelope(), min_size=0, max_size=4))
    fake_daemon.scripts.put(script)
    # _exchange: the one path every typed method goes through (Client.ping, Client.ns_list, ...).
    with Client(fake_daemon.path, timeout=5) as client, contextlib.suppress(SockdError):
        client._exchange(request)


def test_from_wire_checks_that_a_mapping_is_a_mapping() -> None:
    # Found by the properties above: dict-typed fields (ErrorInfo.details) took any JSON value.
    with pytest.raises(WireTypeError):
        from_wire(ErrorInfo, {"code": "busy", "message": "m", "details": [1]})


def test_client_closes_descriptors_that_came_with_an_empty_datagram() -> None:
    # An empty datagram reads as the daemon hanging up; what came with it used to stay open.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        before = _fd_count()
        fds = array.array("i", [r, w] * (MAX_FDS // 2)).tobytes()
        a.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        with pytest.raises(DaemonUnavailable):
            Client("/nonexistent")._read_reply(b, OPERATIONS["ping"])
        assert _fd_count() == before
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
