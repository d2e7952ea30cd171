"""Named network namespaces, compatible with ``ip netns`` (iproute2 ip/ipnetns.c).

A named namespace is a bind mount of a namespace file on ``<netns_dir>/<name>`` (``/run/netns``).
sockd adds an owner, recorded in the registry before anything is made.

A namespace created with a hostname also has its own UTS namespace, bind-mounted the same way on
``<state_dir>/uts/<name>`` (:meth:`Namespaces.uts_path`); whatever enters the namespace (``ns exec``)
enters that UTS namespace too when the file exists. ``ns attach`` names the network namespace of an
existing process instead of creating one.
"""

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sockctl.errors import (
    AlreadyExists,
    Busy,
    InternalError,
    NotFound,
    PermissionDenied,
    SockdError,
)
from sockctl.protocol import NetnsEntry, NsDeleteReply, NsIdentifyReply, NsInfo, NsPidsResult
from sockd import linux, rtnl
from sockd.log import Logger
from sockd.policy import Peer, Policy
from sockd.registry import Record, Registry
from sockd.rtnl import Rtnl

DEFAULT_NETNS_DIR = "/run/netns"
DEFAULT_UTS_DIR = "/run/sockd/uts"
DEFAULT_PROC = "/proc"
PING_GROUP_RANGE = "0 2147483647"
"""Every gid may open ICMP datagram sockets (unprivileged ping) -- in sockd's namespaces only: the
sysctl is per network namespace, and the host's own stays as it is."""


class Faults:
    """Named pause points in multi-step operations, for crash tests (``sockd --pause-at STEP``).

    When the daemon reaches the configured step it logs ``paused at STEP`` and blocks that request
    forever, so a test can kill the daemon exactly there. Unset in production: a no-op.
    """

    STEPS = (
        "ns.create.recorded",
        "ns.create.placeholder",
        "ns.create.unshared",
        "ns.create.mounted",
        "ns.delete.unmounted",
        # issue 7: attach (sockd/netns.py)
        "ns.attach.recorded",
        "ns.attach.placeholder",
        # issue 6: links (sockd/links.py)
        "link.recorded",
        "link.created",
        "link.configured",
        "unlink.deleted",
        # issue 14: a way out (sockd/links.py)
        "link.nat.resolv",
        "link.nat.synced",
        "publish.recorded",
    )

    def __init__(self, pause_at: str | None, log: Logger) -> None:
        self.pause_at = pause_at
        self.log = log

    def point(self, step: str) -> None:
        if step == self.pause_at:
            self.log.warning(f"paused at {step}", SOCKD_PAUSED_AT=step)
            threading.Event().wait()


@dataclass(frozen=True, slots=True)
class _Entry:
    """One entry of the netns directory as it is now."""

    name: str
    path: str
    mounted: bool


