"""Hypothesis strategies derived from the wire contract (sockctl/protocol.py), for every operation.

Nothing here lists operations or fields by hand: requests come from ``protocol.OPERATIONS`` and their
dataclass fields, bounds from the ``Constraint`` metadata pydantic enforces, replies from the reply and
item types. An operation added to the contract (``sock list``, ``ns exec``, ...) is covered as soon as it
is in ``OPERATIONS``; a field of a type this module does not know fails loudly in
:func:`value_strategy`, naming the type to add.

Three families:

- :func:`valid_request` — a request dict the daemon must accept, with the dataclass it must decode to;
- :func:`mutated_request` — a request with exactly one thing wrong, and the field the refusal must name;
- :func:`reply_value` — a reply (or listing item) the client must decode.
"""

import dataclasses
import enum
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from hypothesis import strategies as st

from sockctl import protocol
from sockctl.protocol import PROTOCOL_VERSION, Constraint

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
"""Any JSON document."""

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "../x",
        "a/b",
        "a\x00b",
        "a\nb",
        "a\n",
        " a",
        "t\u0435st",  # a Cyrillic look-alike
        "\uff54est",
        "x\u200b",
        "-rf",
        ".",
        "..",
        "x" * 300,
        "%s%n",
        "$(id)",
    ]
)


@dataclass(frozen=True)
class Case:
    """One generated request: the wire dict, and what the daemon must make of it."""

    op: str
    message: dict[str, Any]
    field: str | None = None
    """The field a refusal must name (None: a valid request)."""
    code: str = "invalid_request"
    """The error code a refusal must carry."""

    def encode(self) -> bytes:
        return json.dumps(self.message).encode()


def request_fields(op: str) -> dict[str, tuple[Any, bool]]:
    """The fields of ``op``'s request beyond ``proto``/``op``: name -> (type, required)."""
    request = protocol.OPERATIONS[op].request
    hints = typing.get_type_hints(request, include_extras=True)
    fields = {}
    for f in dataclasses.fields(request):
        if f.name in ("proto", "op"):
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        fields[f.name] = (hints[f.name], required)
    return fields


def _constraint(tp: Any) -> tuple[Any, Constraint | None]:
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        found = [m for m in meta if isinstance(m, Constraint)]
        return base, found[0] if found else None
    return tp, None


def _optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


_GROWING: dict[Any, st.SearchStrategy[Any]] = {}
"""The subtrees of a recursive union while its branches are being built (see _tagged_union)."""


def value_strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of ``tp`` that satisfy its constraints, as JSON-ready Python objects."""
    inner, optional = _optional(tp)
    if optional:
        return st.none() | value_strategy(inner)
    base, constraint = _constraint(inner)
    origin = typing.get_origin(base)
    tagged = _tag_of(inner)
    if tagged is not None:
        return _tagged_union(base, tagged)
    if origin is Literal:
        return st.sampled_from(typing.get_args(base))
    if origin is list:
        (item,) = typing.get_args(base)
        low, high = _sizes(constraint, 6)
        return st.lists(value_strategy(item), min_size=low, max_size=high)
    if origin is dict:
        return _mapping(base, constraint)
    if base is Any:
        return JSON
    if base is bool:
        return st.booleans()
    if base is int:
        low = constraint.ge if constraint and constraint.ge is not None else -(2**63)
        high = constraint.le if constraint and constraint.le is not None else 2**63 - 1
        return st.integers(low, high)
    if base is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if base is str:
        return _text(constraint)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return st.sampled_from([member.value for member in base])
    if isinstance(base, type) and (dataclasses.is_dataclass(base) or hasattr(base, "_fields")):
        return _dataclass_dict(base) if dataclasses.is_dataclass(base) else _named_tuple_dict(base)
    raise NotImplementedError(
        f"tests/strategies.py cannot generate {tp!r}: add the type to value_strategy"
    )


def _mapping(tp: Any, constraint: Constraint | None) -> st.SearchStrategy[dict[Any, Any]]:
    key, value = typing.get_args(tp)
    if value is Any:
        return st.dictionaries(st.text(max_size=8), JSON, max_size=3)
    low, high = _sizes(constraint, 3)
    return st.dictionaries(value_strategy(key), value_strategy(value), min_size=low, max_size=high)


def _tag_of(tp: Any) -> str | None:
    """The tag field of a tagged union of dataclasses (``protocol.Tagged``), if ``tp`` is one."""
    if typing.get_origin(tp) is not Annotated:
        return None
    tags = [m.field for m in typing.get_args(tp)[1:] if isinstance(m, protocol.Tagged)]
    return tags[0] if tags else None


def _mentions(tp: Any, target: Any) -> bool:
    return tp == target or any(_mentions(arg, target) for arg in typing.get_args(tp))


def _tagged_union(union: Any, tag: str) -> st.SearchStrategy[Any]:
    """Trees of a (recursive) tagged union, such as a filter expression: a few leaves at most,
    so that they stay within the contract's node and depth bounds; the tag is always there."""
    if union in _GROWING:
        return _GROWING[union]
    members = typing.get_args(union)

    def refers(member: Any) -> bool:
        hints = typing.get_type_hints(member, include_extras=True)
        return any(_mentions(hint, union) for hint in hints.values())

    leaves = st.one_of([_dataclass_dict(m, always=tag) for m in members if not refers(m)])

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        _GROWING[union] = children
        try:
            return st.one_of([_dataclass_dict(m, always=tag) for m in members if refers(m)])
        finally:
            del _GROWING[union]

    return st.recursive(leaves, extend, max_leaves=6)


