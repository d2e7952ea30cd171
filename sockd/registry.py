"""The ownership registry: one small JSON file per namespace (and per link) sockd manages.

It lives under the state directory (default ``/run/sockd``), so it survives daemon restarts but not a
reboot, exactly like the namespaces it describes. A record is written *before* the namespace exists
(state ``creating``) so that whatever a crash leaves half-made is owned and can be cleaned up.
Links (``<state>/links/<id>.json``, :class:`LinkRegistry`) follow the same rules.
"""

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

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

    def ready(self) -> "Record":
        return replace(self, state="ready")


class CorruptRecord(Exception):
    """A registry file that cannot be read back; it was moved aside (``*.corrupt``)."""


class Registry:
    """Files ``<directory>/<name>.json``. Callers serialize writers (the namespace lock)."""

    def __init__(self, directory: str, on_corrupt: Callable[[str], None]) -> None:
        self.directory = Path(directory)
        self.on_corrupt = on_corrupt
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def write(self, record: Record) -> None:
        write_atomic(self._path(record.name), json.dumps(asdict(record)).encode())

    def get(self, name: str) -> Record | None:
        try:
            raw = self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self._parse(name, raw)
        except CorruptRecord as exc:
            self.on_corrupt(str(exc))
            return None

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def records(self) -> list[Record]:
        """Every readable record. A corrupt file is moved aside and reported to ``on_corrupt``."""
        found: list[Record] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(self._parse(path.stem, path.read_bytes()))
            except FileNotFoundError:
                continue  # removed by a concurrent delete
            except CorruptRecord as exc:
                self.on_corrupt(str(exc))
        return found

    def _parse(self, name: str, raw: bytes) -> Record:
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
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._quarantine(name, f"unreadable ({exc})") from exc
        if record.name != name:
            raise self._quarantine(name, f"names {record.name!r}")
        return record

    def _quarantine(self, name: str, why: str) -> "CorruptRecord":
        return quarantine(self._path(name), why)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    # No fsync: the registry describes namespaces and links, which do not survive a reboot
    # either; what must hold is atomicity against a daemon crash, and the rename gives that.
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def quarantine(path: Path, why: str) -> CorruptRecord:
    """Move an unreadable registry file aside (``*.corrupt``); the error to report."""
    aside = path.with_suffix(".corrupt")
    os.replace(path, aside)
    return CorruptRecord(f"registry file {path} is {why}; moved to {aside}")


# Links (issue 6) -----------------------------------------------------------------------------------


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

    def ready(self) -> "LinkRecord":
        return replace(self, state="ready")

    def touches(self, ns: str) -> bool:
        return ns in (self.ns, self.peer_ns)


class LinkRegistry:
    """Files ``<directory>/<id>.json``, one per link. Callers serialize writers (the namespace lock)."""

    def __init__(self, directory: str, on_corrupt: Callable[[str], None]) -> None:
        self.directory = Path(directory)
        self.on_corrupt = on_corrupt
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, link_id: str) -> Path:
        return self.directory / f"{link_id}.json"

    def write(self, record: LinkRecord) -> None:
        write_atomic(self._path(record.id), json.dumps(asdict(record)).encode())

    def remove(self, link_id: str) -> None:
        self._path(link_id).unlink(missing_ok=True)

    def records(self) -> list[LinkRecord]:
        """Every readable record, oldest first. A corrupt file is moved aside and reported."""
        found: list[LinkRecord] = []
        for path in self.directory.glob("*.json"):
            try:
                found.append(self._parse(path))
            except FileNotFoundError:
                continue  # removed by a concurrent unlink
            except CorruptRecord as exc:
                self.on_corrupt(str(exc))
        return sorted(found, key=lambda r: (r.created, r.id))

    def _parse(self, path: Path) -> LinkRecord:
        raw = path.read_bytes()
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
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise quarantine(path, f"unreadable ({exc})") from exc
        if record.id != path.stem:
            raise quarantine(path, f"names {record.id!r}")
        return record


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
