"""The sockctl client: one typed method per operation over one SEQPACKET connection."""

import contextlib
import errno
import gc
import itertools
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from sockctl import _wire
from sockctl._reply import decode, error_from, pending_error, read_message
from sockctl.errors import (
    DaemonTimeout,
    DaemonUnavailable,
    ProtocolError,
)
from sockctl.protocol import (
    DEFAULT_SOCKET,
    OPERATIONS,
    PROTOCOL_VERSION,
    SOCKET_ENV,
    LinkInfo,
    NetnsEntry,
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
    NsPublishRequest,
    NsScanRequest,
    NsSetNsidRequest,
    NsShowRequest,
    NsUnlinkReply,
    NsUnlinkRequest,
    NsUnpublishRequest,
    Operation,
    PingReply,
    PingRequest,
    PublishedPort,
    SockBatch,
    SockCount,
    SockEventsRequest,
    SockEventsResult,
    SockExpr,
    SockFamily,
    SockInfo,
    SockKillReply,
    SockKillRequest,
    SockKind,
    SockListRequest,
    SockListResult,
    SockStateFilter,
    SockSummaryRequest,
    SockSummaryResult,
    StatusReply,
    StatusRequest,
    UnixType,
    WhoAmIReply,
    WhoAmIRequest,
    WireTypeError,
    sock_batch_from_wire,
    sock_batch_rows,
    to_wire,
)