def _sizes(constraint: Constraint | None, most: int) -> tuple[int, int]:
    """(min, max) sizes of a list or mapping: its bounds, kept small for speed."""
    low = constraint.min_length if constraint and constraint.min_length is not None else 0
    high = constraint.max_length if constraint and constraint.max_length is not None else most
    return low, max(low, min(high, most))


def _text(constraint: Constraint | None) -> st.SearchStrategy[str]:
    low = constraint.min_length if constraint and constraint.min_length is not None else 0
    high = constraint.max_length if constraint and constraint.max_length is not None else 200
    if constraint is None or constraint.pattern is None:
        return st.text(min_size=low, max_size=high)
    return st.from_regex(constraint.pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)


def _dataclass_dict(tp: type[Any], always: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of ``tp``'s fields; those with a default only sometimes, but for ``always``."""
    hints = typing.get_type_hints(tp, include_extras=True)
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(tp):
        has_default = f.name != always and (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        (optional if has_default else required)[f.name] = value_strategy(hints[f.name])
    return st.fixed_dictionaries(required, optional=optional)


def _named_tuple_dict(tp: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of a named tuple's fields (it travels as an object); those with a default only
    sometimes."""
    hints = typing.get_type_hints(tp, include_extras=True)
    defaults = tp._field_defaults
    strategies = {name: value_strategy(hints[name]) for name in tp._fields}
    return st.fixed_dictionaries(
        {k: v for k, v in strategies.items() if k not in defaults},
        optional={k: v for k, v in strategies.items() if k in defaults},
    )


def _violates(constraint: Constraint | None, base: Any) -> st.SearchStrategy[Any]:
    """Values of the right JSON type that break ``constraint`` (nothing if there is none)."""
    if constraint is None:
        return st.nothing()
    options: list[st.SearchStrategy[Any]] = []
    if base is int:
        if constraint.ge is not None:
            options.append(st.integers(max_value=constraint.ge - 1))
        if constraint.le is not None:
            options.append(st.integers(min_value=constraint.le + 1))
    if base is str:
        if constraint.max_length is not None:
            options.append(
                st.text(min_size=constraint.max_length + 1, max_size=constraint.max_length + 40)
            )
        if constraint.min_length:
            options.append(st.just(""))
        if constraint.pattern is not None:
            pattern = re.compile(constraint.pattern)
            # Python's "$" also matches before a final newline; pydantic's regex engine does not.
            options.append(
                (HOSTILE_TEXT | st.text(max_size=20)).filter(lambda s: not pattern.fullmatch(s))
            )
    return st.one_of(options) if options else st.nothing()


def _wrong_type(tp: Any) -> st.SearchStrategy[Any]:
    """JSON values of another type than ``tp`` accepts (strict mode: no coercion)."""
    inner, optional = _optional(tp)
    base, _ = _constraint(inner)
    origin = typing.get_origin(base)
    candidates: list[st.SearchStrategy[Any]] = [
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ]
    if not optional:
        candidates.append(st.none())
    if base is not bool:
        candidates.append(st.booleans())
    if base is not int and base is not float:
        candidates.append(st.integers())
    if base is not float:
        candidates.append(st.floats(allow_nan=False).filter(lambda f: not f.is_integer()))
    if base is not str and origin is not Literal:
        candidates.append(st.text(max_size=5))
    if origin is list:
        candidates = candidates[1:]  # a list is the right type
    if origin is dict:
        candidates = [candidates[0], *candidates[2:]]  # a mapping is the right type
    return st.one_of(candidates)


@st.composite
def valid_request(draw: st.DrawFn, op: str) -> Case:
    """A request of ``op`` that satisfies every constraint of the contract."""
    message: dict[str, Any] = {"proto": PROTOCOL_VERSION, "op": op}
    for name, (tp, required) in request_fields(op).items():
        if required or draw(st.booleans()):
            message[name] = draw(value_strategy(tp))
    return Case(op, message)


@st.composite
def mutated_request(draw: st.DrawFn, op: str) -> Case:
    """A request of ``op`` with exactly one defect, and the refusal it must get."""
    case = draw(valid_request(op))
    message = dict(case.message)
    fields = request_fields(op)
    kinds = ["extra", "proto", "op"]
    kinds += [f"type:{n}" for n in fields]
    kinds += [f"missing:{n}" for n, (_, required) in fields.items() if required]
    for name, (tp, _) in fields.items():
        inner, _ = _optional(tp)
        base, constraint = _constraint(inner)
        if constraint is not None and base in (int, str):
            kinds.append(f"bounds:{name}")
    kind = draw(st.sampled_from(kinds))
    what, _, name = kind.partition(":")
    if what == "extra":
        known = {"proto", "op", *fields}
        key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in known))
        message[key] = draw(JSON)
        return Case(op, message, field=key)
    if what == "proto":
        message["proto"] = draw(JSON.filter(lambda v: v != PROTOCOL_VERSION or isinstance(v, bool)))
        if message["proto"] == PROTOCOL_VERSION:  # True == 1 in Python, not on the wire
            message["proto"] = 2
        return Case(op, message, field="proto", code="unsupported_version")
    if what == "op":
        message["op"] = draw(
            JSON.filter(lambda v: not isinstance(v, str) or v not in protocol.OPERATIONS)
        )
        return Case(op, message, field="op", code="unknown_operation")
    if what == "missing":
        del message[name]
        return Case(op, message, field=name)
    tp = fields[name][0]
    if what == "type":
        message[name] = draw(_wrong_type(tp))
    else:
        inner, _ = _optional(tp)
        base, constraint = _constraint(inner)
        message[name] = draw(_violates(constraint, base))
    return Case(op, message, field=name)


def reply_value(tp: Any) -> st.SearchStrategy[Any]:
    """A reply or item of type ``tp``, as the daemon would put it on the wire."""
    return value_strategy(tp)
