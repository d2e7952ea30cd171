"""The client's side of a command on a terminal (``ns exec -t``): a pty, raw mode, the relay.

What ``ssh -t`` and ``machinectl shell`` do, with sockd in place of the remote end: this process
opens a pty (so the terminal is the caller's own, with the caller's permissions), sends its slave
with the request, and sockd makes it the controlling terminal of the command, which leads a
session on it. This side then puts the user's terminal in raw mode and copies bytes both ways; every
key, Ctrl-C and Ctrl-Z included, reaches the pty's line discipline inside, which is what makes job
control work there. A window-size change of the user's terminal is copied to the pty (the kernel
then sends SIGWINCH to the command's foreground job). SIGTERM or SIGHUP to this process hangs the
pty up, as a closing terminal does. The user's terminal modes come back on every way out, a
SIGKILL of this process included (see :class:`_Restorer`).
"""

import contextlib
import errno
import os
import selectors
import signal
import termios
import threading
import time
import tty
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sockctl._exec import handling

if TYPE_CHECKING:
    from sockctl._exec import NsProcess

HANGUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""What makes the relay hang the pty up, ending the command the way a closed terminal does."""
HANGUP_GRACE = 3.0
"""Seconds a hung-up command has to end before the connection is closed (sockd then kills it)."""
DRAIN_QUIET = 0.2
"""After the command ended: how long the pty may stay silent before the relay stops reading it.

