"""How ``sockctl sock`` shows sockets: ss-like tables, ss's address notation, Prometheus text.

Rendering only; the data comes from :meth:`sockctl.Client.sock_list` / ``sock_summary``.
"""

import itertools
import operator
from collections.abc import Iterable, Sequence

from sockctl.protocol import SOCK_STATES, SockBatch, SockCount, SockInfo

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

HEADERS = ("Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")


def cells(batch: SockBatch, *, processes: bool) -> list[list[str]]:
    """A batch's table cells, column by column, as ss prints them (``ss -tuwxanp``).

    Built per column with comprehensions over the batch's lists: 100 000 sockets render in a
    fraction of what one call per socket cost.
    """
    size = len(batch.inode)
    states = [STATE_LABELS.get(state, state.upper()) for state in batch.state]
    columns: list[list[str]] = [
        [_UNIX_NETIDS.get(t, "u_???") for t in batch.type]
        if batch.kind == "unix"
        else [str(batch.kind)] * size,
        states,
        list(map(str, batch.recv_q)),
        list(map(str, batch.send_q)),
    ]
    if batch.kind == "unix":
        # ss: "name inode" (* when unnamed; the NULs of an abstract name as @), peer "* inode".
        columns.append(
            [
                f"{'*' if name is None else name.replace(chr(0), '@')} {inode}"
                for name, inode in zip(batch.local, batch.inode, strict=True)
            ]
        )
        columns.append([f"* {peer or 0}" for peer in batch.peer_inode or [None] * size])
    else:
        columns.append(_endpoints(batch.local, batch.local_port, batch.family))
        columns.append(_endpoints(batch.remote, batch.remote_port, batch.family))
    if processes:
        columns.append(_users(batch))
    return columns


def _users(batch: SockBatch) -> list[str]:
    """The Process column, from the batch's holder pairs and name table (no object per socket)."""
    size = len(batch.inode)
    if batch.holders is None:
        return [""] * size
    # Each pid's '("name",pid=N,fd=' once per batch; a socket's holder is then one f-string.
    prefix = {
        pid: f'("{name}",pid={pid},fd='
        for pid, name in zip(batch.holder_pid or (), batch.holder_name or (), strict=True)
    }
    out = [
        ""
        if not held
        else f"users:({prefix[held[0]]}{held[1]}))"
        if len(held) == 2
        else f"users:({_many(prefix, held)})"
        for held in batch.holders
    ]
    if batch.holders_omitted is not None:
        out = [
            f"{text} +{more} more" if more else text
            for text, more in zip(out, batch.holders_omitted, strict=True)
        ]
    return out


def _endpoints(hosts: list[str | None], ports: list[int | None], family: str) -> list[str]:
    # ss (misc/ss.c inet_addr_print): IPv4 as is, the IPv6 "any" address as *, other IPv6 in
    # brackets; port 0 as *.
    if family == "inet6":
        return [
            f"{'*' if host == '::' else f'[{host}]'}:{port or '*'}"
            for host, port in zip(hosts, ports, strict=True)
        ]
    return [f"{host}:{port or '*'}" for host, port in zip(hosts, ports, strict=True)]


def _many(prefix: dict[int, str], held: list[int]) -> str:
    return ",".join(f"{prefix[pid]}{fd})" for pid, fd in zip(held[::2], held[1::2], strict=True))


def sock_table(batches: Sequence[SockBatch], *, show_netns: bool, show_processes: bool) -> str:
    """The ss-like table: [NetNS,] Netid, State, Recv-Q, Send-Q, Local, Peer[, Process]."""
    headers = list(HEADERS)
    numeric = {2, 3}
    caps: list[int | None] = [None, None, None, None, ADDRESS_WIDTH_CAP, ADDRESS_WIDTH_CAP]
    columns: list[list[str]] = [[] for _ in headers]
    if show_processes:
        headers.append("Process")
        caps.append(0)  # the last column is never padded
        columns.append([])
    if show_netns:
        headers.insert(0, "NetNS")
        caps.insert(0, None)
        numeric = {i + 1 for i in numeric}
        columns.insert(0, [])
    for batch in batches:
        batch_cells = cells(batch, processes=show_processes)
        if show_netns:
            batch_cells.insert(0, [batch.netns or "-"] * len(batch.inode))
        for column, values in zip(columns, batch_cells, strict=True):
            column.extend(values)
    widths = []
    for header, column, cap in zip(headers, columns, caps, strict=True):
        width = max(len(header), max(map(len, column), default=0))
        widths.append(width if cap is None else min(width, cap))
    # Pad whole columns at once (str.ljust/rjust through map run in C), then join each row; the
    # last column is not padded, so lines carry no trailing blanks.
    padded = [
        list(map(str.rjust if i in numeric else str.ljust, [h, *col], itertools.repeat(w)))
        if i < len(columns) - 1
        else [h, *col]
        for i, (h, col, w) in enumerate(zip(headers, columns, widths, strict=True))
    ]
    lines = map(" ".join, zip(*padded, strict=True))
    if not show_processes:
        return "\n".join(lines)
    return "\n".join(line.rstrip() for line in lines)


def rows_table(rows: Sequence[SockInfo]) -> str:
    """:func:`sock_table` of single rows (sock kill's answer), one batch per namespace and kind;
    an empty string for no rows."""
    if not rows:
        return ""
    batches: list[SockBatch] = []
    key = operator.attrgetter("netns", "kind", "family")
    for (netns, kind, family), group in itertools.groupby(rows, key):
        items = list(group)
        batches.append(
            SockBatch(
                netns=netns,
                kind=kind,
                family=family,
                **{name: [getattr(r, name) for r in items] for name in _ROW_COLUMNS},
            )
        )
    show_netns = any(row.netns is not None for row in rows)
    return sock_table(batches, show_netns=show_netns, show_processes=False)


_ROW_COLUMNS = (
    "type", "state", "recv_q", "send_q", "local", "local_port", "remote", "remote_port", "inode",
    "uid",
)  # fmt: skip


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
