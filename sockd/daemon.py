"""The daemon's state and its request path: bytes in → parse, validate, authorize, act → bytes out."""

import contextlib
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from sockctl import _wire
from sockctl.errors import (
    InternalError,
    InvalidRequest,
    MalformedMessage,
    RequestError,
    UnknownOperation,
    UnsupportedVersion,
)
from sockctl.protocol import (
    MAX_MESSAGE,
    NS_NAME_PATTERN,
    NS_NAME_RULE,
    OPERATIONS,
    PROTOCOL_VERSION,
    to_wire,
)
from sockctl.schema import request_adapter
from sockd import linux
from sockd.config import Config, ExecConfig
from sockd.dispatch import TABLE, UNDER_WAY, Call, Fds, Listing, Session, WithFds
from sockd.execution import Executor
from sockd.handover import SocketOpener
from sockd.links import Links
from sockd.log import Logger
from sockd.nat import Firewall
from sockd.netns import DEFAULT_NETNS_DIR, Faults, Namespaces
from sockd.policy import Peer, Policy
from sockd.registry import LinkRegistry, Registry
from sockd.taskfiles import TaskFiles
from sockd.units import Units

_CHUNK = MAX_MESSAGE - 1024  # room for the envelope around a listing's items


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Message(NamedTuple):
    """One reply datagram and the descriptors it carries (SCM_RIGHTS)."""

    payload: bytes
    fds: tuple[int, ...] = ()


@dataclass(slots=True)
class Prepared:
    """A request that passed (or failed) the cheap checks, waiting for its handler."""

    op: str | None
    request: Any
    fds: list[int]
    error: RequestError | None = None

    @property
    def inline(self) -> bool:
        """Whether the server may run it on its event loop: errors and non-blocking handlers."""
        return self.error is not None or self.op is None or TABLE[self.op].inline


def _is_ns_name_error(error: Any) -> bool:
    """A namespace-name field (whatever its name: name, netns, peer) failed its bounds or pattern."""
    ctx = error.get("ctx") or {}
    if error["type"] == "string_pattern_mismatch":
        return bool(ctx.get("pattern") == NS_NAME_PATTERN)
    return error["type"] in ("string_too_long", "string_too_short") and error["loc"][-1:] in (
        ("name",),
        ("netns",),
        ("peer",),
    )


