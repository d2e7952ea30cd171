"""ss's filter language: the client's parser (pure), the contract's bounds, the daemon's evaluation,
and parity with the real ss on loopback sockets this module makes (IPv4, IPv6, IPv4-mapped)."""

import contextlib
import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import pytest

from sockctl import InvalidRequest
from sockctl._ssfilter import FilterSyntaxError, combine, parse, port_range, split_words
from sockctl._ssnames import port_option
from sockctl.protocol import (
    MAX_SOCK_EXPR_DEPTH,
    MAX_SOCK_EXPR_NODES,
    SOCK_STATES,
    SockAnd,
    SockExpr,
    SockHostMatch,
    SockNot,
    SockOr,
    SockPortMatch,
    to_wire,
)
from sockctl.schema import request_adapter
from sockd import sockdiag
from sockd.socklist import _compile_expr
from tests.conftest import Daemon, sockctl


def sport(cmp: str, port: int) -> SockPortMatch:
    return SockPortMatch(op="sport", cmp=cmp, port=port)  # type: ignore[arg-type]


def dport(cmp: str, port: int) -> SockPortMatch:
    return SockPortMatch(op="dport", cmp=cmp, port=port)  # type: ignore[arg-type]


def host(op: str, address: str | None, port: int | None = None) -> SockHostMatch:
    return SockHostMatch(op=op, address=address, port=port)  # type: ignore[arg-type]


# The parser ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expr"),
    [
        (["sport", "=", ":ssh"], sport("eq", 22)),
        (["sport", "==", "22"], sport("eq", 22)),
        (["sport", "eq", ":22"], sport("eq", 22)),
        (["sport", ":22"], sport("eq", 22)),  # ss's '=' is optional
        (["dport", ">", ":1024"], dport("gt", 1024)),
        (["dport", "ge", ":1024"], dport("ge", 1024)),
        (["dport", "geq", ":1024"], dport("ge", 1024)),
        (["dport", "<=", ":1024"], dport("le", 1024)),
        (["dport", "lt", ":http"], dport("lt", 80)),
        (["sport", "!=", ":80"], sport("ne", 80)),
        (["sport", "neq", ":80"], sport("ne", 80)),
        (["src", "10.0.0.0/8"], host("src", "10.0.0.0/8")),
        (["src", "=", "10.1.2.3/8"], host("src", "10.0.0.0/8")),
        (["dst", "10.0.0.1:80"], host("dst", "10.0.0.1/32", 80)),
        (["dst", "10.0.0.0/8:http"], host("dst", "10.0.0.0/8", 80)),
        (["dst", "[::1]"], host("dst", "::1/128")),
        (["dst", "[::1]:80"], host("dst", "::1/128", 80)),
        (["dst", "[fe80::]/10:80"], host("dst", "fe80::/10", 80)),
        (["dst", "::1/128"], host("dst", "::1/128")),  # a prefix: no port after the last ':'
        (["src", "*:80"], host("src", None, 80)),
        (["src", ":80"], host("src", None, 80)),
        (["src", "*"], host("src", None)),
        (["src", "*:*"], host("src", None)),
        (["not", "sport", ":80"], SockNot(arg=sport("eq", 80))),
        (["!", "sport", ":80"], SockNot(arg=sport("eq", 80))),
        (
            ["( dport = :ssh or sport = :http )"],
            SockOr(args=[dport("eq", 22), sport("eq", 80)]),
        ),
        (
            ["(", "dport", "=", ":ssh", "||", "sport", "=", ":http", ")"],
            SockOr(args=[dport("eq", 22), sport("eq", 80)]),
        ),
        (["(dport = :ssh)"], dport("eq", 22)),  # parentheses touching words (ss needs blanks)
        (
            ["sport", ":1", "sport", ":2"],  # adjacent terms: and
            SockAnd(args=[sport("eq", 1), sport("eq", 2)]),
        ),
        (
            ["sport :1 && sport :2 & sport :3 and sport :4"],  # flattened
            SockAnd(args=[sport("eq", 1), sport("eq", 2), sport("eq", 3), sport("eq", 4)]),
        ),
        (
            # ss: and/or of equal precedence, grouped from the left
            ["sport :1 or sport :2 and sport :3"],
            SockAnd(args=[SockOr(args=[sport("eq", 1), sport("eq", 2)]), sport("eq", 3)]),
        ),
        (
            ["sport :1 or ( sport :2 and sport :3 )"],
            SockOr(args=[sport("eq", 1), SockAnd(args=[sport("eq", 2), sport("eq", 3)])]),
        ),
        (
            ["not sport :1 or sport :2"],  # not takes the next term only
            SockOr(args=[SockNot(arg=sport("eq", 1)), sport("eq", 2)]),
        ),
        (
            ["not ( sport :1 or sport :2 )"],
            SockNot(arg=SockOr(args=[sport("eq", 1), sport("eq", 2)])),
        ),
    ],
)
def test_expressions_parse_to_the_tree(words: list[str], expr: SockExpr) -> None:
    parsed = parse(words)
    assert parsed.states is None
    assert parsed.expr == expr


