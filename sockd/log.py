"""Logging and the audit trail: structured journal entries, or readable lines on stderr.

Journal fields (all prefixed ``SOCKD_``) let ``journalctl SOCKD_OP=ns.create`` or
``journalctl SOCKD_PEER_UID=1000`` find records. On stderr the same fields follow the message as
``key=value`` pairs, values quoted when they contain spaces or quotes.
"""

import json
import os
import sys
import threading
import time
from typing import Any, Literal, TextIO

Target = Literal["auto", "journal", "stderr"]

_LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}
_LEVEL_NAMES = {7: "debug", 6: "info", 5: "notice", 4: "warning", 3: "error"}


def _journal_available() -> bool:
    return os.path.exists("/run/systemd/journal/socket")


def _stderr_is_journal() -> bool:
    """Whether systemd connected our stderr to the journal (JOURNAL_STREAM, systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class Logger:
    """Thread-safe logger; ``audit`` writes one record per mutating request."""

    def __init__(self, target: Target = "auto", level: str = "info", stream: TextIO | None = None):
        if target == "auto":
            target = "journal" if _stderr_is_journal() or _journal_available() else "stderr"
        self._send: Any = None
        if target == "journal":
            from systemd import journal  # noqa: PLC0415 -- only when logging to the journal

            self._send = journal.send
        self.target = target
        self.level = _LEVELS[level]
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def set_level(self, level: str) -> None:
        self.level = _LEVELS[level]

    def log(self, priority: int, message: str, **fields: Any) -> None:
        if priority > self.level:
            return
        clean = {key: value for key, value in fields.items() if value is not None}
        if self._send is not None:
            self._send(
                message,
                PRIORITY=str(priority),
                SYSLOG_IDENTIFIER="sockd",
                **{key: str(value) for key, value in clean.items()},
            )
            return
        pairs = " ".join(f"{key}={_quote(value)}" for key, value in clean.items())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} sockd[{os.getpid()}] {_LEVEL_NAMES[priority]}: {message}"
        with self._lock:
            self.stream.write(f"{line} {pairs}\n" if pairs else f"{line}\n")
            self.stream.flush()

    def debug(self, message: str, **fields: Any) -> None:
        self.log(7, message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.log(6, message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.log(4, message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.log(3, message, **fields)

    def audit(
        self, *, op: str, uid: int, pid: int, gid: int, result: str, detail: str, **fields: Any
    ) -> None:
        """One record of who asked for what and what came of it (``result`` is ok or an error code)."""
        self.log(
            6 if result == "ok" else 5,
            f"audit: {op} by uid {uid}: {result}{': ' + detail if detail else ''}",
            SOCKD_AUDIT=1,
            SOCKD_OP=op,
            SOCKD_PEER_UID=uid,
            SOCKD_PEER_PID=pid,
            SOCKD_PEER_GID=gid,
            SOCKD_RESULT=result,
            **fields,
        )


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=\\" for c in text):
        return json.dumps(text)
    return text