class Stats:
    """Counters shown by ``status``; updated from many connection threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0
        self.requests = 0

    def connected(self, delta: int) -> None:
        with self._lock:
            self.connections += delta

    def served(self) -> None:
        with self._lock:
            self.requests += 1


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None,
        state_dir: str,
        log: Logger,
        netns_dir: str = DEFAULT_NETNS_DIR,
        pause_at: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.policy = Policy.from_config(config)
        self.log = log
        self.started = time.monotonic()
        self.stats = Stats()
        registry = Registry(str(Path(state_dir) / "namespaces"), on_corrupt=log.error)
        faults = Faults(pause_at, log)
        self.namespaces = Namespaces(
            registry,
            lambda: self.policy,
            log,
            faults,
            netns_dir,
            uts_dir=str(Path(state_dir) / "uts"),
        )
        self.firewall = Firewall(state_dir, config.nat.uplinks, log, table=config.nat.table)
        etc_dir = str(Path(state_dir) / "etc")
        self.links = Links(
            LinkRegistry(str(Path(state_dir) / "links"), on_corrupt=log.error),
            self.namespaces,
            lambda: self.policy,
            lambda: self.config.links,
            log,
            faults,
            firewall=self.firewall,
            etc_dir=etc_dir,
        )
        units = self._units(config.exec)
        if units is not None:  # sockd.service may make no user namespace: systemd makes them
            self.namespaces.start_helper = units.start_helper
        self.executor = Executor(
            self.namespaces,
            lambda: self.policy,
            log,
            units=units,
            sockd_etc=etc_dir,
        )
        self.sockets = SocketOpener(self.namespaces, lambda: self.policy)
        self.task_files = TaskFiles(
            on_load=self._report_task_files,
            on_error=lambda why: self.log.warning(f"{why}; this listing reads /proc/*/fd"),
        )
        self._warn_unknown_groups()

    def _units(self, settings: ExecConfig) -> Units | None:
        """Where ``ns exec`` commands start: systemd's transient units, or None (forked here)."""
        if settings.spawn == "direct":
            return None
        units = Units(prefix=settings.unit_prefix)
        if settings.spawn == "auto" and not (
            os.path.isdir("/run/systemd/system") and units.available()
        ):
            self.log.info(
                "ns exec: commands are forked by sockd (systemd does not manage this host)"
            )
            return None
        self.log.info(f"ns exec: commands run as transient units {settings.unit_prefix}-*.service")
        return units

    def _report_task_files(self, unavailable: str | None) -> None:
        if unavailable is None:
            self.log.info("process attribution: the kernel's BPF task_file iterator")
        else:
            self.log.info(
                f"process attribution: /proc/*/fd (no BPF task_file iterator: {unavailable})"
            )

    def end_sessions(self) -> None:
        """The daemon is stopping: running ``ns.exec`` commands are terminated, then killed."""
        self.executor.stop()

    def reconcile(self) -> None:
        """Start-up repair: namespaces first (links hang off them), then links."""
        self.namespaces.reconcile()
        self.links.reconcile()
        self.executor.reconcile()

    def reload(self, config: Config) -> None:
        """Apply a new configuration (SIGHUP); requests in flight keep the policy they started with."""
        self.config = config
        self.policy = Policy.from_config(config)
        self.log.set_level(config.log.level)
        self._warn_unknown_groups()
        self.firewall.configure(config.nat.uplinks, config.nat.table)
        with self.namespaces.lock:
            try:
                self.links.sync_firewall()
            except InternalError as exc:
                self.log.error(f"nat: {exc.message}")

    def _warn_unknown_groups(self) -> None:
        for name in self.policy.unknown_groups:
            self.log.warning(
                f"group or user {name} named in the policy does not exist", SOCKD_GROUP=name
            )
        self._warn_descriptors()

    def _warn_descriptors(self) -> None:
        """Say at start and reload if the limits admit more connections than descriptors allow."""
        connections = self.config.limits.max_connections
        needed = 2 * connections + 64  # a socket and a pidfd per connection, and some to work with
        available = linux.raise_nofile_limit()
        if needed > available:
            self.log.warning(
                f"limits.max_connections = {connections} needs about {needed} file descriptors, "
                f"but sockd may open {available} (LimitNOFILE=): past that, clients are refused "
                f"with too_many_connections"
            )

    def handle(
        self, peer: Peer, data: bytes, fds: list[int], channel: socket.socket | None = None
    ) -> Generator[Message, None, None]:
        """Answer one request datagram with one or more reply datagrams. Never raises."""
        return self.execute(peer, self.prepare(peer, data, fds), channel)

    def prepare(self, peer: Peer, data: bytes, fds: list[int]) -> "Prepared":
        """Parse, check the version, validate and authorize: cheap, never blocks, never raises.

        The server looks at the result to decide where the handler runs (``Prepared.inline``).
        """
        self.stats.served()
        op: str | None = None
        request: Any = None
        try:
            message = self._decode(data)
            op = self._operation(message, fds)
            request = self._validate(op, data)
            self.policy.authorize(TABLE[op].access, peer, op)
        except RequestError as exc:
            _wire.close_all(fds)
            self._audit(peer, op, request, exc.code.value, exc.message)
            # The refusal outlives this frame in Prepared: drop its traceback and cause, which
            # reference frames in cycles that only a full gc pass frees (seen as RSS creep).
            exc.__traceback__ = exc.__cause__ = exc.__context__ = None
            return Prepared(op, request, fds=[], error=exc)
        return Prepared(op, request, fds=fds)

    def execute(
        self, peer: Peer, prepared: "Prepared", channel: socket.socket | None = None
    ) -> Generator[Message, None, None]:
        """Run a prepared request's handler; yields the reply datagrams. Never raises.

        ``channel`` is the connection the request came on, off the server's loop while this runs;
        sessions (``ns.exec``) read their follow-up requests from it. Every descriptor that came
        with the request is closed by the time this ends.
        """
        op, request = prepared.op, prepared.request
        if prepared.error is not None or op is None:
            error = prepared.error or InternalError("request was not prepared")
            yield Message(self.error_reply(error))
            return
        received = Fds(prepared.fds)
        audited = False
        try:
            result = TABLE[op].handler(self, peer, request)
            if isinstance(result, Session):
                follow_ups = _Channel(self, peer, channel, op)
                yield from self._converse(result, Call(received, follow_ups))
            elif isinstance(result, Listing):
                yield from self._stream(result)
            elif isinstance(result, WithFds):
                yield from self._hand_over(result)
            else:
                reply = Message(f'{{"ok":true,"result":{_dumps(to_wire(result))}}}'.encode())
                # Done: audited before the client can have its answer, so that a reply is never
                # seen before its record (and a daemon killed in between has not acted unaudited).
                self._audit(peer, op, request, "ok", "")
                audited = True
                yield reply
        except GeneratorExit:
            # The client went away before the whole reply was sent; what the handler did stands
            # (an ns.exec command ran, and was killed) and is audited like any other request.
            if not audited:
                self._audit(peer, op, request, "ok", "the client went away before the whole reply")
            raise
        except RequestError as exc:
            self._audit(peer, op, request, exc.code.value, exc.message)
            yield Message(self.error_reply(exc))
            return
        except Exception as exc:  # noqa: BLE001 -- the daemon must answer and keep serving
            self.log.error(
                f"internal error in {op}: {exc!r}",
                SOCKD_OP=op,
                SOCKD_TRACEBACK=traceback.format_exc(),
            )
            self._audit(peer, op, request, "internal_error", repr(exc))
            yield Message(
                self.error_reply(InternalError("internal error; the daemon's log has the details"))
            )
            return
        finally:
            received.close()
        if not audited:
            self._audit(peer, op, request, "ok", "")

    @staticmethod
    def _decode(data: bytes) -> dict[str, Any]:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise MalformedMessage(f"request is not valid JSON: {exc}") from exc
        if not isinstance(message, dict):
            raise MalformedMessage("request must be a JSON object")
        return message

    @staticmethod
    def _operation(message: dict[str, Any], fds: list[int]) -> str:
        """The operation named by a decoded request, after the protocol version check."""
        proto = message.get("proto")
        if proto != PROTOCOL_VERSION:
            raise UnsupportedVersion(
                f"protocol version {proto!r} is not supported; this sockd speaks {PROTOCOL_VERSION}"
                " (update sockctl or sockd so that they match)",
                field="proto",
                details={"supported": [PROTOCOL_VERSION]},
            )
        op = message.get("op")
        if not isinstance(op, str) or op not in OPERATIONS:
            raise UnknownOperation(
                f"unknown operation {op!r}", field="op", details={"known": sorted(OPERATIONS)}
            )
        if fds and not OPERATIONS[op].takes_fds:
            raise InvalidRequest(f"{op} takes no file descriptors; {len(fds)} sent", field="fds")
        return op

    @staticmethod
    def _validate(op: str, data: bytes) -> Any:
        """The request as its contract type: strict types, bounds, no unknown fields."""
        try:
            return request_adapter(op).validate_json(data, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            first = errors[0]
            where = ".".join(str(part) for part in first["loc"]) or None
            why = first["msg"]
            if _is_ns_name_error(first):
                why = f"a namespace name is {NS_NAME_RULE}"
            raise InvalidRequest(
                f"{op}: {where + ': ' if where else ''}{why}",
                field=where,
                details={
                    "errors": [
                        {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in errors
                    ]
                },
            ) from exc

    def _stream(self, listing: Listing) -> Iterator[Message]:
        parts: list[str] = []
        size = 0
        for item in listing.items:
            encoded = item if listing.encoded else _dumps(to_wire(item))
            if size + len(encoded) + 1 > _CHUNK and parts:
                yield Message(f'{{"ok":true,"more":true,"items":[{",".join(parts)}]}}'.encode())
                parts, size = [], 0
            parts.append(encoded)
            size += len(encoded) + 1
        summary = listing.result() if callable(listing.result) else listing.result
        result = _dumps(to_wire(summary))
        yield Message(
            f'{{"ok":true,"more":false,"items":[{",".join(parts)}],"result":{result}}}'.encode()
        )

    @staticmethod
    def _hand_over(result: WithFds) -> Iterator[Message]:
        try:
            yield Message(
                f'{{"ok":true,"result":{_dumps(to_wire(result.reply))}}}'.encode(),
                tuple(result.fds),
            )
        finally:
            _wire.close_all(result.fds)  # the client has its own copies now, or never will

    @staticmethod
    def _converse(session: Session, call: Call) -> Iterator[Message]:
        # Closing the events generator runs the session's cleanup even when the client went away
        # while an event was being sent (this generator is then closed by the server).
        with contextlib.closing(session.run(call)) as events:
            while True:
                try:
                    event = next(events)
                except StopIteration as end:
                    result = _dumps(to_wire(end.value))
                    yield Message(
                        f'{{"ok":true,"more":false,"items":[],"result":{result}}}'.encode()
                    )
                    return
                items = "" if event is UNDER_WAY else _dumps(to_wire(event))
                yield Message(f'{{"ok":true,"more":true,"items":[{items}]}}'.encode())

    @staticmethod
    def error_reply(exc: RequestError) -> bytes:
        return _dumps({"ok": False, "error": to_wire(exc.info())}).encode()

    def _audit(self, peer: Peer, op: str | None, request: Any, result: str, detail: str) -> None:
        if op is None or not OPERATIONS[op].mutating:
            if result != "ok":
                self.log.debug(
                    f"{op or 'request'} refused: {detail}",
                    SOCKD_OP=op,
                    SOCKD_PEER_UID=peer.uid,
                    SOCKD_RESULT=result,
                )
            return
        self.log.audit(
            op=op,
            uid=peer.uid,
            pid=peer.pid,
            gid=peer.creds.gid,
            result=result,
            detail=detail,
            SOCKD_NS=getattr(request, "name", None) or getattr(request, "ns", None),
            **_audit_extra(op, request),
        )


def _audit_extra(op: str, request: Any) -> dict[str, str]:
    """What an audit record tells beyond the namespace: where a socket was opened."""
    if op != "sock.open" or request is None:
        return {}
    # As sockctl writes addresses: tcp:127.0.0.1:80, udp:[::1]:53, unix:/path, unix:@name.
    if request.family == "unix":
        return {"SOCKD_ADDRESS": f"unix-{request.type}:{request.address or '(unnamed)'}"}
    kind = {"stream": "tcp", "dgram": "udp"}.get(request.type, request.type)
    host = request.address or ("::" if request.family == "inet6" else "0.0.0.0")  # noqa: S104 -- a label
    host = f"[{host}]" if ":" in host else host
    return {"SOCKD_ADDRESS": f"{kind}:{host}:{request.port}"}


class _Channel:
    """The connection of a running session (see :class:`sockd.dispatch.Channel`).

    The server has taken the connection off its loop while the request runs, so the session is the
    only reader; follow-ups go through the same checks as any request (:meth:`Daemon.prepare`).
    """

    def __init__(self, daemon: Daemon, peer: Peer, sock: socket.socket | None, op: str) -> None:
        if sock is None:
            raise InternalError(f"{op} needs the connection, and none was given")
        self._daemon = daemon
        self._peer = peer
        self._sock = sock
        self._op = op

    def fileno(self) -> int:
        return self._sock.fileno()

    def receive(self) -> Any | None:
        try:
            data, fds = _wire.recv(self._sock)  # too large, too many fds: RequestError ends it
        except OSError:
            return None  # reset, or gone: the same to a session
        if not data:
            _wire.close_all(fds)  # an empty datagram reads as hang-up: its descriptors go too
            return None
        prepared = self._daemon.prepare(self._peer, data, fds)
        _wire.close_all(prepared.fds)  # follow-ups take none (prepare refused any already)
        if prepared.error is not None:
            raise prepared.error
        allowed = OPERATIONS[self._op].follow_ups
        if prepared.op not in allowed:
            raise InvalidRequest(
                f"only {', '.join(allowed)} may be sent while {self._op} runs; got {prepared.op}",
                field="op",
            )
        return prepared.request
