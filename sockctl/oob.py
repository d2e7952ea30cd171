"""TCP urgent ("out-of-band") data: the three calls Python's socket module lacks or makes awkward.

TCP has one urgent *pointer*, not a second channel. The kernel's behaviour on Linux, which the tests
reproduce on loopback:

- ``send(b"abc", MSG_OOB)`` sends all three bytes, but only the **last** (``c``) is urgent; ``ab`` is
  ordinary data.
- Without SO_OOBINLINE the urgent byte is taken out of the stream: ``recv(1, MSG_OOB)`` returns it,
  and ordinary reads skip it. A **second** urgent byte arriving before the first was read moves the
  pointer: the first one then stays in the ordinary stream and only the newest is urgent.
- With SO_OOBINLINE the urgent byte stays in the stream; ``recv(..., MSG_OOB)`` fails with EINVAL and
  :func:`sockatmark` tells when the next byte read is the urgent one.
- ``recv(..., MSG_OOB)`` never blocks: EINVAL when no urgent byte is pending (or it was read, or
  SO_OOBINLINE is set), EAGAIN when the pointer arrived but the byte itself has not yet.

Usage::

    from sockctl import oob

    oob.send_urgent(conn, b"!")              # sender
    byte = oob.recv_urgent(sock)             # receiver: b"!" or None if nothing is pending
    before = oob.recv_until_mark(sock)       # SO_OOBINLINE: the data before the urgent byte

These helpers work on any connected TCP socket (``socket.socket``); they raise ``OSError`` for socket
errors other than the ones described, like the socket module does.
"""

import errno
import fcntl
import socket
import struct

SIOCATMARK = 0x8905
"""ioctl: is the read position at the urgent mark? (include/uapi/linux/sockios.h)"""

__all__ = ["SIOCATMARK", "recv_until_mark", "recv_urgent", "send_urgent", "sockatmark"]


def sockatmark(sock: socket.socket) -> bool:
    """True when the next byte read from ``sock`` is the one the urgent pointer marks (sockatmark(3)).

    ::

        if oob.sockatmark(sock):
            urgent = sock.recv(1)      # with SO_OOBINLINE
    """
    result = fcntl.ioctl(sock.fileno(), SIOCATMARK, struct.pack("i", 0))
    return bool(struct.unpack("i", result)[0])


def send_urgent(sock: socket.socket, byte: bytes | int) -> None:
    """Send one urgent byte (``send(..., MSG_OOB)`` of exactly one byte).

    One byte because only the last byte of an urgent send is urgent: sending more would silently
    demote the others to ordinary data. ::

        oob.send_urgent(sock, b"\\x03")
    """
    data = bytes([byte]) if isinstance(byte, int) else byte
    if len(data) != 1:
        raise ValueError(f"one urgent byte at a time, not {len(data)}: TCP marks only the last")
    sock.send(data, socket.MSG_OOB)


def recv_urgent(sock: socket.socket) -> bytes | None:
    """The pending urgent byte, or None when there is none to read now; never blocks.

    ::

        byte = oob.recv_urgent(sock)

    Raises ``ValueError`` on a socket with SO_OOBINLINE set: its urgent byte is in the ordinary
    stream; read up to it with :func:`recv_until_mark`.
    """
    try:
        return sock.recv(1, socket.MSG_OOB)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE):
                raise ValueError(
                    "SO_OOBINLINE is set: the urgent byte is in the stream; use recv_until_mark()"
                ) from exc
            return None  # none pending, or already read
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None  # the urgent pointer arrived, the byte has not yet
        raise


def recv_until_mark(sock: socket.socket, bufsize: int = 65536) -> bytes:
    """Read ordinary data up to (not including) the urgent mark; b"" when already at the mark.

    With SO_OOBINLINE, the next ``recv(1)`` after this returns the urgent byte. A read never
    crosses the mark (the kernel stops it there), so this just reads until :func:`sockatmark`.
    Blocks like ``recv`` when no data is there yet.
    """
    chunks = []
    while not sockatmark(sock):
        chunk = sock.recv(bufsize)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
