"""Datagram I/O on a SOCK_SEQPACKET socket, with file descriptors, for both ends of the protocol.

Kernel facts this relies on: a datagram larger than the receive buffer is cut and flagged MSG_TRUNC;
descriptors beyond the ancillary buffer are dropped and flagged MSG_CTRUNC. Both are reported as errors
here, and every descriptor received is either handed to the caller or closed.
"""

import array
import contextlib
import os
import socket

from sockctl.errors import InvalidRequest, MessageTooLarge
from sockctl.protocol import MAX_FDS, MAX_MESSAGE

_FD_SIZE = array.array("i").itemsize
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)


def send(sock: socket.socket, payload: bytes, fds: tuple[int, ...] | list[int] = ()) -> None:
    """Send one datagram, with ``fds`` as SCM_RIGHTS."""
    if len(payload) > MAX_MESSAGE:
        raise MessageTooLarge(f"message of {len(payload)} bytes is over the limit of {MAX_MESSAGE}")
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([payload], ancillary)
    else:
        sock.send(payload)


def recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Receive one datagram and the descriptors that came with it.

    Returns ``(b"", [])`` when the peer closed the connection. Raises :class:`MessageTooLarge` for a
    datagram over ``MAX_MESSAGE`` and :class:`InvalidRequest` (field ``fds``) when more descriptors
    came than one message may carry; the descriptors are closed in both cases.
    """
    # One byte more than the limit: a datagram of exactly MAX_MESSAGE fits, a larger one is flagged.
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE + 1, _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds = _collect_fds(ancillary)
    if flags & socket.MSG_CTRUNC:
        close_all(fds)
        raise InvalidRequest(f"more than {MAX_FDS} file descriptors in one message", field="fds")
    if flags & socket.MSG_TRUNC or len(data) > MAX_MESSAGE:
        close_all(fds)
        raise MessageTooLarge(f"message is over the limit of {MAX_MESSAGE} bytes")
    return data, fds


def _collect_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    return fds


def close_all(fds: list[int]) -> None:
    """Close descriptors we received but will not use."""
    for fd in fds:
        with contextlib.suppress(OSError):  # already closed: nothing to release
            os.close(fd)
