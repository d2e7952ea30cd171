"""The sockctl client: one typed method per operation over one SEQPACKET connection."""

import errno
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from sockctl import _wire
from sockctl.errors import (
    DaemonTimeout,
    DaemonUnavailable,
    ProtocolError,
    SockdError,
    from_info,
)
from sockctl.protocol import (
    DEFAULT_SOCKET,
    OPERATIONS,
    PROTOCOL_VERSION,
    SOCKET_ENV,
    ErrorInfo,
    LinkInfo,
    NsAttachRequest,
    NsCreateRequest,
    NsDeleteReply,
    NsDeleteRequest,
    NsDetail,
    NsIdentifyReply,
    NsIdentifyRequest,
    NsInfo,
    NsLinkRequest,
    NsListRequest,
    NsPidsRequest,
    NsPidsResult,
    NsSetNsidRequest,
    NsShowRequest,
    NsUnlinkReply,
    NsUnlinkRequest,
    PingReply,
    PingRequest,
    StatusReply,
    StatusRequest,
    WhoAmIReply,
    WhoAmIRequest,
    WireTypeError,
    from_wire,
    to_wire,
)

_START_HINT = "is sockd running? `systemctl start sockd.socket`, or run `sockd` as root"


def resolve_socket_path(socket_path: str | os.PathLike[str] | None = None) -> str:
    """The socket to use: the argument, else ``$SOCKD_SOCKET``, else the default."""
    if socket_path is not None:
        return os.fspath(socket_path)
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class Client:
    """A connection to sockd.

    ::

        from sockctl import Client

        with Client() as client:
            info = client.ns_create("test")
            print(info.name, info.id, info.owner_uid)

    The connection opens on the first call and is reused; calls from several threads are serialized.
    Every method raises a :class:`sockctl.errors.SockdError` subclass on failure, nothing else.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, *, timeout: float | None = 30.0
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        with self._lock:
            self._drop()

    # Operations -------------------------------------------------------------------------------

    def ping(self) -> PingReply:
        """Check that the daemon answers; returns its version."""
        result: PingReply = self._call(PingRequest())
        return result

    def whoami(self) -> WhoAmIReply:
        """What the daemon sees of the caller (from the kernel) and what policy allows it."""
        result: WhoAmIReply = self._call(WhoAmIRequest())
        return result

    def status(self) -> StatusReply:
        """Daemon version, uptime, connections and managed namespaces."""
        result: StatusReply = self._call(StatusRequest())
        return result

    def ns_create(
        self, name: str, *, loopback_up: bool = True, hostname: str | None = None
    ) -> NsInfo:
        """Create the named network namespace ``name``, owned by the caller.

        It is visible to ``ip netns`` at once. ``loopback_up=False`` leaves ``lo`` down. With
        ``hostname``, it also gets its own UTS namespace with that hostname (the host's is untouched).
        """
        result: NsInfo = self._call(
            NsCreateRequest(name=name, loopback_up=loopback_up, hostname=hostname)
        )
        return result

    def ns_delete(self, name: str, *, force: bool = False) -> NsDeleteReply:
        """Delete a namespace the caller owns.

        Refused with :class:`~sockctl.errors.Busy` while processes live inside, unless ``force``;
        the processes then keep the (now nameless) namespace alive.
        """
        result: NsDeleteReply = self._call(NsDeleteRequest(name=name, force=force))
        return result

    def ns_list(self) -> list[NsInfo]:
        """Every named network namespace, with owner, id, nsid and process count."""
        items, _ = self._listing(NsListRequest())
        return items

    def ns_identify(self, pid: int | None = None) -> NsIdentifyReply:
        """Names of the namespace process ``pid`` (default: the caller) is in."""
        result: NsIdentifyReply = self._call(NsIdentifyRequest(pid=pid))
        return result

    def ns_pids(self, name: str) -> tuple[list[int], NsPidsResult]:
        """Pids of the processes inside ``name`` that policy lets the caller see, and the summary."""
        items, result = self._listing(NsPidsRequest(name=name))
        return items, result

    # Links, attach, nsid, show (issue 6) --------------------------------------------------------

    def ns_link(
        self,
        name: str,
        *,
        peer: str | None = None,
        address: str | None = None,
        peer_address: str | None = None,
        no_address: bool = False,
    ) -> LinkInfo:
        """Connect ``name`` to the host (``peer=None``) or to the namespace ``peer`` with a veth pair.

        ::

            link = client.ns_link("test")
            print(link.end.ifname, link.end.addresses)    # eth0 ['10.213.0.2/30']
            print(link.peer.ifname, link.peer.addresses)  # sd1000-0 ['10.213.0.1/30']

        Both ends are up. Without ``address``/``peer_address``/``no_address`` the addresses come
        from the daemon's pool; otherwise each end gets the one given for it (a host end: root only).
        """
        result: LinkInfo = self._call(
            NsLinkRequest(
                name=name,
                peer=peer,
                address=address,
                peer_address=peer_address,
                no_address=no_address,
            )
        )
        return result

    def ns_unlink(self, name: str, ifname: str | None = None) -> NsUnlinkReply:
        """Remove the link whose end in ``name`` is ``ifname`` (or its only one); frees its addresses."""
        result: NsUnlinkReply = self._call(NsUnlinkRequest(name=name, ifname=ifname))
        return result

    def ns_show(self, name: str) -> NsDetail:
        """``name`` in detail: owner, nsid, hostname, and every interface with its peer."""
        result: NsDetail = self._call(NsShowRequest(name=name))
        return result

    def ns_attach(self, name: str, pid: int | None = None) -> NsInfo:
        """Name the network namespace of process ``pid`` (default: the calling process).

        Like ``ip netns attach``. A user may attach only their own processes, in a namespace of a
        user namespace they made (``unshare -rn``); deleting it later removes only the name.
        """
        result: NsInfo = self._call(NsAttachRequest(name=name, pid=pid))
        return result

    def ns_set_nsid(self, name: str, nsid: int | None = None) -> NsInfo:
        """Assign ``name`` the nsid ``nsid`` in the host namespace (None: the lowest free one).

        nsids never change once assigned, and the kernel assigns one itself when a link first crosses
        into the namespace: set it before linking.
        """
        result: NsInfo = self._call(NsSetNsidRequest(name=name, nsid=nsid))
        return result

    # Transport --------------------------------------------------------------------------------

    def _call(self, request: Any) -> Any:
        items, result = self._exchange(request)
        if items:
            raise ProtocolError(f"{request.op}: unexpected listing in reply")
        return result

    def _listing(self, request: Any) -> tuple[list[Any], Any]:
        return self._exchange(request)

    def _exchange(self, request: Any) -> tuple[list[Any], Any]:
        operation = OPERATIONS[request.op]
        payload = json.dumps({"proto": PROTOCOL_VERSION, **to_wire(request)}).encode()
        with self._lock:
            fresh = self._sock is None
            sock = self._connect()
            try:
                _wire.send(sock, payload)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if fresh:
                    # Refused at accept (a connection limit): the reason is waiting to be read.
                    refusal = _pending_error(sock)
                    self._drop()
                    raise refusal or DaemonUnavailable(
                        f"sockd closed the connection: {exc}"
                    ) from exc
                # The daemon closed an idle connection before this request reached it: safe to resend.
                self._drop()
                sock = self._connect()
                self._send_or_fail(sock, payload)
            except TimeoutError as exc:
                self._drop()
                raise DaemonTimeout(
                    f"sockd did not take the request within {self.timeout} s"
                ) from exc
            except OSError as exc:
                self._drop()
                raise DaemonUnavailable(f"cannot send to sockd: {exc}") from exc
            try:
                return self._read_reply(sock, operation.reply, operation.item)
            except BaseException:
                # Whatever went wrong, the stream position is unknown now: start afresh next time.
                self._drop()
                raise

    def _send_or_fail(self, sock: socket.socket, payload: bytes) -> None:
        try:
            _wire.send(sock, payload)
        except OSError as exc:
            self._drop()
            raise DaemonUnavailable(f"cannot send to sockd: {exc}") from exc

    def _read_reply(
        self, sock: socket.socket, reply_type: Any, item_type: Any
    ) -> tuple[list[Any], Any]:
        items: list[Any] = []
        for message in self._messages(sock):
            if message.get("ok") is not True:
                raise _error_from(message)
            raw_items = message.get("items", [])
            if not isinstance(raw_items, list) or (raw_items and item_type is None):
                raise ProtocolError("sockd sent items that break the contract")
            items.extend(_decode(item_type, raw) for raw in raw_items)
            if not message.get("more"):
                raw_result = message.get("result")
                # A summary this client has no type for comes from a newer daemon: ignore it.
                if raw_result is None or reply_type is None:
                    return items, None
                return items, _decode(reply_type, raw_result)
        raise DaemonUnavailable("sockd closed the connection before answering")

    def _messages(self, sock: socket.socket) -> Iterator[dict[str, Any]]:
        while True:
            try:
                data, fds = _wire.recv(sock)
            except TimeoutError as exc:
                raise DaemonTimeout(f"sockd did not answer within {self.timeout} s") from exc
            except SockdError:
                raise
            except ConnectionResetError as exc:
                refusal = _pending_error(sock)
                raise refusal or DaemonUnavailable(f"lost the connection to sockd: {exc}") from exc
            except OSError as exc:
                raise DaemonUnavailable(f"lost the connection to sockd: {exc}") from exc
            _wire.close_all(fds)  # no operation of this protocol version returns descriptors yet
            if not data:
                return
            try:
                message = json.loads(data)
            except ValueError as exc:
                raise ProtocolError(f"sockd sent a reply that is not JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise ProtocolError("sockd sent a reply that is not a JSON object")
            yield message

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            # A blocking connect waits for room in the daemon's listen backlog (a burst of clients),
            # bounded by SO_SNDTIMEO; a non-blocking one would fail at once with EAGAIN.
            if self.timeout is not None:
                seconds = max(self.timeout, 0.001)  # a zero timeval would mean "wait forever"
                whole = int(seconds)
                timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            sock.connect(self.socket_path)
            sock.settimeout(self.timeout)
        except BaseException as exc:
            sock.close()
            raise _connect_error(self.socket_path, exc) from exc
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _connect_error(path: str, exc: BaseException) -> BaseException:
    if isinstance(exc, FileNotFoundError):
        return DaemonUnavailable(f"no sockd socket at {path}: {_START_HINT}")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnavailable(f"nothing answers at {path}: {_START_HINT}")
    if isinstance(exc, PermissionError):
        return DaemonUnavailable(
            f"permission denied on {path}: the socket's mode or group does not let you in"
        )
    if isinstance(exc, TimeoutError):
        return DaemonTimeout(f"connecting to {path} timed out")
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return DaemonTimeout(f"sockd at {path} did not accept the connection in time (busy)")
    if isinstance(exc, OSError):
        return DaemonUnavailable(f"cannot connect to {path}: {exc}")
    return exc


def _pending_error(sock: socket.socket) -> SockdError | None:
    """An error reply already queued on a connection the daemon closed, if there is one.

    The kernel reports ECONNRESET once (the daemon closed with our request unread) before it hands
    out what is still queued, hence the second attempt.
    """
    for _ in range(2):
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except ConnectionResetError:
            continue
        except OSError:
            return None
        try:
            message = json.loads(data)
        except ValueError:
            return None
        if isinstance(message, dict) and not message.get("ok", True):
            return _error_from(message)
        return None
    return None


def _decode(tp: Any, raw: Any) -> Any:
    try:
        return from_wire(tp, raw)
    except (WireTypeError, KeyError) as exc:
        raise ProtocolError(f"sockd sent a reply that breaks the contract: {exc}") from exc


def _error_from(message: dict[str, Any]) -> SockdError:
    try:
        info: ErrorInfo = from_wire(ErrorInfo, message.get("error"))
    except (WireTypeError, KeyError) as exc:
        return ProtocolError(f"sockd sent an error reply that breaks the contract: {exc}")
    return from_info(info)
