"""``ns.exec``: run a command inside a named namespace as the caller.

What people reach for ``sudo ip netns exec``, nsenter or setuid wrappers for, with the caller keeping
its own identity. The steps, each where it belongs:

1. here, as root: check that the caller may enter the namespace (its owner, root, or a member of
   ``policy.exec_groups``) and take the caller's stdio descriptors from the request;
2. on a short-lived thread (:mod:`sockd.enter`): the namespace's environment as ``ip netns exec``
   builds it, no_new_privs, the caller's filesystem identity, and then the caller's working
   directory — entered with the caller's permissions, so a directory the caller cannot enter is
   refused instead of being entered by root;
3. in the child, before exec (subprocess's C code: no Python runs after the fork of this threaded
   daemon): a new session, the umask, setgroups → setregid → setreuid to the caller's *kernel*
   credentials (SO_PEERCRED and SO_PEERGROUPS, never the payload), then execve of ``argv`` with
   exactly the client's environment (no shell);
4. here again: report the start, then wait on a pidfd and on the connection: forward ``exec.signal``
   to the command's process group, kill the group if the client goes away, reap, report the exit.
"""

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Generator
from functools import partial

from sockctl.errors import InternalError, InvalidRequest, NotFound, PermissionDenied, RequestError
from sockctl.protocol import ExecExit, ExecStarted, NsExecRequest
from sockd import enter, linux
from sockd.dispatch import Call, Channel, Session
from sockd.log import Logger
from sockd.netns import Namespaces
from sockd.policy import Peer, Policy

STOP_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL for commands still running when the daemon stops."""

_STDIO = ("stdin", "stdout", "stderr")


class Executor:
    """Runs ``ns.exec`` sessions; one per request, each on its connection's thread."""

    def __init__(
        self,
        namespaces: Namespaces,
        policy: Callable[[], Policy],
        log: Logger,
        *,
        etc_netns: str = enter.DEFAULT_ETC_NETNS,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.namespaces = namespaces
        self.policy = policy
        self.log = log
        self.etc_netns = etc_netns
        self.stop_grace = stop_grace
        # Readable for good once stop() wrote to it: every session polls it.
        self._stopping = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def session(self, peer: Peer, request: NsExecRequest) -> Session:
        return Session(partial(self._run, peer, request))

    def stop(self) -> None:
        """Terminate every running command (SIGTERM, SIGKILL after ``stop_grace``)."""
        os.eventfd_write(self._stopping, 1)

    def _run(
        self, peer: Peer, request: NsExecRequest, call: Call
    ) -> Generator[ExecStarted, None, ExecExit]:
        if not request.argv[0]:
            raise InvalidRequest("argv[0] is empty: name the command to run", field="argv")
        stdio = tuple(call.fds.get(getattr(request, field), field) for field in _STDIO)
        child = self._start(peer, request, stdio)
        try:
            call.fds.close()  # the command holds its own copies; ours would only keep pipes open
            self.log.info(
                f"ns.exec in {request.name} by uid {peer.uid}: {request.argv[0]} is pid {child.pid}",
                SOCKD_NS=request.name,
                SOCKD_PEER_UID=peer.uid,
                SOCKD_CHILD_PID=child.pid,
            )
            yield ExecStarted(pid=child.pid)
            result = self._supervise(child, call.channel, request.name)
        finally:
            if child.close():  # the session ended early: client gone, or a bad follow-up
                self.log.info(
                    f"ns.exec in {request.name}: killed pid {child.pid}, its session ended first",
                    SOCKD_NS=request.name,
                    SOCKD_CHILD_PID=child.pid,
                )
        self.log.debug(
            f"ns.exec pid {child.pid} ended: {result.exit_code=} {result.signal=}",
            SOCKD_NS=request.name,
            SOCKD_CHILD_PID=child.pid,
        )
        return result

    def _start(self, peer: Peer, request: NsExecRequest, stdio: tuple[int | None, ...]) -> "_Child":
        netns_fd = self.namespaces.open_for_entry(peer, request.name)
        uts_fd = None
        try:
            uts_fd = self._open_uts(request.name)
            work = partial(_spawn, peer, request, netns_fd, uts_fd, stdio, self.etc_netns)
            process, warnings = linux.run_in_thread(work)
        finally:
            os.close(netns_fd)
            if uts_fd is not None:
                os.close(uts_fd)
        child = _Child(process)
        for warning in warnings:
            self.log.warning(f"ns.exec in {request.name}: {warning}", SOCKD_NS=request.name)
        return child

    def _open_uts(self, name: str) -> int | None:
        path = self.namespaces.uts_path(name)  # kept by `ns create --hostname`
        if not linux.is_namespace_mount(path):
            return None  # the namespace has no hostname of its own
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _supervise(self, child: "_Child", channel: Channel, name: str) -> ExecExit:
        poller = select.poll()
        poller.register(child.pidfd, select.POLLIN)
        poller.register(channel.fileno(), select.POLLIN)
        poller.register(self._stopping, select.POLLIN)
        kill_at: float | None = None
        while True:
            timeout = None if kill_at is None else max(0, int((kill_at - time.monotonic()) * 1000))
            ready = {fd for fd, _ in poller.poll(timeout)}
            if child.pidfd in ready:
                return child.reap()
            if channel.fileno() in ready:
                follow_up = channel.receive()
                if follow_up is None:
                    poller.unregister(channel.fileno())
                    self.log.info(
                        f"the client of ns.exec in {name} went away: killing pid {child.pid}",
                        SOCKD_NS=name,
                        SOCKD_CHILD_PID=child.pid,
                    )
                    child.signal(signal.SIGKILL)
                else:
                    child.signal(follow_up.signal)
            if self._stopping in ready:
                poller.unregister(self._stopping)
                child.signal(signal.SIGTERM)
                kill_at = time.monotonic() + self.stop_grace
            if kill_at is not None and time.monotonic() >= kill_at:
                child.signal(signal.SIGKILL)
                kill_at = None


def _spawn(
    peer: Peer,
    request: NsExecRequest,
    netns_fd: int,
    uts_fd: int | None,
    stdio: tuple[int | None, ...],
    etc_netns: str,
) -> tuple["subprocess.Popen[bytes]", list[str]]:
    """On a short-lived thread: enter, restrict, become the caller on the filesystem, start."""
    try:
        warnings = enter.enter_netns_environment(
            request.name, netns_fd, uts_fd=uts_fd, etc_netns=etc_netns
        )
        enter.restrict_exec()
        enter.adopt_fs_identity(peer.uid, peer.creds.gid, peer.creds.groups)
    except OSError as exc:
        raise InternalError(f"cannot enter namespace {request.name}: {exc.strerror}") from exc
    try:
        os.chdir(request.cwd)  # with the caller's fsuid and groups: the caller's permissions
    except OSError as exc:
        raise _cwd_error(peer, request.cwd, exc) from exc
    stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio)
    try:
        process = subprocess.Popen(
            request.argv,
            env=request.env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            close_fds=True,  # nothing of the daemon's (other clients' sockets and fds) leaks in
            start_new_session=True,  # its own process group: signals and kills reach its children
            umask=request.umask,
            user=peer.uid,
            group=peer.creds.gid,
            extra_groups=list(peer.creds.groups),
        )
    except OSError as exc:
        raise _command_error(request.argv[0], exc) from exc
    return process, warnings


