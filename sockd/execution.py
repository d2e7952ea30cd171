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
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Protocol

from sockctl.errors import InternalError, InvalidRequest, NotFound, PermissionDenied, RequestError
from sockctl.protocol import ExecExit, ExecStarted, NsExecRequest
from sockd import enter, linux
from sockd.dbus import DBusError
from sockd.dispatch import Call, Channel, Session
from sockd.log import Logger
from sockd.netns import Namespaces
from sockd.policy import Peer, Policy
from sockd.units import TransientService, UnitCommand, Units, admin_helper, terminal_path

STOP_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL for commands still running when the daemon stops."""

_STDIO = ("stdin", "stdout", "stderr")
AUDIT_ARGV_CHARS = 2048
"""How much of a command line the audit record keeps (the rest is cut, with its length told)."""

SETSID = shutil.which("setsid") or "/usr/bin/setsid"
"""util-linux's setsid(1): with ``--ctty`` it makes the command lead a session on its terminal.

subprocess has no way to acquire a controlling terminal between fork and exec without running
Python in the child of this threaded daemon (``preexec_fn``), so a ``tty`` command is started as
``setsid --ctty ARGV...``: setsid() and ioctl(0, TIOCSCTTY) in C, then execvp of the command in
the same process (same pid; it is not a group leader yet, so setsid(1) does not fork).
"""


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
        units: Units | None = None,
        sockd_etc: str | None = None,
    ) -> None:
        self.namespaces = namespaces
        self.policy = policy
        self.log = log
        self.etc_netns = etc_netns
        self.sockd_etc = sockd_etc
        """sockd's own per-namespace /etc entries (resolv.conf of --nat namespaces)."""
        self.stop_grace = stop_grace
        self.units = units
        """Where commands become transient services; None: sockd spawns them itself."""
        # Readable for good once stop() wrote to it: every session polls it.
        self._stopping = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def reconcile(self) -> None:
        """At start: stop the units of an earlier daemon's sessions, whose clients are gone."""
        if self.units is None:
            return
        try:
            stopped = self.units.stop_leftovers()
        except (OSError, DBusError) as exc:
            self.log.warning(f"cannot list earlier ns.exec units: {exc}")
            return
        for name in stopped:
            self.log.info(f"stopped {name}: an earlier sockd ran it for a client now gone")

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
        if request.tty:
            _check_terminal(peer, stdio[0])
        child = self._start(peer, request, stdio)
        started = time.monotonic()
        command = _audit_argv(request.argv)
        fields = {
            "SOCKD_NS": request.name,
            "SOCKD_PEER_UID": peer.uid,
            "SOCKD_CHILD_PID": child.pid,
            "SOCKD_UNIT": child.unit or "",
        }
        result = None
        try:
            call.fds.close()  # the command holds its own copies; ours would only keep pipes open
            self.log.info(
                f"ns.exec in {request.name} by uid {peer.uid}: pid {child.pid} runs {command}"
                + (" on a terminal" if request.tty else "")
                + (f" in {child.unit}" if child.unit else ""),
                SOCKD_ARGV=command,
                SOCKD_TTY=int(request.tty),
                **fields,
            )
            yield ExecStarted(pid=child.pid)
            result = self._supervise(child, call.channel, request.name)
        finally:
            killed = child.close()  # the session ended early: client gone, or a bad follow-up
            ended = result or child.exit()
            how = (
                f"exit status {ended.exit_code}"
                if ended.signal is None
                else (f"signal {_signal_name(ended.signal)}")
            )
            self.log.info(
                f"ns.exec in {request.name}: pid {child.pid} ended ({how}) after "
                f"{time.monotonic() - started:.3f} s"
                + (", killed by sockd: its session ended first" if killed else ""),
                SOCKD_EXIT_STATUS="" if ended.exit_code is None else ended.exit_code,
                SOCKD_EXIT_SIGNAL="" if ended.signal is None else ended.signal,
                SOCKD_DURATION=f"{time.monotonic() - started:.6f}",
                **fields,
            )
        return result

    def _start(
        self, peer: Peer, request: NsExecRequest, stdio: tuple[int | None, ...]
    ) -> "_Started":
        netns_fd = self.namespaces.open_for_entry(peer, request.name)
        uts_fd = userns_fd = None
        try:
            if request.admin:
                userns_fd = self.namespaces.open_admin_userns(peer, netns_fd, request.name)
            if self.units is not None and self.etc_netns == enter.DEFAULT_ETC_NETNS:
                service = self._start_unit(self.units, peer, request, stdio)
                if service is not None:
                    return service
            if request.admin:
                linux.run_in_thread(partial(_check_as_caller, peer, request))
            uts_fd = self._open_uts(request.name)
            work = partial(
                _spawn,
                peer,
                request,
                netns_fd,
                uts_fd,
                stdio,
                self.etc_netns,
                self.sockd_etc,
                userns_fd,
            )
            process, warnings = linux.run_in_thread(work)
        finally:
            os.close(netns_fd)
            for fd in (uts_fd, userns_fd):
                if fd is not None:
                    os.close(fd)
        child = _Child(process)
        for warning in warnings:
            self.log.warning(f"ns.exec in {request.name}: {warning}", SOCKD_NS=request.name)
        return child

    def _start_unit(
        self, units: Units, peer: Peer, request: NsExecRequest, stdio: tuple[int | None, ...]
    ) -> "_Unit | None":
        """The command as a transient service; None where only the direct spawn can do it."""
        tty_path = None
        if request.tty:
            assert stdio[0] is not None  # noqa: S101 -- _check_terminal passed
            tty_path = terminal_path(stdio[0])
            if tty_path is None:
                self.log.info(f"ns.exec in {request.name}: the terminal has no path here: direct")
                return None
        # The named errors of a direct spawn, checked as the caller: its working directory, its
        # command. (The unit enters the directory as root; the check keeps the caller's rights.)
        linux.run_in_thread(partial(_check_as_caller, peer, request))
        if "=" in request.argv[0]:
            return None  # env(1), which sets the caller's environment in the unit, would misread it
        uts_path = self.namespaces.uts_path(request.name)
        command = UnitCommand(
            netns=request.name,
            argv=request.argv,
            env=request.env,
            cwd=request.cwd,
            umask=request.umask,
            uid=peer.uid,
            gid=peer.creds.gid,
            groups=peer.creds.groups,
            stdio=(stdio[0], stdio[1], stdio[2]),
            tty_path=tty_path,
            uts_path=uts_path if linux.is_namespace_mount(uts_path) else None,
            admin=request.admin,
            etc_binds=tuple(
                enter.sockd_etc_entries(self.sockd_etc, request.name)
                if self.sockd_etc is not None
                else ()
            ),
            description=f"sockctl ns exec {request.name} (uid {peer.uid}): "
            f"{_audit_argv(request.argv)[:200]}",
        )
        try:
            return _Unit(units.start(command))
        except DBusError as exc:
            # systemd refused (an environment it cannot take, a manager gone): the direct way.
            self.log.warning(f"ns.exec in {request.name}: no transient unit ({exc}): direct")
            return None

    def _open_uts(self, name: str) -> int | None:
        path = self.namespaces.uts_path(name)  # kept by `ns create --hostname`
        if not linux.is_namespace_mount(path):
            return None  # the namespace has no hostname of its own
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _supervise(self, child: "_Started", channel: Channel, name: str) -> ExecExit:
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
    sockd_etc: str | None,
    userns_fd: int | None = None,
) -> tuple["subprocess.Popen[bytes]", list[str]]:
    """On a short-lived thread: enter, restrict, become the caller on the filesystem, start."""
    try:
        warnings = enter.enter_netns_environment(
            request.name, netns_fd, uts_fd=uts_fd, etc_netns=etc_netns, sockd_etc=sockd_etc
        )
        enter.restrict_exec()
        if userns_fd is not None:
            # The root helper must read its interpreter and script as root: it becomes the
            # caller itself, after joining the user namespace (cwd and command were checked as
            # the caller before, _check_as_caller).
            os.chdir(request.cwd)
            return _spawn_admin(peer, request, stdio, userns_fd), warnings
        enter.adopt_fs_identity(peer.uid, peer.creds.gid, peer.creds.groups)
    except OSError as exc:
        raise InternalError(f"cannot enter namespace {request.name}: {exc.strerror}") from exc
    try:
        os.chdir(request.cwd)  # with the caller's fsuid and groups: the caller's permissions
    except OSError as exc:
        raise _cwd_error(peer, request.cwd, exc) from exc
    stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio)
    # setpriv(1) and setsid(1) would report a missing command themselves (exit 127 or 1): look it
    # up first, as the caller, for a named error.
    _find_command(request.argv[0], request.env.get("PATH", os.defpath), peer)
    terminal = [SETSID, "--ctty"] if request.tty else []
    try:
        # The switch to the caller happens in subprocess's child before exec, so nothing runs as
        # root with the caller's environment (LD_PRELOAD!). (It costs a fork() of the daemon
        # where vfork() would do: ~1.5 ms, bench/exec.py; a root helper such as setpriv(1) in
        # between would have to run with a clean environment, see sockd/units.py.)
        process = subprocess.Popen(
            [*terminal, *request.argv],
            env=request.env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            close_fds=True,  # nothing of the daemon's (other clients' sockets and fds) leaks in
            # Its own process group (a session; setsid(1) makes it for a terminal): signals and
            # kills reach its children.
            start_new_session=not request.tty,
            umask=request.umask,
            user=peer.uid,
            group=peer.creds.gid,
            extra_groups=list(peer.creds.groups),
        )
    except OSError as exc:
        raise _command_error(request.argv[0], exc) from exc
    return process, warnings