class Namespaces:
    """Create, delete and inspect named network namespaces; all mutations hold one lock."""

    def __init__(
        self,
        registry: Registry,
        policy: Callable[[], Policy],
        log: Logger,
        faults: Faults,
        netns_dir: str = DEFAULT_NETNS_DIR,
        proc: str = DEFAULT_PROC,
        uts_dir: str = DEFAULT_UTS_DIR,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.log = log
        self.faults = faults
        self.netns_dir = netns_dir
        self.proc = proc
        self.uts_dir = uts_dir
        self._lock = threading.Lock()
        self.start_helper: Callable[[list[str]], linux.Started] = linux.spawn_directly
        """How helper processes (``ns create --admin``'s) start: sockd's children, or units."""
        self.before_discard: list[Callable[[str], None]] = []
        """Called with the lock held and the name of a namespace about to be deleted, after the
        checks passed: what hangs off it (links) goes first."""

    @property
    def lock(self) -> threading.Lock:
        """Held by every mutation of namespaces and of what hangs off them (links)."""
        return self._lock

    # Mutations ----------------------------------------------------------------------------------

    def _claim(self, peer: Peer, name: str, path: str, **fields: Any) -> Record:
        """The start of create and attach, with the lock held: quota, a free name, and ownership.

        Ownership is recorded first: whatever a crash leaves behind from here on is owned and
        cleanable.
        """
        self.policy().check_quota(peer, self._owned(peer.uid))
        if os.path.lexists(path):
            raise AlreadyExists(f"namespace {name} already exists", field="name")
        record = Record(name=name, owner_uid=peer.uid, created=time.time(), **fields)
        self._record(record)
        return record

    def create(
        self,
        peer: Peer,
        name: str,
        *,
        loopback_up: bool = True,
        hostname: str | None = None,
        admin: bool = False,
    ) -> NsInfo:
        path = self._path(name)
        with self._lock:
            record = self._claim(peer, name, path, hostname=hostname, admin=admin)
            self.faults.point("ns.create.recorded")
            try:
                uts = self._new_uts(name) if hostname else None
                if admin:
                    self._make_admin(peer, name, path, loopback_up, uts, hostname)
                else:
                    self._make(path, loopback_up, uts, hostname)
                self._record(record.ready())
            except FileExistsError as exc:
                # Someone else (`ip netns add`) made the name between our check and our open.
                self.registry.remove(name)
                raise AlreadyExists(f"namespace {name} already exists", field="name") from exc
            except BaseException as exc:
                self._discard(path)
                self._discard_uts(name)
                self.registry.remove(name)
                if isinstance(exc, OSError):
                    raise InternalError(
                        f"cannot create namespace {name}: {exc.strerror}"
                        + (f" ({exc.filename})" if exc.filename else ""),
                        details={"errno": errno.errorcode.get(exc.errno or 0, "")},
                    ) from exc
                raise
        # A namespace made a moment ago has no process inside: skip the /proc walk.
        return self._info(name, record.ready(), linux.ns_identity(path), counts={})

    def _record(self, record: Record) -> None:
        """Write a registry record; a full or broken state directory becomes a clear refusal."""
        try:
            self.registry.write(record)
        except OSError as exc:
            raise InternalError(
                f"cannot record namespace {record.name} in {self.registry.directory}: "
                f"{exc.strerror} (is the filesystem of the state directory full?)",
                details={"errno": errno.errorcode.get(exc.errno or 0, "")},
            ) from exc

    def _make(
        self, path: str, loopback_up: bool, uts_path: str | None, hostname: str | None
    ) -> None:
        with self._netns_dir_locked():
            # O_EXCL: losing a race against `ip netns add` of the same name fails here, not later.
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
            self.faults.point("ns.create.placeholder")
            linux.new_netns_bound_to(
                path,
                loopback_up=loopback_up,
                before_mount=lambda: self.faults.point("ns.create.unshared"),
                uts_path=uts_path,
                hostname=hostname,
                ping_group_range=PING_GROUP_RANGE,
            )
            self.faults.point("ns.create.mounted")

    def _make_admin(
        self,
        peer: Peer,
        name: str,
        path: str,
        loopback_up: bool,
        uts_path: str | None,
        hostname: str | None,
    ) -> None:
        """A network namespace owned by a new user namespace of the caller's (``--admin``).

        The user namespace must be made *by the caller* (its owner is its creator's euid), and
        map only the caller's uid and gid to themselves (with setgroups denied, as for any
        unprivileged user namespace): ``setpriv`` drops to the caller, ``unshare --map-current-user
        --net`` makes both, and sockd bind-mounts the network namespace on its placeholder before
        the helper exits (the network namespace keeps its owning user namespace alive; ``ns exec
        --admin`` finds it with NS_GET_USERNS). Root then sets up the inside as for any
        namespace: loopback up, ping_group_range, hostname.
        """
        with self._netns_dir_locked():
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
            self.faults.point("ns.create.placeholder")
            linux.new_admin_netns(
                path,
                peer.uid,
                peer.creds.gid,
                before_mount=lambda: self.faults.point("ns.create.unshared"),
                start=self.start_helper,
            )
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setup_netns(
                    fd,
                    loopback_up=loopback_up,
                    ping_group_range=PING_GROUP_RANGE,
                    uts_path=uts_path,
                    hostname=hostname,
                )
            finally:
                os.close(fd)
            self.faults.point("ns.create.mounted")

    def delete(self, peer: Peer, name: str, *, force: bool = False) -> NsDeleteReply:
        path = self._path(name)
        with self._lock:
            if not os.path.lexists(path):
                raise NotFound(f"no namespace named {name}", field="name")
            record = self.registry.get(name)
            self.policy().require_owner(
                peer, record.owner_uid if record else 0, f"namespace {name}"
            )
            inside: list[tuple[int, int]] = []
            identity = None
            if linux.is_namespace_mount(path):
                identity = linux.ns_identity(path)
                inside = linux.processes_in_netns(identity, self.proc)
            visible, hidden = self._visible_pids(peer, inside)
            # An attached namespace belongs to the processes it was taken from: deleting removes
            # only the name, like `ip netns delete` of an `ip netns attach`ed one.
            attached = record is not None and record.attached
            if inside and not force and not attached:
                raise Busy(
                    f"namespace {name} has {len(inside)} processes inside; stop them, or delete "
                    f"with --force (they keep the namespace alive without its name)",
                    details={"pids": visible, "hidden_pids": hidden},
                )
            for hook in self.before_discard:
                hook(name)
            self._discard(path)
            self._discard_uts(name)
            self.registry.remove(name)
        pins = linux.netns_mount_holders(identity, self.proc) if identity is not None else []
        if pins:
            where = ", ".join(
                f"{mountpoint} (mount namespace of pid {pid})" for pid, mountpoint in pins
            )
            self.log.warning(
                f"deleted the name {name}, but bind mounts keep the namespace alive: {where}",
                SOCKD_NS=name,
            )
        return NsDeleteReply(
            name=name,
            pids=visible,
            hidden_pids=hidden,
            still_alive=bool(inside or pins),
            pinned_mounts=len(pins),
        )

    def _discard(self, path: str) -> None:
        """Unmount and remove a namespace file (or a bare placeholder), as ``ip netns del`` does."""
        with self._netns_dir_locked():
            _unmount_all(path)
            self.faults.point("ns.delete.unmounted")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise Busy(
                        f"{path} is still a mount point after unmounting it {_MAX_STACKED} times; "
                        f"see `findmnt {path}`",
                        field="name",
                    ) from exc
                raise InternalError(f"cannot remove {path}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _netns_dir_locked(self) -> Iterator[None]:
        """The netns directory, prepared like iproute2 does and flock'ed against parallel ``ip``."""
        os.makedirs(self.netns_dir, mode=0o755, exist_ok=True)
        fd = os.open(self.netns_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            linux.make_shared_mountpoint(self.netns_dir)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    # Queries -------------------------------------------------------------------------------------

    def infos(self) -> Iterator[NsInfo]:
        counts = linux.count_processes_by_netns(self.proc)
        records = {r.name: r for r in self.registry.records()}
        for entry in self._entries():
            record = records.get(entry.name)
            if record is not None and record.state == "creating":
                continue  # being made right now; shown once ready
            try:
                identity = linux.ns_identity(entry.path) if entry.mounted else None
            except FileNotFoundError:
                continue  # deleted (by us or by `ip netns del`) while we were listing
            yield self._info(entry.name, record, identity, counts)

    def scan(self, peer: Peer) -> list[NetnsEntry]:
        """Every network namespace a process is in or a name holds (see NsScanRequest)."""
        everything = self.policy().sees_all_processes(peer)
        inside: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for pid in linux.pids(self.proc):
            try:
                st = os.stat(f"{self.proc}/{pid}/ns/net")
                uid = os.stat(f"{self.proc}/{pid}").st_uid
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            inside.setdefault((st.st_dev, st.st_ino), []).append((pid, uid))
        names: dict[tuple[int, int], str] = {}
        for entry in self._entries():
            if entry.mounted:
                with contextlib.suppress(FileNotFoundError):
                    names.setdefault(linux.ns_identity(entry.path), entry.name)
        host = linux.ns_identity(f"{self.proc}/self/ns/net")
        found = []
        with Rtnl.here() as nl:
            for identity in sorted(set(inside) | set(names), key=lambda i: i[1]):
                processes = inside.get(identity, [])
                visible = [p for p in processes if everything or p[1] == peer.uid]
                if not visible and identity not in names:
                    continue  # another user's process's namespace
                path = (
                    os.path.join(self.netns_dir, names[identity])
                    if identity in names
                    else f"{self.proc}/{processes[0][0]}/ns/net"
                )
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    continue  # gone meanwhile
                try:
                    if linux.ns_identity(f"/proc/self/fd/{fd}") != identity:
                        continue  # the pid was reused
                    try:
                        nsid = nl.get_nsid(fd)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        # Dying: its last process left while we looked, and the kernel refuses a
                        # reference to a namespace on its way out (found by the soak).
                        continue
                    owner = linux.netns_owner_uid(fd)
                finally:
                    os.close(fd)
                first = min(visible) if visible else None
                found.append(
                    NetnsEntry(
                        id=identity[1],
                        nsid=nsid,
                        processes=len(processes),
                        pid=None if first is None else first[0],
                        uid=None if first is None else first[1],
                        command=None if first is None else _command_line(self.proc, first[0]),
                        name=names.get(identity),
                        host=identity == host,
                        owner_uid=owner,
                    )
                )
        return found

    def identify(self, peer: Peer, pid: int | None) -> NsIdentifyReply:
        target = peer.pid if pid is None else pid
        if pid is None and _caller_exited(peer):
            # The caller exited and its pid may already name another process.
            raise NotFound(f"the calling process {target} has exited", field="pid")
        try:
            identity = linux.ns_identity(f"{self.proc}/{target}/ns/net")
            owner = os.stat(f"{self.proc}/{target}").st_uid
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise NotFound(f"no process with pid {target}", field="pid") from exc
        except PermissionError as exc:
            # A process of another user namespace or under an LSM's ptrace rules (pid 1 of a
            # container host, for one): even root's stat of its ns/net link is refused.
            raise PermissionDenied(
                f"the kernel does not let sockd look at the namespace of process {target}",
                field="pid",
            ) from exc
        if pid is None and _caller_exited(peer):
            # It exited while we looked: what we read may be another process's.
            raise NotFound(f"the calling process {target} has exited", field="pid")
        if owner != peer.uid and not self.policy().sees_all_processes(peer):
            raise PermissionDenied(
                f"process {target} belongs to uid {owner}; only your own processes can be "
                f"identified (or join a monitor group)",
                field="pid",
            )
        return NsIdentifyReply(pid=target, names=self._names_of(identity))

    def _names_of(self, identity: tuple[int, int]) -> list[str]:
        names = []
        for entry in self._entries():
            try:
                if entry.mounted and linux.ns_identity(entry.path) == identity:
                    names.append(entry.name)
            except FileNotFoundError:
                continue  # deleted while we were looking
        return names

    def pids(self, peer: Peer, name: str) -> tuple[list[int], NsPidsResult]:
        path = self._path(name)
        if not linux.is_namespace_mount(path):
            raise NotFound(f"no namespace named {name}", field="name")
        inside = linux.processes_in_netns(linux.ns_identity(path), self.proc)
        visible, hidden = self._visible_pids(peer, inside)
        return visible, NsPidsResult(name=name, hidden=hidden)

    def mounted(self) -> list[tuple[str, str]]:
        """(name, path) of every named namespace that is mounted now, sorted by name."""
        return [(e.name, e.path) for e in self._entries() if e.mounted]

    def count_managed(self) -> int:
        return sum(1 for r in self.registry.records() if r.state == "ready")

    def owned_by(self, uid: int) -> int:
        with self._lock:
            return self._owned(uid)

    def _owned(self, uid: int) -> int:
        """Namespaces ``uid`` owns now; records of ones deleted behind our back are dropped here.

        Called with the lock held, so a record still ``creating`` is another request's, not a ghost.
        """
        owned = 0
        for record in self.registry.records():
            if record.owner_uid != uid:
                continue
            if record.state == "ready" and not linux.is_namespace_mount(self._path(record.name)):
                self.registry.remove(record.name)
                self.log.info(
                    f"forgot namespace {record.name}: deleted outside sockd", SOCKD_NS=record.name
                )
                continue
            owned += 1
        return owned

    # Entering (issue 5) ------------------------------------------------------------------------

    def open_for_entry(self, peer: Peer, name: str) -> int:
        """An O_RDONLY descriptor of namespace ``name``, if ``peer`` may act inside it.

        The caller owns the descriptor. The owner is read *after* opening and the name is checked to
        still lead to the opened namespace, so a delete and re-create racing with this call cannot
        pair one namespace's owner with another namespace.
        """
        path = self._path(name)
        if not linux.is_namespace_mount(path):
            raise NotFound(f"no namespace named {name}", field="name")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"no namespace named {name}", field="name") from exc
        with ExitStack() as on_error:
            on_error.callback(os.close, fd)
            record = self.registry.get(name)
            st = os.fstat(fd)
            try:
                same = linux.ns_identity(path) == (st.st_dev, st.st_ino)
            except FileNotFoundError:
                same = False
            if not same:
                raise NotFound(f"namespace {name} was deleted meanwhile", field="name")
            self.policy().require_enter(peer, record.owner_uid if record else 0, name)
            on_error.pop_all()
        return fd

    def open_admin_userns(self, peer: Peer, netns_fd: int, name: str) -> int:
        """The user namespace owning ``netns_fd``, if ``peer`` owns it (``ns exec --admin``).

        Asked of the kernel (NS_GET_USERNS, NS_GET_OWNER_UID), not of the registry: a namespace
        made with ``ns create --admin``, or one the caller made with ``unshare -rn`` and attached,
        qualifies; one owned by the host's user namespace never does, whoever asks.
        """
        userns = linux.owning_userns(netns_fd)
        try:
            owner = linux.userns_owner(userns)
            if owner == peer.uid and not linux.is_initial_userns(userns):
                return userns
        except BaseException:
            os.close(userns)
            raise
        os.close(userns)
        raise PermissionDenied(
            f"namespace {name} has no admin mode for uid {peer.uid}: it is not owned by a user "
            f"namespace of yours (make it with `sockctl ns create --admin`)",
            field="admin",
        )

    # Start-up repair ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the registry and the netns directory agree again, after a crash or ``ip netns del``.

        - a placeholder without a mount (a crash between open and bind mount, ours or ``ip``'s) breaks
          ``ip netns list``: it is removed;
        - a record still ``creating`` is rolled back: its client never got an answer;
        - a record whose namespace is gone is dropped.
        """
        with self._lock:
            records = {r.name: r for r in self.registry.records()}
            for name, record in records.items():
                path = self._path(name)
                if record.state == "creating":
                    try:
                        self._discard(path)
                    except SockdError as exc:
                        # Keep the record: the half-made namespace stays owned and is retried on
                        # the next start, instead of becoming an orphan nobody may delete.
                        self.log.error(
                            f"cannot roll back interrupted namespace {name}: {exc}; it stays "
                            f"owned by uid {record.owner_uid} (unmount {path} by hand, then "
                            f"restart sockd)",
                            SOCKD_NS=name,
                        )
                        continue
                    self._discard_uts(name)
                    self.registry.remove(name)
                    self.log.warning(
                        f"rolled back namespace {name}: its creation was interrupted",
                        SOCKD_NS=name,
                        SOCKD_OWNER_UID=record.owner_uid,
                    )
                elif not linux.is_namespace_mount(path):
                    self._discard_uts(name)
                    self.registry.remove(name)
                    self.log.info(f"forgot namespace {name}: deleted outside sockd", SOCKD_NS=name)
            self._reconcile_uts()
            for entry in self._entries():
                if entry.mounted or not _is_placeholder(entry.path):
                    continue
                # Judged again under the directory's flock: `ip netns add` (or another sockd)
                # holds it from placeholder to bind mount, so a placeholder seen unlocked may be a
                # namespace being made right now, mounted by the time we get the lock.
                try:
                    with self._netns_dir_locked():
                        if linux.is_namespace_mount(entry.path) or not _is_placeholder(entry.path):
                            continue
                        with contextlib.suppress(FileNotFoundError):  # `ip netns del` was faster
                            os.unlink(entry.path)
                except OSError as exc:
                    # EBUSY: another mount namespace pins it. Starting matters more.
                    self.log.error(
                        f"cannot remove broken placeholder {entry.path}: {exc.strerror} "
                        f"(a mount in another mount namespace pins it; `umount` it there)",
                        SOCKD_NS=entry.name,
                    )
                    continue
                self.log.warning(
                    f"removed broken placeholder {entry.path} (no namespace mounted on it)",
                    SOCKD_NS=entry.name,
                )

    # Attach, nsid, UTS, one namespace (issue 6) -------------------------------------------------

    def attach(self, peer: Peer, name: str, pid: int | None) -> NsInfo:
        """Name the network namespace of process ``pid`` (the caller if None), as ``ip netns attach``.

        A user may attach only a process running as them (real, effective and saved uid), checked
        through a pidfd, and only a namespace of a user namespace they created (``unshare -rn``): not
        the host's, nor one root made that one of their processes happens to sit in, so naming it
        gives them nothing they did not already have. Root may attach any.
        """
        target = peer.pid if pid is None else pid
        if pid is None and _caller_exited(peer):
            raise NotFound(f"the calling process {target} has exited", field="pid")
        try:
            with linux.PinnedProcess(
                target, peer.creds.pidfd if pid is None else None, self.proc
            ) as process:
                uids = process.uids()
                if not peer.root and any(uid != peer.uid for uid in uids):
                    raise PermissionDenied(
                        f"process {target} does not run as uid {peer.uid}; only your own "
                        f"processes can be attached",
                        field="pid",
                        details={"uids": list(uids)},
                    )
                netns_fd = process.open_netns()
        except ProcessLookupError as exc:
            raise NotFound(f"no process with pid {target}", field="pid") from exc
        except PermissionError as exc:
            raise PermissionDenied(
                f"the kernel does not let sockd open the namespace of process {target}",
                field="pid",
            ) from exc
        try:
            return self._attach(peer, name, target, netns_fd)
        finally:
            os.close(netns_fd)

    def _attach(self, peer: Peer, name: str, pid: int, netns_fd: int) -> NsInfo:
        owner = linux.netns_owner_uid(netns_fd)
        if not peer.root and owner != peer.uid:
            raise PermissionDenied(
                f"the network namespace of process {pid} belongs to a user namespace of uid "
                f"{owner}; you can attach only namespaces you made yourself (e.g. `unshare -rn`)",
                field="pid",
                details={"namespace_owner_uid": owner},
            )
        path = self._path(name)
        with self._lock:
            record = self._claim(peer, name, path, attached=True)
            self.faults.point("ns.attach.recorded")
            try:
                with self._netns_dir_locked():
                    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
                    self.faults.point("ns.attach.placeholder")
                    linux.bind_namespace_fd(netns_fd, path)
                self._record(record.ready())
            except FileExistsError as exc:
                self.registry.remove(name)
                raise AlreadyExists(f"namespace {name} already exists", field="name") from exc
            except BaseException as exc:
                self._discard(path)
                self.registry.remove(name)
                if isinstance(exc, OSError):
                    raise InternalError(f"cannot attach {name}: {exc.strerror}") from exc
                raise
        self.log.info(f"attached namespace {name} from pid {pid}", SOCKD_NS=name, SOCKD_PID=pid)
        return self._info(name, record.ready(), linux.ns_identity(path))

    def set_nsid(self, peer: Peer, name: str, nsid: int | None) -> NsInfo:
        """Give ``name`` the nsid ``nsid`` (None: the lowest free) in the host's namespace."""
        path = self._path(name)
        with self._lock:
            record = self.require_owned(peer, name)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                current = rtnl.get_nsid(fd)
                if current is not None:
                    raise AlreadyExists(
                        f"namespace {name} already has nsid {current}, and nsids cannot change "
                        f"(the kernel also assigns one when a link first crosses into it)",
                        field="name",
                        details={"nsid": current},
                    )
                try:
                    with Rtnl.here() as nl:
                        nl.new_nsid(fd, nsid)
                except FileExistsError as exc:
                    raise AlreadyExists(
                        f"nsid {nsid} is taken by another namespace", field="nsid"
                    ) from exc
                except OSError as exc:
                    raise InternalError(f"cannot set the nsid of {name}: {exc}") from exc
            finally:
                os.close(fd)
        return self._info(name, record, linux.ns_identity(path))

    def info(self, name: str) -> NsInfo:
        """One named namespace, as :meth:`infos` lists it."""
        path = self._path(name)
        if not os.path.lexists(path):
            raise NotFound(f"no namespace named {name}", field="name")
        record = self.registry.get(name)
        mounted = linux.is_namespace_mount(path)
        return self._info(name, record, linux.ns_identity(path) if mounted else None)

    def path(self, name: str) -> str:
        """Where the network namespace ``name`` is mounted."""
        return self._path(name)

    def uts_path(self, name: str) -> str:
        """Where the UTS namespace of ``name`` is mounted, when it has one (``ns create --hostname``).

        ``ns exec`` enters it if this file exists; ``nsenter --uts=PATH`` does too.
        """
        return os.path.join(self.uts_dir, name)

    def require_owned(self, peer: Peer, name: str) -> Record | None:
        """Check that ``name`` is a mounted namespace ``peer`` owns (root: any); its record.

        None for a namespace sockd did not make (``ip netns add``): only root gets that far.
        """
        path = self._path(name)
        record = self.registry.get(name)
        if not linux.is_namespace_mount(path) or (record is not None and record.state != "ready"):
            raise NotFound(f"no namespace named {name}", field="name")
        self.policy().require_owner(peer, record.owner_uid if record else 0, f"namespace {name}")
        return record

    def _new_uts(self, name: str) -> str:
        """The empty placeholder the UTS namespace of ``name`` gets mounted on."""
        return self._new_side(self.uts_dir, name)

    def _new_side(self, directory: str, name: str) -> str:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, name)
        self._discard_file(path)  # a leftover of a crash: the name is free (checked under the lock)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
        return path

    def _discard_uts(self, name: str) -> None:
        """Unmount and remove the UTS namespace file of ``name``, if there is one."""
        self._discard_file(self.uts_path(name))

    def _discard_file(self, path: str) -> None:
        if not os.path.lexists(path):
            return
        try:
            linux.umount2(path, linux.MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
                raise InternalError(f"cannot unmount {path}: {exc.strerror}") from exc
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InternalError(f"cannot remove {path}: {exc.strerror}") from exc

    def _reconcile_uts(self) -> None:
        """Remove UTS namespace files no namespace record accounts for (a crash mid-create)."""
        try:
            names = os.listdir(self.uts_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            record = self.registry.get(name)
            if record is None or record.hostname is None:
                self._discard_file(self.uts_path(name))
                self.log.warning(f"removed stray UTS namespace file of {name}", SOCKD_NS=name)

    # Helpers --------------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        # Names are validated against protocol.NS_NAME_PATTERN before they get here: no "/" or "..".
        return os.path.join(self.netns_dir, name)

    def _entries(self) -> list[_Entry]:
        try:
            names = sorted(os.listdir(self.netns_dir))
        except FileNotFoundError:
            return []
        entries = []
        for name in names:
            path = os.path.join(self.netns_dir, name)
            entries.append(_Entry(name, path, linux.is_namespace_mount(path)))
        return entries

    def _info(
        self,
        name: str,
        record: Record | None,
        identity: tuple[int, int] | None,
        counts: dict[tuple[int, int], int] | None = None,
    ) -> NsInfo:
        nsid = None
        if identity is not None:
            try:
                fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                identity = None
            else:
                try:
                    nsid = rtnl.get_nsid(fd)
                except OSError:
                    nsid = None  # a kernel without nsid support for this pair: report none
                finally:
                    os.close(fd)
        if counts is None and identity is not None:
            processes = len(linux.processes_in_netns(identity, self.proc))
        else:
            processes = (counts or {}).get(identity, 0) if identity else 0
        return NsInfo(
            name=name,
            id=identity[1] if identity else None,
            owner_uid=record.owner_uid if record else 0,
            managed=record is not None,
            created=record.created if record else None,
            nsid=nsid,
            processes=processes,
            hostname=record.hostname if record else None,
            attached=record.attached if record else False,
        )

    def _visible_pids(self, peer: Peer, inside: list[tuple[int, int]]) -> tuple[list[int], int]:
        if self.policy().sees_all_processes(peer):
            return sorted(pid for pid, _ in inside), 0
        visible = sorted(pid for pid, uid in inside if uid == peer.uid)
        return visible, len(inside) - len(visible)


_MAX_STACKED = 16
"""Mounts stacked on one namespace file that a delete peels off (``mount --bind`` on itself)."""


def _unmount_all(path: str) -> None:
    """Unmount ``path`` until it is no mount point: with a second mount stacked on a namespace file
    (``mount --bind /run/netns/X /run/netns/X``) one unmount left it, and the unlink then failed
    with EBUSY. MNT_DETACH: a mount another mount namespace copied does not hold us up."""
    for _ in range(_MAX_STACKED):
        try:
            linux.umount2(path, linux.MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
                return
            raise InternalError(f"cannot unmount {path}: {exc.strerror}") from exc


def _caller_exited(peer: Peer) -> bool:
    """Whether the process that sent the request is gone (its pid may name another one now)."""
    if peer.creds.exited:
        return True
    return peer.creds.pidfd is not None and not linux.pidfd_alive(peer.creds.pidfd)


def _is_placeholder(path: str) -> bool:
    """An empty regular file: what ``ip netns add`` and sockd create before the bind mount."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return os.path.isfile(path) and not os.path.islink(path) and st.st_size == 0


def _command_line(proc: str, pid: int, limit: int = 256) -> str | None:
    """The command line of ``pid`` (``ps -o args``: arguments joined by spaces), bounded."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as file:
            raw = file.read(limit * 4)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if not text:  # a kernel thread
        with contextlib.suppress(OSError), open(f"{proc}/{pid}/comm") as file:
            text = "[" + file.read().strip() + "]"
    return text[:limit]