def _cwd_error(peer: Peer, cwd: str, exc: OSError) -> RequestError:
    if isinstance(exc, PermissionError):
        return PermissionDenied(
            f"uid {peer.uid} may not enter the working directory {cwd}", field="cwd"
        )
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"working directory {cwd} does not exist", field="cwd")
    return InvalidRequest(f"cannot use {cwd} as the working directory: {exc.strerror}", field="cwd")


def _command_error(command: str, exc: OSError) -> RequestError:
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"command not found: {command}", field="argv")
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"cannot execute {command}: permission denied", field="argv")
    return InvalidRequest(f"cannot execute {command}: {exc.strerror}", field="argv")


class _Child:
    """A started command: its Popen (which reaps it) and a pidfd (to wait on and signal it)."""

    def __init__(self, process: "subprocess.Popen[bytes]") -> None:
        self.process = process
        self.pid = process.pid
        try:
            self.pidfd = os.pidfd_open(process.pid)
        except OSError:
            process.kill()
            process.wait()
            raise

    def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the command's process group, as a terminal would.

        The group's id is the command's pid, which stays reserved until we reap it, so the number
        cannot name anyone else's group. If the command left its group, it gets the signal alone.
        """
        if self.process.returncode is not None:
            return  # reaped: the pid may name another process by now
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)

    def reap(self) -> ExecExit:
        returncode = self.process.wait()
        if returncode < 0:
            return ExecExit(pid=self.pid, exit_code=None, signal=-returncode)
        return ExecExit(pid=self.pid, exit_code=returncode, signal=None)

    def close(self) -> bool:
        """Kill the command if it still runs, reap it, release the pidfd; whether it had to kill.

        No zombie is left either way.
        """
        killed = self.process.returncode is None
        if killed:
            self.signal(signal.SIGKILL)
            self.process.wait()
        os.close(self.pidfd)
        return killed
