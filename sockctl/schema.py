"""The protocol's JSON Schema, for clients in other languages (``sockctl schema``, ``sockd --schema``).

This is the only part of sockctl that imports pydantic, and only when called.
"""

import functools
from typing import Any

from sockctl import protocol


@functools.cache
def request_adapter(op: str) -> Any:
    """A pydantic TypeAdapter validating the request of ``op`` (strict, extra fields forbidden)."""
    from pydantic import TypeAdapter  # noqa: PLC0415 -- keeps pydantic out of client start-up

    return TypeAdapter(protocol.OPERATIONS[op].request)


def json_schema() -> dict[str, Any]:
    """One JSON Schema document: the request union (discriminated by ``op``) and every reply."""
    from typing import Annotated  # noqa: PLC0415

    from pydantic import Field, TypeAdapter  # noqa: PLC0415
    from pydantic.json_schema import models_json_schema  # noqa: F401, PLC0415

    requests = TypeAdapter(Annotated[protocol.Request, Field(discriminator="op")])
    schema: dict[str, Any] = requests.json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    operations: dict[str, Any] = {}
    for op, operation in protocol.OPERATIONS.items():
        entry: dict[str, Any] = {"request": {"$ref": f"#/$defs/{operation.request.__name__}"}}
        for role in ("reply", "item"):
            tp = getattr(operation, role)
            if tp is None:
                continue
            sub = TypeAdapter(tp).json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            entry[role] = sub
        entry["mutating"] = operation.mutating
        entry["takes_fds"] = operation.takes_fds
        entry["gives_fds"] = operation.gives_fds
        entry["follow_ups"] = list(operation.follow_ups)
        operations[op] = entry
    error = TypeAdapter(protocol.ErrorInfo).json_schema(ref_template="#/$defs/{model}")
    defs.update(error.pop("$defs", {}))
    defs["ErrorInfo"] = error
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sockd wire protocol",
        "description": (protocol.__doc__ or "").strip(),
        "x-protocol-version": protocol.PROTOCOL_VERSION,
        "x-max-message": protocol.MAX_MESSAGE,
        "x-max-fds": protocol.MAX_FDS,
        "x-envelope": {
            "request": {"proto": protocol.PROTOCOL_VERSION, "op": "<operation>", "...": "fields"},
            "reply": {
                "ok": "bool",
                "more": "bool (listings)",
                "items": "[item]",
                "result": "reply",
            },
        },
        "oneOf": schema.get("oneOf", []),
        "discriminator": schema.get("discriminator"),
        "$defs": defs,
        "x-operations": operations,
    }
