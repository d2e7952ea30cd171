"""Datagram framing on real SEQPACKET socketpairs: limits, truncation, descriptors."""

import array
import os
import socket
from collections.abc import Iterator

import pytest

from sockctl import _wire
from sockctl.errors import InvalidRequest, MessageTooLarge
from sockctl.protocol import MAX_FDS, MAX_MESSAGE


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Room for a datagram over the limit, so the receiver (not the sender) sees it.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MAX_MESSAGE)
    yield a, b
    a.close()
    b.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_message_of_exactly_the_limit_passes(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    _wire.send(a, b"x" * MAX_MESSAGE)
    data, fds = _wire.recv(b)
    assert len(data) == MAX_MESSAGE
    assert fds == []


def test_one_byte_over_is_refused_on_both_ends(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with pytest.raises(MessageTooLarge):
        _wire.send(a, b"x" * (MAX_MESSAGE + 1))
    a.send(b"x" * (MAX_MESSAGE + 1))  # a peer that ignores the limit
    with pytest.raises(MessageTooLarge):
        _wire.recv(b)
    _wire.send(a, b"next")  # the stream goes on: one datagram was dropped, not the connection
    assert _wire.recv(b) == (b"next", [])


def test_descriptors_arrive_usable(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        _wire.send(a, b"{}", [w])
        data, fds = _wire.recv(b)
        assert data == b"{}"
        assert len(fds) == 1
        os.write(fds[0], b"hello")
        assert os.read(r, 5) == b"hello"
        _wire.close_all(fds)
    finally:
        os.close(r)
        os.close(w)


def test_too_many_descriptors_are_refused_and_none_leak(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        before = _open_fds()
        many = array.array("i", [w] * (MAX_FDS + 3)).tobytes()
        a.sendmsg([b"{}"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, many)])
        with pytest.raises(InvalidRequest) as info:
            _wire.recv(b)
        assert info.value.field == "fds"
        assert _open_fds() == before
    finally:
        os.close(r)
        os.close(w)


def test_peer_close_reads_as_end_of_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    assert _wire.recv(b) == (b"", [])
