"""The wire contract's tables stay complete and its codecs strict. Pure Python, no daemon."""

import dataclasses
import json
import typing

import pytest

import sockctl
from sockctl import errors, protocol
from sockctl.protocol import OPERATIONS, ErrorCode, WireTypeError, from_wire, to_wire
from sockctl.schema import json_schema, request_adapter
from sockd.dispatch import TABLE


def test_every_operation_has_a_route_and_every_route_an_operation() -> None:
    assert set(OPERATIONS) == set(TABLE)


def test_request_union_lists_every_operation_once() -> None:
    union = typing.get_args(protocol.Request)
    assert set(union) == {op.request for op in OPERATIONS.values()}
    for name, operation in OPERATIONS.items():
        default_op = {f.name: f.default for f in dataclasses.fields(operation.request)}["op"]
        assert default_op == name


def test_every_error_code_has_exactly_one_class() -> None:
    assert set(errors.ERROR_CLASSES) == set(ErrorCode)
    for code, cls in errors.ERROR_CLASSES.items():
        assert cls.code is code
        assert issubclass(cls, errors.RequestError)


def test_public_names_are_pinned_and_sorted() -> None:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then the rest, each alphabetical.
    def isort_style(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name

    assert sockctl.__all__ == sorted(sockctl.__all__, key=isort_style)
    for name in sockctl.__all__:
        assert hasattr(sockctl, name), name
    exported_errors = {
        n
        for n in sockctl.__all__
        if isinstance(getattr(sockctl, n), type)
        and issubclass(getattr(sockctl, n), errors.SockdError)
    }
    defined = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and issubclass(v, errors.SockdError)
    }
    assert exported_errors == defined


SAMPLES = [
    protocol.PingReply(version="1", protocol=1),
    protocol.NsInfo(
        name="a", id=4026531840, owner_uid=1000, managed=True, created=1.5, nsid=None, processes=2
    ),
    protocol.NsDeleteReply(name="a", pids=[1, 2], hidden_pids=1, still_alive=True),
    protocol.ErrorInfo(code=ErrorCode.BUSY, message="m", field="name", details={"pids": [1]}),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_replies_survive_a_json_round_trip(value: object) -> None:
    wire = json.loads(json.dumps(to_wire(value)))
    assert from_wire(type(value), wire) == value


@pytest.mark.parametrize(
    ("tp", "raw"),
    [
        (protocol.PingReply, {"version": 1, "protocol": 1}),
        (protocol.PingReply, {"version": "1"}),
        (protocol.PingReply, ["not", "an", "object"]),
        (
            protocol.NsInfo,
            {
                "name": "a",
                "id": True,
                "owner_uid": 0,
                "managed": True,
                "created": None,
                "nsid": None,
                "processes": 0,
            },
        ),
        (protocol.ErrorInfo, {"code": "no_such_code", "message": "m"}),
        (list[int], [1, "2"]),
    ],
)
def test_from_wire_rejects_replies_that_break_the_contract(tp: object, raw: object) -> None:
    with pytest.raises(WireTypeError):
        from_wire(tp, raw)


def test_from_wire_ignores_fields_a_newer_daemon_adds() -> None:
    reply = from_wire(protocol.PingReply, {"version": "9", "protocol": 1, "new_field": [1]})
    assert reply == protocol.PingReply(version="9", protocol=1)


def test_schema_describes_every_operation_with_its_constraints() -> None:
    schema = json_schema()
    assert set(schema["x-operations"]) == set(OPERATIONS)
    assert schema["discriminator"]["propertyName"] == "op"
    name = schema["$defs"]["NsCreateRequest"]["properties"]["name"]
    assert name["pattern"] == protocol.NS_NAME_PATTERN
    assert name["maxLength"] == 64
    assert schema["$defs"]["NsCreateRequest"]["additionalProperties"] is False
    json.dumps(schema)  # serializable as is


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a" * 65,
        "a\x00b",
        "a\nb",
        "a b",
        "-x",
        ".hidden",
        "t\u0435st",  # Cyrillic e: a look-alike
        "\uff54est",
        "x\u200b",
    ],
)
def test_hostile_names_are_rejected_by_the_contract(name: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        request_adapter("ns.create").validate_json(
            json.dumps({"proto": 2, "op": "ns.create", "name": name}), strict=True
        )


@pytest.mark.parametrize("name", ["a", "test", "A-1.b_2", "0", "x" * 64])
def test_ordinary_names_are_accepted(name: str) -> None:
    request = request_adapter("ns.create").validate_json(
        json.dumps({"proto": 2, "op": "ns.create", "name": name}), strict=True
    )
    assert request.name == name
