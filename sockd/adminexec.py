"""The last root step of ``ns exec --admin``: become the caller inside its namespace's user namespace.

Run by sockd as ``python3 -I -S adminexec.py USERNS_FD ENV_FD UID GID GROUPS ARGV...`` (standard
library only, no site: it starts in a few ms), already inside the namespace's network and mount
namespaces, with the caller's working directory and umask, and no_new_privs set. USERNS_FD ``-``
means the user namespace that owns the network namespace this helper is in, ENV_FD ``-`` an empty
environment (under systemd ARGV starts with ``env -i VARS...``, run as the caller). It

0. sets the caller's supplementary GROUPS (comma-separated gids; in the host's user namespace:
   the caller's user namespace denies setgroups), and checks that UID owns the user namespace;
1. joins the user namespace that owns the network namespace (``setns``: a user namespace can only
   be joined by a single-threaded process, which the daemon is not -- hence this helper);
2. keeps its capabilities across the switch (``PR_SET_KEEPCAPS``), empties the bounding set but for
   CAP_NET_ADMIN and CAP_NET_RAW, and becomes the caller (``setresgid``/``setresuid``: the caller's
   uid and gid are the only ones the user namespace maps);
3. keeps exactly those two capabilities -- effective, permitted, inheritable and ambient, so that
   they survive the exec of an ordinary program -- and drops every other;
4. execs ARGV with the caller's environment, read from ENV_FD (never this helper's own: it runs
   as root, and the loader would honour a caller's LD_PRELOAD in it).

The capabilities count only in that user namespace, which owns nothing but the caller's network
namespace: routes, links, nftables, raw sockets there; nothing on the host, in another user's
namespace, or on files (see README, "The owner as admin").
"""

# os.execvpe imports warnings lazily (get_exec_path); after step 2 the caller may not be able to
# read the interpreter's standard library (a pyenv build under /root), so it is imported now.
import ctypes
import fcntl
import os
import struct
import sys
import warnings  # noqa: F401

CLONE_NEWUSER = 0x10000000
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
NS_GET_USERNS = 0xB701
NS_GET_OWNER_UID = 0xB704
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
KEPT = (CAP_NET_ADMIN, CAP_NET_RAW)
_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(*args: int) -> None:
    _check(_libc.prctl(*(ctypes.c_ulong(a) for a in args)), f"prctl{args[:2]}")


def owning_userns() -> int:
    """The user namespace that owns this process's network namespace."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)


def become(userns_fd: int, uid: int, gid: int) -> None:
    owner = bytearray(4)
    fcntl.ioctl(userns_fd, NS_GET_OWNER_UID, owner)
    if struct.unpack("=I", owner)[0] != uid:
        raise OSError(1, f"the user namespace is not uid {uid}'s")
    _check(_libc.setns(userns_fd, CLONE_NEWUSER), "setns(user namespace)")
    os.close(userns_fd)
    _prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    last = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115 -- tiny
    for cap in range(last + 1):
        if cap not in KEPT:
            _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    mask = sum(1 << cap for cap in KEPT)
    data = (_Data * 2)(_Data(mask, mask, mask), _Data(0, 0, 0))
    _check(_libc.capset(ctypes.byref(_Header(_CAPABILITY_VERSION_3, 0)), data), "capset")
    for cap in KEPT:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0)


def _environment(fd: int) -> dict[str, str]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    env = {}
    for entry in b"".join(chunks).split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def main(argv: list[str]) -> int:
    userns_arg, env_arg, uid_arg, gid_arg, groups_arg = argv[1:6]
    uid, gid = int(uid_arg), int(gid_arg)
    command = argv[6:]
    env = {} if env_arg == "-" else _environment(int(env_arg))
    try:
        os.setgroups([int(g) for g in groups_arg.split(",") if g])
        become(owning_userns() if userns_arg == "-" else int(userns_arg), uid, gid)
    except OSError as exc:
        print(
            f"sockd: cannot become uid {uid} in the namespace's user namespace: {exc}",
            file=sys.stderr,
        )
        return 126
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 -- the caller's own command
    except OSError as exc:
        print(f"sockd: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
