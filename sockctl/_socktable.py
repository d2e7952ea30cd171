"""How ``sockctl sock`` shows sockets: ss-like tables, ss's address notation, Prometheus text.

Rendering only; the data comes from :meth:`sockctl.Client.sock_list` / ``sock_summary``.
"""

import functools
import itertools
import operator
from collections.abc import Iterable, Sequence

from sockctl.protocol import (
    SOCK_STATES,
    SockBatch,
    SockCount,
    SockInfo,
    TcpInfo,
    sock_batch_tcp_info,
)

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


def cells(batch: SockBatch, *, processes: bool, resolve: bool = False) -> list[list[str]]:
    """A batch's table cells, column by column, as ss prints them (``ss -tuwxanp``; with
    ``resolve``, host and service names as ``ss -r`` does).

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
        endpoints = _named_endpoints if resolve else _endpoints
        columns.append(endpoints(batch.local, batch.local_port, batch.family, batch.kind))
        columns.append(endpoints(batch.remote, batch.remote_port, batch.family, batch.kind))
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


def _endpoints(
    hosts: list[str | None], ports: list[int | None], family: str, kind: str
) -> list[str]:
    # ss (misc/ss.c inet_addr_print): IPv4 as is, the IPv6 "any" address as *, other IPv6 in
    # brackets; port 0 as *.
    if family == "inet6":
        return [
            f"{'*' if host == '::' else f'[{host}]'}:{port or '*'}"
            for host, port in zip(hosts, ports, strict=True)
        ]
    return [f"{host}:{port or '*'}" for host, port in zip(hosts, ports, strict=True)]


def _named_endpoints(
    hosts: list[str | None], ports: list[int | None], family: str, kind: str
) -> list[str]:
    """ss -r: host names (getnameinfo: /etc/hosts, then whatever nsswitch.conf says, each address
    once per listing) and service names (/etc/services); numeric where there is none, the "any"
    address as ss -r prints it."""
    texts = []
    for host, port in zip(hosts, ports, strict=True):
        name = _host_name(host) if host not in (None, "0.0.0.0", "::") else None  # noqa: S104
        if name is None:
            name = f"[{host}]" if family == "inet6" else str(host)
        service = "*" if not port else _service_name(port, kind)
        texts.append(f"{name}:{service}")
    return texts


@functools.cache
def _host_name(address: str) -> str | None:
    import socket  # noqa: PLC0415 -- only -r needs it

    try:
        name, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except OSError:
        return None
    return name


@functools.cache
def _service_name(port: int, kind: str) -> str:
    import socket  # noqa: PLC0415

    try:
        return socket.getservbyport(port, "udp" if kind == "udp" else "tcp")
    except OSError:
        return str(port)


_TIMER_NAMES = ("off", "on", "keepalive", "timewait", "persist", "unknown")
_OPTIONS = ((1, "ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen"))


def detail_texts(batch: SockBatch, *, oneline: bool = False) -> list[str]:
    """What ss appends to each row for -o (timer), -e (uid, ino, sk) and, on a continuation line
    for TCP, -m (skmem) and -i (tcp_info); empty strings where a batch carries none of them."""
    size = len(batch.inode)
    out = [""] * size
    if batch.timer is not None:
        out = [
            text
            if t is None
            else f"{text} timer:({_TIMER_NAMES[min(t[0], 5)]},{ms_timer(t[1])},{t[2]})"
            for text, t in zip(out, batch.timer, strict=True)
        ]
    cgroups = batch.cgroup or [None] * size
    if batch.cookie is not None:
        v6only = batch.v6only or [None] * size
        shutdown = batch.shutdown or [None] * size
        out = [
            f"{text}{f' uid:{uid}' if uid else ''} ino:{inode}"
            + ("" if cookie is None else f" sk:{cookie:x}")
            + ("" if cgroup is None else f" cgroup:{cgroup}")
            + ("" if only is None else f" v6only:{int(only)}")
            + ("" if bits is None else f" {'-' if bits & 1 else '<'}-{'-' if bits & 2 else '>'}")
            for text, uid, inode, cookie, cgroup, only, bits in zip(
                out, batch.uid, batch.inode, batch.cookie, cgroups, v6only, shutdown, strict=True
            )
        ]
    elif batch.cgroup is not None:  # --cgroup without -e
        out = [
            text if cgroup is None else f"{text} cgroup:{cgroup}"
            for text, cgroup in zip(out, cgroups, strict=True)
        ]
    tcp = batch.kind == "tcp"
    if batch.skmem is not None or batch.tcp_info is not None:
        skmem = batch.skmem or [None] * size
        infos = sock_batch_tcp_info(batch)
        lead = "\n\t " if tcp and not oneline else " "
        out = [
            text + lead + " ".join(parts) if parts else text
            for text, parts in (
                (
                    text,
                    [
                        *([] if mem is None else [skmem_text(mem)]),
                        *([] if info is None else [tcp_info_text(info)]),
                    ],
                )
                for text, mem, info in zip(out, skmem, infos, strict=True)
            )
        ]
    return out


def ms_timer(ms: int) -> str:
    """ss's print_ms_timer: ``119min``, ``5.120ms``... as misc/ss.c writes a timer's expiry."""
    secs, msecs = divmod(ms, 1000)
    minutes, secs = divmod(secs, 60)
    text = ""
    if minutes:
        msecs = 0
        text = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        text += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        text += f"{msecs:03d}ms"
    return text


_SKMEM_KEYS = ("r", "rb", "t", "tb", "f", "w", "o", "bl", "d")


def skmem_text(mem: list[int]) -> str:
    return "skmem:(" + ",".join(f"{k}{v}" for k, v in zip(_SKMEM_KEYS, mem, strict=False)) + ")"


def tcp_info_text(i: TcpInfo) -> str:  # noqa: PLR0912, PLR0915 -- one branch per field, as ss
    """ss -i's text of a tcp_info (misc/ss.c tcp_stats_print), numeric, in its order.

    Straight-line code like ss's own: a listing formats one per TCP socket, and a table of rules
    called per field was six times slower. A field is left out where ss leaves it out (mostly:
    when zero; fields an older kernel lacks are None, also left out)."""
    out: list[str] = []
    add = out.append
    options = i.options or 0
    if options:
        add(" ".join(name for bit, name in _OPTIONS if options & bit))
    if i.congestion:
        add(i.congestion)
    if options & 4:
        add(f"wscale:{i.snd_wscale},{i.rcv_wscale}")
    if i.rto and i.rto != 3000000:
        add(f"rto:{i.rto / 1000:g}")
    if i.backoff:
        add(f"backoff:{i.backoff}")
    if i.rtt:
        add(f"rtt:{i.rtt / 1000:g}/{(i.rttvar or 0) / 1000:g}")
    if i.ato:
        add(f"ato:{i.ato / 1000:g}")
    if i.snd_mss:
        add(f"mss:{i.snd_mss}")
    if i.pmtu:
        add(f"pmtu:{i.pmtu}")
    if i.rcv_mss:
        add(f"rcvmss:{i.rcv_mss}")
    if i.advmss:
        add(f"advmss:{i.advmss}")
    if i.snd_cwnd:
        add(f"cwnd:{i.snd_cwnd}")
    if i.snd_ssthresh and i.snd_ssthresh < 0xFFFF:
        add(f"ssthresh:{i.snd_ssthresh}")
    for name, value in (
        ("bytes_sent", i.bytes_sent),
        ("bytes_retrans", i.bytes_retrans),
        ("bytes_acked", i.bytes_acked),
        ("bytes_received", i.bytes_received),
        ("segs_out", i.segs_out),
        ("segs_in", i.segs_in),
        ("data_segs_out", i.data_segs_out),
        ("data_segs_in", i.data_segs_in),
    ):
        if value:
            add(f"{name}:{value}")
    if i.rtt and i.snd_mss and i.snd_cwnd:
        add(f"send {i.snd_cwnd * i.snd_mss * 8 / (i.rtt / 1e6):.0f}bps")
    if i.last_data_sent:
        add(f"lastsnd:{i.last_data_sent}")
    if i.last_data_recv:
        add(f"lastrcv:{i.last_data_recv}")
    if i.last_ack_recv:
        add(f"lastack:{i.last_ack_recv}")
    if i.pacing_rate and i.pacing_rate != _UNLIMITED:  # ~0: unlimited (a listener's), not shown
        pacing = f"pacing_rate {i.pacing_rate * 8}bps"
        if i.max_pacing_rate and i.max_pacing_rate != _UNLIMITED:
            pacing += f"/{i.max_pacing_rate * 8}bps"
        add(pacing)
    if i.delivery_rate:
        add(f"delivery_rate {i.delivery_rate * 8}bps")
    if i.delivered:
        add(f"delivered:{i.delivered}")
    if i.delivered_ce:
        add(f"delivered_ce:{i.delivered_ce}")
    if i.delivery_rate_app_limited:
        add("app_limited")
    if i.busy_time:
        add(f"busy:{i.busy_time // 1000}ms")
    if i.unacked:
        add(f"unacked:{i.unacked}")
    if i.retrans or i.total_retrans:
        add(f"retrans:{i.retrans or 0}/{i.total_retrans or 0}")
    if i.lost:
        add(f"lost:{i.lost}")
    if i.sacked and i.state != 10:  # a listener's tcpi_sacked is its backlog limit: ss hides it
        add(f"sacked:{i.sacked}")
    if i.dsack_dups:
        add(f"dsack_dups:{i.dsack_dups}")
    if i.fackets:
        add(f"fackets:{i.fackets}")
    if i.reordering is not None and i.reordering != 3:
        add(f"reordering:{i.reordering}")
    if i.reord_seen:
        add(f"reord_seen:{i.reord_seen}")
    if i.rcv_rtt:
        add(f"rcv_rtt:{i.rcv_rtt / 1000:g}")
    if i.rcv_space:
        add(f"rcv_space:{i.rcv_space}")
    if i.rcv_ssthresh:
        add(f"rcv_ssthresh:{i.rcv_ssthresh}")
    if i.notsent_bytes:
        add(f"notsent:{i.notsent_bytes}")
    if i.min_rtt:
        add(f"minrtt:{i.min_rtt / 1000:g}")
    if i.rcv_ooopack:
        add(f"rcv_ooopack:{i.rcv_ooopack}")
    if i.snd_wnd:
        add(f"snd_wnd:{i.snd_wnd}")
    if i.rcv_wnd:
        add(f"rcv_wnd:{i.rcv_wnd}")
    return " ".join(out)


_UNLIMITED = 2**64 - 1


def _many(prefix: dict[int, str], held: list[int]) -> str:
    return ",".join(f"{prefix[pid]}{fd})" for pid, fd in zip(held[::2], held[1::2], strict=True))


def sock_table(
    batches: Sequence[SockBatch],
    *,
    show_netns: bool,
    show_processes: bool,
    details: bool = False,
    oneline: bool = False,
    resolve: bool = False,
) -> str:
    """The ss-like table: [NetNS,] Netid, State, Recv-Q, Send-Q, Local, Peer[, Process], and with
    ``details`` what the batches carry of ss's -o -e -m -i, as ss prints them (``oneline``: on the
    socket's line, ss -O; else TCP's tcp_info and skmem on a second, indented one)."""
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
        batch_cells = cells(batch, processes=show_processes, resolve=resolve)
        if details:
            batch_cells[-1] = [
                cell + extra
                for cell, extra in zip(
                    batch_cells[-1], detail_texts(batch, oneline=oneline), strict=True
                )
            ]
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
    key = operator.attrgetter("netns", "kind", "family")
    batches = [_rows_batch(list(group)) for _, group in itertools.groupby(rows, key)]
    show_netns = any(row.netns is not None for row in rows)
    return sock_table(batches, show_netns=show_netns, show_processes=False)


def _rows_batch(items: list[SockInfo]) -> SockBatch:
    """Rows of one namespace, kind and family as a batch (the table is made from batches)."""
    first = items[0]
    return SockBatch(
        netns=first.netns,
        kind=first.kind,
        family=first.family,
        **{name: [getattr(r, name) for r in items] for name in _ROW_COLUMNS},
    )


EVENT_HEADER = (
    f"{'Netid':<5} {'State':<10} {'Recv-Q':>6} {'Send-Q':>6} {'Local Address:Port':>24} "
    f"{'Peer Address:Port':<24}"
)
"""sock events' header: the rows come one at a time, so the columns have fixed widths, as in
``ss -E``."""


def event_line(row: SockInfo) -> str:
    """One row of ``sock events``, under :data:`EVENT_HEADER` (``[netns]`` first, when named)."""
    netid, state, recv_q, send_q, local, peer = (
        column[0] for column in cells(_rows_batch([row]), processes=False)
    )
    line = f"{netid:<5} {state:<10} {recv_q:>6} {send_q:>6} {local:>24} {peer:<24}".rstrip()
    return line if row.netns is None else f"[{row.netns}] {line}"


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
