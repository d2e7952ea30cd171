"""The ownership registry: one small JSON file per namespace sockd manages, written atomically.

It lives under the state directory (default ``/run/sockd``), so it survives daemon restarts but not a
reboot, exactly like the namespaces it describes. A record is written *before* the namespace exists
(state ``creating``) so that whatever a crash leaves half-made is owned and can be cleaned up.
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
        path = self._path(record.name)
        tmp = path.with_suffix(".tmp")
        data = json.dumps(asdict(record)).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        # No fsync: the registry describes namespaces, which do not survive a reboot either; what
        # must hold is atomicity against a daemon crash, and the rename gives that.
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)

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
            record = Record(
                name=str(data["name"]),
                owner_uid=int(data["owner_uid"]),
                created=float(data["created"]),
                state=data["state"] if data["state"] in ("creating", "ready") else "creating",
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise self._quarantine(name, f"unreadable ({exc})") from exc
        if record.name != name:
            raise self._quarantine(name, f"names {record.name!r}")
        return record

    def _quarantine(self, name: str, why: str) -> "CorruptRecord":
        path = self._path(name)
        aside = path.with_suffix(".corrupt")
        os.replace(path, aside)
        return CorruptRecord(f"registry file {path} is {why}; moved to {aside}")
