"""``ns.exec`` under systemd: each command a transient service in the caller's user slice.

A command that sockd forks inherits sockd.service's sandbox: its seccomp filter (no user
namespaces, so no ``unshare -r``, bwrap, podman or chromium's sandbox), its address families (no
AF_PACKET), its device policy (no /dev/net/tun for a VPN client) and its cgroup (no per-user
accounting). systemd can start the command afresh instead, as it starts everything else for users:
sockd asks the service manager over its private D-Bus socket (:mod:`sockd.dbus`) for a transient
service ``sockd-exec-UID-….service`` in ``user-UID.slice``, with the caller's descriptors as its
stdio (or the caller's pty as its controlling terminal, ``TTYPath=``), the caller's working
directory and umask, ``NoNewPrivileges=yes``, and as its command the same chain as
``sudo ip netns exec NAME setpriv … env -i VARS… ARGV`` (:func:`command_line`): iproute2 itself
builds the namespace's environment (its own mount namespace, a fresh /sys, /etc/netns/NAME over
/etc), util-linux's setpriv drops to the caller's uid, gid and groups (numeric: no passwd entry
needed; systemd's ``User=`` would need one, and systemd 252 mounts no /sys of the namespace) with
no capabilities left, and env(1), as the caller, sets the caller's environment and execs its argv.
``systemctl status`` shows the unit; ``systemd-cgls`` shows it in the user's slice.

Why D-Bus and not ``systemd-run``: systemd-run cannot take descriptors from another process, only
its own stdio, and reports a death by signal as exit status 255, losing the signal; and it costs
another process start. The unit is ``RemainAfterExit=yes`` so that it stays loaded (active or
failed) after its main process ends, until sockd has read ``ExecMainCode``/``ExecMainStatus``; sockd
then stops it (which also kills what the command left behind in its cgroup) and resets it.
"""

import contextlib
import errno
import os
import select
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sockctl.errors import InternalError
from sockctl.protocol import ExecExit
from sockd import linux
from sockd.dbus import SYSTEMD_PRIVATE, Connection, DBusError, Variant

IP = shutil.which("ip") or "/usr/sbin/ip"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
ENV = shutil.which("env") or "/usr/bin/env"

_MANAGER = "/org/freedesktop/systemd1"
_MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
_PROPERTIES = "org.freedesktop.DBus.Properties"
_SERVICE_IFACE = "org.freedesktop.systemd1.Service"
_CLD_EXITED = 1  # ExecMainCode: how waitid() reported the end (CLD_* from <signal.h>)
EXIT_POLL = 0.001
"""Seconds between reads of ExecMainCode while systemd has not yet reaped an ended command."""
EXIT_WAIT = 10.0
"""How long sockd waits for systemd to record an ended command's status."""


@dataclass(frozen=True, kw_only=True)
class UnitCommand:
    """What to run, for whom, and how: everything the transient unit is made of."""

    netns: str
    argv: Sequence[str]
    env: dict[str, str]
    cwd: str
    umask: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    stdio: tuple[int | None, int | None, int | None]
    tty_path: str | None
    uts_path: str | None
    description: str
    etc_binds: tuple[str, ...] = ()
    """Files bound read-only over their namesakes in /etc (sockd's resolv.conf of the namespace)."""
    admin: bool = False
    """``ns exec --admin``: the switch to the caller goes through :mod:`sockd.adminexec`."""