The pty reports EIO once no process holds its slave; a background job that still does is not waited
for longer than this.
"""
QUIET_RETRY = 0.01
"""Seconds before the relay reads a pty again that reported EIO while its command runs."""
_CHUNK = 65536


def open_pty(like: int | None) -> tuple[int, int]:
    """A new pty as ``(master, slave)``, the slave set up like the terminal ``like`` if it is one.

    The modes (erase character, flow control, ...) and the window size are copied; a ``like`` that
    is not a terminal leaves the kernel's defaults (80x24 after the first resize, 0x0 before).
    """
    master, slave = os.openpty()
    if like is not None and os.isatty(like):
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(like))
        copy_window_size(like, master)
    return master, slave


def copy_window_size(terminal: int, master: int) -> None:
    """Give the pty of ``master`` the window size of ``terminal`` (which may not be a terminal)."""
    with contextlib.suppress(termios.error, OSError):
        termios.tcsetwinsize(master, termios.tcgetwinsize(terminal))


def relay(proc: "NsProcess", master: int, stdin: int, stdout: int) -> int:
    """Copy between ``stdin``/``stdout`` and the pty ``master`` until the command ends.

    Returns the command's returncode (``-N`` for signal N). Owns ``master`` and closes it.
    """
    with _Relay(proc, master, stdin, stdout) as session:
        return session.run()


class _Relay:
    def __init__(self, proc: "NsProcess", master: int, stdin: int, stdout: int) -> None:
        self.proc = proc
        self.master: int | None = master
        self.stdin = stdin
        self.stdout: int | None = stdout
        self.interactive = os.isatty(stdin)
        self.pending = b""  # keys read but not yet taken by the pty
        self.hangup_at: float | None = None
        self.quiet_until: float | None = None  # the pty said EIO while the command runs
        self.hangup_signal = 0
        self.selector = selectors.DefaultSelector()
        os.set_blocking(master, False)
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def __enter__(self) -> "_Relay":
        return self

    def __exit__(self, *_: object) -> None:
        self.selector.close()
        self._close_master()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def run(self) -> int:
        self.selector.register(self.master, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.selector.register(self.proc._exit_fd(), selectors.EVENT_READ)
        self.selector.register(self._wake_read, selectors.EVENT_READ)
        with contextlib.suppress(ValueError, PermissionError):  # a stdin epoll cannot watch
            self.selector.register(self.stdin, selectors.EVENT_READ)
        with self._signals(), _raw(self.stdin if self.interactive else None):
            while self.proc.poll() is None:
                if self.hangup_at is not None and time.monotonic() >= self.hangup_at:
                    self.proc.close()  # sockd kills what a hang-up did not end
                    return -self.hangup_signal
                self._listen_again()
                deadlines = [t for t in (self.hangup_at, self.quiet_until) if t is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for key, events in self.selector.select(timeout):
                    self._ready(key.fd, events)
            self._drain()
        return self.proc.returncode  # type: ignore[return-value]  # poll() saw it set

    def _ready(self, fd: int, events: int) -> None:
        if fd == self._wake_read:
            self._signalled()
        elif fd == self.master:
            if events & selectors.EVENT_WRITE:
                self._feed()
            if events & selectors.EVENT_READ:
                self._output()
        elif fd == self.stdin:
            self._input()
        # The command's connection: the loop's poll() reads the exit.

    def _input(self) -> None:
        try:
            data = os.read(self.stdin, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(self.stdin)
            if self.interactive or self.master is None:
                return
            # The end of piped input: an end-of-file for the pty's reader, as Ctrl-D at a line start.
            data = termios.tcgetattr(self.master)[6][termios.VEOF]
            data = data if isinstance(data, bytes) else bytes([data])
        self.pending += data
        self._feed()

    def _feed(self) -> None:
        if self.master is None:
            self.pending = b""
            return
        try:
            written = os.write(self.master, self.pending[:_CHUNK]) if self.pending else 0
        except BlockingIOError:
            written = 0
        except OSError:  # the pty hung up
            written = len(self.pending)
        self.pending = self.pending[written:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending else 0)
        if self.quiet_until is None:
            self.selector.modify(self.master, events)

    def _read_master(self) -> bytes | None:
        """What the pty has for us: None for nothing yet, ``b""`` for EIO (no slave, or see below)."""
        assert self.master is not None  # noqa: S101 -- callers read only while it is open
        try:
            return os.read(self.master, _CHUNK)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return b""

    def _output(self) -> bool:
        """Copy what the pty has for us; False once it has nothing more, ever (EIO: no slave)."""
        data = self._read_master()
        if data is None:
            return True
        if not data:
            self.selector.unregister(self.master)  # type: ignore[arg-type]  # read it, so open
            if self.proc.returncode is None:
                # EIO although the command still holds the slave was seen now and then right
                # after a burst of input (Linux 6.x): closing the master would hang the command
                # up (SIGHUP). Listen again shortly instead; after the exit, EIO means the end.
                self.quiet_until = time.monotonic() + QUIET_RETRY
                return True
            self._close_master()
            return False
        self._write_out(data)
        return True

    def _listen_again(self) -> None:
        if self.quiet_until is not None and time.monotonic() >= self.quiet_until:
            self.quiet_until = None
            if self.master is not None:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending else 0)
                self.selector.register(self.master, events)

    def _drain_once(self) -> bool:
        data = self._read_master()
        if data is None:
            return True
        if not data:
            self._close_master()
            return False
        self._write_out(data)
        return True

    def _write_out(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.stdout is not None:
            try:
                view = view[os.write(self.stdout, view) :]
            except BlockingIOError:
                selectors.DefaultSelector().select(0.01)
            except OSError:  # the reader went away: the command goes on, its output is dropped
                self.stdout = None

    def _drain(self) -> None:
        """After the exit: what the command wrote last is still on its way through the pty."""
        if self.master is None:
            return
        with contextlib.suppress(KeyError):
            self.selector.unregister(self.master)
        with selectors.DefaultSelector() as selector:
            selector.register(self.master, selectors.EVENT_READ)
            while self.master is not None and selector.select(DRAIN_QUIET):
                if not self._drain_once():
                    break

    def _signalled(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in os.read(self._wake_read, 64):
                if signum == signal.SIGWINCH and self.master is not None and self.interactive:
                    copy_window_size(self.stdin, self.master)
                elif signum == signal.SIGCONT and self.interactive:
                    # Stopped and continued from outside: the shell may have reset the modes.
                    _make_raw(self.stdin)
                    if self.master is not None:
                        copy_window_size(self.stdin, self.master)
                elif signum in HANGUP_SIGNALS and self.hangup_at is None:
                    self.hangup_signal = signum
                    self.hangup_at = time.monotonic() + HANGUP_GRACE
                    self._hang_up()
                elif signum in (signal.SIGINT, signal.SIGQUIT):
                    # Only without raw mode (stdin not a terminal): what a terminal would send.
                    self.proc.send_signal(signum)

    def _hang_up(self) -> None:
        if self.master is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.master)
        self._close_master()  # the kernel sends SIGHUP to the session on the pty

    def _close_master(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may handle signals: no resizes, no hang-up then
            return
        wake = self._wake_write

        def note(signum: int, _frame: object) -> None:
            with contextlib.suppress(BlockingIOError):
                os.write(wake, bytes([signum]))

        wanted = [signal.SIGWINCH, signal.SIGCONT, *HANGUP_SIGNALS, signal.SIGINT, signal.SIGQUIT]
        with handling(wanted, note):
            yield


@contextlib.contextmanager
def _raw(terminal: int | None) -> Iterator[None]:
    """The user's terminal in raw mode for the block, restored after it — or after a SIGKILL."""
    if terminal is None:
        yield
        return
    try:
        saved = termios.tcgetattr(terminal)
    except termios.error:
        yield
        return
    restorer = _Restorer(terminal, saved)
    try:
        _make_raw(terminal)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(terminal, termios.TCSADRAIN, saved)
        restorer.dismiss()