@pytest.mark.parametrize(
    ("words", "given", "states"),
    [
        (["state", "established"], None, ["established"]),
        (["state", "established", "state", "listening"], None, ["established", "listening"]),
        (
            ["state", "connected"],
            None,
            [s for s in SOCK_STATES if s not in ("listening", "closed")],
        ),
        (["exclude", "listening"], None, [s for s in SOCK_STATES if s != "listening"]),
        (["excl", "bucket"], None, [s for s in SOCK_STATES if s not in ("syn-recv", "time-wait")]),
        (
            ["exclude", "connected", "state", "time-wait"],
            None,
            ["time-wait", "closed", "listening"],
        ),
        (["state", "listen"], ["established"], ["established", "listening"]),  # adds to -s
        (["exclude", "listening"], ["listening", "closed"], ["closed"]),  # takes from -s/-l
        ([], ["closed"], None),  # no state words: the options' states stand
    ],
)
def test_state_words_like_ss(words: list[str], given: list[str] | None, states: Any) -> None:
    parsed = parse(words, given)
    expected = None if states is None else [s for s in SOCK_STATES if s in states]
    assert parsed.states == expected
    assert parsed.expr is None


def test_state_words_then_an_expression() -> None:
    parsed = parse(["state", "established", "( dport = :ssh or sport = :http )"])
    assert parsed.states == ["established"]
    assert parsed.expr == SockOr(args=[dport("eq", 22), sport("eq", 80)])


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["sport = :80 or"], "'or' needs a term after it at the end: sport = :80 or >><<"),
        (["sport = :80 or or"], "unexpected 'or' at word 5: sport = :80 or >>or<<"),
        (["or sport = :80"], "unexpected 'or' at word 1: >>or<<"),
        (["sport = :80 )"], "unexpected ')' at word 4: sport = :80 >>)<<"),
        (["( sport = :80"], "missing ')' for the '(' of word 1 at the end: ( sport = :80 >><<"),
        (["( )"], "empty parentheses at word 2: ( >>)<<"),
        (["sport ="], "a port is expected at the end: sport = >><<"),
        (["sport = :nope-no"], "'nope-no' is neither a port number nor a service name at word 3"),
        (["sport = :70000"], "port 70000 is above 65535 at word 3"),
        (["sport = *"], "a port number or service name is expected at word 3"),
        (["dst ::1"], "':' is not an IP address or network (write IPv6 addresses in brackets"),
        (["dst example.com"], "'example.com' is not an IP address or network at word 2"),
        (["dst [::1"], "a bracketed IPv6 address is [ADDRESS][/PREFIX][:PORT] at word 2"),
        (["dst != 10.0.0.1"], "dst takes = only (write: not dst ...) at word 2"),
        (["dst"], "dst needs an address at the end"),
        (["dev eth0"], "'dev' is not supported by sockctl at word 1"),
        (["fwmark 0x1"], "'fwmark' is not supported by sockctl at word 1"),
        (["state"], "'state' needs a state name at the end"),
        (["state bogus"], "unknown state 'bogus' at word 2: state >>bogus<<"),
        (["exclude all"], "no state is left to list at word 2"),
        (["sport = :80 state established"], "unexpected 'state' at word 4"),
        (["bogus"], "unexpected 'bogus' at word 1: >>bogus<<"),
    ],
)
def test_bad_filters_name_the_word(words: list[str], message: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(words)
    assert message in str(caught.value)
    assert 0 <= caught.value.index <= len(caught.value.words)


def test_words_split_at_blanks_and_parentheses() -> None:
    assert split_words(["((a", "b))", " c\td ", "()", ""]) == [
        "(", "(", "a", "b", ")", ")", "c", "d", "(", ")",
    ]  # fmt: skip


def test_port_ranges_and_combining() -> None:
    assert port_range("sport", 80, 80) == sport("eq", 80)
    assert port_range("dport", 8000, 8100) == SockAnd(args=[dport("ge", 8000), dport("le", 8100)])
    assert combine(None, None) is None
    assert combine(sport("eq", 1), None) == sport("eq", 1)
    assert combine(SockAnd(args=[sport("eq", 1)]), sport("eq", 2)) == SockAnd(
        args=[sport("eq", 1), sport("eq", 2)]
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("80", 80), ("ssh", 22), ("8000-8100", (8000, 8100)), ("ssh-http", (22, 80)), ("1-1", (1, 1))],
)
def test_port_options_take_ranges(value: str, parsed: object) -> None:
    assert port_option(None, None, value) == parsed  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["8100-8000", "8000-", "-8000", "80-nope-no", "nope"])
