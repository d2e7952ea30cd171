"""The ownership registry: one small JSON file per namespace (and per link) sockd manages.

It lives under the state directory (default ``/run/sockd``), so it survives daemon restarts but not a
reboot, exactly like the namespaces it describes. A record is written *before* the namespace exists
(state ``creating``) so that whatever a crash leaves half-made is owned and can be cleaned up.
Links (``<state>/links/<id>.json``, :class:`LinkRegistry`) follow the same rules.
"""

import errno
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Generic, Literal, TypeVar

State = Literal["creating", "ready"]


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    owner_uid: int
    created: float
    state: State = "creating"
    hostname: str | None = None
    """Set when the namespace has its own UTS namespace (``ns create --hostname``)."""
    attached: bool = False
    """Named from an existing process's namespace (``ns attach``) rather than created."""
    admin: bool = False
    """Owned by a user namespace of the owner's (``ns create --admin``), kept alongside it."""

    def ready(self) -> "Record":
        return replace(self, state="ready")


class CorruptRecord(Exception):
    """A registry file that cannot be read back."""


_T = TypeVar("_T")


class _Store(Generic[_T]):
    """JSON files ``<directory>/<key>.json``, each with a mirror ``<state>/mirror/<kind>/<key>.json``.

    Why a mirror: a record is the only place that says who owns a namespace or a link. If the file
    is damaged on disk (an administrator's editor, a bad write), the record is restored from its
    mirror and ownership is kept. Only when both copies are unreadable is the file quarantined
    (``*.corrupt``, kept for the administrator) and ``on_corrupt`` told, loudly, what that means and
    how to give it back.

    Order: ``write`` writes the record, then its mirror; ``remove`` removes the mirror, then the
    record. A crash between leaves a valid record with a stale or missing mirror (harmless), never a
    mirror whose record was removed on purpose; so a mirror without a record means the record was
    lost, and it is restored.
    """

    def __init__(
        self,
        directory: Path,
        parse: Callable[[str, bytes], _T],
        on_corrupt: Callable[[str], None],
        lost: Callable[[str, Path], str],
    ) -> None:
        self.directory = directory
        self.mirror = directory.parent / "mirror" / directory.name
        self.parse = parse
        self.on_corrupt = on_corrupt
        self.lost = lost
        """The actionable message for a key whose record and mirror are both unreadable."""
        for path in (self.directory, self.mirror):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def write(self, key: str, data: bytes, *, mirrored: bool = True) -> None:
        write_atomic(self.path(key), data)
        if mirrored:
            write_atomic(self.mirror / f"{key}.json", data)

    def remove(self, key: str) -> None:
        (self.mirror / f"{key}.json").unlink(missing_ok=True)
        self.path(key).unlink(missing_ok=True)

    def get(self, key: str) -> _T | None:
        """The record of ``key``; None if there is none (or it could not be recovered)."""
        primary, mirror = self.path(key), self.mirror / f"{key}.json"
        try:
            return self.parse(key, primary.read_bytes())
        except FileNotFoundError:
            if not mirror.exists():
                return None
            damage = "missing"
        except CorruptRecord as exc:
            damage = str(exc)
        try:
            raw = mirror.read_bytes()
            record = self.parse(key, raw)
        except (FileNotFoundError, CorruptRecord) as exc:
            if primary.exists():
                aside = quarantine(primary)
                self.on_corrupt(
                    f"registry file {primary} is {damage}, and its mirror {mirror} is "
                    f"{'missing' if isinstance(exc, FileNotFoundError) else exc}; moved to "
                    f"{aside}. {self.lost(key, aside)}"
                )
            if mirror.exists():
                quarantine(mirror)
            return None
        write_atomic(primary, raw)
        self.on_corrupt(f"registry file {primary} was {damage}; restored it from {mirror}")
        return record

    def keys(self) -> list[str]:
        found = {p.stem for p in self.directory.glob("*.json")}
        found |= {p.stem for p in self.mirror.glob("*.json")}
        return sorted(found)

    def records(self) -> list[_T]:
        """Every readable (or recovered) record; what cannot be recovered is reported."""
        found = []
        for key in self.keys():
            record = self.get(key)
            if record is not None:
                found.append(record)
        return found


class Registry:
    """Namespace records ``<directory>/<name>.json``. Callers serialize writers (the lock)."""

    def __init__(self, directory: str, on_corrupt: Callable[[str], None]) -> None:
        self.directory = Path(directory)
        self._store = _Store(self.directory, _parse_namespace, on_corrupt, _lost_namespace)

    def write(self, record: Record) -> None:
        # A record still "creating" lives for a millisecond and is rolled back if anything goes
        # wrong: only finished ones are worth a mirror (it halves the writes of a create).
        self._store.write(
            record.name, json.dumps(asdict(record)).encode(), mirrored=record.state == "ready"
        )

    def get(self, name: str) -> Record | None:
        return self._store.get(name)

    def remove(self, name: str) -> None:
        self._store.remove(name)

    def records(self) -> list[Record]:
        """Every readable record, by name; damaged files are restored from their mirrors."""
        return self._store.records()


