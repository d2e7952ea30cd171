"""``sockctl``: the command line over :class:`sockctl.Client`. Parse, one call, render; no logic.

Exit codes: 0 ok, 1 other error, 2 usage, 3 daemon unavailable, 4 permission denied, 5 not found,
6 already exists, 7 quota exceeded, 8 busy / too many connections, 9 invalid request,
10 protocol/version mismatch, 11 internal error in the daemon.
"""

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sockctl._ssnames import port_option, uid_option
from sockctl.protocol import VERSION, InterfaceInfo, LinkEnd, to_wire

if TYPE_CHECKING:
    import socket

    from click.shell_completion import CompletionItem

    from sockctl._client import Client
    from sockctl._ssfilter import Filter
    from sockctl.protocol import SockExpr

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    """What the root group parsed, handed to every command."""

    socket_path: str | None
    timeout: float
    json: bool = False
    _client: "Client | None" = field(default=None, repr=False)

    @property
    def client(self) -> "Client":
        if self._client is None:
            from sockctl._client import Client

            self._client = Client(self.socket_path, timeout=self.timeout)
        return self._client


pass_state = click.make_pass_decorator(State)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(State).json = True  # type: ignore[union-attr]


def json_option(fn: F) -> F:
    """``--json`` on a command (the root group takes it too, before the command name)."""
    return click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print machine-readable JSON instead of a table.",
    )(fn)


class _Group(click.Group):
    """Turns sockd errors into one line on stderr and the error class's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from sockctl.errors import RequestError, SockdError

        try:
            return super().invoke(ctx)
        except SockdError as exc:
            state = ctx.find_object(State)
            if state is not None and state.json:
                payload: dict[str, Any] = {"message": exc.message, "exit_code": exc.exit_code}
                if isinstance(exc, RequestError):
                    payload.update(to_wire(exc.info()))
                else:
                    payload["code"] = type(exc).__name__
                click.echo(json.dumps({"error": payload}), err=True)
            else:
                click.echo(f"sockctl: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    envvar="SOCKD_SOCKET",
    metavar="PATH",
    help="sockd's socket [env SOCKD_SOCKET; default /run/sockd/sockd.sock].",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the daemon."
)
@click.option(
    "--json", "json_", is_flag=True, help="Print machine-readable JSON instead of a table."
)
@click.version_option(VERSION, prog_name="sockctl")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, timeout: float, json_: bool) -> None:
    """Network namespaces and sockets without sudo, through the sockd daemon.

    Read-only commands work for anyone who can reach the socket; creating namespaces needs
    membership in the configured group (default: sockd). See `sockctl whoami`.
    """
    ctx.obj = State(socket_path, timeout, json_)
    ctx.call_on_close(lambda: ctx.obj._client and ctx.obj._client.close())


@cli.command()
@json_option
@pass_state
def ping(state: State) -> None:
    """Check that sockd answers."""
    reply = state.client.ping()
    _emit(state, reply, lambda: f"sockd {reply.version} (protocol {reply.protocol})")


@cli.command()
@json_option
@pass_state
def whoami(state: State) -> None:
    """Show what sockd sees of you (from the kernel) and what you may do."""
    me = state.client.whoami()
    rows = [
        ("uid", f"{me.uid} ({_user(me.uid)})"),
        ("gid", str(me.gid)),
        ("groups", " ".join(str(g) for g in me.groups) or "-"),
        ("pid", f"{me.pid}{' (pidfd)' if me.pidfd else ''}"),
        ("may create namespaces", _yes(me.may_create)),
        ("sees all processes", _yes(me.sees_all_processes)),
        (
            "namespaces owned",
            f"{me.namespaces_owned} of {'unlimited' if me.root else me.namespace_quota}",
        ),
        ("links owned", f"{me.links_owned} of {'unlimited' if me.root else me.link_quota}"),
        (
            "pool addresses held",
            f"{me.addresses_held} of {'unlimited' if me.root else me.address_quota}",
        ),
    ]
    _emit(state, me, lambda: _pairs(rows))


@cli.command()
@json_option
@pass_state
def status(state: State) -> None:
    """Show the daemon's version, uptime and load."""
    st = state.client.status()
    rows = [
        ("version", f"{st.version} (protocol {st.protocol})"),
        ("pid", str(st.pid)),
        ("uptime", _duration(st.uptime)),
        ("connections", str(st.connections)),
        ("requests served", str(st.requests)),
        ("namespaces managed", str(st.namespaces_managed)),
        ("config", st.config or "built-in defaults"),
    ]
    _emit(state, st, lambda: _pairs(rows))


@cli.command()
def schema() -> None:
    """Print the protocol's JSON Schema (for clients in other languages)."""
    from sockctl.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.group()
def ns() -> None:
    """Named network namespaces (compatible with `ip netns`)."""


