"""Linux layer: just enough of the D-Bus wire protocol to ask systemd for transient units.

sockd talks to the service manager on its private socket (``/run/systemd/private``, root only, a
direct connection: no bus daemon, no ``Hello``), as ``systemctl`` does as root. The packages the
product may use have no D-Bus client (systemd-python has none), and ``systemd-run`` can neither
pass a command's exit signal back nor take descriptors from another process, so this module
implements the parts of the specification that are needed, and no more:
https://dbus.freedesktop.org/doc/dbus-specification.html — EXTERNAL authentication with Unix fd
passing, little-endian marshalling of the basic and container types, method calls with replies and
errors, and signals. One :class:`Connection` serves one thread; nothing here is shared.
"""

import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SYSTEMD_PRIVATE = "/run/systemd/private"
MAX_MESSAGE = 1 << 27  # the specification's limit: 128 MiB

CALL, RETURN, ERROR, SIGNAL = 1, 2, 3, 4
_NO_REPLY_EXPECTED = 0x1
_PATH, _INTERFACE, _MEMBER, _ERROR_NAME, _REPLY_SERIAL = 1, 2, 3, 4, 5
_DESTINATION, _SENDER, _SIGNATURE, _UNIX_FDS = 6, 7, 8, 9
_FIELD_TYPES = {1: "o", 2: "s", 3: "s", 4: "s", 5: "u", 6: "s", 7: "s", 8: "g", 9: "u"}
_FIXED = {
    "y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4), "u": ("I", 4),
    "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4),
}  # fmt: skip
_ALIGN = {**{code: size for code, (_, size) in _FIXED.items()}, "s": 4, "o": 4, "g": 1, "a": 4}
_ALIGN.update({"(": 8, "{": 8, "v": 1})


