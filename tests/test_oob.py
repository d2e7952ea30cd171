"""Urgent (out-of-band) TCP data on loopback: the kernel's behaviour and sockctl.oob's helpers."""

import select
import socket
from collections.abc import Iterator

import pytest

from sockctl import oob


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): a connected TCP pair on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    with sender, receiver:
        yield sender, receiver


def settle(sock: socket.socket) -> None:
    """Wait until the urgent notification has arrived (select's exceptional condition)."""
    _, _, urgent = select.select([], [], [sock], 5)
    assert urgent, "no urgent data announced"


def read_available(sock: socket.socket) -> bytes:
    data = b""
    while select.select([sock], [], [], 0.2)[0]:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_nothing_pending_is_none_not_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    _, receiver = pair
    assert oob.recv_urgent(receiver) is None
    assert oob.sockatmark(receiver) is False


def test_only_the_last_byte_of_an_urgent_send_is_urgent(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.send(b"abc", socket.MSG_OOB)
    settle(receiver)
    assert oob.recv_urgent(receiver) == b"c"
    assert oob.recv_urgent(receiver) is None  # read once, gone
    assert read_available(receiver) == b"ab"  # ordinary data, without the urgent byte


def test_sockatmark_marks_the_urgent_position(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    sender.send(b"before")
    oob.send_urgent(sender, b"!")
    sender.send(b"after")
    settle(receiver)
    assert oob.sockatmark(receiver) is False
    assert receiver.recv(100) == b"before"  # a read stops at the mark
    assert oob.sockatmark(receiver) is True
    assert oob.recv_urgent(receiver) == b"!"
    assert read_available(receiver) == b"after"


def test_a_second_urgent_byte_overwrites_the_first(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.send(b"1")
    oob.send_urgent(sender, b"x")
    sender.send(b"2")
    oob.send_urgent(sender, b"y")
    sender.send(b"3")
    settle(receiver)  # on loopback a send is delivered before it returns: both marks are in
    assert oob.recv_urgent(receiver) == b"y"
    assert read_available(receiver) == b"1x23"  # the first one fell back into the stream


def test_oobinline_keeps_urgent_bytes_in_the_stream(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    sender.send(b"1")
    oob.send_urgent(sender, b"x")
    sender.send(b"2")
    oob.send_urgent(sender, b"y")
    sender.send(b"3")
    settle(receiver)
    with pytest.raises(ValueError, match="SO_OOBINLINE"):
        oob.recv_urgent(receiver)  # the kernel says EINVAL: the byte is inline
    assert oob.recv_until_mark(receiver) == b"1x2"  # nothing lost; stops at the newest mark
    assert oob.sockatmark(receiver) is True
    assert receiver.recv(1) == b"y"
    assert read_available(receiver) == b"3"


def test_send_urgent_sends_exactly_one_byte(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    with pytest.raises(ValueError, match="one urgent byte"):
        oob.send_urgent(sender, b"ab")
    oob.send_urgent(sender, 0x03)
    settle(receiver)
    assert oob.recv_urgent(receiver) == b"\x03"
