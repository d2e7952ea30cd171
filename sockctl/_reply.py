"""Reading the daemon's reply messages, for :class:`sockctl.Client` and the handles of sessions.

Low-level failures are translated here, at one boundary: socket errors become
:class:`~sockctl.errors.DaemonUnavailable`, bad JSON or types :class:`~sockctl.errors.ProtocolError`.
"""

import json
import socket
from typing import Any

from sockctl import _wire
from sockctl.errors import (
    DaemonTimeout,
    DaemonUnavailable,
    ProtocolError,
    SockdError,
    from_info,
)
from sockctl.protocol import ErrorInfo, WireTypeError, from_wire


def read_message(
    sock: socket.socket, timeout: float | None
) -> tuple[dict[str, Any] | None, list[int]]:
    """One reply message and the descriptors that came with it; ``(None, [])`` once sockd hung up.

    ``timeout`` is only named in the error when the socket's own timeout expires.
    """
    try:
        data, fds = _wire.recv(sock)
    except TimeoutError as exc:
        raise DaemonTimeout(f"sockd did not answer within {timeout} s") from exc
    except SockdError:
        raise
    except OSError as exc:
        raise DaemonUnavailable(f"lost the connection to sockd: {exc}") from exc
    if not data:
        return None, fds
    try:
        message = json.loads(data)
    except ValueError as exc:
        _wire.close_all(fds)
        raise ProtocolError(f"sockd sent a reply that is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        _wire.close_all(fds)
        raise ProtocolError("sockd sent a reply that is not a JSON object")
    return message, fds


def decode(tp: Any, raw: Any) -> Any:
    """``raw`` (decoded JSON) as the contract type ``tp``."""
    try:
        return from_wire(tp, raw)
    except (WireTypeError, KeyError) as exc:
        raise ProtocolError(f"sockd sent a reply that breaks the contract: {exc}") from exc


def error_from(message: dict[str, Any]) -> SockdError:
    """The exception an error reply stands for."""
    try:
        info: ErrorInfo = from_wire(ErrorInfo, message.get("error"))
    except (WireTypeError, KeyError) as exc:
        return ProtocolError(f"sockd sent an error reply that breaks the contract: {exc}")
    return from_info(info)