def _spawn_admin(
    peer: Peer, request: NsExecRequest, stdio: tuple[int | None, ...], userns_fd: int
) -> "subprocess.Popen[bytes]":
    """``ns exec --admin``: the command through :mod:`sockd.adminexec`, which joins the user
    namespace, becomes the caller and keeps CAP_NET_ADMIN and CAP_NET_RAW (see there).

    The helper runs as root with an empty environment (``python -I -S``: no PYTHON* variables, no
    site); the caller's environment reaches only the command, through a pipe.
    """
    stdin, stdout, stderr = (subprocess.DEVNULL if fd is None else fd for fd in stdio)
    terminal = [SETSID, "--ctty"] if request.tty else []
    env_read, env_write = os.pipe2(os.O_CLOEXEC)
    try:
        argv = [
            *admin_helper(
                str(userns_fd), str(env_read), peer.uid, peer.creds.gid, peer.creds.groups
            ),
            *terminal,
            *request.argv,
        ]
        try:
            process = subprocess.Popen(
                argv,
                env={},
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                close_fds=True,
                pass_fds=(userns_fd, env_read),
                start_new_session=not request.tty,
                umask=request.umask,
            )
        except OSError as exc:
            raise _command_error(request.argv[0], exc) from exc
        os.close(env_read)
        env_read = -1
        encoded = b"\0".join(
            os.fsencode(key) + b"=" + os.fsencode(value) for key, value in request.env.items()
        )
        with contextlib.suppress(BrokenPipeError):
            view = memoryview(encoded)
            while view:
                view = view[os.write(env_write, view) :]
        return process
    finally:
        os.close(env_write)
        if env_read >= 0:
            os.close(env_read)


