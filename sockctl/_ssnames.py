"""Names ss accepts where sock list wants numbers: ports from /etc/services, uids from passwd.

Resolved in the client, so the request stays numeric and the daemon validates the range as before.
"""

from __future__ import annotations

import pwd
import socket

import click


class PortNameError(ValueError):
    """A word is neither a port number nor a service name (or names two different ports)."""


def port_number(text: str) -> int:
    """A port number as given (the daemon checks 0-65535), or a service name such as ``ssh``.

    As ss does, a name that /etc/services gives different ports for TCP and UDP is refused as
    ambiguous. Raises :class:`PortNameError`.
    """
    if text.isdigit():
        return int(text)
    found: set[int] = set()
    for protocol in ("tcp", "udp"):
        try:
            found.add(socket.getservbyname(text, protocol))
        except OSError:
            continue
    if len(found) == 1:
        return found.pop()
    if found:
        raise PortNameError(f"{text!r} is an ambiguous service name (ports {sorted(found)})")
    raise PortNameError(f"{text!r} is neither a port number nor a service name")


def port_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> int | tuple[int, int] | None:
    """``--sport``/``--dport``: a port or service name, or a range ``LOW-HIGH`` (``8000-8100``).

    A service name with a dash (``netbios-ns``) is a name first, a range only if it is no name.
    """
    if value is None:
        return None
    try:
        return port_number(value)
    except PortNameError as exc:
        problem = str(exc)
    low, _, high = value.partition("-")
    try:
        first, last = port_number(low), port_number(high)
    except PortNameError:
        raise click.BadParameter(f"{problem} (nor a range LOW-HIGH of them)") from None
    if first > last:
        raise click.BadParameter(f"{value!r} is an empty range (the first port is above the last)")
    return first, last


def uid_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A uid as given, or a user name looked up in the password database."""
    if value is None or value.isdigit():
        return None if value is None else int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise click.BadParameter(f"{value!r} is neither a uid nor a user name") from None
