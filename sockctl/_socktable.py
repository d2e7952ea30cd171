"""How ``sockctl sock`` shows sockets: ss-like tables, ss's address notation, Prometheus text.

Rendering only; the data comes from :meth:`sockctl.Client.sock_list` / ``sock_summary``.
"""

from collections.abc import Iterable, Sequence

from sockctl.protocol import SOCK_STATES, SockCount, SockInfo, SockProcess

STATE_LABELS = {
    "established": "ESTAB",
    "syn-sent": "SYN-SENT",
    "syn-recv": "SYN-RECV",
    "fin-wait-1": "FIN-WAIT-1",
    "fin-wait-2": "FIN-WAIT-2",
    "time-wait": "TIME-WAIT",
    "closed": "UNCONN",
    "close-wait": "CLOSE-WAIT",
    "last-ack": "LAST-ACK",
    "listening": "LISTEN",
    "closing": "CLOSING",
}
"""ss's column text for each state."""

_UNIX_NETIDS = {"stream": "u_str", "dgram": "u_dgr", "seqpacket": "u_seq"}

ADDRESS_WIDTH_CAP = 48
"""Address columns grow to fit their longest entry up to this; a longer one (a deep UNIX path)
overflows its own line instead of pushing every other line right."""


def netid(info: SockInfo) -> str:
    """ss's Netid column: tcp, udp, raw, u_str, u_dgr, u_seq."""
    if info.kind == "unix":
        return _UNIX_NETIDS.get(info.type, "u_???")
    return info.kind


def _port(port: int | None) -> str:
    return "*" if not port else str(port)


def _host(address: str | None, family: str) -> str:
    # ss (misc/ss.c inet_addr_print): IPv4 as is, IPv6 "any" as *, other IPv6 in brackets.
    if address is None:
        return "*"
    if family == "inet6":
        return "*" if address == "::" else f"[{address}]"
    return address


def local_column(info: SockInfo) -> str:
    """ "addr:port" as ss prints it; for UNIX sockets "name inode" (``*`` when unnamed)."""
    if info.kind == "unix":
        return f"{_unix_name(info.local)} {info.inode}"
    return f"{_host(info.local, info.family)}:{_port(info.local_port)}"


def remote_column(info: SockInfo) -> str:
    if info.kind == "unix":
        return f"* {info.peer_inode or 0}"
    return f"{_host(info.remote, info.family)}:{_port(info.remote_port)}"


def _unix_name(name: str | None) -> str:
    if name is None:
        return "*"
    # ss shows the NULs inside an abstract name as @, like the leading one.
    return name.replace("\0", "@")


def processes_column(processes: Sequence[SockProcess] | None, omitted: int = 0) -> str:
    """``users:(("name",pid=N,fd=M),...)`` as ss -p prints it; empty without holders."""
    if not processes:
        return ""
    held = ",".join(f'("{p.name}",pid={p.pid},fd={p.fd})' for p in processes)
    more = f" +{omitted} more" if omitted else ""
    return f"users:({held}){more}"


def sock_table(sockets: Sequence[SockInfo], *, show_netns: bool, show_processes: bool) -> str:
    """The ss-like table: Netid, State, Recv-Q, Send-Q, Local, Peer (and NetNS, Process)."""
    headers = ["Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"]
    columns: list[list[str]] = [
        [netid(s) for s in sockets],
        [STATE_LABELS.get(s.state, s.state.upper()) for s in sockets],
        [str(s.recv_q) for s in sockets],
        [str(s.send_q) for s in sockets],
        [local_column(s) for s in sockets],
        [remote_column(s) for s in sockets],
    ]
    caps: list[int | None] = [None, None, None, None, ADDRESS_WIDTH_CAP, ADDRESS_WIDTH_CAP]
    numeric = {2, 3}
    if show_netns:
        headers.insert(0, "NetNS")
        columns.insert(0, [s.netns or "-" for s in sockets])
        caps.insert(0, None)
        numeric = {i + 1 for i in numeric}
    if show_processes:
        headers.append("Process")
        columns.append([processes_column(s.processes, s.processes_omitted) for s in sockets])
        caps.append(0)  # last column: never padded
    widths = []
    for header, column, cap in zip(headers, columns, caps, strict=True):
        width = max([len(header), *map(len, column)])
        widths.append(width if cap is None else min(width, cap))
    specs = [
        ("{:>%d}" if i in numeric else "{:<%d}") % w if w else "{}" for i, w in enumerate(widths)
    ]
    line = " ".join(specs)
    out = [line.format(*headers).rstrip()]
    out.extend(line.format(*row).rstrip() for row in zip(*columns, strict=True))
    return "\n".join(out)


def summary_text(counts: Iterable[SockCount], namespaces: Sequence[str | None]) -> str:
    """Counts per namespace, kind and family, with the states in ss's order, like ``ss -s``."""
    order = {state: i for i, state in enumerate(SOCK_STATES)}
    grouped: dict[str | None, dict[tuple[str, str], dict[str, int]]] = {n: {} for n in namespaces}
    for count in counts:
        per_kind = grouped.setdefault(count.netns, {})
        per_kind.setdefault((count.kind, count.family), {})[count.state] = count.count
    lines: list[str] = []
    grand = 0
    for netns, per_kind in grouped.items():
        total = sum(sum(states.values()) for states in per_kind.values())
        grand += total
        lines.append(f"{netns or '(host)'}: {total} sockets")
        for (kind, family), states in per_kind.items():
            detail = ", ".join(
                f"{STATE_LABELS.get(state, state).lower()} {n}"
                for state, n in sorted(states.items(), key=lambda item: order.get(item[0], 99))
            )
            lines.append(f"  {kind:<5} {family:<6} {sum(states.values()):>7}  ({detail})")
    if len(grouped) > 1:
        lines.append(f"total: {grand} sockets in {len(grouped)} namespaces")
    return "\n".join(lines)


PROMETHEUS_METRIC = "sockd_sockets"


def prometheus_text(counts: Iterable[SockCount]) -> str:
    """The counts in the Prometheus text exposition format (version 0.0.4).

    One gauge, ``sockd_sockets``, labelled ``netns`` (empty for the host's namespace), ``kind``,
    ``family`` and ``state`` (ss's names). Only non-zero series are written: use
    ``sum(...) or vector(0)`` in alerts on a state that may be absent.
    """
    lines = [
        f"# HELP {PROMETHEUS_METRIC} Open sockets by network namespace, kind, family and state.",
        f"# TYPE {PROMETHEUS_METRIC} gauge",
    ]
    for c in counts:
        labels = (
            f'netns="{_label(c.netns or "")}",kind="{c.kind}",family="{c.family}",'
            f'state="{_label(c.state)}"'
        )
        lines.append(f"{PROMETHEUS_METRIC}{{{labels}}} {c.count}")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    # Label values escape backslash, double quote and line feed (exposition format spec).
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