class Units:
    """Starts ``ns.exec`` commands as transient services of the service manager."""

    def __init__(self, socket_path: str = SYSTEMD_PRIVATE, prefix: str = "sockd-exec") -> None:
        self.socket_path = socket_path
        self.prefix = prefix

    def available(self) -> bool:
        """Whether a service manager answers at the socket (PID 1 is systemd, sockd is root)."""
        try:
            with Connection(self.socket_path, timeout=2.0) as bus:
                bus.call(_MANAGER, _PROPERTIES, "Get", "ss", [_MANAGER_IFACE, "Version"])
        except (OSError, DBusError):
            return False
        return True

    def start(self, command: UnitCommand) -> "TransientService":
        """Start ``command``; returns once it runs (its first program was executed)."""
        name = f"{self.prefix}-{command.uid}-{uuid.uuid4().hex[:12]}.service"
        bus = Connection(self.socket_path)
        try:
            bus.call(_MANAGER, _MANAGER_IFACE, "Subscribe")  # JobRemoved tells when it started
            properties, fds = _properties(command)
            (job,) = bus.call(
                _MANAGER,
                _MANAGER_IFACE,
                "StartTransientUnit",
                "ssa(sv)a(sa(sv))",
                [name, "replace", properties, []],
                fds=fds,
            )
            result = _job_result(bus, job)
            # Every unit's changes would flow in for as long as the session lasts: no more.
            bus.call(_MANAGER, _MANAGER_IFACE, "Unsubscribe")
            bus.signals.clear()
            (path,) = bus.call(_MANAGER, _MANAGER_IFACE, "GetUnit", "s", [name])
            service = TransientService(bus, name, path)
        except BaseException:
            bus.close()
            raise
        if result != "done":
            status = service.status()
            service.close()
            raise InternalError(
                f"systemd could not start the command in {name}: {result} "
                f"(ExecMainStatus {status}; `journalctl -u {name}` says more)"
            )
        return service

    def start_helper(self, argv: list[str]) -> tuple[int, Callable[[], None]]:
        """Start a short-lived root helper (its argv drops privileges itself) as a transient
        service outside sockd.service's sandbox; its pid, and what stops it."""
        name = f"{self.prefix}-helper-{uuid.uuid4().hex[:12]}.service"
        bus = Connection(self.socket_path)
        try:
            bus.call(_MANAGER, _MANAGER_IFACE, "Subscribe")
            properties = [
                ("Description", Variant("s", f"sockd helper: {' '.join(argv)[:200]}")),
                ("Type", Variant("s", "exec")),
                ("ExecStartEx", Variant("a(sasas)", [(argv[0], argv, ["no-env-expand"])])),
                ("RemainAfterExit", Variant("b", True)),
                ("StandardInput", Variant("s", "null")),
                ("StandardOutput", Variant("s", "null")),
            ]
            (job,) = bus.call(
                _MANAGER,
                _MANAGER_IFACE,
                "StartTransientUnit",
                "ssa(sv)a(sa(sv))",
                [name, "replace", properties, []],
            )
            result = _job_result(bus, job)
            bus.call(_MANAGER, _MANAGER_IFACE, "Unsubscribe")
            bus.signals.clear()
            (path,) = bus.call(_MANAGER, _MANAGER_IFACE, "GetUnit", "s", [name])
            service = TransientService(bus, name, path)
        except BaseException:
            _stop(bus, name)
            bus.close()
            raise
        if result != "done":
            service.close()
            raise InternalError(f"systemd could not start {argv[0]} in {name}: {result}")

        def stop() -> None:
            service.close()

        return service.pid, stop

    def stop_leftovers(self) -> list[str]:
        """Stop the units of an earlier sockd's sessions (their clients are gone); their names."""
        with Connection(self.socket_path) as bus:
            (units,) = bus.call(
                _MANAGER, _MANAGER_IFACE, "ListUnitsByPatterns", "asas", [[], [f"{self.prefix}-*"]]
            )
            names = [unit[0] for unit in units]
            for name in names:
                _stop(bus, name)
        return names


