"""The one Linux layer: every syscall, ioctl, netlink message and /proc walk sockd makes.

Operation modules call these functions and never touch ctypes or raw constants. Errors surface as
``OSError`` subclasses; the operation modules translate them into wire errors.

Python 3.11 has no ``os.unshare``/``os.setns`` (3.12 does); the fallback goes through libc.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import platform
import resource
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

NSFS_MAGIC = 0x6E736673

SO_PEERGROUPS = 59  # include/uapi/asm-generic/socket.h; Python 3.11 has no constant
SO_PEERPIDFD = 77  # Linux >= 6.5

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
_libc.mount.argtypes += [ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

# Numbers of the system calls Python's os module does not wrap, for the 64-bit ABIs:
# arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h (arm64, riscv64).
_GENERIC_SYSCALLS = {"setgroups": 159, "setfsuid": 151, "setfsgid": 152, "bpf": 280}
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123, "bpf": 321},
    "aarch64": _GENERIC_SYSCALLS,
    "riscv64": _GENERIC_SYSCALLS,
}


class UnsupportedArchitecture(OSError):
    """This machine's number for a system call Python does not wrap is not known here."""


def syscall(name: str, *args: "int | ctypes.Array[Any]") -> int:
    """System call ``name`` (a key of the table above) by number; its raw result, with
    ``ctypes.get_errno()`` telling why when it is -1. Integers pass as longs, buffers as
    pointers. A 32-bit interpreter (another ABI's numbers) raises UnsupportedArchitecture."""
    machine = platform.machine()
    table = _SYSCALLS.get(machine) if struct.calcsize("P") == 8 else None
    if table is None:
        raise UnsupportedArchitecture(
            errno.ENOSYS, f"{name}() is not wired up for {machine} ({struct.calcsize('P') * 8}-bit)"
        )
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_libc.syscall(ctypes.c_long(table[name]), *converted))


class _StatFs(ctypes.Structure):
    # struct statfs on 64-bit Linux: f_type comes first; the rest is only room for the kernel.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]


_M_ARENA_MAX = -8  # glibc malloc.h


def limit_malloc_arenas(count: int) -> bool:
    """Have glibc's malloc use at most ``count`` arenas; call it before the first thread starts.

    glibc gives threads their own arenas (up to 8 per CPU) and never hands their free fragments
    back: with a worker pool and a short-lived thread per namespace operation, a daemon under
    steady create/delete traffic grew 2-4 MiB a minute here, with no Python object leaked
    (tracemalloc saw +35 KiB). Two arenas keep it flat; bench/transport.py and churn.py saw no
    loss of throughput.
    False where this is not glibc (musl has no mallopt).
    """
    mallopt = getattr(_libc, "mallopt", None)
    return mallopt is not None and mallopt(_M_ARENA_MAX, count) == 1


def trim_heap() -> None:
    """Give free heap memory back to the kernel (glibc ``malloc_trim``), e.g. after a big listing.

    0.1 ms on a quiet heap, 4 ms on a fragmented 50 MiB one (measured); ctypes releases the GIL
    meanwhile. A no-op where this is not glibc.
    """
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread only where the flag allows it (CLONE_NEWNET does)."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
    else:
        _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): move the calling thread into the namespace ``fd`` refers to."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
    else:
        _check(_libc.setns(fd, nstype), "setns")


def mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        "mount",
        target,
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), "umount", target)


def fs_type(path: str) -> int:
    """statfs(2) f_type: ``NSFS_MAGIC`` for a mounted namespace file."""
    buf = _StatFs()
    _check(_libc.statfs(path.encode(), ctypes.byref(buf)), "statfs", path)
    return int(buf.f_type) & 0xFFFFFFFF


def is_namespace_mount(path: str) -> bool:
    """Whether ``path`` has a namespace bind-mounted on it (nsfs), not just a placeholder file."""
    try:
        return fs_type(path) == NSFS_MAGIC
    except FileNotFoundError:
        return False


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd's default soft limit is 1024, too few
    for the connections the limits admit); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


NS_THREAD_NAME = "sockd-ns"
"""The name of :func:`run_in_thread`'s threads, the only ones allowed to change namespaces."""


