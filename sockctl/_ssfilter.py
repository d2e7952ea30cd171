"""ss's filter language for ``sockctl sock list``: ``state established '( dport = :ssh or sport = :http )'``.

The grammar is iproute2's (``man ss``, misc/ssfilter.y), parsed here in the client into the typed
tree of the wire contract (:data:`sockctl.protocol.SockExpr`); the daemon evaluates the tree.

::

    FILTER := [ state STATE | exclude STATE ]... [ EXPRESSION ]
    EXPRESSION := TERM { [ and | && | & | or | || | | ] TERM }...
    TERM := ( EXPRESSION ) | not TERM | ! TERM
          | src [=] HOST | dst [=] HOST
          | sport [OP] PORT | dport [OP] PORT
    OP := = == eq | != ne neq | < lt | <= le leq | > gt | >= ge geq
    HOST := ADDRESS[/PREFIX][:PORT] | [IPV6][/PREFIX][:PORT] | *[:PORT] | :PORT
    PORT := [:]NUMBER | [:]SERVICE-NAME

As in ss, ``and``/``or`` have *equal* precedence and group from the left (``a or b and c`` is
``(a or b) and c``), adjacent terms are joined by ``and``, ``not`` applies to the next term only, and
words are split at blanks, so a whole expression may come as one quoted word. Parentheses may also
touch a word (``(sport`` ``:80)``), which ss does not allow. Host names are not resolved (ss would
look them up in DNS); ss's ``dev``, ``fwmark``, ``cgroup`` and ``autobound`` are not supported.
"""

import ipaddress
from dataclasses import dataclass

from sockctl._ssnames import PortNameError, port_number
from sockctl.protocol import (
    SOCK_STATE_GROUPS,
    SOCK_STATES,
    SockAnd,
    SockExpr,
    SockHostMatch,
    SockNot,
    SockOr,
    SockPortCmp,
    SockPortMatch,
)

_AND = frozenset({"and", "&&", "&"})
_OR = frozenset({"or", "||", "|"})
_NOT = frozenset({"not", "!"})
_CMP: dict[str, SockPortCmp] = {
    "=": "eq",
    "==": "eq",
    "eq": "eq",
    "!=": "ne",
    "ne": "ne",
    "neq": "ne",
    "<": "lt",
    "lt": "lt",
    "<=": "le",
    "le": "le",
    "leq": "le",
    ">": "gt",
    "gt": "gt",
    ">=": "ge",
    "ge": "ge",
    "geq": "ge",
}
_EQ = frozenset({"=", "==", "eq"})
_UNSUPPORTED = frozenset({"dev", "fwmark", "cgroup", "autobound"})


class FilterSyntaxError(ValueError):
    """A filter that does not parse; ``index`` is the offending word (0-based; len(words): the end).

    ``str()`` names the word and shows the filter up to it::

        unexpected 'or' at word 4: sport = :80 >>or<<
    """

    def __init__(self, problem: str, words: list[str], index: int) -> None:
        self.problem = problem
        self.words = words
        self.index = index
        shown = [*words[:index], f">>{words[index] if index < len(words) else ''}<<"]
        where = f"word {index + 1}" if index < len(words) else "the end"
        super().__init__(f"{problem} at {where}: {' '.join(shown)}")


@dataclass(frozen=True)
class Filter:
    """What filter words ask for: ``states`` (None: the words named none) and ``expr``."""

    states: list[str] | None
    expr: SockExpr | None


def split_words(argv: list[str] | tuple[str, ...]) -> list[str]:
    """The filter's words: argv split at blanks, with parentheses made words of their own."""
    words: list[str] = []
    for arg in argv:
        for word in arg.split():
            rest = word.lstrip("(")
            middle = rest.rstrip(")")
            words.extend("(" * (len(word) - len(rest)))
            if middle:
                words.append(middle)
            words.extend(")" * (len(rest) - len(middle)))
    return words


def parse(argv: list[str] | tuple[str, ...], states: list[str] | None = None) -> Filter:
    """Parse ss filter words into states and an expression; raises :class:`FilterSyntaxError`.

    ``states`` are the states the options asked for (``-s``, ``-l``), which ``state`` words add to
    and ``exclude`` words take from. Without any, a first ``state`` word starts from no state and a
    first ``exclude`` word from every state, as in ss.
    """
    words = split_words(argv)
    parser = _Parser(words)
    chosen = parser.states(states)
    expr = None if parser.at_end() else parser.expression()
    if not parser.at_end():
        raise parser.error(f"unexpected {parser.peek()!r}")
    return Filter(chosen, expr)


def port_range(field: str, low: int, high: int) -> SockExpr:
    """``sport``/``dport`` between ``low`` and ``high``, both included (``--sport 8000-8100``)."""
    if low == high:
        return _port(field, "eq", low)
    return SockAnd(args=[_port(field, "ge", low), _port(field, "le", high)])