def test_port_options_refuse_bad_ranges(value: str) -> None:
    with pytest.raises(click.BadParameter):
        port_option(None, None, value)  # type: ignore[arg-type]


# The contract and the daemon's evaluation ------------------------------------------------------------


def _validate(expr: object) -> Any:
    message = {"proto": 2, "op": "sock.list", "expr": expr}
    return request_adapter("sock.list").validate_json(json.dumps(message), strict=True)


def test_parsed_trees_survive_the_wire() -> None:
    expr = parse(["state established ( dport = :ssh or not src [::1]:80 ) sport > 1024"]).expr
    assert _validate(to_wire(expr)).expr == expr


@pytest.mark.parametrize(
    ("expr", "error_type", "loc"),
    [
        ({"op": "nope"}, "union_tag_invalid", ("expr",)),
        ({"cmp": "eq", "port": 1}, "union_tag_not_found", ("expr",)),
        ({"op": "and", "args": []}, "too_short", ("expr", "and", "args")),
        ({"op": "sport", "cmp": "eq", "port": 70000}, "less_than_equal", ("expr", "sport", "port")),
        ({"op": "sport", "cmp": "~", "port": 1}, "literal_error", ("expr", "sport", "cmp")),
        ({"op": "src", "address": None}, "missing", ("expr", "src", "port")),
        (
            {"op": "not", "arg": {"op": "dport", "cmp": "eq", "port": 1, "x": 1}},
            "unexpected_keyword_argument",
            ("expr", "not", "arg", "dport", "x"),
        ),
    ],
)
def test_bad_trees_are_refused_naming_the_node(
    expr: object, error_type: str, loc: tuple[str, ...]
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        _validate(expr)
    first = caught.value.errors()[0]
    assert (first["type"], first["loc"]) == (error_type, loc)


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"op": "sport", "cmp": "eq", "port": 1}
    for _ in range(levels - 1):
        node = {"op": "not", "arg": node}
    return node


def _wide(leaves: int) -> dict[str, Any]:
    return {"op": "or", "args": [{"op": "sport", "cmp": "eq", "port": 1}] * leaves}


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        (_deep(MAX_SOCK_EXPR_DEPTH), True),
        (_deep(MAX_SOCK_EXPR_DEPTH + 1), False),
        (_deep(150), False),  # refused before pydantic recurses (its JSON parser stops at 200)
        (_wide(MAX_SOCK_EXPR_NODES - 1), True),
        (_wide(MAX_SOCK_EXPR_NODES), False),
    ],
)
def test_huge_and_deep_trees_are_refused_by_name(expr: object, ok: bool) -> None:
    from pydantic import ValidationError

    if ok:
        _validate(expr)
        return
    with pytest.raises(ValidationError) as caught:
        _validate(expr)
    (error,) = caught.value.errors()
    assert (error["type"], error["loc"]) == ("expr_too_large", ("expr",))


def _matches(expr: SockExpr, family: int, local: str, lport: int, remote: str, rport: int) -> bool:
    return _compile_expr(expr, family, "expr")(local, lport, remote, rport)


