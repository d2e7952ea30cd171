"""One soak client: mixed traffic against sockd for a while, then a JSON summary on stdout.

Run by tests/test_soak.py as ``python -c <this file's text> CONFIG_JSON`` under the uid it tests
(this file only needs ``sockctl``, which the other uids can read). Scenarios are keyed by operation
name; an operation of ``protocol.OPERATIONS`` without one is exercised through the generic
requests the test passes in (read-only ones), and reported as not exercised otherwise. A new
mutating operation deserves a scenario here.

Outcomes are counted: replies and the named refusals the scenario expects (quota, not found, ...)
are fine; an internal error, a broken reply, a lost connection or any other exception is not.
"""

import json
import os
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sockctl import (
    AlreadyExists,
    Busy,
    Client,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SockdError,
)
from sockctl.protocol import OPERATIONS

EXPECTED = (AlreadyExists, Busy, InvalidRequest, NotFound, PermissionDenied, QuotaExceeded)
"""Refusals a scenario can meet in mixed traffic (a quota hit, a name another client took, ...)."""


class Soak:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.prefix: str = config["prefix"]
        self.random = random.Random(config["seed"])
        self.client = Client(timeout=30)
        self.alive: list[str] = []
        self.linked: set[str] = set()
        self.counter = 0
        self.outcomes: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.scenarios: dict[str, Callable[[], object]] = {
            "ping": self.client.ping,
            "whoami": self.client.whoami,
            "status": self.client.status,
            "ns.list": self.client.ns_list,
            "ns.create": self.create,
            "ns.delete": self.delete,
            "ns.identify": self.client.ns_identify,
            "ns.pids": lambda: self.client.ns_pids(self.some_name()),
            "ns.show": lambda: self.client.ns_show(self.some_name()),
            "ns.link": self.link,
            "ns.unlink": self.unlink,
            "ns.set_nsid": lambda: self.client.ns_set_nsid(self.some_name()),
            "ns.exec": lambda: self.client.exec(self.some_name(), ["/bin/true"]),
            "sock.open": self.open_socket,
            # Follows the host's sockets, then leaves at once: the daemon's session must end.
            "sock.events": lambda: self.client.sock_events(kinds=["udp"]).close(),
        }
        self.generic: list[dict[str, Any]] = config["generic"]
        """Valid requests of read-only operations that have no scenario here."""

    # Scenarios ------------------------------------------------------------------------------------

    def some_name(self) -> str:
        if self.alive and self.random.random() < 0.8:
            return self.random.choice(self.alive)
        return f"{self.prefix}absent"

    def create(self) -> None:
        if len(self.alive) >= 2:
            self.delete()
        name = f"{self.prefix}{self.counter}"
        self.counter += 1
        self.client.ns_create(name)
        self.alive.append(name)

    def delete(self) -> None:
        if not self.alive:
            return
        name = self.alive.pop(0)
        self.linked.discard(name)
        self.client.ns_delete(name)

    def link(self) -> None:
        candidates = [n for n in self.alive if n not in self.linked]
        if not candidates:
            return
        name = self.random.choice(candidates)
        self.client.ns_link(name)
        self.linked.add(name)

    def unlink(self) -> None:
        if not self.linked:
            return
        name = self.random.choice(sorted(self.linked))
        self.linked.discard(name)
        self.client.ns_unlink(name)

    def open_socket(self) -> None:
        self.client.open_socket("tcp:127.0.0.1:0", ns=self.some_name()).close()

    def bad_request(self) -> None:
        """Garbage on a connection of its own: each must get a named refusal."""
        payload = self.random.choice(
            [
                b"\x00\xff garbage",
                b'{"proto": 2, "op": "ns.create", "name": "../etc"}',
                b'{"proto": 2, "op": "no.such.op"}',
                b'{"proto": 9, "op": "ping"}',
                json.dumps({"proto": 2, "op": "ns.pids", "name": 5}).encode(),
            ]
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(self.client.socket_path)
            sock.settimeout(30)
            sock.send(payload)
            reply = json.loads(sock.recv(65536))
        if reply.get("ok") is not False or reply["error"]["code"] == "internal_error":
            raise AssertionError(f"bad request answered with {reply}")

    def generic_request(self) -> None:
        request = self.random.choice(self.generic)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.connect(self.client.socket_path)
            sock.settimeout(30)
            sock.send(json.dumps(request).encode())
            while True:
                reply = json.loads(sock.recv(65536))
                if not reply.get("ok"):
                    if reply["error"]["code"] == "internal_error":
                        raise AssertionError(f"{request} answered with {reply}")
                    return
                if not reply.get("more"):
                    return

    # Driving ----------------------------------------------------------------------------------------

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.05:
            self.run("bad request", self.bad_request)
        elif roll < 0.10:
            self.client.close()  # a fresh connection for what follows
            self.ops["reconnect"] += 1
        elif roll < 0.15 and self.generic:
            self.run("generic", self.generic_request)
        else:
            op = self.random.choice(sorted(self.scenarios))
            self.run(op, self.scenarios[op])

    def run(self, op: str, action: Callable[[], object]) -> None:
        self.ops[op] += 1
        try:
            action()
            self.outcomes["ok"] += 1
        except EXPECTED as exc:
            self.outcomes[type(exc).__name__] += 1
        except (SockdError, Exception) as exc:  # noqa: BLE001 -- every other outcome is a finding
            self.outcomes["unexpected"] += 1
            if len(self.unexpected) < 20:
                self.unexpected.append(f"{op}: {type(exc).__name__}: {exc}")

    def main(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.config["seconds"]
        while time.monotonic() < deadline:
            self.step()
        while self.linked:
            self.run("ns.unlink", self.unlink)
        while self.alive:
            self.run("ns.delete", self.delete)
        self.client.close()
        covered = set(self.scenarios) | ({"generic"} if self.generic else set())
        generic_ops = {r["op"] for r in self.generic}
        return {
            "uid": os.getuid(),
            "ops": dict(self.ops),
            "outcomes": dict(self.outcomes),
            "unexpected": self.unexpected,
            "not_exercised": sorted(set(OPERATIONS) - covered - generic_ops),
        }


if __name__ == "__main__":
    print(json.dumps(Soak(json.loads(sys.argv[1])).main()))