def _make_raw(terminal: int) -> None:
    with contextlib.suppress(termios.error):
        tty.setraw(terminal, termios.TCSADRAIN)


class _Restorer:
    """A child process that puts the terminal's modes back if this process dies in raw mode.

    Nothing can run in a process that gets SIGKILL, and a terminal left in raw mode looks dead to
    its user (no echo, no line editing, Ctrl-C does nothing). The child holds the read end of a pipe
    whose write end only this process has: at EOF without the "done" byte, this process is gone
    and the child restores the modes. It keeps no other descriptor (least of all the connection to
    sockd, which must close when this process dies, so that sockd ends the command).
    """

    _DONE = b"d"

    def __init__(self, terminal: int, saved: list[Any]) -> None:
        read_end, self._write_end = os.pipe2(os.O_CLOEXEC)
        with warnings.catch_warnings():
            # The child runs only termios and os calls, no locks: fork is safe despite threads.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._pid = os.fork()
        if self._pid == 0:  # pragma: no cover -- the child; its effect is tested from outside
            self._watch(terminal, saved, read_end)
        os.close(read_end)

    def _watch(self, terminal: int, saved: list[Any], read_end: int) -> None:
        try:
            for signum in signal.valid_signals():  # the parent's Python handlers are not ours
                if callable(signal.getsignal(signum)):
                    signal.signal(signum, signal.SIG_DFL)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGTSTP):
                signal.signal(signum, signal.SIG_IGN)
            # Every descriptor but the two: between -1 and the first, the first and the second,
            # and above. (An empty range must not reach os.closerange: Python 3.11 turns
            # closerange(0, 0) into close_range(0, ~0), which closes everything.)
            keep = sorted({terminal, read_end})
            for low, high in zip([-1, *keep], [*keep, os.sysconf("SC_OPEN_MAX")], strict=True):
                if low + 1 < high:
                    os.closerange(low + 1, high)
            done = b""
            while chunk := os.read(read_end, 1):
                done += chunk
            if done != self._DONE:
                termios.tcsetattr(terminal, termios.TCSADRAIN, saved)
        finally:
            os._exit(0)

    def dismiss(self) -> None:
        """This process restored the modes itself: the child ends without touching them."""
        with contextlib.suppress(OSError):
            os.write(self._write_end, self._DONE)
        os.close(self._write_end)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