def _complete_ns(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> "list[CompletionItem]":
    from click.shell_completion import CompletionItem

    from sockctl._client import Client
    from sockctl.errors import SockdError

    socket_path = ctx.find_root().params.get("socket_path")
    try:
        with Client(socket_path, timeout=2.0) as client:
            names = [info.name for info in client.ns_list()]
    except SockdError:
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


NS_NAME = click.argument("name", shell_complete=_complete_ns)


@ns.command("create")
@NS_NAME
@click.option("--no-loopback", is_flag=True, help="Leave `lo` down (it is brought up by default).")
@click.option(
    "--hostname",
    metavar="H",
    help="Also give it its own UTS namespace with hostname H (the host's stays as it is).",
)
@click.option(
    "--admin",
    is_flag=True,
    help="Make you its admin: `ns exec --admin` may then change its routes, links, firewall.",
)
@json_option
@pass_state
def ns_create(
    state: State, name: str, no_loopback: bool, hostname: str | None, admin: bool
) -> None:
    """Create the network namespace NAME, owned by you.

    It shows up in `ip netns list` at once; `lo` is up unless --no-loopback. With --hostname it
    also gets its own UTS namespace, which `ns exec` enters along with the network namespace.
    With --admin a user namespace of yours owns it (mapping only your uid and gid), so that
    `sockctl ns exec --admin NAME -- ip route ...` works inside it and nowhere else.
    """
    info = state.client.ns_create(name, loopback_up=not no_loopback, hostname=hostname, admin=admin)
    _emit(state, info, lambda: f"created {info.name} (id {info.id}, owner {_user(info.owner_uid)})")


@ns.command("delete")
@NS_NAME
@click.option(
    "--force",
    is_flag=True,
    help="Delete even if processes are inside (they keep the namespace alive, unnamed).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --force.")
@json_option
@pass_state
def ns_delete(state: State, name: str, force: bool, yes: bool) -> None:
    """Delete the network namespace NAME (yours, or any as root)."""
    if force and not yes and sys.stdin.isatty():
        click.confirm(f"Delete {name} even if processes are inside?", abort=True)
    reply = state.client.ns_delete(name, force=force)

    def text() -> str:
        if not reply.still_alive:
            return f"deleted {reply.name}"
        if not reply.pids and not reply.hidden_pids:
            return (
                f"deleted the name {reply.name}; {reply.pinned_mounts} bind mounts elsewhere keep "
                f"it alive (the daemon's log says where)"
            )
        pids = " ".join(map(str, reply.pids)) or "-"
        return f"deleted the name {reply.name}; processes still inside keep it alive: {pids}" + (
            f" (+{reply.hidden_pids} of other users)" if reply.hidden_pids else ""
        )

    _emit(state, reply, text)


@ns.command("list")
@click.option(
    "-a", "--all", "every", is_flag=True, help="Every namespace on the host, named or not."
)
@json_option
@pass_state
def ns_list(state: State, every: bool) -> None:
    """List named network namespaces with owner, id, nsid and process count.

    With --all, every network namespace of the host, named or not (containers', `unshare -n`'s),
    like `lsns -t net`: id, nsid, processes, the first pid and its command, the name if any.
    Root and monitors see all; others the named ones and those their own processes are in.
    """
    if every:
        entries = state.client.ns_scan()
        headers = ("NS", "NSID", "PROCS", "PID", "USER", "NAME", "COMMAND")
        table = [
            (
                str(e.id),
                "-" if e.nsid is None else str(e.nsid),
                str(e.processes),
                "-" if e.pid is None else str(e.pid),
                "-" if e.uid is None else _user(e.uid),
                e.name or ("(host)" if e.host else "-"),
                e.command or "-",
            )
            for e in entries
        ]
        _emit(state, entries, lambda: _table(headers, table))
        return
    infos = state.client.ns_list()
    headers = ("NAME", "ID", "NSID", "OWNER", "PROCS", "LINKS", "CREATED")
    rows = [
        (
            i.name,
            str(i.id) if i.id is not None else "(not mounted)",
            str(i.nsid) if i.nsid is not None else "-",
            _user(i.owner_uid)
            + ("" if i.managed else " (ip)")
            + (" (attached)" if i.attached else ""),
            str(i.processes),
            str(i.links),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created)) if i.created else "-",
        )
        for i in infos
    ]
    _emit(state, infos, lambda: _table(headers, rows))


@ns.command("identify")
@click.argument("pid", type=click.IntRange(min=1), required=False)
@json_option
@pass_state
def ns_identify(state: State, pid: int | None) -> None:
    """Print the name of the namespace process PID is in (default: this process)."""
    reply = state.client.ns_identify(pid)
    _emit(state, reply, lambda: "\n".join(reply.names))


@ns.command("pids")
@NS_NAME
@json_option
@pass_state
def ns_pids(state: State, name: str) -> None:
    """List the pids of processes inside NAME that you may see."""
    pids, result = state.client.ns_pids(name)
    payload = {"name": result.name, "pids": pids, "hidden": result.hidden}

    def text() -> str:
        lines = [str(pid) for pid in pids]
        if result.hidden:
            lines.append(f"({result.hidden} processes of other users hidden)")
        return "\n".join(lines)

    _emit(state, payload, text)


# Links, attach, nsid, show (issue 6) ----------------------------------------------------------------


@ns.command("link")
@NS_NAME
@click.option(
    "--peer",
    default="host",
    show_default=True,
    metavar="host|OTHERNS",
    shell_complete=_complete_ns,
    help="The other end: the host, or another namespace of yours.",
)
@click.option("--addr", metavar="CIDR", help="Address of NAME's end, e.g. 192.168.7.2/24.")
@click.option(
    "--peer-addr",
    metavar="CIDR",
    help="Address of the other end (a host end: root only; users get pool addresses there).",
)
@click.option("--no-addr", is_flag=True, help="Give neither end an address.")
@click.option(
    "--nat",
    is_flag=True,
    help="A way out: default route via the host, source NAT through the host's uplinks.",
)
@click.option(
    "--dns",
    multiple=True,
    metavar="ADDR",
    help="Name server for NAME's resolv.conf with --nat (repeatable; default: the host's).",
)
@json_option
@pass_state
def ns_link(
    state: State,
    name: str,
    peer: str,
    addr: str | None,
    peer_addr: str | None,
    no_addr: bool,
    nat: bool,
    dns: tuple[str, ...],
) -> None:
    """Connect NAME to the host or to another namespace with a veth pair; both ends come up.

    NAME's end is called eth0 (eth1, ... when taken); a host end is called sd<uid>-<n>, after you.
    Without --addr/--peer-addr/--no-addr both ends get addresses from sockd's pool: the peer the
    first of a small block, NAME's end the second. The word `host` always means the host.

    With --nat, NAME reaches what the host reaches (through sockd's own nftables table, IPv4),
    `sockctl ns exec` gives it a resolv.conf that works inside, and `ns publish` can forward host
    ports into it.
    """
    link = state.client.ns_link(
        name,
        peer=None if peer == "host" else peer,
        address=addr,
        peer_address=peer_addr,
        no_address=no_addr,
        nat=nat,
        dns=dns,
    )
    _emit(
        state,
        link,
        lambda: f"linked {_end(link.end)} <-> {_end(link.peer)}" + (" (nat)" if link.nat else ""),
    )


