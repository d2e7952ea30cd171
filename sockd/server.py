"""The listening side: one event loop for all connections, a thread per blocking request.

Design, measured on 2 vCPUs (bench/transport.py): a thread per connection spends most of its time
handing the GIL between threads once 8 clients are busy (16 k round trips/s); one epoll loop that
reads every connection and answers cheap requests in place does not. So:

- the main thread runs a selector over the listening socket, a wake-up socket (signals, finished
  workers) and every idle connection, all non-blocking;
- a request is parsed, validated and authorized on the loop (``Daemon.prepare``: cheap, never
  blocks); handlers marked ``inline`` in the dispatch table (ping) and all refusals are answered
  right there;
- any other request takes its connection off the loop and runs on a worker thread, which sends
  the reply (blocking, bounded by SO_SNDTIMEO) and hands the connection back. Requests of one
  connection are therefore answered in order. The pool has a thread for every connection the
  limits admit, so a slow handler or a client that does not read delays nobody else; threads are
  reused (a fresh thread per request cost ~80 us and let RSS creep up through malloc arenas);
- silent connections are closed after ``idle_timeout``; peer credentials are read once, at accept.
"""

import collections
import contextlib
import errno
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field

from sockctl import _wire
from sockctl.errors import RequestError, TooManyConnections
from sockd import linux
from sockd.config import LimitsConfig
from sockd.daemon import Daemon, Message, Prepared
from sockd.log import Logger
from sockd.policy import Peer

_TRIM_AFTER = 1.0
"""Seconds without worker activity before free heap memory is handed back."""

Notify = Callable[[str], None]


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    peer: Peer
    last_active: float
    worker: Future[None] | None = field(default=None, repr=False)