def combine(*exprs: SockExpr | None) -> SockExpr | None:
    """The ``and`` of the expressions given (None ones left out); None if there is none."""
    present = [e for e in exprs if e is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return _flatten(SockAnd, present)


class _Parser:
    """A recursive-descent parser over the words, one position, errors naming the word."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.words)

    def peek(self) -> str:
        return self.words[self.pos] if self.pos < len(self.words) else ""

    def take(self) -> str:
        word = self.peek()
        self.pos += 1
        return word

    def error(self, problem: str, index: int | None = None) -> FilterSyntaxError:
        """The error naming word ``index`` (default: the current one), to raise."""
        return FilterSyntaxError(problem, self.words, self.pos if index is None else index)

    def states(self, given: list[str] | None) -> list[str] | None:
        chosen: set[str] | None = None if not given else set(_expand(given))
        start = self.pos
        while self.peek() in ("state", "exclude", "excl"):
            keyword = self.take()
            if self.at_end():
                raise self.error(f"{keyword!r} needs a state name")
            name = self.peek()
            if name not in SOCK_STATE_GROUPS and name not in SOCK_STATES:
                raise self.error(f"unknown state {name!r}")
            self.take()
            if keyword == "state":
                chosen = (chosen or set()) | set(_expand([name]))
            else:
                chosen = (set(SOCK_STATES) if chosen is None else chosen) - set(_expand([name]))
                if not chosen:
                    raise self.error("no state is left to list", self.pos - 1)
        if chosen is None or start == self.pos:
            return None  # no state words: the options' states stand
        return [s for s in SOCK_STATES if s in chosen]

    def expression(self) -> SockExpr:
        """TERM { [and|or] TERM }: equal precedence, grouped from the left, as in ss."""
        left = self.term()
        while not self.at_end() and self.peek() != ")":
            word = self.peek()
            if word in _OR or word in _AND:
                self.take()
                if self.at_end():
                    raise self.error(f"{word!r} needs a term after it")
                if self.peek() == ")" or self.peek() in _OR | _AND:
                    raise self.error(f"unexpected {self.peek()!r}")
            node = SockOr if word in _OR else SockAnd
            left = _flatten(node, [left, self.term()])
        return left

    def term(self) -> SockExpr:
        if self.at_end():
            raise self.error("the filter ends where a term is expected")
        start = self.pos
        word = self.take()
        if word == "(":
            if self.peek() == ")":
                raise self.error("empty parentheses")
            inner = self.expression()
            if self.peek() != ")":
                raise self.error(f"missing ')' for the '(' of word {start + 1}")
            self.take()
            return inner
        if word in _NOT:
            return SockNot(arg=self.term())
        if word in ("src", "dst"):
            if self.peek() in _EQ:
                self.take()
            elif self.peek() in _CMP:
                raise self.error(f"{word} takes = only (write: not {word} ...)")
            return self.host(word)
        if word in ("sport", "dport"):
            cmp: SockPortCmp = "eq"
            if self.peek() in _CMP:
                cmp = _CMP[self.take()]
            return _port(word, cmp, self.port())
        if word in _UNSUPPORTED:
            raise self.error(f"{word!r} is not supported by sockctl", start)
        if word == ")":
            raise self.error("unexpected ')'", start)
        raise self.error(f"unexpected {word!r}", start)

    def port(self) -> int:
        if self.at_end():
            raise self.error("a port is expected")
        text = self.peek()
        number = text[1:] if text.startswith(":") else text
        if not number or number == "*":
            raise self.error("a port number or service name is expected")
        try:
            port = port_number(number)
        except PortNameError as exc:
            raise self.error(str(exc)) from None
        if port > 65535:
            raise self.error(f"port {port} is above 65535")
        self.take()
        return port

    def host(self, field: str) -> SockExpr:
        """ss's parse_hostcond for IP addresses: ``[v6]:port``, ``*:port``, ``addr/len:port``."""
        if self.at_end() or self.peek() in ("(", ")") or self.peek() in _OR | _AND | _NOT:
            raise self.error(f"{field} needs an address")
        text = self.peek()
        if text.startswith("["):
            address, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith((":", "/"))):
                raise self.error("a bracketed IPv6 address is [ADDRESS][/PREFIX][:PORT]")
            prefix, _, port_text = rest.partition(":")
            address += prefix
        elif text.startswith("*"):
            address, port_text = "", text[1:].removeprefix(":")
            if text[1:] and not text[1:].startswith(":"):
                raise self.error("'*' is followed by :PORT only")
        else:
            # As ss: the port follows the last ':' (after the '/' if there is one), so IPv6
            # addresses need brackets unless they have a prefix length.
            slash = text.find("/")
            colon = text.rfind(":", slash if slash >= 0 else 0)
            address, port_text = (text, "") if colon < 0 else (text[:colon], text[colon + 1 :])
        network = None
        if address and address != "*":
            try:
                network = str(ipaddress.ip_network(address, strict=False))
            except ValueError:
                hint = " (write IPv6 addresses in brackets: [::1])" if ":" in text else ""
                raise self.error(f"{address!r} is not an IP address or network{hint}") from None
        port = None
        if port_text and port_text != "*":
            try:
                port = port_number(port_text)
            except PortNameError as exc:
                raise self.error(str(exc)) from None
            if port > 65535:
                raise self.error(f"port {port} is above 65535")
        self.take()
        return SockHostMatch(op=field, address=network, port=port)  # type: ignore[arg-type]


def _port(field: str, cmp: SockPortCmp, port: int) -> SockPortMatch:
    return SockPortMatch(op=field, cmp=cmp, port=port)  # type: ignore[arg-type]


def _flatten(node: type[SockAnd] | type[SockOr], args: list[SockExpr]) -> SockExpr:
    """``node`` of ``args``, with arguments of the same kind merged in: ss's left-grouped
    ``a or b or c`` becomes one ``or`` of three, not a chain as deep as it is long."""
    merged: list[SockExpr] = []
    for arg in args:
        merged.extend(arg.args if isinstance(arg, node) else [arg])
    return node(args=merged)


def _expand(names: list[str]) -> list[str]:
    return [state for name in names for state in SOCK_STATE_GROUPS.get(name, (name,))]