def _port_pair(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int | None]:
    """HOSTPORT[:PORT], as docker's -p and podman's take it."""
    host, _, inner = value.partition(":")
    try:
        ports = (int(host), int(inner) if inner else None)
    except ValueError:
        raise click.BadParameter(f"{value!r}: want HOSTPORT or HOSTPORT:PORT (numbers)") from None
    if not all(p is None or 1 <= p <= 65535 for p in ports):
        raise click.BadParameter(f"{value!r}: ports are 1-65535")
    return ports


@ns.command("publish")
@NS_NAME
@click.argument("ports", metavar="HOSTPORT[:PORT]", callback=_port_pair)
@click.option("--udp", "transport", flag_value="udp", help="UDP (default TCP).")
@click.option("--tcp", "transport", flag_value="tcp", default=True, help="TCP (the default).")
@json_option
@pass_state
def ns_publish(state: State, name: str, ports: tuple[int, int | None], transport: str) -> None:
    """Forward host port HOSTPORT (all host addresses) to PORT (default the same) inside NAME.

    NAME needs a link made with --nat. Clients anywhere the host is reachable connect to the
    host's address; the server inside sees their real address. Ports below 1024 need a
    policy.privileged_ports grant. Not for 127.0.0.1: connect to a host address instead.
    """
    host_port, port = ports
    published = state.client.ns_publish(
        name, host_port, port, transport="udp" if transport == "udp" else "tcp"
    )
    _emit(
        state,
        published,
        lambda: (
            f"published host port {published.host_port}/{published.transport} -> "
            f"{name} {published.address}:{published.port}"
        ),
    )


@ns.command("unpublish")
@NS_NAME
@click.argument("host_port", metavar="HOSTPORT", type=click.IntRange(1, 65535))
@click.option("--udp", "transport", flag_value="udp", help="UDP (default TCP).")
@click.option("--tcp", "transport", flag_value="tcp", default=True, help="TCP (the default).")
@json_option
@pass_state
def ns_unpublish(state: State, name: str, host_port: int, transport: str) -> None:
    """Stop forwarding host port HOSTPORT into NAME."""
    gone = state.client.ns_unpublish(
        name, host_port, transport="udp" if transport == "udp" else "tcp"
    )
    _emit(state, gone, lambda: f"unpublished host port {gone.host_port}/{gone.transport}")


@ns.command("unlink")
@NS_NAME
@click.argument("ifname", required=False)
@json_option
@pass_state
def ns_unlink(state: State, name: str, ifname: str | None) -> None:
    """Remove the link whose end in NAME is IFNAME (may be left out if NAME has one link).

    Both ends go, and the link's pool addresses are free again.
    """
    reply = state.client.ns_unlink(name, ifname)
    peer = reply.peer_namespace or "host"
    _emit(state, reply, lambda: f"unlinked {name}:{reply.ifname} <-> {peer}:{reply.peer_ifname}")


@ns.command("show")
@NS_NAME
@json_option
@pass_state
def ns_show(state: State, name: str) -> None:
    """Show NAME: owner, id, nsid, hostname, and each interface with addresses, state and peer."""
    detail = state.client.ns_show(name)
    info = detail.info

    def text() -> str:
        rows = [
            ("name", info.name + (" (attached)" if info.attached else "")),
            ("id", str(info.id) if info.id is not None else "(not mounted)"),
            ("owner", _user(info.owner_uid) + ("" if info.managed else " (ip)")),
            ("nsid", str(info.nsid) if info.nsid is not None else "-"),
            ("hostname", info.hostname or "- (the host's)"),
            ("processes", str(info.processes)),
            ("links", str(info.links)),
        ]
        headers = ("IFNAME", "STATE", "ADDRESSES", "PEER", "PEER STATE", "PEER ADDRESSES")
        table = [_interface_row(info.name, i) for i in detail.interfaces]
        way_out = [i.link for i in detail.interfaces if i.link is not None and i.link.nat]
        if way_out:
            rows.append(("nat", f"via {_end_name(way_out[0].peer)}"))
            rows.extend(
                ("published", f"host :{p.host_port}/{p.transport} -> {p.address}:{p.port}")
                for p in way_out[0].published
            )
        return _pairs(rows) + "\n\n" + _table(headers, table)

    _emit(state, detail, text)


@ns.command("attach")
@NS_NAME
@click.argument("pid", type=click.IntRange(min=1), required=False)
@json_option
@pass_state
def ns_attach(state: State, name: str, pid: int | None) -> None:
    """Name the network namespace of process PID (default: this one), like `ip netns attach`.

    Allowed for your own processes in a namespace you made yourself (e.g. `unshare -rn`). Deleting
    NAME later removes only the name; the processes keep their namespace.
    """
    info = state.client.ns_attach(name, pid)
    _emit(state, info, lambda: f"attached {info.name} (id {info.id})")


@ns.command("set-nsid")
@NS_NAME
@click.argument("nsid", metavar="auto|N")
@json_option
@pass_state
def ns_set_nsid(state: State, name: str, nsid: str) -> None:
    """Assign NAME's nsid as seen from the host (`ip netns set NAME N|auto`).

    An nsid never changes once assigned, and the kernel picks one itself when a link first crosses
    into the namespace: set it before `ns link` if you want a particular number.
    """
    if nsid == "auto":
        number = None
    elif nsid.isdigit():
        number = int(nsid)
    else:
        raise click.BadParameter("`auto` or a number", param_hint="NSID")
    info = state.client.ns_set_nsid(name, number)
    _emit(state, info, lambda: f"{info.name}: nsid {info.nsid}")


