"""Linux layer: entering a named namespace's environment and taking on a caller's identity.

Everything here changes only the calling thread, and must run on a thread that dies afterwards
(:func:`sockd.linux.run_in_thread`): setns, unshare, a private mount namespace, a filesystem identity.
Processes started from such a thread inherit all of it, which is how ``ns.exec`` builds the command's
world without forking the (multi-threaded) daemon into Python code.

Why the thread never changes its real, effective or saved uid: signal permission is checked against
the *target thread's* credentials (kernel/signal.c, ``kill_ok_by_cred``), so a daemon thread running
as uid 1000 for a few milliseconds could be sent SIGKILL or SIGSTOP with ``tgkill()`` by uid 1000 —
and a fatal signal takes the whole daemon down. The thread adopts only the caller's *filesystem*
identity (fsuid, fsgid, supplementary groups): permission checks on paths and the owner of new files
and sockets are the caller's, signals still need root. The full switch to the caller (setgroups →
setregid → setreuid) happens in the child process, just before exec.

glibc's ``setgroups``/``setfsuid`` wrappers would not do: glibc applies credential changes to every
thread of the process (its "setxid" broadcast), which would hand the whole daemon to the caller. The
raw system calls change only the calling thread, credentials being per-thread in the kernel; their
numbers are per architecture and listed below (only where checked). Every switch is read back.
"""

import ctypes
import errno
import os
import threading
from pathlib import Path

from sockd import linux

PR_SET_NO_NEW_PRIVS = 38  # include/uapi/linux/prctl.h
DEFAULT_ETC_NETNS = "/etc/netns"

_NO_ID = 0xFFFFFFFF  # (uid_t)-1: setfsuid/setfsgid then change nothing and return the current value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.argtypes += [ctypes.c_ulong]


def _require_disposable_thread() -> None:
    # A thread that changed namespaces or credentials must never serve anything else afterwards:
    # only linux.run_in_thread's threads qualify (the server's request threads are reused).
    if threading.current_thread().name != linux.NS_THREAD_NAME:
        raise RuntimeError("namespace and credential changes belong on linux.run_in_thread")


def join_netns(netns_fd: int) -> None:
    """Move the calling (short-lived) thread into the network namespace ``netns_fd``."""
    _require_disposable_thread()
    linux.setns(netns_fd, linux.CLONE_NEWNET)


def enter_netns_environment(
    name: str,
    netns_fd: int,
    *,
    uts_fd: int | None = None,
    etc_netns: str = DEFAULT_ETC_NETNS,
    sockd_etc: str | None = None,
) -> list[str]:
    """Do on the calling thread what ``ip netns exec NAME`` does before it runs its command.

    In order (iproute2, ip/ipnetns.c, ``netns_switch``): join the network namespace (and the UTS
    namespace ``uts_fd``, when the namespace has one), unshare the mount namespace, make every mount
    a slave *before* unmounting /sys (else the unmount propagates back to the host), mount a fresh
    sysfs describing the namespace's devices (read-only if the old one was), and bind-mount each entry
    of ``/etc/netns/NAME`` over its namesake in /etc; then each entry of sockd's own
    ``SOCKD_ETC/NAME`` (a ``--nat`` namespace's resolv.conf) that the administrator's directory
    does not have.

    Returns one line per /etc entry that could not be bound (iproute2 warns and goes on; so do we).
    """
    join_netns(netns_fd)
    if uts_fd is not None:
        linux.setns(uts_fd, linux.CLONE_NEWUTS)
    linux.unshare(linux.CLONE_NEWNS)  # implies CLONE_FS: this thread gets its own cwd and umask
    linux.mount("", "/", None, linux.MS_SLAVE | linux.MS_REC)
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    try:
        if os.statvfs("/sys").f_flag & os.ST_RDONLY:
            flags |= linux.MS_RDONLY
        linux.umount2("/sys", linux.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # no sysfs there: nothing to replace
            raise
    linux.mount(name, "/sys", "sysfs", flags)
    failures = _bind_etc(Path(etc_netns) / name)
    if sockd_etc is not None:
        failures += _bind_etc(Path(sockd_etc) / name, skip=Path(etc_netns) / name)
    return failures


def sockd_etc_entries(sockd_etc: str, name: str, etc_netns: str = DEFAULT_ETC_NETNS) -> list[str]:
    """The files of sockd's ``SOCKD_ETC/NAME`` that ``ns exec`` binds over /etc (see above)."""
    return [str(entry) for entry in _entries(Path(sockd_etc) / name, Path(etc_netns) / name)]


def _entries(directory: Path, skip: Path | None = None) -> list[Path]:
    try:
        entries = sorted(e for e in directory.iterdir() if not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if skip is not None:
        entries = [e for e in entries if not (skip / e.name).exists()]
    return entries


def _bind_etc(directory: Path, skip: Path | None = None) -> list[str]:
    failures = []
    for entry in _entries(directory, skip):
        target = f"/etc/{entry.name}"
        try:
            linux.mount(str(entry), target, None, linux.MS_BIND)
        except OSError as exc:
            failures.append(f"bind {entry} -> {target} failed: {exc.strerror}")
    return failures


def restrict_exec() -> None:
    """Set no_new_privs for this thread and what it starts: no exec can ever add privileges.

    setuid/setgid bits and file capabilities become inert, so the command can never regain what
    the switch to the caller takes away. The capability bounding set is left as it is, on purpose:
    a normal user has a full one, and emptying it makes programs with file capabilities (``ping``
    where it ships as ``cap_net_raw+ep``) fail to execute at all (EPERM: the kernel refuses a
    capability-dumb binary that would not get the capabilities its file demands).
    """
    _require_disposable_thread()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def adopt_fs_identity(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    """Make this thread's path permission checks, new files and new sockets the caller's.

    Sets the supplementary groups, fsgid and fsuid of the calling thread only, and reads them back.
    With a non-zero fsuid the kernel also drops the filesystem capabilities (CAP_DAC_OVERRIDE, ...)
    from the thread's effective set, so a path the caller cannot reach stays out of reach; other
    capabilities (CAP_NET_BIND_SERVICE, CAP_SETUID for the child's switch) remain.
    """
    _require_disposable_thread()
    array = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
    _check(linux.syscall("setgroups", len(groups), array), "setgroups")
    # setfsuid/setfsgid report no errors; the read-back below catches a refusal.
    linux.syscall("setfsgid", gid)
    linux.syscall("setfsuid", uid)
    got_gid = linux.syscall("setfsgid", _NO_ID)
    got_uid = linux.syscall("setfsuid", _NO_ID)
    got_groups = sorted(os.getgroups())  # getgroups(2) is per-thread; glibc does not broadcast it
    if (got_uid, got_gid, got_groups) != (uid, gid, sorted(groups)):
        raise OSError(
            errno.EPERM,
            f"filesystem identity switch did not take: fsuid {got_uid}, fsgid {got_gid}, "
            f"groups {got_groups}; wanted {uid}, {gid}, {sorted(groups)}",
        )


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), "prctl")


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
