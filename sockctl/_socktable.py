"""How ``sockctl sock`` shows sockets: ss-like tables, ss's address notation, Prometheus text.

Rendering only; the data comes from :meth:`sockctl.Client.sock_list` / ``sock_summary``.
"""

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


_TIMER_NAMES = ("off", "on", "keepalive", "timewait", "persist", "unknown")
_OPTIONS = ((1, "ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen"))


def detail_texts(batch: SockBatch) -> list[str]:
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
    if batch.cookie is not None:
        v6only = batch.v6only or [None] * size
        shutdown = batch.shutdown or [None] * size
        out = [
            f"{text}{f' uid:{uid}' if uid else ''} ino:{inode}"
            + ("" if cookie is None else f" sk:{cookie:x}")
            + ("" if only is None else f" v6only:{int(only)}")
            + ("" if bits is None else f" {'-' if bits & 1 else '<'}-{'-' if bits & 2 else '>'}")
            for text, uid, inode, cookie, only, bits in zip(
                out, batch.uid, batch.inode, batch.cookie, v6only, shutdown, strict=True
            )
        ]
    tcp = batch.kind == "tcp"
    if batch.skmem is not None or batch.tcp_info is not None:
        skmem = batch.skmem or [None] * size
        infos = batch.tcp_info or [None] * size
        lead = "\n\t " if tcp else " "
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


def tcp_info_text(info: dict[str, Any]) -> str:
    """ss -i's text of a tcp_info (misc/ss.c tcp_stats_print), numeric, in its order."""
    return " ".join(text for rule in _TCP_INFO_TEXT if (text := rule(info)))


_Rule = Callable[[dict[str, Any]], str | None]


def _count(key: str, name: str | None = None) -> _Rule:
    """``name:value`` when the counter is not zero (ss prints most counters so)."""
    return lambda i: f"{name or key}:{i[key]}" if i.get(key) else None


def _ms(key: str, name: str) -> _Rule:
    """A time the kernel gives in µs, as ss prints it: milliseconds with %g."""
    return lambda i: f"{name}:{i[key] / 1000:g}" if i.get(key) else None


def _send_rate(i: dict[str, Any]) -> str | None:
    if not (i.get("rtt") and i.get("snd_mss") and i.get("snd_cwnd")):
        return None
    return f"send {i['snd_cwnd'] * i['snd_mss'] * 8 / (i['rtt'] / 1e6):.0f}bps"


def _pacing(i: dict[str, Any]) -> str | None:
    if i.get("pacing_rate") in (None, 0, 2**64 - 1):  # ~0: unlimited (a listener's), not shown
        return None
    text = f"pacing_rate {i['pacing_rate'] * 8}bps"
    if i.get("max_pacing_rate") and i["max_pacing_rate"] != 2**64 - 1:
        text += f"/{i['max_pacing_rate'] * 8}bps"
    return text


_TCP_INFO_TEXT: tuple[_Rule, ...] = (
    lambda i: " ".join(n for bit, n in _OPTIONS if i.get("options", 0) & bit),
    lambda i: i.get("congestion"),
    lambda i: f"wscale:{i['snd_wscale']},{i['rcv_wscale']}" if i.get("options", 0) & 4 else None,
    lambda i: f"rto:{i['rto'] / 1000:g}" if i.get("rto") not in (None, 0, 3000000) else None,
    _count("backoff"),
    lambda i: f"rtt:{i['rtt'] / 1000:g}/{i.get('rttvar', 0) / 1000:g}" if i.get("rtt") else None,
    _ms("ato", "ato"),
    _count("snd_mss", "mss"),
    _count("pmtu"),
    _count("rcv_mss", "rcvmss"),
    _count("advmss"),
    _count("snd_cwnd", "cwnd"),
    lambda i: f"ssthresh:{i['snd_ssthresh']}" if 0 < i.get("snd_ssthresh", 0) < 0xFFFF else None,
    *(_count(key) for key in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received")),
    *(_count(key) for key in ("segs_out", "segs_in", "data_segs_out", "data_segs_in")),
    _send_rate,
    _count("last_data_sent", "lastsnd"),
    _count("last_data_recv", "lastrcv"),
    _count("last_ack_recv", "lastack"),
    _pacing,
    lambda i: f"delivery_rate {i['delivery_rate'] * 8}bps" if i.get("delivery_rate") else None,
    _count("delivered"),
    _count("delivered_ce"),
    lambda i: "app_limited" if i.get("delivery_rate_app_limited") else None,
    lambda i: f"busy:{i['busy_time'] // 1000}ms" if i.get("busy_time") else None,
    _count("unacked"),
    lambda i: (
        f"retrans:{i.get('retrans', 0)}/{i.get('total_retrans', 0)}"
        if i.get("retrans") or i.get("total_retrans")
        else None
    ),
    _count("lost"),
    # A listener's tcpi_sacked is its backlog limit, not SACKed segments: ss leaves it out.
    lambda i: f"sacked:{i['sacked']}" if i.get("sacked") and i.get("state") != 10 else None,
    *(_count(key) for key in ("dsack_dups", "fackets")),
    lambda i: f"reordering:{i['reordering']}" if i.get("reordering") not in (None, 3) else None,
    _count("reord_seen"),
    _ms("rcv_rtt", "rcv_rtt"),
    _count("rcv_space"),
    _count("rcv_ssthresh"),
    _count("notsent_bytes", "notsent"),
    _ms("min_rtt", "minrtt"),
    *(_count(key) for key in ("rcv_ooopack", "snd_wnd", "rcv_wnd")),
)
"""ss's -i fields, each a rule giving its text or None (left out), in ss's order."""


def _many(prefix: dict[int, str], held: list[int]) -> str:
    return ",".join(f"{prefix[pid]}{fd})" for pid, fd in zip(held[::2], held[1::2], strict=True))


def sock_table(
    batches: Sequence[SockBatch],
    *,
    show_netns: bool,
    show_processes: bool,
    details: bool = False,
) -> str:
    """The ss-like table: [NetNS,] Netid, State, Recv-Q, Send-Q, Local, Peer[, Process], and with
    ``details`` what the batches carry of ss's -o -e -m -i, as ss prints them."""
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
        if details:
            batch_cells[-1] = [
                cell + extra
                for cell, extra in zip(batch_cells[-1], detail_texts(batch), strict=True)
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