def _interface_row(name: str, i: InterfaceInfo) -> tuple[str, ...]:
    row = (i.ifname, _state(i.up, i.state), " ".join(i.addresses) or "-")
    if i.link is None:
        return (*row, "-", "-", "-")
    # A link's `end` is in the namespace it was made for; seen from its peer namespace, swap.
    here = (i.link.end.namespace, i.link.end.ifname) == (name, i.ifname)
    far = i.link.peer if here else i.link.end
    return (*row, _end_name(far), _state(far.up, far.state), " ".join(far.addresses) or "-")


def _end_name(end: LinkEnd) -> str:
    return f"{end.namespace or 'host'}:{end.ifname}"


def _end(end: LinkEnd) -> str:
    return f"{_end_name(end)} {' '.join(end.addresses) or '(no address)'}"


def _state(up: bool, state: str) -> str:
    """The operational state, or "down" for an interface nobody brought up."""
    return state if up or state == "absent" else "down"


# Acting inside namespaces as yourself (issue 5) ----------------------------------------------------

# Options come before NAME/ADDRESS; everything after is the command, "--" or not (like `ip netns exec`).
_COMMAND_SETTINGS = {"allow_interspersed_args": False, "ignore_unknown_options": True}


def _command(words: tuple[str, ...]) -> list[str]:
    return list(words[1:] if words[:1] == ("--",) else words)


@ns.command("exec", context_settings=_COMMAND_SETTINGS)
@click.option(
    "--cwd",
    metavar="DIR",
    help="Working directory of the command (default: the current one; you must be able to enter it).",
)
@click.option(
    "--env",
    "-e",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a variable for the command (repeatable).",
)
@click.option("--clear-env", is_flag=True, help="Start from an empty environment instead of yours.")
@click.option(
    "--tty/--no-tty",
    "-t/-T",
    default=None,
    help="Run COMMAND on a new terminal, or not (default: when stdin and stdout are terminals).",
)
@click.option(
    "--admin",
    is_flag=True,
    help="Keep CAP_NET_ADMIN and CAP_NET_RAW over NAME (yours, made with `ns create --admin`).",
)
@NS_NAME
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_state
def ns_exec(
    state: State,
    cwd: str | None,
    env_pairs: tuple[str, ...],
    clear_env: bool,
    tty: bool | None,
    admin: bool,
    name: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND inside the namespace NAME as yourself: `ip netns exec` without sudo.

    sockctl ns exec [OPTIONS] NAME -- COMMAND [ARGS]...

    COMMAND runs with your uid, gid and groups and no capabilities, with NAME's /etc/netns files
    over /etc, your environment, working directory and stdin/stdout/stderr; argv only, no shell.
    sockctl exits with its status (128+N if it died of signal N). Only the namespace's owner (or
    root, or a member of policy.exec_groups) may do this.

    On a terminal (-t; the default when stdin and stdout are terminals) COMMAND gets a pty of its
    own as its controlling terminal, like `ssh -t`: shells have job control (Ctrl-Z, fg, bg), the
    window size follows yours, and your terminal is back as it was when sockctl ends, however it
    ends; SIGTERM or SIGHUP to sockctl hang that terminal up. Without one (-T, pipes, scripts),
    COMMAND uses your stdin/stdout/stderr, and Ctrl-C, SIGTERM, SIGHUP, SIGQUIT and SIGUSR1/2
    are passed on to it. If sockctl is killed, so is COMMAND.
    """
    import os

    from sockctl._exec import FORWARDED_SIGNALS

    env = {} if clear_env else dict(os.environ)
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[key] = value
    argv = _command(command)
    if not argv:
        raise click.UsageError("name the command to run after --")
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    returncode = state.client.exec(
        name, argv, env=env, cwd=cwd, forward_signals=FORWARDED_SIGNALS, tty=tty, admin=admin
    )
    sys.exit(returncode if returncode >= 0 else 128 - returncode)


# Socket inspection (sock list, sock summary) --------------------------------------------------------

_STATE_CHOICES = [
    "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2", "time-wait", "closed",
    "close-wait", "last-ack", "listening", "closing", "all", "connected", "synchronized", "bucket",
    "big", "listen",
]  # fmt: skip
# protocol.SockStateFilter, spelled out: importing typing.get_args here would cost start-up.


_SUMMARY = "\0summary"
"""-s without a state: ss's -s (summary), which no state name can be."""


def _check_states(values: tuple[str, ...]) -> tuple[str, ...]:
    wrong = [value for value in values if value not in _STATE_CHOICES and value != _SUMMARY]
    if wrong:
        raise click.BadParameter(
            f"{wrong[0]!r} is not one of {', '.join(map(repr, _STATE_CHOICES))}",
            param_hint="'-s' / '--state'",
        )
    return values


