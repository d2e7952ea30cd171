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

from sockctl.protocol import VERSION, InterfaceInfo, LinkEnd, to_wire

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from sockctl._client import Client

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
@json_option
@pass_state
def ns_create(state: State, name: str, no_loopback: bool, hostname: str | None) -> None:
    """Create the network namespace NAME, owned by you.

    It shows up in `ip netns list` at once; `lo` is up unless --no-loopback. With --hostname it
    also gets its own UTS namespace, which `ns exec` enters along with the network namespace.
    """
    info = state.client.ns_create(name, loopback_up=not no_loopback, hostname=hostname)
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
@json_option
@pass_state
def ns_list(state: State) -> None:
    """List named network namespaces with owner, id, nsid and process count."""
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
@json_option
@pass_state
def ns_link(
    state: State,
    name: str,
    peer: str,
    addr: str | None,
    peer_addr: str | None,
    no_addr: bool,
) -> None:
    """Connect NAME to the host or to another namespace with a veth pair; both ends come up.

    NAME's end is called eth0 (eth1, ... when taken); a host end is called sd<uid>-<n>, after you.
    Without --addr/--peer-addr/--no-addr both ends get addresses from sockd's pool: the peer the
    first of a small block, NAME's end the second. The word `host` always means the host.
    """
    link = state.client.ns_link(
        name,
        peer=None if peer == "host" else peer,
        address=addr,
        peer_address=peer_addr,
        no_address=no_addr,
    )
    _emit(state, link, lambda: f"linked {_end(link.end)} <-> {_end(link.peer)}")


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