def _check_as_caller(peer: Peer, request: NsExecRequest) -> None:
    """On a short-lived thread, as the caller: may it enter ``cwd`` and run ``argv[0]`` there?"""
    enter.adopt_fs_identity(peer.uid, peer.creds.gid, peer.creds.groups)
    try:
        os.chdir(request.cwd)
    except OSError as exc:
        raise _cwd_error(peer, request.cwd, exc) from exc
    _find_command(request.argv[0], request.env.get("PATH", os.defpath), peer)


def _check_terminal(peer: Peer, fd: int | None) -> None:
    """Refuse a ``tty`` request whose stdin is not a terminal the caller owns."""
    if fd is None or not os.isatty(fd):
        raise InvalidRequest(
            "tty: stdin must be a terminal (the slave of a pty you opened)", field="stdin"
        )
    owner = os.fstat(fd).st_uid
    if peer.uid not in (owner, 0):
        raise PermissionDenied(
            f"tty: the terminal belongs to uid {owner}, not to uid {peer.uid}", field="stdin"
        )


def _find_command(command: str, search_path: str, peer: Peer) -> str:
    """Where ``command`` is, as execvp(3) would find it for the caller; a named error if nowhere.

    Runs with the caller's filesystem identity (paths the caller cannot search stay hidden), but
    the execute permission is judged here from the file's mode, for the caller's uid and groups:
    access(2) would ask for the thread's real uid, root's.
    """
    candidates = (
        [command]
        if "/" in command
        else [os.path.join(directory or ".", command) for directory in search_path.split(":")]
    )
    denied = False
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and _may_execute(info, peer):
            return candidate
        denied = True
    if denied:
        raise PermissionDenied(f"cannot execute {command}: permission denied", field="argv")
    raise NotFound(f"command not found: {command}", field="argv", details={"command": command})


