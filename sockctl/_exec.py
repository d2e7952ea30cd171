"""A command running inside a namespace through sockd (``ns.exec``): a Popen-like handle."""

import contextlib
import io
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import termios
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType, TracebackType
from typing import IO, Any, Self

from sockctl import _wire
from sockctl._reply import decode, error_from, pending_error, read_message
from sockctl.errors import DaemonUnavailable, InvalidRequest, ProtocolError, SockdError
from sockctl.protocol import (
    PROTOCOL_VERSION,
    ExecExit,
    ExecSignalRequest,
    ExecStarted,
    NsExecRequest,
    to_wire,
)

PIPE = subprocess.PIPE
"""As for :mod:`subprocess`: give the command a pipe, readable/writable through the handle."""
DEVNULL = subprocess.DEVNULL
"""As for :mod:`subprocess`: connect the stream to /dev/null."""

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
"""What ``sockctl ns exec`` passes on to the command: what a terminal, a supervisor or kill send."""

Stdio = int | IO[Any] | None
"""None (inherit this process's), PIPE, DEVNULL, a descriptor or an object with ``fileno()``."""


class NsProcess:
    """A command started by :meth:`sockctl.Client.popen`, with the interface of :class:`subprocess.Popen`.

    ``pid`` is the command's pid as the daemon sees it (the host's pid namespace). ``returncode``
    is None while it runs, then its exit code or ``-N`` after a death by signal N; ``exit`` holds
    the full :class:`~sockctl.protocol.ExecExit`. Closing the handle before the command ended
    kills it (sockd kills the command of a connection that goes away).
    """

    def __init__(self, sock: socket.socket, args: list[str], timeout: float | None) -> None:
        """A handle on the dedicated connection ``sock``; :meth:`launch` starts the command.

        Use :meth:`sockctl.Client.popen` rather than this.
        """
        self._sock: socket.socket | None = sock
        self._timeout = timeout
        # Reentrant: the signal handler of forwarding() runs on this thread, maybe inside a locked block.
        self._lock = threading.RLock()
        self._requested = False
        self._pending: list[int] = []
        self.args = args
        self.admin = False
        """Run with CAP_NET_ADMIN/CAP_NET_RAW over an ``--admin`` namespace (set before launch)."""
        self.pid = 0
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self.pty: IO[bytes] | None = None
        """With ``tty=True``: the pty's master, to read the command's output and type its input."""
        self.exit: ExecExit | None = None
        self._encoding: tuple[str, str] | None = None  # (encoding, errors) in text mode

    def launch(
        self,
        name: str,
        *,
        env: Mapping[str, str] | None,
        cwd: str | os.PathLike[str] | None,
        stdio: tuple[Stdio, Stdio, Stdio],
        tty: bool = False,
        text: tuple[str, str] | None = None,
    ) -> None:
        """Send the ``ns.exec`` request and wait until the command runs (or raise why not).

        ``tty``: ``stdio[0]`` is a pty's slave, to become the command's controlling terminal.
        ``text``: (encoding, errors) to wrap the pipes kept here in text streams.
        """
        self._encoding = text
        with _Streams(stdio) as streams:
            request = NsExecRequest(
                name=name,
                argv=[_text(arg, "argv") for arg in self.args],
                env=_utf8_only(os.environ if env is None else env),
                cwd=_text(os.fspath(cwd) if cwd is not None else _cwd(), "cwd"),
                umask=_umask(),
                stdin=streams.index[0],
                stdout=streams.index[1],
                stderr=streams.index[2],
                tty=tty,
                admin=self.admin,
            )
            with self._lock:
                self._send(request, streams.fds)
                self._requested = True
                for signum in self._pending:  # received before the request went out
                    self._send(ExecSignalRequest(signal=signum))
                self._pending.clear()
            streams.sent()
            message = _next(self._connection(), self._timeout)
            if message is None:
                raise DaemonUnavailable("sockd closed the connection before the command started")
            items = message.get("items")
            if not message.get("more") or not isinstance(items, list) or len(items) != 1:
                raise ProtocolError("sockd's first answer to ns.exec is not the start event")
            started: ExecStarted = decode(ExecStarted, items[0])
            self.pid = started.pid
            kept = streams.keep()
            if text is not None:
                kept = tuple(_text_stream(stream, *text) for stream in kept)  # type: ignore[assignment]
            self.stdin, self.stdout, self.stderr = kept

    # subprocess.Popen's interface ------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return None if self.exit is None else self.exit.returncode

    def poll(self) -> int | None:
        """The returncode if the command has ended, else None; does not block."""
        self._read_exit(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command to end and return its returncode.

        Raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds (the command goes on).
        """
        if not self._read_exit(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.exit is not None  # noqa: S101 -- _read_exit returned True
        return self.exit.returncode

    def communicate(
        self,
        input: bytes | str | None = None,  # noqa: A002 -- subprocess.Popen.communicate's name
        timeout: float | None = None,
    ) -> tuple[Any, Any]:
        """Send ``input`` to stdin (then close it), read stdout and stderr to the end, wait.

        In text mode (``text=True`` at :meth:`sockctl.Client.popen`) ``input`` and the results are
        ``str``, with newlines translated as by :mod:`subprocess`; else ``bytes``.
        """
        data = input.encode(*self._encoding) if isinstance(input, str) and self._encoding else input
        if isinstance(data, str):
            raise TypeError("input must be bytes unless the command was started with text=True")
        out = _drain(self.stdin, data, self.stdout, self.stderr, timeout, self.args)
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait(timeout)
        if self._encoding is None:
            return out
        encoding, errors = self._encoding
        return tuple(None if raw is None else _decoded(raw, encoding, errors) for raw in out)  # type: ignore[return-value]

    def resize(self, rows: int, columns: int) -> None:
        """Set the window size of the command's terminal (``tty=True``); it gets SIGWINCH."""
        if self.pty is None:
            raise ValueError("resize() needs a command started with tty=True")
        termios.tcsetwinsize(self.pty.fileno(), (rows, columns))

    def send_signal(self, signum: int) -> None:
        """Deliver ``signum`` to the command's process group; nothing once it has ended."""
        with self._lock:
            if self.exit is not None or self._sock is None:
                return
            if not self._requested:
                self._pending.append(signum)  # launch() sends it right after the request
                return
            self._send(ExecSignalRequest(signal=signum))

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    @contextlib.contextmanager
    def forwarding(self, signals: Iterable[int]) -> Iterator[None]:
        """Pass ``signals`` received by this process on to the command, while in the block.

        May be entered before :meth:`launch`: signals received until the request is sent are sent
        right after it. Only the main thread may set signal handlers; elsewhere this does nothing.
        """
        wanted = list(signals)
        if not wanted or threading.current_thread() is not threading.main_thread():
            yield
            return

        def forward(signum: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(SockdError):  # the daemon went away: wait() reports it
                self.send_signal(signum)

        with handling(wanted, forward):
            yield

    def close(self) -> None:
        """Close the pipes and the connection; a command still running is killed by sockd."""
        for stream in (self.stdin, self.stdout, self.stderr, self.pty):
            if stream is not None:
                stream.close()
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Like Popen: close our ends of the pipes and wait; but an exception (Ctrl-C) does not wait:
        # closing the connection makes sockd kill the command.
        if self.stdin is not None:
            self.stdin.close()
        try:
            if exc_type is None:
                self.wait()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<NsProcess pid={self.pid} returncode={self.returncode} args={self.args!r}>"

    # The connection ---------------------------------------------------------------------------------

    def _exit_fd(self) -> int:
        """The descriptor that becomes readable when the command's end (or an error) arrives."""
        return self._connection().fileno()

    def _connection(self) -> socket.socket:
        if self._sock is None:
            raise DaemonUnavailable("the connection of this command is closed")
        return self._sock

    def _send(
        self, request: NsExecRequest | ExecSignalRequest, fds: list[int] | None = None
    ) -> None:
        payload = {"proto": PROTOCOL_VERSION, **to_wire(request)}
        sock = self._connection()
        try:
            _wire.send(sock, json.dumps(payload).encode(), fds or ())
        except (BrokenPipeError, ConnectionResetError) as exc:
            # Refused at accept (a connection limit): the reason is waiting to be read.
            refusal = pending_error(sock)
            raise refusal or DaemonUnavailable(f"sockd closed the connection: {exc}") from exc
        except OSError as exc:
            raise DaemonUnavailable(f"cannot send to sockd: {exc}") from exc

    def _read_exit(self, timeout: float | None) -> bool:
        if self.exit is not None:
            return True
        sock = self._connection()
        if not _readable(sock, timeout):
            return False
        message = _next(sock, self._timeout)
        if message is None:
            raise DaemonUnavailable("sockd closed the connection while the command ran")
        if message.get("more"):
            raise ProtocolError("sockd sent an unexpected event while the command ran")
        self.exit = decode(ExecExit, message.get("result"))
        with self._lock:
            sock.close()  # the session is over; late signals have nowhere to go
            self._sock = None
        return True


@contextlib.contextmanager
def handling(signals: Iterable[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for ``signals`` within the block; the previous handlers back after it."""
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


class _Streams:
    """The descriptors a request sends for stdin/stdout/stderr, and the pipe ends kept here."""

    def __init__(self, stdio: tuple[Stdio, Stdio, Stdio]) -> None:
        self.fds: list[int] = []
        self.index: list[int | None] = []
        self._send_and_close: list[int] = []
        self._kept: list[IO[bytes] | None] = []
        for number, spec in enumerate(stdio):
            self._add(number, spec)

    def _add(self, number: int, spec: Stdio) -> None:
        kept: IO[bytes] | None = None
        if spec is None:
            fd = number if _valid(number) else None
        elif spec == DEVNULL:
            fd = None
        elif spec == PIPE:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            ours, theirs = (write_end, read_end) if number == 0 else (read_end, write_end)
            kept = open(ours, "wb" if number == 0 else "rb")  # noqa: SIM115 -- the handle owns it
            self._send_and_close.append(theirs)
            fd = theirs
        elif isinstance(spec, int):
            fd = spec
        else:
            fd = spec.fileno()
        self._kept.append(kept)
        self.index.append(None if fd is None else len(self.fds))
        if fd is not None:
            self.fds.append(fd)

    def sent(self) -> None:
        """The daemon has its copies: close the command's ends of our pipes."""
        _wire.close_all(self._send_and_close)
        self._send_and_close = []

    def keep(self) -> tuple[IO[bytes] | None, IO[bytes] | None, IO[bytes] | None]:
        kept = self._kept
        self._kept = []
        return kept[0], kept[1], kept[2]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.sent()
        for stream in self._kept:  # only left when starting failed
            if stream is not None:
                stream.close()


def _text_stream(stream: IO[bytes] | None, encoding: str, errors: str) -> IO[Any] | None:
    if stream is None:
        return None
    return io.TextIOWrapper(stream, encoding=encoding, errors=errors, write_through=True)


def _decoded(data: bytes, encoding: str, errors: str) -> str:
    # As subprocess's text mode: universal newlines.
    return data.decode(encoding, errors).replace("\r\n", "\n").replace("\r", "\n")


def text_encoding(encoding: str | None, errors: str | None) -> tuple[str, str]:
    """subprocess's choice for ``text=True``: the locale's encoding unless one is given."""
    return encoding or locale.getpreferredencoding(False), errors or "strict"


def _next(sock: socket.socket, timeout: float | None) -> dict[str, Any] | None:
    message, fds = read_message(sock, timeout)
    _wire.close_all(fds)  # ns.exec's messages carry none
    if message is not None and not message.get("ok"):
        raise error_from(message)
    return message


def _readable(sock: socket.socket, timeout: float | None) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _drain(
    stdin: IO[Any] | None,
    data: bytes | None,
    stdout: IO[Any] | None,
    stderr: IO[Any] | None,
    timeout: float | None,
    args: list[str],
) -> tuple[bytes | None, bytes | None]:
    """Feed stdin and collect stdout/stderr without deadlocking on full pipes."""
    chunks: dict[int, list[bytes]] = {}
    with selectors.DefaultSelector() as selector:
        feeder = _Feeder(stdin, data or b"", selector)
        for stream in (stdout, stderr):
            if stream is not None:
                chunks[stream.fileno()] = []
                selector.register(stream.fileno(), selectors.EVENT_READ)
        while selector.get_map():
            ready = selector.select(timeout)
            if not ready:
                raise subprocess.TimeoutExpired(args, timeout or 0.0)
            for key, _ in ready:
                if key.events & selectors.EVENT_WRITE:
                    feeder.write()
                elif block := os.read(key.fd, 65536):
                    chunks[key.fd].append(block)
                else:
                    selector.unregister(key.fd)

    def joined(stream: IO[Any] | None) -> bytes | None:
        return None if stream is None else b"".join(chunks[stream.fileno()])

    return joined(stdout), joined(stderr)


class _Feeder:
    """Writes ``data`` to a non-blocking stdin as the pipe takes it, then closes it."""

    def __init__(
        self, stdin: IO[Any] | None, data: bytes, selector: selectors.BaseSelector
    ) -> None:
        self.stdin = stdin
        self.pending = memoryview(data)
        self.selector = selector
        if stdin is None:
            return
        if not self.pending:
            stdin.close()
            return
        os.set_blocking(stdin.fileno(), False)
        selector.register(stdin.fileno(), selectors.EVENT_WRITE)

    def write(self) -> None:
        assert self.stdin is not None  # noqa: S101 -- registered only with a stdin
        try:
            self.pending = self.pending[os.write(self.stdin.fileno(), self.pending[:65536]) :]
        except BrokenPipeError:
            self.pending = self.pending[:0]  # the command stopped reading: like Popen, go on
        if not self.pending:
            self.selector.unregister(self.stdin.fileno())
            self.stdin.close()


def _text(value: str, field: str) -> str:
    """``value`` if the wire (JSON, UTF-8) can carry it; a named error if not."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{field}: {value!r} is not valid UTF-8 and cannot be sent to sockd", field=field
        ) from None
    return value


def _utf8_only(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that the wire can carry: names and values that are valid UTF-8.

    os.environ keeps undecodable bytes as lone surrogates; JSON text cannot carry them, and one such
    variable in a user's environment should not make every command fail. They are left out.
    """
    carried = {}
    for key, value in env.items():
        try:
            key.encode()
            value.encode()
        except UnicodeEncodeError:
            continue
        carried[key] = value
    return carried


def _valid(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # deleted under us: the command starts at the root, as the daemon would
        return "/"


def _umask() -> int:
    """This process's umask, read without changing it (/proc/self/status, Linux >= 4.7)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as status:
            line = next(line for line in status if line.startswith("Umask:"))
        return int(line.split()[1], 8)
    return 0o022