V4, V6 = socket.AF_INET, socket.AF_INET6
ANY = "0.0.0.0"  # noqa: S104 -- an address as sock_diag reports it, not a bind


@pytest.mark.parametrize(
    ("words", "family", "row", "hit"),
    [
        ("sport > :1024", V4, ("127.0.0.1", 1025, "127.0.0.1", 9), True),
        ("sport > :1024", V4, ("127.0.0.1", 1024, "127.0.0.1", 9), False),
        ("dport < :100", V4, (ANY, 22, ANY, 0), True),  # a listener's port 0
        ("dst 127.0.0.0/8", V4, ("10.0.0.1", 1, "127.9.9.9", 2), True),
        ("dst 127.0.0.0/8", V6, ("::1", 1, "::ffff:127.0.0.1", 2), True),  # IPv4-mapped
        ("dst 127.0.0.0/8", V6, ("::1", 1, "::1", 2), False),
        ("dst [::1]", V4, ("127.0.0.1", 1, "127.0.0.1", 2), False),
        ("dst [::ffff:127.0.0.1]", V6, ("::1", 1, "::ffff:127.0.0.1", 2), True),
        ("src 127.0.0.1:80", V4, ("127.0.0.1", 81, "127.0.0.1", 2), False),
        ("src *:80", V6, ("::1", 80, "::1", 2), True),
        ("not ( sport :1 or dport :2 )", V4, ("1.1.1.1", 1, "1.1.1.1", 3), False),
        ("not ( sport :1 or dport :2 )", V4, ("1.1.1.1", 4, "1.1.1.1", 3), True),
    ],
)
def test_the_daemon_evaluates_like_the_kernel(
    words: str, family: int, row: tuple[str, int, str, int], hit: bool
) -> None:
    expr = parse([words]).expr
    assert expr is not None
    assert _matches(expr, family, *row) is hit


def test_the_daemon_names_a_bad_address(shared_daemon: Daemon) -> None:
    bad = SockOr(args=[sport("eq", 1), SockNot(arg=host("dst", "10.0.0.300"))])
    with pytest.raises(InvalidRequest) as caught:
        shared_daemon.client().sock_list(expr=bad)
    assert caught.value.field == "expr.args.1.arg.address"


# Parity with ss ---------------------------------------------------------------------------------------


@dataclass
class Loopback:
    """Listeners and connections on loopback: IPv4, IPv6, and IPv4 clients of a dual-stack one."""

    p4: int
    p6: int
    p46: int
    sockets: list[socket.socket]

    @property
    def ports(self) -> set[int]:
        return {self.p4, self.p6, self.p46}


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    held: list[socket.socket] = []
    try:
        l4 = socket.create_server(("127.0.0.1", 0))
        l6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
        l46 = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        held += [l4, l6, l46]
        for listener, address in ((l4, "127.0.0.1"), (l6, "::1"), (l46, "127.0.0.1")):
            for _ in range(2):
                held.append(socket.create_connection((address, listener.getsockname()[1])))
                held.append(listener.accept()[0])
        p4, p6, p46 = (s.getsockname()[1] for s in (l4, l6, l46))
        yield Loopback(p4, p6, p46, sockets=held)
    finally:
        for s in held:
            with contextlib.suppress(OSError):
                s.close()


Row = tuple[str, int, str, int]


def _text(address: str) -> str:
    """One spelling per address (Python < 3.13 writes IPv4-mapped ones as ::ffff:7f00:1)."""
    return str(ipaddress.ip_address(address))


def _address(text: str) -> tuple[str, int]:
    """ss's ``ADDR:PORT`` cell as (address, port): ``*`` is the IPv6 any address, port ``*`` 0."""
    address, _, port = text.rpartition(":")
    address = address.strip("[]")
    address = "::" if address == "*" else address.split("%")[0]
    return _text(address), 0 if port == "*" else int(port)


def ss_rows(words: list[str], ports: set[int]) -> set[Row]:
    out = subprocess.run(["ss", "-tanH", *words], capture_output=True, text=True, check=True).stdout
    rows = set()
    for line in out.splitlines():
        local, peer = line.split()[-2:]  # ss leaves out the State column for one state
        row = (*_address(local), *_address(peer))
        if row[1] in ports or row[3] in ports:
            rows.add(row)
    return rows