class DBusError(Exception):
    """An error reply (``name`` as ``org.freedesktop.systemd1.NoSuchUnit``), or a broken peer."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True)
class Variant:
    """A value of type ``v``: the signature travels with it."""

    signature: str
    value: Any


@dataclass
class Message:
    kind: int
    serial: int
    fields: dict[int, Any]
    body: list[Any]
    fds: list[int] = field(default_factory=list)

    @property
    def member(self) -> str | None:
        return self.fields.get(_MEMBER)

    @property
    def reply_to(self) -> int | None:
        return self.fields.get(_REPLY_SERIAL)


# Signatures --------------------------------------------------------------------------------------


def split_signature(signature: str) -> list[str]:
    """The complete types of ``signature``, in order: ``"sa{sv}(ii)"`` → ``["s", "a{sv}", "(ii)"]``."""
    types, position = [], 0
    while position < len(signature):
        end = _type_end(signature, position)
        types.append(signature[position:end])
        position = end
    return types


def _type_end(signature: str, position: int) -> int:
    code = signature[position]
    if code == "a":
        return _type_end(signature, position + 1)
    if code in "({":
        closing = ")" if code == "(" else "}"
        position += 1
        while signature[position] != closing:
            position = _type_end(signature, position)
        return position + 1
    if code not in _ALIGN:
        raise ValueError(f"unknown D-Bus type code {code!r} in {signature!r}")
    return position + 1


# Marshalling ---------------------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def align(self, boundary: int) -> None:
        self.data += b"\0" * (-len(self.data) % boundary)

    def write(self, signature: str, value: Any) -> None:
        code = signature[0]
        self.align(_ALIGN[code])
        if code in _FIXED:
            fmt, _ = _FIXED[code]
            self.data += struct.pack("<" + fmt, int(value) if code == "b" else value)
        elif code in "so":
            encoded = value.encode()
            self.data += struct.pack("<I", len(encoded)) + encoded + b"\0"
        elif code == "g":
            encoded = value.encode()
            self.data += bytes([len(encoded)]) + encoded + b"\0"
        elif code == "v":
            self.write("g", value.signature)
            self.write(value.signature, value.value)
        elif code == "a":
            self._array(signature[1:], value)
        elif code in "({":
            for inner, item in zip(split_signature(signature[1:-1]), value, strict=True):
                self.write(inner, item)

    def _array(self, element: str, value: Any) -> None:
        self.data += b"\0\0\0\0"  # the length, patched below
        start_of_length = len(self.data) - 4
        self.align(_ALIGN[element[0]])  # padding before the first element is not counted
        start = len(self.data)
        items = value.items() if element[0] == "{" else value
        for item in items:
            self.write(element, item)
        struct.pack_into("<I", self.data, start_of_length, len(self.data) - start)


class _Reader:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def align(self, boundary: int) -> None:
        self.offset += -self.offset % boundary

    def read(self, signature: str) -> Any:
        code = signature[0]
        self.align(_ALIGN[code])
        if code in _FIXED:
            fmt, size = _FIXED[code]
            (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
            self.offset += size
            return bool(value) if code == "b" else value
        if code in "so":
            (length,) = struct.unpack_from("<I", self.data, self.offset)
            start = self.offset + 4
            self.offset = start + length + 1
            return self.data[start : start + length].decode()
        if code == "g":
            length = self.data[self.offset]
            start = self.offset + 1
            self.offset = start + length + 1
            return self.data[start : start + length].decode()
        if code == "v":
            inner = self.read("g")
            return Variant(inner, self.read(inner))
        if code == "a":
            return self._array(signature[1:])
        inner_types = split_signature(signature[1:-1])
        items = [self.read(inner) for inner in inner_types]
        return tuple(items)

    def _array(self, element: str) -> Any:
        (length,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        self.align(_ALIGN[element[0]])
        end = self.offset + length
        items = []
        while self.offset < end:
            items.append(self.read(element))
        return dict(items) if element[0] == "{" else items


def _encode(
    kind: int, serial: int, fields: dict[int, Any], signature: str, body: Sequence[Any], flags: int
) -> bytes:
    body_writer = _Writer()
    for inner, value in zip(split_signature(signature), body, strict=True):
        body_writer.write(inner, value)
    if signature:
        fields = {**fields, _SIGNATURE: signature}
    header = _Writer()
    header.data += struct.pack("<cBBBII", b"l", kind, flags, 1, len(body_writer.data), serial)
    header.write("a(yv)", [(code, Variant(_FIELD_TYPES[code], v)) for code, v in fields.items()])
    header.align(8)
    return bytes(header.data + body_writer.data)


def _decode(data: bytes, fds: list[int]) -> Message:
    if data[:1] != b"l":
        raise DBusError("sockd.BigEndian", "the peer sent a big-endian message")
    kind, _flags, _version, _body_length, serial = struct.unpack_from("<BBBII", data, 1)
    reader = _Reader(data, 12)
    fields = {code: variant.value for code, variant in reader.read("a(yv)")}
    reader.align(8)
    body = [reader.read(inner) for inner in split_signature(fields.get(_SIGNATURE, ""))]
    return Message(kind, serial, fields, body, fds)


def _message_length(head: bytes) -> int:
    """The whole length of the message whose first 16 bytes are ``head``."""
    body_length, _serial, fields_length = struct.unpack_from("<III", head, 4)
    length: int = 16 + fields_length + (-(16 + fields_length) % 8) + body_length
    return length


# The connection ------------------------------------------------------------------------------------


class Connection:
    """A direct D-Bus connection (a stream socket) with Unix fd passing."""

    def __init__(self, path: str = SYSTEMD_PRIVATE, timeout: float = 25.0) -> None:
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._serial = 0
        self._buffer = b""
        self._fds: list[int] = []
        self.signals: list[Message] = []
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            self._authenticate()
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _authenticate(self) -> None:
        # Pipelined, as sd-bus's own clients (systemctl) do: the whole exchange in one write, then
        # the two answers. (Waiting for each answer before sending BEGIN was seen to leave the
        # first call unanswered now and then.)
        uid = str(os.geteuid()).encode().hex().encode()
        self._sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n")
        if not self._line().startswith(b"OK "):
            raise DBusError(
                "sockd.AuthFailed", "the service manager refused EXTERNAL authentication"
            )
        if self._line() != b"AGREE_UNIX_FD":
            raise DBusError("sockd.NoFdPassing", "the service manager does not take descriptors")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(512)
            if not chunk:
                raise DBusError("sockd.Disconnected", "the service manager closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        fds: Sequence[int] = (),
        destination: str = "org.freedesktop.systemd1",
    ) -> list[Any]:
        """Call a method and return the reply's body; an error reply raises :class:`DBusError`.

        ``fds`` travel with the call (values of type ``h`` are indexes into them). Signals that
        arrive meanwhile are kept in :attr:`signals`.
        """
        self._serial += 1
        serial = self._serial
        fields: dict[int, Any] = {_PATH: path, _INTERFACE: interface, _MEMBER: member}
        fields[_DESTINATION] = destination
        if fds:
            fields[_UNIX_FDS] = len(fds)
        self._send(_encode(CALL, serial, fields, signature, body, 0), fds)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self.receive(deadline - time.monotonic())
            if message is None:
                raise DBusError("sockd.Timeout", f"no answer to {member} in {self.timeout:g} s")
            if message.kind == SIGNAL:
                self.signals.append(message)
                continue
            if message.reply_to != serial:
                _close(message.fds)
                continue
            if message.kind == ERROR:
                _close(message.fds)
                text = message.body[0] if message.body and isinstance(message.body[0], str) else ""
                raise DBusError(message.fields.get(_ERROR_NAME, "?"), text)
            _close(message.fds)  # no call made here is answered with descriptors
            return message.body

    def _send(self, data: bytes, fds: Sequence[int]) -> None:
        view = memoryview(data)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        deadline = time.monotonic() + self.timeout
        while view:
            try:
                sent = self._sock.sendmsg([view], ancillary if fds else [])
            except BlockingIOError:
                if not select.select([], [self._sock], [], max(0, deadline - time.monotonic()))[1]:
                    raise DBusError("sockd.Timeout", "the service manager does not read") from None
                continue
            fds = ()  # the descriptors go with the first byte only
            view = view[sent:]

    def receive(self, timeout: float | None) -> Message | None:
        """The next message, or None after ``timeout`` seconds (None waits for ever)."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if len(self._buffer) >= 16:
                length = _message_length(self._buffer)
                if length > MAX_MESSAGE:
                    raise DBusError("sockd.TooLarge", f"a message of {length} bytes")
                if len(self._buffer) >= length:
                    data, self._buffer = self._buffer[:length], self._buffer[length:]
                    count = _decode_unix_fds(data)
                    fds, self._fds = self._fds[:count], self._fds[count:]
                    return _decode(data, fds)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not select.select([self._sock], [], [], left)[0]:
                return None
            self._fill()

    def _fill(self) -> None:
        try:
            data, ancillary, _flags, _ = self._sock.recvmsg(65536, socket.CMSG_SPACE(4 * 16))
        except BlockingIOError:
            return
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(payload) // 4
                self._fds.extend(struct.unpack(f"{count}i", payload[: 4 * count]))
        if not data:
            raise DBusError("sockd.Disconnected", "the service manager closed the connection")
        self._buffer += data


def _decode_unix_fds(data: bytes) -> int:
    reader = _Reader(data, 12)
    fields = {code: variant.value for code, variant in reader.read("a(yv)")}
    count: int = fields.get(_UNIX_FDS, 0)
    return count


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