class TransientService:
    """A started command in its unit: the same handle as a directly spawned one (pid, pidfd...)."""

    def __init__(self, bus: Connection, name: str, path: str) -> None:
        self.bus = bus
        self.name = name
        self.path = path
        (pid,) = self._get("ExecMainPID")  # MainPID turns 0 when it ends; this one stays
        self.pid: int = pid.value
        self.ended: ExecExit | None = None
        self.pidfd = -1
        with contextlib.suppress(ProcessLookupError, ValueError):
            self.pidfd = os.pidfd_open(self.pid)
        # systemd had not reaped it when the pidfd was opened only if no end is recorded after:
        # then the pidfd is the command's, not a reused pid's.
        (code,) = self._get("ExecMainCode")
        if code.value or self.pidfd < 0:
            if self.pidfd >= 0:
                os.close(self.pidfd)
            self.pidfd = os.eventfd(1, os.EFD_CLOEXEC)  # ended already: readable at once
            self._gone = True
        else:
            self._gone = False

    def _get(self, prop: str) -> list[Variant]:
        return self.bus.call(self.path, _PROPERTIES, "Get", "ss", [_SERVICE_IFACE, prop])

    def _running(self) -> bool:
        if self.ended is not None or self._gone:
            return False
        return not select.select([self.pidfd], [], [], 0)[0]

    def signal(self, signum: int) -> None:
        """Deliver ``signum`` to the command's process group (systemd made it a session leader).

        Only while the pidfd says the process runs: its pid cannot have been reused then. (systemd,
        not sockd, reaps it; the moment between the check and the kill is the one race left.)
        """
        if not self._running():
            return
        linux.signal_group(self.pid, self.pidfd, signum)

    def status(self) -> str:
        (code,) = self._get("ExecMainCode")
        (status,) = self._get("ExecMainStatus")
        return f"{code.value}/{status.value}"

    def reap(self) -> ExecExit:
        """How the command ended (called once its pidfd is readable); waits for systemd's record."""
        if self.ended is None:
            deadline = time.monotonic() + EXIT_WAIT
            while True:
                (code,) = self._get("ExecMainCode")
                if code.value or time.monotonic() > deadline:
                    break
                self.bus.receive(EXIT_POLL)  # a sleep that also takes signals off the socket
            (status,) = self._get("ExecMainStatus")
            if code.value == _CLD_EXITED or not code.value:
                self.ended = ExecExit(pid=self.pid, exit_code=status.value, signal=None)
            else:  # CLD_KILLED, CLD_DUMPED
                self.ended = ExecExit(pid=self.pid, exit_code=None, signal=status.value)
        return self.ended

    def exit(self) -> ExecExit:
        return self.reap()

    def close(self) -> bool:
        """Kill the command if it still runs, stop and forget the unit; whether it had to kill."""
        killed = self._running()
        try:
            if killed:
                with contextlib.suppress(DBusError):
                    self.bus.call(
                        _MANAGER, _MANAGER_IFACE, "KillUnit", "ssi", [self.name, "all", 9]
                    )
                select.select([self.pidfd], [], [], EXIT_WAIT)
            with contextlib.suppress(DBusError):
                self.reap()
            _stop(self.bus, self.name)
        finally:
            os.close(self.pidfd)
            self.bus.close()
        return killed


def _stop(bus: Connection, name: str) -> None:
    # Stop kills what the command left in its cgroup; reset forgets a failed unit. Either may find
    # the unit gone already.
    with contextlib.suppress(DBusError):
        bus.call(_MANAGER, _MANAGER_IFACE, "StopUnit", "ss", [name, "replace"])
    with contextlib.suppress(DBusError):
        bus.call(_MANAGER, _MANAGER_IFACE, "ResetFailedUnit", "s", [name])


def _job_result(bus: Connection, job: str) -> str:
    deadline = time.monotonic() + bus.timeout
    while True:
        for signal_ in bus.signals:
            if signal_.member == "JobRemoved" and signal_.body[1] == job:
                bus.signals.clear()
                result: str = signal_.body[3]
                return result
        bus.signals.clear()
        left = deadline - time.monotonic()
        arrived = bus.receive(left) if left > 0 else None
        if arrived is None:
            raise InternalError(f"systemd did not start the command in {bus.timeout:g} s")
        bus.signals.append(arrived)