def run_in_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` in a new, short-lived thread and return its result or raise its exception.

    setns/unshare move only the calling thread. Doing them on a thread that dies right after keeps
    every other thread of the daemon (and the thread that serves the client) where it was.
    """
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=NS_THREAD_NAME)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: _T = value
    return result


def new_netns_bound_to(
    path: str,
    *,
    loopback_up: bool,
    before_mount: Callable[[], None],
    uts_path: str | None = None,
    hostname: str | None = None,
    ping_group_range: str | None = None,
) -> None:
    """Make a new network namespace and bind-mount it on the existing placeholder ``path``.

    Runs in a dedicated thread (see :func:`run_in_thread`). ``before_mount`` is called between
    unshare and the bind mount (a fault-injection point for the tests). With ``uts_path`` the thread
    also gets a new UTS namespace (``clone(CLONE_NEWUTS|CLONE_NEWNET)``'s pair), named ``hostname``
    and bind-mounted on the existing placeholder ``uts_path``; the host's hostname is untouched
    because only this thread's UTS namespace changes. ``ping_group_range`` is written to the new
    namespace's own ``net.ipv4.ping_group_range`` (/proc/sys/net follows the opening thread's
    network namespace), so that unprivileged ``ping`` (ICMP datagram sockets) works inside.
    """

    def work() -> None:
        unshare(CLONE_NEWNET | (CLONE_NEWUTS if uts_path is not None else 0))
        if ping_group_range is not None:
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as file:
                file.write(ping_group_range)
        if uts_path is not None and hostname is not None:
            socket.sethostname(hostname)
        before_mount()
        mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        if uts_path is not None:
            mount("/proc/thread-self/ns/uts", uts_path, None, MS_BIND)
        if loopback_up:
            set_link_up("lo")

    run_in_thread(work)


SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"


Started = tuple[int, Callable[[], None]]
"""A started helper process: its pid, and what stops it (kill, reap)."""


def spawn_directly(argv: list[str]) -> Started:
    """Start ``argv`` as a child of sockd with a clean environment and no stdio."""
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
        close_fds=True,
    )

    def stop() -> None:
        child.kill()
        child.wait()

    return child.pid, stop


def new_admin_netns(
    path: str,
    uid: int,
    gid: int,
    *,
    before_mount: Callable[[], None],
    start: Callable[[list[str]], Started] = spawn_directly,
) -> None:
    """A network namespace owned by a new user namespace that ``uid`` makes (mapping only ``uid``
    and ``gid`` to themselves), bind-mounted on the placeholder ``path``.

    The user namespace is made by a process running as ``uid`` (setpriv, then ``unshare
    --map-current-user --net``), so that ``uid`` owns it; it sleeps while the network namespace is
    bind-mounted, then is stopped. ``start`` runs it: as sockd's child, or (under systemd, where
    sockd.service may make no user namespace) as a transient unit.
    """
    argv = [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        UNSHARE,
        "--map-current-user",
        "--net",
        "--",
        SLEEP,
        "60",
    ]
    pid, stop = start(argv)
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 10
        while True:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                status = Path(f"/proc/{pid}/status").read_text()
                ready = (
                    comm == "sleep"
                    and f"\nUid:\t{uid}\t" in status
                    and os.stat(f"/proc/{pid}/ns/net").st_ino != own
                )
            except (FileNotFoundError, ProcessLookupError):
                ready = False
            if ready:
                break
            if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
                raise OSError(errno.EPERM, f"unshare --user --net as uid {uid} did not succeed")
            time.sleep(0.001)
        before_mount()
        mount(f"/proc/{pid}/ns/net", path, None, MS_BIND)
    finally:
        stop()


def owning_userns(ns_fd: int) -> int:
    """A descriptor of the user namespace that owns the namespace ``ns_fd`` (NS_GET_USERNS)."""
    return fcntl.ioctl(ns_fd, _NS_GET_USERNS)


def userns_owner(userns_fd: int) -> int:
    """The uid that created the user namespace ``userns_fd`` (NS_GET_OWNER_UID)."""
    buf = bytearray(4)
    fcntl.ioctl(userns_fd, _NS_GET_OWNER_UID, buf)
    value: int = struct.unpack("=I", buf)[0]
    return value


def is_initial_userns(userns_fd: int) -> bool:
    """Whether ``userns_fd`` is the daemon's own user namespace (the host's: sockd runs there)."""
    st = os.fstat(userns_fd)
    initial = os.stat("/proc/self/ns/user")
    return (st.st_dev, st.st_ino) == (initial.st_dev, initial.st_ino)


def setup_netns(
    netns_fd: int,
    *,
    loopback_up: bool,
    ping_group_range: str | None,
    uts_path: str | None = None,
    hostname: str | None = None,
) -> None:
    """What :func:`new_netns_bound_to` does inside a new namespace, for one made elsewhere."""

    def work() -> None:
        setns(netns_fd, CLONE_NEWNET)
        if ping_group_range is not None:
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as file:
                file.write(ping_group_range)
        if loopback_up:
            set_link_up("lo")
        if uts_path is not None and hostname is not None:
            unshare(CLONE_NEWUTS)
            socket.sethostname(hostname)
            mount("/proc/thread-self/ns/uts", uts_path, None, MS_BIND)

    run_in_thread(work)


def set_link_up(ifname: str) -> None:
    """Bring a link up in the calling thread's network namespace (SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        req = struct.pack("16sh22x", ifname.encode(), 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, req))[1]
        req = struct.pack("16sh22x", ifname.encode(), flags | _IFF_UP)
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, req)


def make_shared_mountpoint(directory: str) -> None:
    """Make ``directory`` a mount point in its own shared peer group, as ``ip netns add`` does.

    Shared propagation lets a later unmount of a namespace file reach every mount namespace that
    copied it, so the namespace can be freed. (iproute2, ip/ipnetns.c, prepare_ns_mount_dir.)
    """
    try:
        mount("", directory, "none", MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Not a mount point yet: bind it onto itself, then make it private and shared.
        mount(directory, directory, "none", MS_BIND | MS_REC)
        mount("", directory, "none", MS_PRIVATE | MS_REC)
        mount("", directory, "none", MS_SHARED | MS_REC)


@dataclass(frozen=True, slots=True)
class Credentials:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    pidfd: int | None
    exited: bool = False
    """The peer had already exited when it was identified (SO_PEERPIDFD: ESRCH), so ``pid`` may
    name another process by now. Its requests still count: it sent them while it lived."""


def peer_credentials(sock: socket.socket) -> Credentials:
    """The connecting process's identity, from the kernel (SO_PEERCRED, SO_PEERGROUPS, SO_PEERPIDFD).

    The caller owns the returned pidfd and must close it.
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    pidfd, exited = _peer_pidfd(sock)
    return Credentials(pid, uid, gid, _peer_groups(sock), pidfd, exited)


def _peer_groups(sock: socket.socket) -> tuple[int, ...]:
    size = 64 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < 65536 * 4:
                size *= 4
                continue
            if exc.errno == errno.ENOPROTOOPT:
                return ()
            raise
        count = len(raw) // 4
        return tuple(struct.unpack(f"{count}I", raw[: count * 4]))


def _peer_pidfd(sock: socket.socket) -> tuple[int | None, bool]:
    """(pidfd, whether the peer is known to have exited already)."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD), False
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None, True  # the peer exited between connect and accept
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            return None, False  # kernel older than 6.5
        raise


def pidfd_alive(pidfd: int) -> bool:
    """Whether the process behind ``pidfd`` still runs (so its pid still names it)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    return True


def ns_identity(path: str) -> tuple[int, int]:
    """(device, inode) of a namespace file; equal pairs mean the same namespace, now."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def pids(proc: str = "/proc") -> Iterator[int]:
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            yield int(entry.name)


def processes_in_netns(identity: tuple[int, int], proc: str = "/proc") -> list[tuple[int, int]]:
    """(pid, uid) of every process whose network namespace is ``identity``.

    Processes exit while we walk /proc; a vanished pid is skipped on purpose (ENOENT/ESRCH), as is
    one whose namespace link we may not read.
    """
    found: list[tuple[int, int]] = []
    for pid in pids(proc):
        try:
            st = os.stat(f"{proc}/{pid}/ns/net")
            if (st.st_dev, st.st_ino) == identity:
                found.append((pid, os.stat(f"{proc}/{pid}").st_uid))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def netns_mount_holders(identity: tuple[int, int], proc: str = "/proc") -> list[tuple[int, str]]:
    """Bind mounts of the network namespace ``identity`` in any mount namespace: (pid, mount point).

    A namespace whose name was deleted lives on while such a mount exists (``mount --bind
    /run/netns/X /elsewhere``, often in another mount namespace, where ours cannot reach). Each mount
    namespace's ``mountinfo`` is read once, through one of its processes; nsfs mounts show their
    namespace as the root field ``net:[INODE]``. Processes vanish mid-walk: skipped on purpose.
    """
    wanted = f" net:[{identity[1]}] ".encode()
    seen: set[tuple[int, int]] = set()
    holders: list[tuple[int, str]] = []
    for pid in pids(proc):
        try:
            st = os.stat(f"{proc}/{pid}/ns/mnt")
            if (st.st_dev, st.st_ino) in seen:
                continue
            with open(f"{proc}/{pid}/mountinfo", "rb") as mountinfo:
                data = mountinfo.read()
        except OSError:
            # Gone (ENOENT, ESRCH), not ours to read (EACCES), or exiting right now: the
            # mountinfo of a process that became a zombie after the stat fails with EINVAL.
            continue
        seen.add((st.st_dev, st.st_ino))
        if wanted not in data:  # the common case, without splitting thousands of lines
            continue
        for line in data.decode(errors="replace").splitlines():
            fields = line.split(" ")
            if len(fields) > 4 and f" {fields[3]} ".encode() == wanted and " - nsfs " in line:
                holders.append((pid, fields[4]))
    return holders


def count_processes_by_netns(proc: str = "/proc") -> dict[tuple[int, int], int]:
    """How many processes sit in each network namespace, keyed by (device, inode). One /proc pass."""
    counts: dict[tuple[int, int], int] = {}
    for pid in pids(proc):
        try:
            st = os.stat(f"{proc}/{pid}/ns/net")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        key = (st.st_dev, st.st_ino)
        counts[key] = counts.get(key, 0) + 1
    return counts


# Namespaces of other processes, UTS, sysctls (issue 6) ---------------------------------------------

_NS_GET_USERNS = 0xB701  # _IO(NSIO, 0x1), include/uapi/linux/nsfs.h
_NS_GET_OWNER_UID = 0xB704  # _IO(NSIO, 0x4)


def hostname_in(uts_path: str) -> str:
    """The hostname of the UTS namespace mounted at ``uts_path`` (read from a dedicated thread)."""

    def work() -> str:
        fd = os.open(uts_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWUTS)
        finally:
            os.close(fd)
        return socket.gethostname()

    return run_in_thread(work)


def netns_owner_uid(netns_fd: int) -> int:
    """The uid that created the user namespace owning the network namespace ``netns_fd``.

    0 for namespaces of the initial user namespace (the host's, and every one root made); the
    caller's uid for one made by an unprivileged ``unshare -rn``. (ioctl_ns(2))
    """
    userns = owning_userns(netns_fd)
    try:
        return userns_owner(userns)
    finally:
        os.close(userns)


class PinnedProcess:
    """A process held by a pidfd; every read of ``/proc/PID`` is checked against it.

    A pid alone is racy: the process may exit and the number name another one while we read
    ``/proc/PID``. So a pidfd is taken first (or ``pidfd``, e.g. the peer's SO_PEERPIDFD, is
    borrowed), ``/proc/PID`` is read, and only if the pidfd's process is still alive afterwards can
    nothing have reused the pid in between: what was read belongs to the process the pidfd names.
    Methods raise ProcessLookupError once the process is gone.
    """

    def __init__(self, pid: int, pidfd: int | None = None, proc: str = "/proc") -> None:
        self.pid = pid
        self.proc = proc
        self._own = pidfd is None
        self._pidfd = os.pidfd_open(pid) if pidfd is None else pidfd

    def close(self) -> None:
        if self._own and self._pidfd >= 0:
            os.close(self._pidfd)
        self._pidfd = -1

    def __enter__(self) -> "PinnedProcess":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def uids(self) -> tuple[int, int, int]:
        """Real, effective and saved uid."""
        try:
            uids = _status_uids(f"{self.proc}/{self.pid}/status")
        except FileNotFoundError as exc:
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} exited") from exc
        self._still_alive()
        return uids

    def open_netns(self) -> int:
        """An fd on the process's network namespace; the caller closes it."""
        try:
            fd = os.open(f"{self.proc}/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} exited") from exc
        try:
            self._still_alive()
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _still_alive(self) -> None:
        if not pidfd_alive(self._pidfd):
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} exited")


def _status_uids(path: str) -> tuple[int, int, int]:
    with open(path, "rb") as status:
        for line in status:
            if line.startswith(b"Uid:"):
                real, effective, saved = (int(v) for v in line.split()[1:4])
                return real, effective, saved
    raise ProcessLookupError(errno.ESRCH, f"no Uid line in {path}")


def bind_namespace_fd(fd: int, path: str) -> None:
    """Bind-mount the namespace open as ``fd`` on the existing placeholder ``path``."""
    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND)


def set_interface_sysctl(
    family: str, ifname: str, key: str, value: str, proc: str = "/proc"
) -> bool:
    """Write ``/proc/sys/net/<family>/conf/<ifname>/<key>`` in the caller's namespace.

    False if the file does not exist (IPv6 disabled on the host, for instance).
    """
    try:
        with open(f"{proc}/sys/net/{family}/conf/{ifname}/{key}", "w") as file:
            file.write(value)
    except FileNotFoundError:
        return False
    return True


def signal_group(pid: int, pidfd: int, signum: int) -> None:
    """``signum`` to the process group ``pid`` leads, or to the process alone if it left it.

    The caller makes sure ``pid`` still names its process (it has not been reaped).
    """
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signum)