if TYPE_CHECKING:
    import subprocess

    from sockctl._exec import NsProcess, Stdio

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
        self,
        name: str,
        *,
        loopback_up: bool = True,
        hostname: str | None = None,
        admin: bool = False,
    ) -> NsInfo:
        """Create the named network namespace ``name``, owned by the caller.

        It is visible to ``ip netns`` at once. ``loopback_up=False`` leaves ``lo`` down. With
        ``hostname``, it also gets its own UTS namespace with that hostname (the host's is untouched).
        ``admin=True``: a user namespace of the caller's owns it, so that ``exec(..., admin=True)``
        may configure it (routes, links, nftables) with capabilities over it alone.
        """
        result: NsInfo = self._call(
            NsCreateRequest(name=name, loopback_up=loopback_up, hostname=hostname, admin=admin)
        )
        return result

    def ns_delete(self, name: str, *, force: bool = False) -> NsDeleteReply:
        """Delete a namespace the caller owns.

        Refused with :class:`~sockctl.errors.Busy` while processes live inside, unless ``force``;
        the processes then keep the (now nameless) namespace alive.
        """
        result: NsDeleteReply = self._call(NsDeleteRequest(name=name, force=force))
        return result

    def ns_scan(self) -> list[NetnsEntry]:
        """Every network namespace of the host, named or not, like ``lsns -t net`` (see
        :class:`~sockctl.protocol.NsScanRequest` for who sees which)."""
        items, _ = self._listing(NsScanRequest())
        return items

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
        nat: bool = False,
        dns: Sequence[str] = (),
    ) -> LinkInfo:
        """Connect ``name`` to the host (``peer=None``) or to the namespace ``peer`` with a veth pair.

        ::

            link = client.ns_link("test")
            print(link.end.ifname, link.end.addresses)    # eth0 ['10.213.0.2/30']
            print(link.peer.ifname, link.peer.addresses)  # sd1000-0 ['10.213.0.1/30']

        Both ends are up. Without ``address``/``peer_address``/``no_address`` the addresses come
        from the daemon's pool; otherwise each end gets the one given for it (a host end: root only).

        ``nat=True`` (host links, ``policy.nat_groups``) gives the namespace a way out: a default
        route via the host end, forwarding on that end, source NAT through the host's uplinks, and
        a resolv.conf that works inside (``dns`` servers, else the host's upstream ones).
        """
        result: LinkInfo = self._call(
            NsLinkRequest(
                name=name,
                peer=peer,
                address=address,
                peer_address=peer_address,
                no_address=no_address,
                nat=nat,
                dns=list(dns),
            )
        )
        return result

    def ns_publish(
        self,
        name: str,
        host_port: int,
        port: int | None = None,
        *,
        transport: Literal["tcp", "udp"] = "tcp",
    ) -> PublishedPort:
        """Forward host port ``host_port`` (every host address) to ``port`` in ``name``.

        ``name`` needs a ``--nat`` link; the host port must be free (no listener holds it, nobody
        published it); below 1024 it needs a ``policy.privileged_ports`` grant.
        """
        result: PublishedPort = self._call(
            NsPublishRequest(name=name, transport=transport, host_port=host_port, port=port)
        )
        return result

    def ns_unpublish(
        self, name: str, host_port: int, *, transport: Literal["tcp", "udp"] = "tcp"
    ) -> PublishedPort:
        """Withdraw a published host port of ``name``."""
        result: PublishedPort = self._call(
            NsUnpublishRequest(name=name, transport=transport, host_port=host_port)
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

    # Socket inspection ------------------------------------------------------------------------

    def sock_list(
        self,
        *,
        kinds: Sequence[SockKind] = (),
        families: Sequence[SockFamily] = (),
        states: Sequence[SockStateFilter] = (),
        local_port: int | None = None,
        remote_port: int | None = None,
        local_address: str | None = None,
        remote_address: str | None = None,
        uid: int | None = None,
        pid: int | None = None,
        netns: str | None = None,
        all_netns: bool = False,
        processes: bool = True,
        expr: SockExpr | None = None,
        extended: bool = False,
        timers: bool = False,
        info: bool = False,
        memory: bool = False,
        unix_types: Sequence[UnixType] = (),
        cgroup: bool = False,
    ) -> tuple[list[SockInfo], SockListResult]:
        """Sockets of the host's namespace (default), of ``netns``, or of all (``all_netns``).

        Filters work like ss's; empty means all. ``states`` takes ss's names and groups
        (``"listening"``, ``"connected"``, ...); addresses take an IP or network
        (``"10.0.0.0/8"``), or for UNIX sockets a name pattern (``"/run/*"``, ``"@name*"``). ::

            with Client() as client:
                sockets, result = client.sock_list(kinds=["tcp"], states=["listening"])
                for s in sockets:
                    print(s.local, s.local_port, [p.name for p in s.processes or []])

        ``expr`` is a filter expression like ss's (``protocol.SockOr``, ``SockPortMatch``, ...;
        ``sockctl._ssfilter.parse`` builds one from ss's syntax); with one, UNIX sockets are not
        listed.

        Details as ss's flags add them to each row: ``extended`` the cookie (``-e``), ``timers``
        the TCP timer (``-o``, :class:`~sockctl.protocol.SockTimer`), ``info`` the tcp_info
        (``-i``, :class:`~sockctl.protocol.TcpInfo`), ``memory`` the memory counters (``-m``,
        :class:`~sockctl.protocol.SockMemory`). ``unix_types`` keeps UNIX sockets of those types
        (``"stream"``, ``"dgram"``, ``"seqpacket"``) only; ``cgroup`` adds each IP socket's cgroup
        path (``--cgroup``).

        Other users' processes are shown only to root and monitor-group members
        (``result.process_scope`` says which). Bad filters raise
        :class:`~sockctl.errors.InvalidRequest` naming the field; an unknown namespace
        :class:`~sockctl.errors.NotFound`.
        """
        rows, result = self._sock_listing(
            _sock_rows,
            kinds=kinds,
            families=families,
            states=states,
            local_port=local_port,
            remote_port=remote_port,
            local_address=local_address,
            remote_address=remote_address,
            uid=uid,
            pid=pid,
            netns=netns,
            all_netns=all_netns,
            processes=processes,
            expr=expr,
            extended=extended,
            timers=timers,
            info=info,
            memory=memory,
            unix_types=unix_types,
            cgroup=cgroup,
        )
        return rows, result

    def sock_batches(
        self,
        *,
        kinds: Sequence[SockKind] = (),
        families: Sequence[SockFamily] = (),
        states: Sequence[SockStateFilter] = (),
        local_port: int | None = None,
        remote_port: int | None = None,
        local_address: str | None = None,
        remote_address: str | None = None,
        uid: int | None = None,
        pid: int | None = None,
        netns: str | None = None,
        all_netns: bool = False,
        processes: bool = True,
        expr: SockExpr | None = None,
        extended: bool = False,
        timers: bool = False,
        info: bool = False,
        memory: bool = False,
        unix_types: Sequence[UnixType] = (),
        cgroup: bool = False,
    ) -> tuple[list[SockBatch], SockListResult]:
        """:meth:`sock_list`'s sockets as the daemon sends them: columns, a few hundred per batch.

        For programs that aggregate many sockets (counting per port, exporting metrics): no object
        per socket is built, which halves the time of a 100 000-socket listing.
        ``protocol.sock_batch_rows(batch)`` turns a batch into :class:`SockInfo` rows.
        """
        return self._sock_listing(
            _sock_batches,
            kinds=kinds,
            families=families,
            states=states,
            local_port=local_port,
            remote_port=remote_port,
            local_address=local_address,
            remote_address=remote_address,
            uid=uid,
            pid=pid,
            netns=netns,
            all_netns=all_netns,
            processes=processes,
            expr=expr,
            extended=extended,
            timers=timers,
            info=info,
            memory=memory,
            unix_types=unix_types,
            cgroup=cgroup,
        )

    def _sock_listing(
        self, decode: Callable[[list[Any]], Iterable[Any]], **filters: Any
    ) -> tuple[list[Any], SockListResult]:
        """A sock.list request; ``decode`` turns each message's batches into what is returned,
        as they arrive: decoding overlaps the daemon's dumping the next ones."""
        # The public methods' typed keywords; sequences travel as lists.
        fields: dict[str, Any] = {
            key: list(value) if isinstance(value, tuple | list) else value
            for key, value in filters.items()
        }
        request = SockListRequest(**fields)
        with _gc_paused():
            items, result = self._listing(request, decode)
        return items, result

    def sock_summary(
        self,
        *,
        kinds: Sequence[SockKind] = (),
        families: Sequence[SockFamily] = (),
        netns: str | None = None,
        all_netns: bool = False,
        expr: SockExpr | None = None,
    ) -> tuple[list[SockCount], SockSummaryResult]:
        """Socket counts per namespace, kind, family and state, like ``ss -s``; with ``expr``
        (as in :meth:`sock_list`), of the IP sockets it matches."""
        request = SockSummaryRequest(
            kinds=list(kinds), families=list(families), netns=netns, all_netns=all_netns, expr=expr
        )
        items, result = self._listing(request)
        return items, result

    def sock_kill(
        self,
        *,
        kinds: Sequence[Literal["tcp", "udp"]] = (),
        families: Sequence[SockFamily] = (),
        states: Sequence[SockStateFilter] = (),
        local_port: int | None = None,
        remote_port: int | None = None,
        local_address: str | None = None,
        remote_address: str | None = None,
        uid: int | None = None,
        netns: str | None = None,
        expr: SockExpr | None = None,
        dry_run: bool = False,
    ) -> SockKillReply:
        """Close the TCP/UDP sockets that match, like ``ss -K`` (SOCK_DESTROY). ::

            client.sock_kill(remote_port=8080, states=["established"])

        Filters as in :meth:`sock_list`; at least one of ports, addresses, ``uid`` or ``expr`` is
        required. Without ``states``, TIME-WAIT and SYN-RECV entries are left alone. You may close
        your own sockets; root and members of policy.kill_groups any. All or nothing: a match that
        is not yours raises :class:`~sockctl.errors.PermissionDenied` and nothing is closed.
        ``dry_run`` returns what would be closed. A kernel without CONFIG_INET_DIAG_DESTROY raises
        :class:`~sockctl.errors.NotSupported`.
        """
        result: SockKillReply = self._call(
            SockKillRequest(
                kinds=list(kinds),
                families=list(families),
                states=list(states),
                local_port=local_port,
                remote_port=remote_port,
                local_address=local_address,
                remote_address=remote_address,
                uid=uid,
                netns=netns,
                expr=expr,
                dry_run=dry_run,
            )
        )
        return result

    def sock_events(
        self,
        *,
        kinds: Sequence[Literal["tcp", "udp"]] = (),
        families: Sequence[SockFamily] = (),
        local_port: int | None = None,
        remote_port: int | None = None,
        local_address: str | None = None,
        remote_address: str | None = None,
        uid: int | None = None,
        netns: str | None = None,
        expr: SockExpr | None = None,
        count: int | None = None,
        seconds: int | None = None,
    ) -> "SockEvents":
        """Each TCP/UDP socket the kernel destroys from now on, like ``ss -E`` (without root). ::

            with client.sock_events(netns="web", remote_port=5432) as events:
                for sock in events:
                    print("gone:", sock.local, sock.local_port, "->", sock.remote, sock.remote_port)

        Rows as :meth:`sock_list` gives them, without processes (the socket has none left), as
        the kernel last had them. When this returns, the daemon is following the namespace:
        nothing destroyed after that is missed. It goes on until ``count`` sockets came or
        ``seconds`` passed (then iteration stops and :attr:`SockEvents.result` says so), or until
        you close it (the connection of its own that it uses). Filters as in :meth:`sock_list`;
        a bad filter or a missing namespace raises here.
        """
        request = SockEventsRequest(
            kinds=list(kinds),
            families=list(families),
            local_port=local_port,
            remote_port=remote_port,
            local_address=local_address,
            remote_address=remote_address,
            uid=uid,
            netns=netns,
            expr=expr,
            count=count,
            seconds=seconds,
        )
        payload = json.dumps({"proto": PROTOCOL_VERSION, **to_wire(request)}).encode()
        sock = _connect_socket(self.socket_path, self.timeout)
        try:
            self._send_or_fail(sock, payload)
            self._under_way(sock)
        except BaseException:
            sock.close()
            raise
        return SockEvents(sock)

    def _under_way(self, sock: socket.socket) -> None:
        """The daemon's first message, without items: it follows the namespace now."""
        first = _event_message(sock, self.timeout)
        if first.get("items") or not first.get("more"):
            raise ProtocolError("sockd did not start following sockets")

    # Acting inside namespaces as yourself (issue 5) ----------------------------------------------

    def popen(
        self,
        name: str,
        argv: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: "Stdio" = None,
        stdout: "Stdio" = None,
        stderr: "Stdio" = None,
        tty: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        admin: bool = False,
    ) -> "NsProcess":
        """Start ``argv`` inside namespace ``name`` as yourself; returns a Popen-like handle.

        ::

            with client.popen("test", ["ip", "-br", "addr"], stdout=sockctl.PIPE, text=True) as p:
                out, _ = p.communicate()

        The command runs with your uid, gid and groups and no capabilities, in the namespace's
        environment as ``ip netns exec`` builds it (/etc/netns/NAME over /etc, its own /sys).
        ``env`` defaults to this process's environment (variables that are not valid UTF-8 are
        left out: the wire is JSON), ``cwd`` to its working directory (which must be one you may
        enter), the umask to this process's. ``stdin``/``stdout``/``stderr``:
        None inherits this process's, :data:`PIPE` makes a pipe, :data:`DEVNULL` /dev/null, or a
        file object or descriptor. ``text`` (or ``encoding``/``errors``) makes the pipes text
        streams, as in :mod:`subprocess`. ``tty=True`` gives the command a new terminal instead
        (a pty, its controlling terminal, so job control works inside): read and write it through
        ``proc.pty``, resize it with ``proc.resize()``; the three streams must then be left None.
        ``admin=True`` (the owner of a namespace made with ``admin=True``): the command keeps
        CAP_NET_ADMIN and CAP_NET_RAW over that namespace only, as ``unshare -rn`` would give.

        The handle uses a connection of its own; closing it (or this process dying) kills the
        command. Raises :class:`~sockctl.errors.PermissionDenied` for a namespace you may not
        enter or a directory you cannot enter, :class:`~sockctl.errors.NotFound` for a missing
        namespace, and :class:`~sockctl.errors.CommandNotFound` (a :class:`FileNotFoundError`)
        for a missing command.
        """
        from sockctl._exec import text_encoding

        if tty and (stdin, stdout, stderr) != (None, None, None):
            raise ValueError(
                "tty=True gives the command a terminal: leave stdin/stdout/stderr None"
            )
        wants_text = text or encoding is not None or errors is not None
        proc = self._exec_handle(argv, admin)
        try:
            if tty:
                from sockctl._terminal import open_pty

                master, slave = open_pty(None)
                proc.pty = open(master, "r+b", buffering=0)  # noqa: SIM115 -- the handle owns it
                try:
                    proc.launch(name, env=env, cwd=cwd, stdio=(slave, slave, slave), tty=True)
                finally:
                    os.close(slave)  # the command has its own; ours would keep the pty from EOF
            else:
                proc.launch(
                    name,
                    env=env,
                    cwd=cwd,
                    stdio=(stdin, stdout, stderr),
                    text=text_encoding(encoding, errors) if wants_text else None,
                )
        except BaseException:
            proc.close()
            raise
        return proc

    def exec(
        self,
        name: str,
        argv: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: "Stdio" = None,
        stdout: "Stdio" = None,
        stderr: "Stdio" = None,
        forward_signals: Iterable[int] = (),
        tty: bool = False,
        admin: bool = False,
    ) -> int:
        """Run ``argv`` inside namespace ``name`` as yourself and wait; returns its returncode.

        ::

            status = client.exec("test", ["ping", "-c1", "10.0.0.2"])
            status = client.exec("test", ["bash"], tty=True)  # an interactive shell inside

        Like :attr:`subprocess.Popen.returncode`: the exit code, or ``-N`` after a death by signal N.
        ``forward_signals`` (e.g. :data:`FORWARDED_SIGNALS`) are passed on to the command while it
        runs (only from the main thread). ``tty=True`` runs it on a new terminal (a pty) relayed
        to ``stdin``/``stdout`` (default: this process's), like ``ssh -t``: when ``stdin`` is a
        terminal it is put in raw mode (restored afterwards, even if this process is killed) and
        its window size follows; SIGTERM or SIGHUP hang the command's terminal up. Other arguments
        as for :meth:`popen`.
        """
        if tty:
            return self._exec_on_terminal(name, argv, env, cwd, stdin, stdout, admin)
        # Forwarding starts before the request goes out: a Ctrl-C at any moment reaches the command.
        with self._exec_handle(argv, admin) as proc, proc.forwarding(forward_signals):
            proc.launch(name, env=env, cwd=cwd, stdio=(stdin, stdout, stderr))
            return proc.wait()

    def run(
        self,
        name: str,
        argv: Iterable[str],
        *,
        input: bytes | str | None = None,  # noqa: A002 -- subprocess.run's name
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        text: bool = False,
        encoding: str | None = None,
        errors: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: "Stdio" = None,
        stdout: "Stdio" = None,
        stderr: "Stdio" = None,
        admin: bool = False,
    ) -> "subprocess.CompletedProcess[Any]":
        """Run ``argv`` inside namespace ``name`` as yourself, as :func:`subprocess.run` does.

        ::

            done = client.run("test", ["ip", "-j", "addr"], capture_output=True, text=True, check=True)
            print(done.stdout)

        Returns a :class:`subprocess.CompletedProcess`; ``check=True`` raises
        :class:`subprocess.CalledProcessError` for a non-zero returncode, ``timeout`` kills the
        command and raises :class:`subprocess.TimeoutExpired`. Other arguments as for
        :meth:`popen`.
        """
        import subprocess

        from sockctl._exec import PIPE

        if capture_output:
            if stdout is not None or stderr is not None:
                raise ValueError("stdout and stderr may not be used with capture_output")
            stdout = stderr = PIPE
        if input is not None:
            if stdin is not None:
                raise ValueError("stdin and input may not both be used")
            stdin = PIPE
        args = list(argv)
        with self.popen(
            name,
            args,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=text,
            encoding=encoding,
            errors=errors,
            admin=admin,
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            except BaseException:
                proc.kill()
                raise
            returncode = proc.wait()
        if check and returncode:
            raise subprocess.CalledProcessError(returncode, args, output=out, stderr=err)
        return subprocess.CompletedProcess(args, returncode, out, err)

    def _exec_on_terminal(
        self,
        name: str,
        argv: Iterable[str],
        env: Mapping[str, str] | None,
        cwd: str | os.PathLike[str] | None,
        stdin: "Stdio",
        stdout: "Stdio",
        admin: bool,
    ) -> int:
        from sockctl._terminal import open_pty, relay

        user_in = _descriptor(stdin, 0)
        user_out = _descriptor(stdout, 1)
        with self._exec_handle(argv, admin) as proc:
            master, slave = open_pty(user_in)
            try:
                try:
                    proc.launch(name, env=env, cwd=cwd, stdio=(slave, slave, slave), tty=True)
                finally:
                    os.close(slave)
            except BaseException:
                os.close(master)
                raise
            return relay(proc, master, user_in, user_out)

    def _exec_handle(self, argv: Iterable[str], admin: bool = False) -> "NsProcess":
        from sockctl._exec import NsProcess  # only commands that run things pay for subprocess

        proc = NsProcess(_connect_socket(self.socket_path, self.timeout), list(argv), self.timeout)
        proc.admin = admin
        return proc

    def open_socket(
        self,
        address: str,
        *,
        ns: str | None = None,
        backlog: int | None = 128,
        reuseaddr: bool = True,
        reuseport: bool = False,
        v6only: bool | None = None,
    ) -> socket.socket:
        """A socket made inside namespace ``ns`` (None: the host's), bound to ``address``.

        ::

            server = client.open_socket("tcp:0.0.0.0:80", ns="test")   # listening
            udp = client.open_socket("udp:[::]:53", ns="test")
            outbound = client.open_socket("tcp", ns="test")            # unbound, to connect()

        ``address`` is ``tcp:HOST:PORT``, ``udp:HOST:PORT`` (HOST an IP address, IPv6 in brackets),
        ``tcp``/``udp``/``tcp6``/``udp6`` for an unbound socket, or ``unix:/path``, ``unix:@name``,
        ``unix-dgram:...``, ``unix-seqpacket:...``. Stream sockets listen with ``backlog`` (None:
        do not listen); ``reuseaddr`` applies to inet sockets. Any port is allowed in a namespace
        you may enter; in the host, ports below 1024 only as the daemon's policy grants.
        """
        from sockctl import _address  # ipaddress is not needed by other commands

        request = _address.parse(address).request(
            ns=ns, backlog=backlog, reuseaddr=reuseaddr, reuseport=reuseport, v6only=v6only
        )
        result, fds = self._call_with_fds(request)
        try:
            if not 0 <= result.fd < len(fds):
                raise ProtocolError("sockd did not send the socket it described")
            sock = socket.socket(fileno=fds.pop(result.fd))
        finally:
            _wire.close_all(fds)
        try:
            _address.finish(sock, result, backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    # Transport --------------------------------------------------------------------------------

    def _call(self, request: Any) -> Any:
        items, result, _ = self._exchange(request)
        if items:
            raise ProtocolError(f"{request.op}: unexpected listing in reply")
        return result

    def _call_with_fds(self, request: Any) -> tuple[Any, list[int]]:
        """A plain call whose reply carries descriptors; the caller owns them."""
        items, result, fds = self._exchange(request)
        if items:
            _wire.close_all(fds)
            raise ProtocolError(f"{request.op}: unexpected listing in reply")
        return result, fds

    def _listing(
        self, request: Any, decode_items: Callable[[list[Any]], Iterable[Any]] | None = None
    ) -> tuple[list[Any], Any]:
        items, result, _ = self._exchange(request, decode_items)
        return items, result

    def _exchange(
        self, request: Any, decode_items: Callable[[list[Any]], Iterable[Any]] | None = None
    ) -> tuple[list[Any], Any, list[int]]:
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
                    refusal = pending_error(sock)
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
                return self._read_reply(sock, operation, decode_items)
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
        self,
        sock: socket.socket,
        operation: Operation,
        decode_items: Callable[[list[Any]], Iterable[Any]] | None = None,
    ) -> tuple[list[Any], Any, list[int]]:
        """Read one reply: its items, its result, and the descriptors it carried (if the
        operation gives any). ``decode_items`` turns each message's raw items into what the caller
        returns, where the generic per-item decoding would be too slow or the items are batches."""
        items: list[Any] = []
        kept: list[int] = []
        with contextlib.ExitStack() as on_error:
            on_error.callback(_wire.close_all, kept)
            for message, fds in self._messages(sock):
                if operation.gives_fds:
                    kept.extend(fds)
                else:
                    _wire.close_all(fds)  # not the contract: never keep what we did not ask for
                if message.get("ok") is not True:
                    raise error_from(message)
                raw_items = message.get("items", [])
                if not isinstance(raw_items, list) or (raw_items and operation.item is None):
                    raise ProtocolError("sockd sent items that break the contract")
                if decode_items is None:
                    items.extend(decode(operation.item, raw) for raw in raw_items)
                else:
                    try:
                        items.extend(decode_items(raw_items))
                    except WireTypeError as exc:
                        raise ProtocolError(
                            f"sockd sent a reply that breaks the contract: {exc}"
                        ) from exc
                if not message.get("more"):
                    raw_result = message.get("result")
                    # A summary this client has no type for comes from a newer daemon: ignore it.
                    result = (
                        None
                        if raw_result is None or operation.reply is None
                        else decode(operation.reply, raw_result)
                    )
                    on_error.pop_all()
                    return items, result, kept
        raise DaemonUnavailable("sockd closed the connection before answering")

    def _messages(self, sock: socket.socket) -> Iterator[tuple[dict[str, Any], list[int]]]:
        while True:
            message, fds = read_message(sock, self.timeout)
            if message is None:
                _wire.close_all(fds)  # sent with an empty datagram, which reads as hang-up
                return
            yield message, fds

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = _connect_socket(self.socket_path, self.timeout)
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _descriptor(spec: "Stdio", default: int) -> int:
    """The descriptor a ``tty=True`` exec relays with: None means this process's own."""
    if spec is None:
        return default
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError("tty=True relays with real descriptors, not PIPE or DEVNULL")
        return spec
    return spec.fileno()


class SockEvents:
    """The sockets the kernel destroys, as they come (:meth:`Client.sock_events`): an iterator of
    :class:`SockInfo` on a connection of its own, which :meth:`close` (or the ``with`` block's
    end) closes, ending the daemon's side."""

    result: SockEventsResult | None = None
    """Once iteration stopped by ``count`` or ``seconds``: how it ended."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._waiting: list[SockInfo] = []

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> SockInfo:
        while not self._waiting:
            if self._sock is None:
                raise StopIteration
            message = _event_message(self._sock, None)  # events may be hours apart
            raw_items = message.get("items", [])
            if not isinstance(raw_items, list):
                raise ProtocolError("sockd sent items that break the contract")
            self._waiting = [decode(SockInfo, raw) for raw in reversed(raw_items)]
            if not message.get("more"):
                self.result = decode(SockEventsResult, message.get("result"))
                self.close()
        return self._waiting.pop()

    def fileno(self) -> int:
        """The connection, to wait for the next socket with select/poll (-1 once closed)."""
        return -1 if self._sock is None else self._sock.fileno()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event_message(sock: socket.socket, timeout: float | None) -> dict[str, Any]:
    message, fds = read_message(sock, timeout)
    _wire.close_all(fds)
    if message is None:
        raise DaemonUnavailable("sockd closed the connection of sock_events")
    if message.get("ok") is not True:
        raise error_from(message)
    return message


def _connect_socket(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # A blocking connect waits for room in the daemon's listen backlog (a burst of clients),
        # bounded by SO_SNDTIMEO; a non-blocking one would fail at once with EAGAIN.
        if timeout is not None:
            seconds = max(timeout, 0.001)  # a zero timeval would mean "wait forever"
            whole = int(seconds)
            timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(path)
        sock.settimeout(timeout)
    except BaseException as exc:
        sock.close()
        raise _connect_error(path, exc) from exc
    return sock


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


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large listing is decoded.

    A listing builds ~100 000 SockInfo objects that all stay alive; the collector would walk the
    growing heap again and again (measured: a third of the decoding time). Nothing cyclic is made
    here, so nothing is left for it to find; its previous state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sock_batches(batches: list[Any]) -> Iterable[SockBatch]:
    return map(sock_batch_from_wire, batches)


def _sock_rows(batches: list[Any]) -> Iterable[SockInfo]:
    return itertools.chain.from_iterable(map(sock_batch_rows, map(sock_batch_from_wire, batches)))