@cli.group()
def sock() -> None:
    """Sockets: list them like ss (any namespace), or get one made by sockd (sock open)."""


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``options`` in the order they are listed (as ``--help`` shows them)."""

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


_TCP = click.option("-t", "--tcp", "kinds", flag_value="tcp", multiple=True, help="TCP.")
_UDP = click.option("-u", "--udp", "kinds", flag_value="udp", multiple=True, help="UDP.")
_IPV4 = click.option(
    "-4", "--ipv4", "families", flag_value="inet", multiple=True, help="IPv4 only."
)
_IPV6 = click.option(
    "-6", "--ipv6", "families", flag_value="inet6", multiple=True, help="IPv6 only."
)
_kind_options = _options(
    _TCP,
    _UDP,
    click.option("-w", "--raw", "kinds", flag_value="raw", multiple=True, help="RAW."),
    click.option("-x", "--unix", "kinds", flag_value="unix", multiple=True, help="UNIX."),
    _IPV4,
    _IPV6,
    click.option(
        "-N",
        "--netns",
        metavar="NAME",
        shell_complete=_complete_ns,
        help="A named namespace instead of the host's.",
    ),
    click.option(
        "--all-netns",
        is_flag=True,
        help="The host's namespace and every other one (named, and unnamed ones as pid:PID).",
    ),
)


@sock.command("list")
@_kind_options
@click.option("-l", "--listening", is_flag=True, help="Listening sockets (state listening).")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    is_flag=False,
    flag_value=_SUMMARY,
    callback=lambda _ctx, _param, values: _check_states(values),
    metavar="STATE",
    help="ss's state names and groups (established, listening, connected, ...); repeatable. "
    "Alone, as ss -s: the summary (sock summary).",
)
@click.option(
    "--sport",
    "--local-port",
    "local_port",
    callback=port_option,
    help="Local port or service name.",
)
@click.option(
    "--dport", "--remote-port", "remote_port", callback=port_option, help="Remote port or service."
)
@click.option(
    "--src",
    "--local-address",
    "local_address",
    metavar="ADDR",
    help="Local IP or network (10.0.0.0/8, ::1), or UNIX name pattern (/run/*, @name*).",
)
@click.option(
    "--dst", "--remote-address", "remote_address", metavar="ADDR", help="Remote IP or network."
)
@click.option("--uid", callback=uid_option, help="Sockets owned by this uid or user name.")
@click.option("--pid", type=int, help="Sockets held by this process.")
@click.option("--no-processes", is_flag=True, help="Skip process attribution (faster).")
@click.option("-H", "--no-header", is_flag=True, help="No header line (like ss -H).")
@click.option("-a", "--all", "_all", is_flag=True, help="All states (ss -a; the default).")
@click.option("-n", "--numeric", "_numeric", is_flag=True, help="Numeric (ss -n; the default).")
@click.option(
    "-p", "--processes", "_processes", is_flag=True, help="Processes (ss -p; the default)."
)
@click.option(
    "-e", "--extended", is_flag=True, help="uid, inode, cookie, v6only, shutdown (ss -e)."
)
@click.option("-o", "--options", "timers", is_flag=True, help="TCP timers (ss -o).")
@click.option("-i", "--info", is_flag=True, help="TCP internals: tcp_info (ss -i).")
@click.option("-m", "--memory", is_flag=True, help="Socket memory: skmem (ss -m).")
@click.option("--cgroup", is_flag=True, help="Each IP socket's cgroup (ss --cgroup; -e too).")
@click.option("-O", "--oneline", is_flag=True, help="Each socket on one line, details too (ss -O).")
@click.option("-r", "--resolve", is_flag=True, help="Host and service names (ss -r; may ask DNS).")
@click.option(
    "-f",
    "--family",
    "family_words",
    multiple=True,
    metavar="FAMILY",
    help="ss's families: inet (= -4), inet6 (= -6), unix (= -x); repeatable.",
)
@click.option(
    "-A",
    "--query",
    "queries",
    multiple=True,
    metavar="QUERY",
    help="ss's socket tables, comma-separated: all, inet, tcp, udp, raw, unix, unix_stream, "
    "unix_dgram, unix_seqpacket.",
)
@click.option(
    "-K", "--kill", is_flag=True, help="Close the TCP/UDP sockets that match (ss -K; = sock kill)."
)
@click.option(
    "-E",
    "--events",
    is_flag=True,
    help="Follow sockets as they are destroyed (ss -E; = sock events).",
)
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@json_option
@pass_state
def sock_list(
    state: State,
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    netns: str | None,
    all_netns: bool,
    listening: bool,
    states: tuple[str, ...],
    local_port: int | tuple[int, int] | None,
    remote_port: int | tuple[int, int] | None,
    local_address: str | None,
    remote_address: str | None,
    uid: int | None,
    pid: int | None,
    no_processes: bool,
    no_header: bool,
    _all: bool,
    _numeric: bool,
    _processes: bool,
    extended: bool,
    timers: bool,
    info: bool,
    memory: bool,
    cgroup: bool,
    oneline: bool,
    resolve: bool,
    family_words: tuple[str, ...],
    queries: tuple[str, ...],
    kill: bool,
    events: bool,
    filter_words: tuple[str, ...],
) -> None:
    """List sockets like `ss -tuwxanp`: every kind and state unless filtered.

    FILTER is ss's: `state STATE`/`exclude STATE` words, then an expression of `sport`, `dport`
    (`= != < <= > >=`), `src`, `dst` (an address or network, `[::1]`, `:PORT`), `and`, `or`, `not`
    and parentheses, e.g. `state established '( dport = :ssh or sport = :http )'`. --sport and
    --dport also take a range (8000-8100).

    ss's -a, -n and -p are accepted and are the defaults here (all states, numeric, processes).
    -e, -o, -i and -m add what ss adds: uid/inode/cookie, timers, tcp_info, socket memory; -f
    and -A choose tables as ss's do.

    Addresses of all sockets are shown to everyone; processes of other users only to root and
    members of the monitor group (see `sockctl whoami`). Rows of named namespaces are tagged
    with --all-netns.
    """
    if events:  # ss -E
        if states or listening or pid is not None or all_netns or "unix" in kinds or "raw" in kinds:
            raise click.UsageError(
                "-E follows TCP/UDP sockets of one namespace: no states, -x/-w/--pid/--all-netns"
            )
        click.get_current_context().invoke(
            sock_events,
            kinds=kinds,
            families=families,
            netns=netns,
            local_port=local_port,
            remote_port=remote_port,
            local_address=local_address,
            remote_address=remote_address,
            uid=uid,
            count=None,
            seconds=None,
            no_header=no_header,
            filter_words=filter_words,
        )
        return
    if _SUMMARY in states:  # ss -s
        click.get_current_context().invoke(
            sock_summary,
            kinds=kinds,
            families=families,
            netns=netns,
            all_netns=all_netns,
            prometheus=False,
            filter_words=filter_words,
        )
        return
    wanted_states: list[str] = [*states, *(["listening"] if listening else [])]
    wanted_states, expr, local_port, remote_port = _filter_args(
        filter_words, wanted_states, local_port, remote_port
    )
    tables = _ss_tables(kinds, families, family_words, queries)
    kinds, families, unix_types = tuple(tables[0]), tuple(tables[1]), tables[2]
    if kill:
        if pid is not None or all_netns or any(k not in ("tcp", "udp") for k in kinds):
            raise click.UsageError(
                "-K closes TCP/UDP sockets of one namespace: no -x/-w/--pid/--all-netns"
            )
        _kill(
            state,
            kinds,
            families,
            wanted_states,
            local_port,
            remote_port,
            local_address,
            remote_address,
            uid,
            netns,
            expr,
            dry_run=False,
            no_header=no_header,
        )
        return
    batches, result = state.client.sock_batches(
        kinds=kinds,  # type: ignore[arg-type]
        families=families,  # type: ignore[arg-type]
        states=wanted_states,  # type: ignore[arg-type]
        local_port=local_port,
        remote_port=remote_port,
        local_address=local_address,
        remote_address=remote_address,
        uid=uid,
        pid=pid,
        netns=netns,
        all_netns=all_netns,
        processes=not no_processes,
        expr=expr,
        extended=extended,
        timers=timers,
        info=info,
        memory=memory,
        unix_types=unix_types,  # type: ignore[arg-type]
        cgroup=cgroup or extended,
    )
    if state.json:
        from sockctl.protocol import sock_batch_rows

        sockets = [to_wire(row) for batch in batches for row in sock_batch_rows(batch)]
        click.echo(json.dumps({"sockets": sockets, "result": to_wire(result)}))
        return
    from sockctl._socktable import sock_table

    table = sock_table(
        batches,
        show_netns=all_netns,
        show_processes=not no_processes,
        details=extended or timers or info or memory or cgroup,
        oneline=oneline,
        resolve=resolve,
    )
    if no_header:
        table = table.partition("\n")[2]
    if table or not no_header:  # -H on an empty listing prints nothing, like ss
        click.echo(table)
    # Notes go to stderr: the table on stdout stays one header line plus one line per socket.
    if result.proc_fallback:
        click.echo(
            f"sockctl: read from /proc/net: {', '.join(result.proc_fallback)} (no sock_diag "
            f"support for them in this kernel; ss does the same)",
            err=True,
        )
    if result.process_scope == "own":
        click.echo("sockctl: processes of other users hidden (see `sockctl whoami`)", err=True)


_SS_FAMILIES = ("inet", "inet6", "unix")
_SS_TABLES = {
    "tcp": ("tcp",),
    "udp": ("udp",),
    "raw": ("raw",),
    "unix": ("unix",),
    "inet": ("tcp", "udp", "raw"),
    "all": ("tcp", "udp", "raw", "unix"),
}
_SS_UNIX_TYPES = {"unix_stream": "stream", "unix_dgram": "dgram", "unix_seqpacket": "seqpacket"}


def _ss_tables(
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    family_words: tuple[str, ...],
    queries: tuple[str, ...],
) -> tuple[list[str], list[str], list[str]]:
    """ss's -f FAMILY and -A QUERY on top of -t -u -w -x -4 -6: (kinds, families, UNIX types).

    -A's tables add to -t -u -w -x (``-A unix_stream -x`` is every UNIX socket, ``-A
    unix_stream`` the stream ones); -f inet/inet6 narrow IP sockets to that family and, without
    a table, mean all of its tables, as -f unix means -x."""
    wanted_kinds, wanted_families = list(kinds), list(families)
    unix_types: list[str] = []
    for word in family_words:
        if word not in _SS_FAMILIES:
            raise click.BadParameter(
                f"{word!r}: sockd lists inet, inet6 and unix sockets (not ss's link, netlink, "
                "vsock, tipc, xdp)",
                param_hint="-f",
            )
    every_unix = "unix" in wanted_kinds
    for word in (w for query in queries for w in query.split(",") if w):
        if word in _SS_UNIX_TYPES:
            unix_types.append(_SS_UNIX_TYPES[word])
            wanted_kinds.append("unix")
        elif word in _SS_TABLES:
            wanted_kinds += _SS_TABLES[word]
            every_unix = every_unix or "unix" in _SS_TABLES[word]
        else:
            raise click.BadParameter(
                f"{word!r}: sockd lists {', '.join([*_SS_TABLES, *_SS_UNIX_TYPES])} (not ss's "
                "packet, netlink, vsock, tipc, xdp, mptcp, sctp, dccp)",
                param_hint="-A",
            )
    ip_families = [word for word in family_words if word != "unix"]
    wanted_families += ip_families
    if "unix" in family_words:
        wanted_kinds.append("unix")
        every_unix = True
    if ip_families and not any(kind != "unix" for kind in wanted_kinds):
        wanted_kinds += _SS_TABLES["inet"]
    return (
        list(dict.fromkeys(wanted_kinds)),
        list(dict.fromkeys(wanted_families)),
        [] if every_unix else list(dict.fromkeys(unix_types)),
    )


def _filter_args(
    words: tuple[str, ...],
    states: list[str],
    local_port: int | tuple[int, int] | None,
    remote_port: int | tuple[int, int] | None,
) -> "tuple[list[str], SockExpr | None, int | None, int | None]":
    """ss filter words and --sport/--dport ranges as (states, expression, single ports)."""
    if not words and not isinstance(local_port, tuple) and not isinstance(remote_port, tuple):
        return states, None, local_port, remote_port
    # Only here: the parser and its imports stay out of the start-up of plain listings.
    from sockctl import _ssfilter

    parsed = _parse_filter(words, states)
    states = states if parsed.states is None else parsed.states
    ranges = [
        _ssfilter.port_range(name, *port)
        for name, port in (("sport", local_port), ("dport", remote_port))
        if isinstance(port, tuple)
    ]
    return (
        states,
        _ssfilter.combine(parsed.expr, *ranges),
        None if isinstance(local_port, tuple) else local_port,
        None if isinstance(remote_port, tuple) else remote_port,
    )


def _kill(
    state: State,
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    states: list[str],
    local_port: int | None,
    remote_port: int | None,
    local_address: str | None,
    remote_address: str | None,
    uid: int | None,
    netns: str | None,
    expr: "SockExpr | None",
    *,
    dry_run: bool,
    no_header: bool,
) -> None:
    reply = state.client.sock_kill(
        kinds=kinds,  # type: ignore[arg-type]
        families=families,  # type: ignore[arg-type]
        states=states,  # type: ignore[arg-type]
        local_port=local_port,
        remote_port=remote_port,
        local_address=local_address,
        remote_address=remote_address,
        uid=uid,
        netns=netns,
        expr=expr,
        dry_run=dry_run,
    )
    if state.json:
        click.echo(json.dumps(to_wire(reply)))
        return
    from sockctl._socktable import rows_table

    table = rows_table(reply.killed)
    if no_header:
        table = table.partition("\n")[2]
    if table:
        click.echo(table)
    verb = "would close" if dry_run else "closed"
    gone = f" ({reply.gone} closed by themselves meanwhile)" if reply.gone else ""
    click.echo(f"sockctl: {verb} {len(reply.killed)} socket(s){gone}", err=True)


def _parse_filter(words: tuple[str, ...], states: list[str] | None) -> "Filter":
    """ss filter words, or a usage error naming the bad word (the parser is imported only here)."""
    from sockctl import _ssfilter

    try:
        return _ssfilter.parse(words, states)
    except _ssfilter.FilterSyntaxError as exc:
        raise click.UsageError(f"bad filter: {exc}") from None


_tcp_udp_options = _options(
    _TCP,
    _UDP,
    _IPV4,
    _IPV6,
    click.option(
        "-N", "--netns", metavar="NAME", shell_complete=_complete_ns, help="A named namespace."
    ),
)
"""sock kill's and sock events' tables and namespace: -t -u -4 -6 -N."""
_tcp_udp_filters = _options(
    click.option(
        "--sport", "local_port", callback=port_option, help="Local port, service or range."
    ),
    click.option(
        "--dport", "remote_port", callback=port_option, help="Remote port, service or range."
    ),
    click.option("--src", "local_address", metavar="ADDR", help="Local IP or network."),
    click.option("--dst", "remote_address", metavar="ADDR", help="Remote IP or network."),
    click.option("--uid", callback=uid_option, help="Sockets owned by this uid or user name."),
)
"""sock kill's and sock events' flat filters: ports, addresses, owner."""


@sock.command("kill")
@_tcp_udp_options
@click.option("-l", "--listening", is_flag=True, help="Listening sockets.")
@click.option(
    "-s",
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_STATE_CHOICES),
    metavar="STATE",
    help="ss's state names and groups; repeatable.",
)
@_tcp_udp_filters
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be closed; close nothing.")
@click.option("-H", "--no-header", is_flag=True, help="No header line.")
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@json_option
@pass_state
def sock_kill(
    state: State,
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    netns: str | None,
    listening: bool,
    states: tuple[str, ...],
    local_port: int | tuple[int, int] | None,
    remote_port: int | tuple[int, int] | None,
    local_address: str | None,
    remote_address: str | None,
    uid: int | None,
    dry_run: bool,
    no_header: bool,
    filter_words: tuple[str, ...],
) -> None:
    """Close TCP/UDP sockets that match, like `ss -K` (the kernel's SOCK_DESTROY).

    FILTER is ss's, as for `sock list`, e.g. `sockctl sock kill state established dport = :8080`.
    A connection is reset (its peer sees ECONNRESET); a listener stops accepting. A filter is
    required; without state words, TIME-WAIT and SYN-RECV entries are left alone. You may close
    your own sockets; root and members of policy.kill_groups any. When a match is not yours,
    nothing is closed. The closed sockets are printed (stdout) and counted (stderr).
    """
    wanted_states: list[str] = [*states, *(["listening"] if listening else [])]
    wanted_states, expr, lport, rport = _filter_args(
        filter_words, wanted_states, local_port, remote_port
    )
    _kill(
        state,
        kinds,
        families,
        wanted_states,
        lport,
        rport,
        local_address,
        remote_address,
        uid,
        netns,
        expr,
        dry_run=dry_run,
        no_header=no_header,
    )


@sock.command("events")
@_tcp_udp_options
@_tcp_udp_filters
@click.option("-c", "--count", type=click.IntRange(1, 1_000_000), help="Stop after N sockets.")
@click.option("--seconds", type=click.IntRange(1, 86_400), help="Stop after S seconds.")
@click.option("-H", "--no-header", is_flag=True, help="No header line.")
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@json_option
@pass_state
def sock_events(
    state: State,
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    netns: str | None,
    local_port: int | tuple[int, int] | None,
    remote_port: int | tuple[int, int] | None,
    local_address: str | None,
    remote_address: str | None,
    uid: int | None,
    count: int | None,
    seconds: int | None,
    no_header: bool,
    filter_words: tuple[str, ...],
) -> None:
    """Print TCP/UDP sockets as the kernel destroys them, like `ss -E` (which needs root).

    Runs until Ctrl-C, --count sockets or --seconds. FILTER is an ss expression as for `sock
    list` (no state words: a destroyed socket's state is the one it ended in). --json prints one
    JSON object per socket and line, then the summary.
    """
    states, expr, lport, rport = _filter_args(filter_words, [], local_port, remote_port)
    if states:
        raise click.UsageError("sock events follows sockets as they end: drop the state words")
    events = state.client.sock_events(
        kinds=kinds,  # type: ignore[arg-type]
        families=families,  # type: ignore[arg-type]
        local_port=lport,
        remote_port=rport,
        local_address=local_address,
        remote_address=remote_address,
        uid=uid,
        netns=netns,
        expr=expr,
        count=count,
        seconds=seconds,
    )
    from sockctl._socktable import EVENT_HEADER, event_line

    if not no_header and not state.json:
        click.echo(EVENT_HEADER)
    with events:
        try:
            for row in events:
                click.echo(json.dumps(to_wire(row)) if state.json else event_line(row))
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # `sockctl sock events | head`: the reader has had enough
            sys.exit(0)
    if state.json and events.result is not None:
        click.echo(json.dumps({"result": to_wire(events.result)}))


@sock.command("summary")
@_kind_options
@click.option(
    "--prometheus",
    is_flag=True,
    help="Print the Prometheus text format (gauge sockd_sockets{netns,kind,family,state}).",
)
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@json_option
@pass_state
def sock_summary(
    state: State,
    kinds: tuple[str, ...],
    families: tuple[str, ...],
    netns: str | None,
    all_netns: bool,
    prometheus: bool,
    filter_words: tuple[str, ...],
) -> None:
    """Count sockets per namespace, kind, family and state, like `ss -s`.

    FILTER is an ss filter expression as for `sock list` (no state words: every state is
    counted); it counts only the IP sockets it matches.

    --prometheus prints the counts for a node_exporter textfile collector or a scrape wrapper.
    """
    expr = None
    if filter_words:
        parsed = _parse_filter(filter_words, None)
        if parsed.states is not None:
            raise click.UsageError(
                "bad filter: sock summary counts every state; drop the state words"
            )
        expr = parsed.expr
    counts, result = state.client.sock_summary(
        kinds=kinds,  # type: ignore[arg-type]
        families=families,  # type: ignore[arg-type]
        netns=netns,
        all_netns=all_netns,
        expr=expr,
    )
    from sockctl._socktable import prometheus_text, summary_text

    if prometheus:
        click.echo(prometheus_text(counts), nl=False)
        return
    payload = {"counts": counts, "result": result}
    _emit(state, payload, lambda: summary_text(counts, result.namespaces))


def _check_fd_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from sockctl._activation import valid_fd_name

    if not valid_fd_name(value):
        raise click.BadParameter("1-255 printable ASCII characters without ':'")
    return value


@sock.command("open", context_settings=_COMMAND_SETTINGS)
@click.option(
    "--ns", "ns_name", metavar="NAME", help="Namespace to make it in (default: the host)."
)
@click.option(
    "--backlog",
    type=click.IntRange(0, 65535),
    default=128,
    show_default=True,
    help="Listen queue of a stream socket.",
)
@click.option("--no-listen", is_flag=True, help="Bind only; do not listen.")
@click.option(
    "--reuseaddr/--no-reuseaddr", default=True, show_default=True, help="SO_REUSEADDR (inet)."
)
@click.option("--reuseport", is_flag=True, help="SO_REUSEPORT.")
@click.option("--v6only/--no-v6only", default=None, help="IPV6_V6ONLY (default: the kernel's).")
@click.option(
    "--fd-name",
    default="sockctl",
    show_default=True,
    callback=_check_fd_name,
    help="LISTEN_FDNAMES given to COMMAND.",
)
@json_option
@click.argument("address")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def sock_open(
    state: State,
    ns_name: str | None,
    backlog: int,
    no_listen: bool,
    reuseaddr: bool,
    reuseport: bool,
    v6only: bool | None,
    fd_name: str,
    address: str,
    command: tuple[str, ...],
) -> None:
    """Get a socket made by sockd in a namespace (or the host), bound to ADDRESS.

    sockctl sock open [OPTIONS] ADDRESS [-- COMMAND [ARGS]...]

    ADDRESS is tcp:HOST:PORT or udp:HOST:PORT (IPv6 in brackets: tcp:[::]:80), unix:/path,
    unix:@name, unix-dgram:..., unix-seqpacket:..., or tcp/udp/tcp6/udp6 alone for an unbound
    socket. Any port is allowed in a namespace you own; ports below 1024 of the host only as the
    policy grants.

    With a COMMAND, sockctl becomes COMMAND with the socket as fd 3 and LISTEN_FDS=1, LISTEN_PID,
    LISTEN_FDNAMES set (systemd socket activation), so socket-activated servers work unchanged.
    Without, it prints what it got and closes it.
    """
    sock = state.client.open_socket(
        address,
        ns=ns_name,
        backlog=None if no_listen else backlog,
        reuseaddr=reuseaddr,
        reuseport=reuseport,
        v6only=v6only,
    )
    argv = _command(command)
    if argv:
        from sockctl._activation import exec_with_socket

        try:
            exec_with_socket(argv, sock, fd_name)
        except OSError as exc:
            click.echo(f"sockctl: cannot run {argv[0]}: {exc.strerror}", err=True)
            sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
    with sock:
        info = _socket_info(sock, ns_name)
    _emit(
        state,
        info,
        lambda: (
            f"{info['kind']} {info['address']} in {ns_name or 'the host'}"
            + (" (listening)" if info["listening"] else "")
            + "; closed, as no command was given"
        ),
    )


def _socket_info(sock: "socket.socket", ns_name: str | None) -> dict[str, Any]:
    import socket

    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        kind = {socket.SOCK_STREAM: "unix", socket.SOCK_DGRAM: "unix-dgram"}.get(
            sock.type, "unix-seqpacket"
        )
        where = "@" + name[1:].decode(errors="replace") if isinstance(name, bytes) else name
        address = where or "(unbound)"
    else:
        kind = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
        host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
        address = f"{host}:{name[1]}"
    listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    return {"ns": ns_name, "kind": kind, "address": address, "listening": listening}


# Rendering -----------------------------------------------------------------------------------------


def _emit(state: State, value: Any, text: Callable[[], str]) -> None:
    if state.json:
        click.echo(json.dumps(to_wire(value), indent=2))
    else:
        out = text()
        if out:
            click.echo(out)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _pairs(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def main() -> None:
    cli(prog_name="sockctl")