class Server:
    def __init__(
        self,
        daemon: Daemon,
        listener: socket.socket,
        limits: Callable[[], LimitsConfig],
        log: Logger,
        notify: Notify,
        drain_timeout: float = 10.0,
    ) -> None:
        self.daemon = daemon
        self.listener = listener
        self.limits = limits
        self.log = log
        self.notify = notify
        self.drain_timeout = drain_timeout
        self.reload: Callable[[], None] = lambda: None
        self._selector = selectors.DefaultSelector()
        self._connections: set[_Connection] = set()
        self._per_uid: dict[int, int] = {}
        self._returned: collections.deque[_Connection | None] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._last_activity = time.monotonic()
        # One descriptor kept in reserve: out of descriptors (EMFILE), it is given up for a moment
        # to accept a waiting connection and refuse it by name, instead of leaving it pending and
        # the listener readable (which made the loop spin and flood the log).
        self._reserve: int | None = _open_reserve()
        self._fd_warning_at = -1e9
        self._accept_paused = False
        self._worked_at: float | None = None
        """When a request last came in or a worker last finished; None once trimmed since."""
        # One thread per admissible connection at most: each connection has one request in flight.
        self._pool = ThreadPoolExecutor(
            max_workers=limits().max_connections + 1, thread_name_prefix="sockd-req"
        )

    # Main loop ------------------------------------------------------------------------------------

    def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Serve until SIGTERM/SIGINT (or idle exit), then drain. SIGHUP calls ``self.reload``.

        ``ready`` is called once the signal handlers are in place, so that whoever it tells (the
        log, systemd's READY=1) can stop the daemon from then on and get a clean exit, not death
        by the default SIGTERM action."""
        for sock in (self._wake_r, self._wake_w, self.listener):
            sock.setblocking(False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        ready()
        watchdog = _watchdog_interval()
        next_ping = next_sweep = time.monotonic()
        try:
            while not self._stopping:
                timeout = 0.5 if watchdog is None else min(0.5, watchdog)
                accept = False
                for key, _ in self._selector.select(timeout):
                    if key.data == "accept":
                        accept = True
                    elif key.data == "wake":
                        self._wake()
                    else:
                        self._readable(key.data)
                if accept:
                    # Last: connections whose clients hung up this round are forgotten first, so
                    # that they do not count against the limits of the ones waiting to be admitted.
                    self._accept()
                now = time.monotonic()
                if watchdog is not None and now >= next_ping:
                    self.notify("WATCHDOG=1")
                    next_ping = now + watchdog
                if now >= next_sweep:
                    if self._accept_paused:
                        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
                        self._accept_paused = False
                    self._sweep_idle(now)
                    self._maybe_idle_exit(now)
                    self._maybe_trim(now)
                    next_sweep = now + 0.25
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._drain()

    def stop(self) -> None:
        self._stopping = True

    def _wake(self) -> None:
        """Signals arrive as their numbers; a zero byte means a worker handed a connection back."""
        try:
            received = self._wake_r.recv(4096)
        except BlockingIOError:
            received = b""
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.log.info(f"received {signal.Signals(signum).name}, draining")
                self.notify("STOPPING=1\nSTATUS=Stopping: draining requests in flight")
                self.stop()
            elif signum == signal.SIGHUP:
                self.reload()
        while self._returned:
            conn = self._returned.popleft()
            if conn is None:
                continue
            conn.worker = None
            self._worked_at = time.monotonic()
            if self._stopping:
                self._forget(conn)
            else:
                conn.sock.setblocking(False)
                conn.last_active = time.monotonic()
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _sweep_idle(self, now: float) -> None:
        idle_timeout = self.limits().idle_timeout
        for conn in list(self._connections):
            if conn.worker is None and now - conn.last_active > idle_timeout:
                self._forget(conn)

    def _maybe_trim(self, now: float) -> None:
        """A second after the last request came in or finished, hand free heap memory back.

        Once per burst of work (a request, a listing, a storm of clients), not while it lasts.
        """
        if self._worked_at is not None and now - self._worked_at >= _TRIM_AFTER:
            linux.trim_heap()
            self._worked_at = None

    def _maybe_idle_exit(self, now: float) -> None:
        idle_exit = self.limits().idle_exit
        if self._connections:
            self._last_activity = now
        elif idle_exit and now - self._last_activity >= idle_exit:
            self.log.info(f"no clients for {idle_exit:g} s, exiting (socket activation restarts)")
            self.notify("STOPPING=1\nSTATUS=Idle exit")
            self.stop()

    def _drain(self) -> None:
        """Let requests in flight finish (bounded), close every connection."""
        self.daemon.end_sessions()  # ns.exec sessions would otherwise last as long as their command
        in_flight = [c.worker for c in self._connections if c.worker is not None]
        wait_all(in_flight, timeout=self.drain_timeout)
        busy = [c for c in self._connections if c.worker is not None and not c.worker.done()]
        if busy:
            self.log.warning(f"{len(busy)} requests did not finish within {self.drain_timeout:g} s")
        for conn in list(self._connections):
            if conn not in busy:
                self._forget(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # Connections ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        # A burst, but let the others have a turn; and no more than there is room for, so that
        # a burst of clients that connect and leave at once (the limit counts them until their
        # hang-up is read) cannot crowd out a patient client queued behind them.
        room = self.limits().max_connections - len(self._connections)
        for _ in range(max(1, min(64, room))):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._shed(exc):
                    continue
                # Keep serving the connections we have; new ones wait a moment (a listener left
                # registered while accept fails would make the loop spin).
                self._warn_fds(f"accept failed: {exc.strerror}")
                self._selector.unregister(self.listener)
                self._accept_paused = True
                return
            self._admit(sock)

    def _shed(self, exc: OSError) -> bool:
        """Out of descriptors: accept one waiting connection on the reserve and refuse it by name."""
        self._warn_fds(
            f"out of file descriptors ({exc.strerror}): refusing new connections with "
            f"too_many_connections; raise LimitNOFILE= or lower limits.max_connections"
        )
        if self._reserve is None:
            self._reserve = _open_reserve()
            return False
        os.close(self._reserve)
        self._reserve = None
        try:
            sock: socket.socket | None = self.listener.accept()[0]
        except OSError:
            sock = None
        if sock is not None:
            _refuse_out_of_fds(sock)
        self._reserve = _open_reserve()
        return sock is not None

    def _warn_fds(self, message: str) -> None:
        """At most one such error every 10 s: a flood of connections must not flood the log."""
        now = time.monotonic()
        if now - self._fd_warning_at >= 10:
            self._fd_warning_at = now
            self.log.error(message)

    def _admit(self, sock: socket.socket) -> None:
        try:
            creds = linux.peer_credentials(sock)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # no descriptor left for its pidfd
                self._warn_fds(f"out of file descriptors ({exc.strerror}) identifying a client")
                _refuse_out_of_fds(sock)
                return
            self.log.debug(f"peer vanished before it could be identified: {exc.strerror}")
            sock.close()
            return
        peer = Peer(creds)
        refusal = self._refusal(peer)
        if refusal is not None:
            self.log.warning(refusal.message, SOCKD_PEER_UID=peer.uid, SOCKD_PEER_PID=peer.pid)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                _wire.send(sock, Daemon.error_reply(refusal))
            _close(sock, peer)
            return
        limits = self.limits()
        sock.setblocking(False)
        _set_timeout(sock, socket.SO_SNDTIMEO, limits.send_timeout)
        conn = _Connection(sock, peer, time.monotonic())
        self._connections.add(conn)
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        self.daemon.stats.connected(+1)
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _refusal(self, peer: Peer) -> RequestError | None:
        limits = self.limits()
        if len(self._connections) >= limits.max_connections:
            return TooManyConnections(
                f"sockd serves {limits.max_connections} connections already; try again later",
                details={"limit": limits.max_connections},
            )
        held = self._per_uid.get(peer.uid, 0)
        if not peer.root and held >= limits.max_connections_per_uid:
            return TooManyConnections(
                f"uid {peer.uid} has {held} connections open, the limit is "
                f"{limits.max_connections_per_uid}; close some first",
                details={"limit": limits.max_connections_per_uid},
            )
        return None

    def _forget(self, conn: _Connection) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        if conn in self._connections:
            self._connections.discard(conn)
            self._per_uid[conn.peer.uid] -= 1
            if not self._per_uid[conn.peer.uid]:
                del self._per_uid[conn.peer.uid]
            self.daemon.stats.connected(-1)
        _close(conn.sock, conn.peer)

    def _readable(self, conn: _Connection) -> None:
        try:
            data, fds = _wire.recv(conn.sock)
        except BlockingIOError:
            return
        except RequestError as exc:  # too large, too many fds: answer, keep the connection
            self._reply(conn, iter([Message(Daemon.error_reply(exc))]))
            return
        except OSError:
            self._forget(conn)
            return
        if not data:
            # The end of the stream, or an empty datagram (SEQPACKET cannot tell them apart): either
            # way the connection goes, and descriptors sent with an empty datagram go with it.
            _wire.close_all(fds)
            self._forget(conn)
            return
        conn.last_active = self._worked_at = time.monotonic()
        prepared = self.daemon.prepare(conn.peer, data, fds)
        if prepared.inline:
            self._reply(conn, self.daemon.execute(conn.peer, prepared))
        else:
            self._hand_to_worker(conn, prepared)

    def _reply(self, conn: _Connection, replies: Iterator[Message]) -> None:
        """Send replies without blocking the loop; a full socket buffer moves the rest to a worker."""
        for reply in replies:
            try:
                _wire.send(conn.sock, reply.payload, reply.fds)
            except BlockingIOError:
                self._selector.unregister(conn.sock)
                self._start_worker(conn, self._finish_sending, [reply], replies)
                return
            except OSError:
                self._forget(conn)
                return

    def _hand_to_worker(self, conn: _Connection, prepared: Prepared) -> None:
        self._selector.unregister(conn.sock)
        self._start_worker(conn, self._work, prepared)

    def _start_worker(self, conn: _Connection, target: Callable[..., None], *args: object) -> None:
        conn.sock.setblocking(True)  # SO_SNDTIMEO still bounds every send
        conn.worker = self._pool.submit(target, conn, *args)

    def _work(self, conn: _Connection, prepared: Prepared) -> None:
        # The connection is off the loop: a session (ns.exec) reads its follow-ups from it. closing():
        # replies that could not be sent still run the handler's cleanup now, not at collection.
        with contextlib.closing(self.daemon.execute(conn.peer, prepared, conn.sock)) as replies:
            self._finish_sending(conn, [], replies)

    def _finish_sending(
        self, conn: _Connection, first: list[Message], rest: Iterable[Message]
    ) -> None:
        """Worker side: send everything, then give the connection back to the loop (or drop it)."""
        try:
            for reply in (*first, *rest) if first else rest:
                _wire.send(conn.sock, reply.payload, reply.fds)
        except BlockingIOError:  # SO_SNDTIMEO expired: the client does not read its replies
            self.log.warning(
                "client does not read its replies; dropping the connection",
                SOCKD_PEER_UID=conn.peer.uid,
                SOCKD_PEER_PID=conn.peer.pid,
            )
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # the loop sees EOF and forgets it
        self._returned.append(conn)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")


def _refuse_out_of_fds(sock: socket.socket) -> None:
    """Tell a client, by name, that the daemon has no descriptor left for it; close it."""
    with sock, contextlib.suppress(OSError):
        sock.setblocking(False)
        refusal = TooManyConnections("sockd has run out of file descriptors; try again later")
        _wire.send(sock, Daemon.error_reply(refusal))


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _close(sock: socket.socket, peer: Peer) -> None:
    sock.close()
    if peer.creds.pidfd is not None:
        os.close(peer.creds.pidfd)


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    whole = int(seconds)
    sock.setsockopt(
        socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1e6))
    )


def _watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec=, if the watchdog is on for this process (sd_watchdog_enabled)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2_000_000)
    except ValueError:
        return None