def sockctl_rows(daemon: Daemon, args: list[str], ports: set[int]) -> set[Row]:
    result = sockctl(daemon, "--json", "sock", "list", "-t", "--no-processes", *args)
    assert result.returncode == 0, result.stderr
    rows = set()
    for s in json.loads(result.stdout)["sockets"]:
        row = (_text(s["local"]), s["local_port"], _text(s["remote"]), s["remote_port"])
        if row[1] in ports or row[3] in ports:
            rows.add(row)
    return rows


PARITY = [
    "state established ( dport = :{p4} or sport = :{p4} )",
    "dst 127.0.0.0/8",
    "src 127.0.0.1",
    "dst [::1]",
    "src [::1]:{p6}",
    "dst [::ffff:127.0.0.1]",
    "sport > :{p6}",
    "sport >= :{p6} and sport <= :{p46}",
    "dport lt :{p46}",
    "not sport = :{p4}",
    "! ( src 127.0.0.1 or dst 127.0.0.1 )",
    "exclude listening",
    "exclude listening dport != :{p6}",
    "state listening",
    "sport = :{p4} or sport = :{p6} and src [::1]",  # equal precedence, from the left
    "sport = :{p4} sport = :{p6} or dport = :{p46}",
    "src *:{p46}",
    "dst :{p4}",
]


@pytest.mark.parametrize("template", PARITY)
def test_filters_select_what_ss_selects(
    shared_daemon: Daemon, loopback: Loopback, template: str
) -> None:
    words = template.format(p4=loopback.p4, p6=loopback.p6, p46=loopback.p46).split()
    expected = ss_rows(words, loopback.ports)
    assert sockctl_rows(shared_daemon, words, loopback.ports) == expected
    # The same filter as one quoted word.
    assert sockctl_rows(shared_daemon, [" ".join(words)], loopback.ports) == expected


def test_filters_select_something(loopback: Loopback) -> None:
    """The parity cases are not vacuous: most of them select some of the module's sockets."""
    selecting = [
        t
        for t in PARITY
        if ss_rows(
            t.format(p4=loopback.p4, p6=loopback.p6, p46=loopback.p46).split(), loopback.ports
        )
    ]
    assert len(selecting) >= len(PARITY) - 2


def test_port_ranges_select_what_ss_selects(shared_daemon: Daemon, loopback: Loopback) -> None:
    low, high = sorted([loopback.p4, loopback.p6, loopback.p46])[:2]
    expected = ss_rows(["sport", ">=", f":{low}", "sport", "<=", f":{high}"], loopback.ports)
    assert expected
    got = sockctl_rows(shared_daemon, ["--sport", f"{low}-{high}"], loopback.ports)
    assert got == expected
    # A range and an expression together: both hold.
    both = sockctl_rows(
        shared_daemon, ["--dport", f"{low}-{high}", "state", "established"], loopback.ports
    )
    assert both == ss_rows(
        ["state", "established", "dport", ">=", f":{low}", "dport", "<=", f":{high}"],
        loopback.ports,
    )


def test_options_still_parse_around_filter_words(shared_daemon: Daemon, loopback: Loopback) -> None:
    words = ["state", "established", "sport", "=", f":{loopback.p4}"]
    before = sockctl_rows(shared_daemon, words, loopback.ports)
    result = sockctl(shared_daemon, "sock", "list", *words[:2], "-H", *words[2:], "-t", "-4")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(before) == 2


def test_cli_bad_filter_is_a_usage_error(shared_daemon: Daemon) -> None:
    result = sockctl(shared_daemon, "sock", "list", "sport", "=", ":80", "or")
    assert result.returncode == 2
    assert "bad filter: 'or' needs a term after it at the end: sport = :80 or >><<" in result.stderr
    deep = sockctl(shared_daemon, "sock", "list", *(["not"] * 40), "sport", ":80")
    assert deep.returncode == 9  # the contract's bound, named by the daemon
    assert "expr" in deep.stderr