def _may_execute(info: os.stat_result, peer: Peer) -> bool:
    if peer.uid == 0:
        return bool(info.st_mode & 0o111)
    if info.st_uid == peer.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == peer.creds.gid or info.st_gid in peer.creds.groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal
        return str(signum)


def _audit_argv(argv: list[str]) -> str:
    line = shlex.join(argv)
    if len(line) <= AUDIT_ARGV_CHARS:
        return line
    return f"{line[:AUDIT_ARGV_CHARS]}… ({len(line)} characters)"


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
        return NotFound(f"command not found: {command}", field="argv", details={"command": command})
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"cannot execute {command}: permission denied", field="argv")
    return InvalidRequest(f"cannot execute {command}: {exc.strerror}", field="argv")


class _Started(Protocol):
    """A running command, spawned here or by systemd: what a session needs of it."""

    pid: int
    pidfd: int
    unit: str | None

    def signal(self, signum: int) -> None: ...
    def reap(self) -> ExecExit: ...
    def exit(self) -> ExecExit: ...
    def close(self) -> bool: ...


class _Unit:
    """A command in a transient service (:mod:`sockd.units`)."""

    def __init__(self, service: TransientService) -> None:
        self.service = service
        self.pid = service.pid
        self.pidfd = service.pidfd
        self.unit: str | None = service.name

    def signal(self, signum: int) -> None:
        self.service.signal(signum)

    def reap(self) -> ExecExit:
        return self.service.reap()

    def exit(self) -> ExecExit:
        return self.service.exit()

    def close(self) -> bool:
        return self.service.close()


class _Child:
    """A started command: its Popen (which reaps it) and a pidfd (to wait on and signal it)."""

    unit: str | None = None

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
        linux.signal_group(self.pid, self.pidfd, signum)

    def reap(self) -> ExecExit:
        return self._exit(self.process.wait())

    def exit(self) -> ExecExit:
        """How the command ended; only after :meth:`reap` or :meth:`close`."""
        assert self.process.returncode is not None  # noqa: S101 -- called after the wait
        return self._exit(self.process.returncode)

    def _exit(self, returncode: int) -> ExecExit:
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