def command_line(command: UnitCommand) -> list[str]:
    """The unit's ExecStart, each step in the order it runs::

        ip netns exec NAME                   root: the namespace's environment, as iproute2 builds it
        [nsenter --uts=PATH --]              root: the namespace's own hostname, if it has one
        setpriv --reuid --regid --groups --  root → the caller: setgroups, setresgid, setresuid
        env -i -- VAR=VALUE... ARGV          the caller: its environment, then its command

    The root steps run with systemd's own small environment, never the caller's: ip, nsenter and
    setpriv are not setuid programs, so the loader would honour a caller's LD_PRELOAD in them —
    as root. env(1) sets the caller's variables as the caller, then execs ARGV (looked up in the
    caller's PATH). It also starts with no permitted capabilities (setpriv keeps its own across
    the switch, PR_SET_KEEPCAPS), so under no_new_privs a command with file capabilities
    (``cap_net_raw+ep``) gains nothing.
    """
    group_list = ",".join(map(str, command.groups))
    drop = [
        SETPRIV,
        f"--reuid={command.uid}",
        f"--regid={command.gid}",
        f"--groups={group_list}" if group_list else "--clear-groups",
        "--inh-caps=-all",
        "--",
    ]
    if command.admin:
        # The same switch, into the namespace's user namespace, keeping CAP_NET_ADMIN/NET_RAW.
        drop = admin_helper("-", "-", command.uid, command.gid, command.groups)
    uts = [NSENTER, f"--uts={command.uts_path}", "--"] if command.uts_path else []
    environment = [ENV, "-i", "--", *(f"{key}={value}" for key, value in command.env.items())]
    return [IP, "netns", "exec", command.netns, *uts, *drop, *environment, *command.argv]


ADMIN_HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adminexec.py")


def admin_helper(userns: str, env: str, uid: int, gid: int, groups: Sequence[int]) -> list[str]:
    """The command line of :mod:`sockd.adminexec` (``python -I -S``: no PYTHON* variables, no
    site, so nothing of anyone's environment steers it while it is root)."""
    return [
        sys.executable,
        "-I",
        "-S",
        ADMIN_HELPER,
        userns,
        env,
        str(uid),
        str(gid),
        ",".join(map(str, groups)),
    ]


def _properties(command: UnitCommand) -> tuple[list[tuple[str, Variant]], list[int]]:
    argv = command_line(command)
    properties = [
        ("Description", Variant("s", command.description)),
        ("Type", Variant("s", "exec")),  # the start job ends once the first program runs
        # Arguments exactly as given: without "no-env-expand" systemd would expand $VAR and $$.
        ("ExecStartEx", Variant("a(sasas)", [(argv[0], argv, ["no-env-expand"])])),
        ("Slice", Variant("s", f"user-{command.uid}.slice")),
        ("RemainAfterExit", Variant("b", True)),
        ("NoNewPrivileges", Variant("b", True)),
        ("WorkingDirectory", Variant("s", command.cwd)),
        ("UMask", Variant("u", command.umask)),
        # A command run by hand expects SIGPIPE's default; systemd services ignore it by default.
        ("IgnoreSIGPIPE", Variant("b", False)),
        ("SendSIGHUP", Variant("b", True)),  # on stop, as a terminal's hang-up would
    ]
    if command.etc_binds:
        # Made by systemd in the unit's mount namespace; `ip netns exec` then copies it into its
        # own, and binds /etc/netns/NAME/ over it (the administrator's files win, as directly).
        binds = [(path, f"/etc/{os.path.basename(path)}", False, 0) for path in command.etc_binds]
        properties.append(("BindReadOnlyPaths", Variant("a(ssbt)", binds)))
    fds: list[int] = []
    if command.tty_path is not None:
        properties.append(("TTYPath", Variant("s", command.tty_path)))
        properties += [
            (stream, Variant("s", "tty"))
            for stream in ("StandardInput", "StandardOutput", "StandardError")
        ]
    else:
        for stream, fd in zip(("Input", "Output", "Error"), command.stdio, strict=True):
            if fd is None:
                properties.append((f"Standard{stream}", Variant("s", "null")))
            else:
                properties.append((f"Standard{stream}FileDescriptor", Variant("h", len(fds))))
                fds.append(fd)
    return properties, fds


def terminal_path(fd: int) -> str | None:
    """The path of terminal ``fd`` as the service manager would open it, or None if it has none.

    A pty of another devpts instance (a client in a container) has no path on the host.
    """
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.stat(path).st_rdev == os.fstat(fd).st_rdev:
            return path
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EACCES):
            raise
    return None