@pytest.mark.parametrize("template", PARITY)
def test_the_kernel_filters_with_the_bytecode_as_the_daemon_does(
    loopback: Loopback, template: str
) -> None:
    """The bytecode alone (the kernel's filtering, no predicate after it) selects what the
    daemon's predicate selects: the parity tests above run both, so they cannot tell."""
    words = template.format(p4=loopback.p4, p6=loopback.p6, p46=loopback.p46).split()
    expr = parse(words).expr
    if expr is None:
        return
    bytecode = sockdiag.filter_bytecode(expr)
    assert bytecode
    with sockdiag.DiagSocket.open() as diag:
        for family in (socket.AF_INET, socket.AF_INET6):
            keep = _compile_expr(expr, family, "expr")
            dump = diag.inet(family, socket.IPPROTO_TCP, sockdiag.ALL_STATES)
            everything = {row for row in _dumped(dump, loopback.ports) if keep(*row)}
            dump = diag.inet(family, socket.IPPROTO_TCP, sockdiag.ALL_STATES, bytecode)
            assert _dumped(dump, loopback.ports) == everything


def _dumped(chunks: Iterator[sockdiag.InetChunk], ports: set[int]) -> set[Row]:
    """The (local, port, remote, port) rows of a dump that have one of ``ports``."""
    rows: set[Row] = set()
    for c in chunks:
        rows.update(zip(c.local, c.local_port, c.remote, c.remote_port, strict=True))
    return {r for r in rows if r[1] in ports or r[3] in ports}


def test_bytecode_like_ss_compiles_it() -> None:
    """A few programs byte for byte as ss builds them (misc/ss.c, ssfilter_bytecompile)."""
    # sport >= :1024: S_GE, yes 8, no 12; then the port in the second op's "no".
    assert sockdiag.filter_bytecode(sport("ge", 1024)) == bytes([2, 8, 12, 0, 0, 0]) + (
        1024
    ).to_bytes(2, sys.byteorder)
    # not dport = :22: D_COND of AF_UNSPEC (any address) and port 22; then JMP yes 4, no 8.
    cond = bytes([8, 12, 16, 0, 0, 0, 0, 0]) + (22).to_bytes(4, sys.byteorder, signed=True)
    assert sockdiag.filter_bytecode(SockNot(arg=dport("eq", 22))) == cond + bytes([1, 4, 8, 0])
    # src 10.0.0.0/8 or sport :1: the first test, JMP to the end (no = 12 + 4), the second.
    v4 = bytes([7, 16, 20, 0, socket.AF_INET, 8, 0, 0]) + (-1).to_bytes(
        4, sys.byteorder, signed=True
    )
    port1 = bytes([7, 12, 16, 0, 0, 0, 0, 0]) + (1).to_bytes(4, sys.byteorder, signed=True)
    jump = bytes([1, 4]) + (16).to_bytes(2, sys.byteorder)
    either = SockOr(args=[host("src", "10.0.0.0/8"), sport("eq", 1)])
    assert sockdiag.filter_bytecode(either) == v4 + bytes([10, 0, 0, 0]) + jump + port1
    # and: the first test's false exit (no) moves past the second test.
    both = SockAnd(args=[sport("eq", 1), sport("eq", 1)])
    moved = bytes([7, 12, 16 + 12, 0, 0, 0, 0, 0]) + (1).to_bytes(4, sys.byteorder, signed=True)
    assert sockdiag.filter_bytecode(both) == moved + port1


def test_summary_counts_what_the_filter_lists(shared_daemon: Daemon, loopback: Loopback) -> None:
    expr = parse([f"sport = :{loopback.p4} or sport = :{loopback.p6}"]).expr
    client = shared_daemon.client()
    listed, _ = client.sock_list(kinds=["tcp"], expr=expr, processes=False)
    counts, result = client.sock_summary(kinds=["tcp"], expr=expr)
    assert result.total == len(listed) == 6  # two listeners, each with two accepted connections
    by_state = {(c.family, c.state): c.count for c in counts}
    assert by_state == {("inet", "listening"): 1, ("inet", "established"): 2,
                        ("inet6", "listening"): 1, ("inet6", "established"): 2}  # fmt: skip
    cli = sockctl(shared_daemon, "--json", "sock", "summary", "-t", f"sport = :{loopback.p4}")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["result"]["total"] == 3
    states = sockctl(shared_daemon, "sock", "summary", "state", "established")
    assert states.returncode == 2
    assert "drop the state words" in states.stderr
