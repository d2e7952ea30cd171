"""Connection limits: one uid cannot crowd out the others; refusals are named."""

import json
import socket

from tests.conftest import MEMBER, OUTSIDER, Daemon, as_user


def test_per_uid_connection_limit_refuses_with_a_named_error_and_others_go_on(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    # The test config allows 16 connections per uid. MEMBER holds 16 and asks for a 17th.
    code = """
import json, socket, os
held = []
for _ in range(16):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(os.environ["SOCKD_SOCKET"])
    s.send(b'{"proto":2,"op":"ping"}')
    assert json.loads(s.recv(65536))["ok"]
    held.append(s)
extra = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
extra.connect(os.environ["SOCKD_SOCKET"])
extra.settimeout(5)
refusal = json.loads(extra.recv(65536))
from sockctl import Client, SockdError
try:
    Client().ping()
    library = "ok"
except SockdError as exc:
    library = type(exc).__name__
print(json.dumps({"refusal": refusal, "library": library}))
"""
    out = as_user(MEMBER, user_python, code, daemon.socket)
    assert out["refusal"]["error"]["code"] == "too_many_connections"
    assert out["library"] == "TooManyConnections"
    # Another uid is served while (and after) MEMBER was at its limit.
    ping = as_user(
        OUTSIDER,
        user_python,
        "import json; from sockctl import Client; print(json.dumps(Client().ping().version))",
        daemon.socket,
    )
    assert ping
    assert "has 16 connections open" in daemon.log()


def test_root_is_not_limited_per_uid(daemon: Daemon) -> None:
    held = []
    try:
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(daemon.socket)
            s.send(b'{"proto":2,"op":"ping"}')
            assert json.loads(s.recv(65536))["ok"]
            held.append(s)
    finally:
        for s in held:
            s.close()