def _parse_namespace(name: str, raw: bytes) -> Record:
    try:
        data = json.loads(raw)
        hostname = data.get("hostname")
        record = Record(
            name=str(data["name"]),
            owner_uid=int(data["owner_uid"]),
            created=float(data["created"]),
            state=data["state"] if data["state"] in ("creating", "ready") else "creating",
            hostname=None if hostname is None else str(hostname),
            attached=bool(data.get("attached", False)),
            admin=bool(data.get("admin", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecord(f"unreadable ({exc})") from exc
    if record.name != name:
        raise CorruptRecord(f"about another namespace ({record.name!r})")
    return record


def _lost_namespace(name: str, aside: Path) -> str:
    return (
        f"Namespace {name}, if it still exists, is now treated as made outside sockd (owned by "
        f"root): its owner can no longer delete it, and it no longer counts against their quota. "
        f"To give it back, repair the JSON in {aside} (name, owner_uid, created, state "
        f'"ready") and move it to {aside.with_suffix(".json")}, then restart sockd; or delete the '
        f"namespace as root."
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    # No fsync: the registry describes namespaces and links, which do not survive a reboot
    # either; what must hold is atomicity against a daemon crash, and the rename gives that.
    try:
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full filesystem must not collect half-written files
        raise


def quarantine(path: Path) -> Path:
    """Move an unreadable registry file aside (``*.corrupt``, for the administrator); where to."""
    aside = path.with_suffix(".corrupt")
    os.replace(path, aside)
    return aside


# Links (issue 6) -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortRecord:
    """A host port published into a link's namespace (``ns publish``)."""

    transport: str
    host_port: int
    port: int
    owner_uid: int


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One veth pair sockd made: ``ns``:``ifname`` <-> ``peer_ns`` (None: the host):``peer_ifname``."""

    id: str
    owner_uid: int
    ns: str
    ifname: str
    peer_ns: str | None
    peer_ifname: str
    address: str | None
    """Address/prefix given to the ``ns`` end, if any."""
    peer_address: str | None
    pool_block: str | None
    """The block of the address pool this link holds (released with the record), if any."""
    created: float
    state: State = "creating"
    nat: bool = False
    """A way out through the host (``ns link --nat``): default route, forwarding, source NAT."""
    published: tuple[PortRecord, ...] = ()

    def ready(self) -> "LinkRecord":
        return replace(self, state="ready")

    def touches(self, ns: str) -> bool:
        return ns in (self.ns, self.peer_ns)


class LinkRegistry:
    """Files ``<directory>/<id>.json``, one per link. Callers serialize writers (the namespace lock)."""

    def __init__(self, directory: str, on_corrupt: Callable[[str], None]) -> None:
        self.directory = Path(directory)
        self._store = _Store(self.directory, _parse_link, on_corrupt, _lost_link)

    def write(self, record: LinkRecord) -> None:
        self._store.write(
            record.id, json.dumps(asdict(record)).encode(), mirrored=record.state == "ready"
        )

    def remove(self, link_id: str) -> None:
        self._store.remove(link_id)

    def records(self) -> list[LinkRecord]:
        """Every readable record, oldest first; damaged files are restored from their mirrors."""
        return sorted(self._store.records(), key=lambda r: (r.created, r.id))


def _lost_link(link_id: str, aside: Path) -> str:
    return (
        f"Link {link_id}, if its veth pair still exists, is no longer managed by sockd: it no "
        f"longer counts against its owner's quotas, and its pool block may be handed out again "
        f"once its addresses are gone. Repair the JSON in {aside} and move it to "
        f"{aside.with_suffix('.json')}, then restart sockd; or remove the veth with `ip link del`."
    )


def _parse_link(link_id: str, raw: bytes) -> LinkRecord:
    try:
        data = json.loads(raw)
        record = LinkRecord(
            id=str(data["id"]),
            owner_uid=int(data["owner_uid"]),
            ns=str(data["ns"]),
            ifname=str(data["ifname"]),
            peer_ns=_optional_str(data["peer_ns"]),
            peer_ifname=str(data["peer_ifname"]),
            address=_optional_str(data["address"]),
            peer_address=_optional_str(data["peer_address"]),
            pool_block=_optional_str(data["pool_block"]),
            created=float(data["created"]),
            state=data["state"] if data["state"] in ("creating", "ready") else "creating",
            nat=bool(data.get("nat", False)),
            published=tuple(
                PortRecord(
                    transport=str(p["transport"]),
                    host_port=int(p["host_port"]),
                    port=int(p["port"]),
                    owner_uid=int(p["owner_uid"]),
                )
                for p in data.get("published", [])
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecord(f"unreadable ({exc})") from exc
    if record.id != link_id:
        raise CorruptRecord(f"about another link ({record.id!r})")
    return record


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
