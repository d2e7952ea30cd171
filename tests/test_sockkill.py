"""sock.kill (ss -K): real connections, closed through the kernel's SOCK_DESTROY, by real uids.

Sockets are made by this process, owned by test uids through the thread's fsuid (the kernel takes a
socket's uid from the fsuid of the thread that creates it, net/socket.c sock_alloc), so that each
test can see on its own end what the kill did: a reset for the peer, ECONNABORTED for the closed
socket. Every address is on loopback, under 127.77.0.0/16, which nothing else here uses.
"""

import contextlib
import ctypes
import errno
import json
import resource
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockctl import Client, InvalidRequest, NotFound
from tests.conftest import (
    CREATE_GID,
    MEMBER,
    MONITOR,
    MONITOR_GID,
    OUTSIDER,
    Daemon,
    as_user,
    ns_name,
    sockctl,
    start_daemon,
)

CONFIG = f"""
[policy]
create_groups = [{CREATE_GID}]
monitor_groups = [{MONITOR_GID}]
kill_groups = [{MONITOR_GID}]
"""

_libc = ctypes.CDLL(None, use_errno=True)
_addresses = iter(range(1, 250))


@pytest.fixture(scope="module")
def killd() -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="sockd-"))
    directory.chmod(0o755)
    daemon = start_daemon(directory, config=CONFIG)
    yield daemon
    daemon.stop()
    shutil.rmtree(directory, ignore_errors=True)


def fresh_address() -> str:
    """A loopback address of this module's own, so that a filter on it matches only our sockets."""
    return f"127.77.0.{next(_addresses)}"


@contextlib.contextmanager
def owned_by(uid: int) -> Iterator[None]:
    """Sockets created inside are owned by ``uid`` (this thread's fsuid, then restored)."""
    previous = _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(previous)


@contextlib.contextmanager
def connection(owner: int, family: int = socket.AF_INET) -> Iterator[tuple[socket.socket, ...]]:
    """(client, server end, listener): the client is owned by ``owner``, the rest by root."""
    host = fresh_address() if family == socket.AF_INET else "::1"
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server((host, 0), family=family))
        with owned_by(owner):
            client = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        client.bind((host, 0))  # both ends on the test's own address
        client.settimeout(5)
        client.connect(listener.getsockname()[:2])
        server, _ = listener.accept()
        stack.enter_context(server)
        server.settimeout(5)
        yield client, server, listener


def alive(client: socket.socket, server: socket.socket) -> bool:
    try:
        client.sendall(b"x")
        return server.recv(1) == b"x"
    except OSError:
        return False


def reset_seen(client: socket.socket, server: socket.socket) -> tuple[int | None, int | None]:
    """The errnos the closed client and its peer see (None: no error)."""
    found: list[int | None] = []
    for sock in (client, server):
        try:
            sock.recv(1)
            found.append(None)
        except OSError as exc:
            found.append(exc.errno)
    return found[0], found[1]


def dport_filter(sock: socket.socket) -> tuple[str, ...]:
    return ("dport", "=", f":{sock.getpeername()[1]}", "src", sock.getsockname()[0])


def test_owner_kills_own_connection_and_the_peer_sees_a_reset(
    killd: Daemon, user_python: tuple[str, str]
) -> None:
    with connection(MEMBER[0]) as (client, server, _):
        args = ("sock", "kill", *dport_filter(client))
        result = sockctl(killd, *args, "--json", who=MEMBER, user_python=user_python)
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        (row,) = reply["killed"]
        assert (row["kind"], row["state"], row["uid"]) == ("tcp", "established", MEMBER[0])
        assert (row["local"], row["local_port"]) == client.getsockname()
        assert reset_seen(client, server) == (errno.ECONNABORTED, errno.ECONNRESET)
    assert "sock kill: closed tcp" in killd.log()


def test_another_users_connection_is_refused_and_nothing_is_closed(
    killd: Daemon, user_python: tuple[str, str]
) -> None:
    with connection(MEMBER[0]) as (client, server, _):
        result = sockctl(
            killd, "sock", "kill", *dport_filter(client), who=OUTSIDER, user_python=user_python
        )
        assert result.returncode == 4, result
        assert "belong to other users" in result.stderr
        assert f"uid {MEMBER[0]}" in result.stderr
        assert "Nothing was closed" in result.stderr
        assert alive(client, server)


def test_a_kill_group_member_may_kill_anyones(killd: Daemon, user_python: tuple[str, str]) -> None:
    with connection(MEMBER[0]) as (client, server, _):
        result = sockctl(
            killd, "sock", "kill", *dport_filter(client), who=MONITOR, user_python=user_python
        )
        assert result.returncode == 0, result.stderr
        assert "closed 1 socket(s)" in result.stderr
        assert f":{client.getsockname()[1]}" in result.stdout  # the table of what was closed
        assert reset_seen(client, server) == (errno.ECONNABORTED, errno.ECONNRESET)


def test_mixed_matches_are_all_or_nothing(killd: Daemon, user_python: tuple[str, str]) -> None:
    # MEMBER's client and root's server end both match `src ADDR`: MEMBER may not close root's.
    with connection(MEMBER[0]) as (client, server, _):
        address = client.getsockname()[0]
        result = sockctl(killd, "sock", "kill", "src", address, who=MEMBER, user_python=user_python)
        assert result.returncode == 4, result
        assert alive(client, server)


def test_dry_run_lists_and_closes_nothing(killd: Daemon) -> None:
    with connection(MEMBER[0]) as (client, server, listener), Client(killd.socket) as c:
        port = listener.getsockname()[1]
        reply = c.sock_kill(local_address=client.getsockname()[0], dry_run=True)
        assert reply.dry_run
        # The listener, the accepted end (local port = the listener's) and the client.
        assert sorted((r.state, r.local_port == port) for r in reply.killed) == [
            ("established", False),
            ("established", True),
            ("listening", True),
        ]
        assert alive(client, server)


def test_root_kills_a_listener_through_the_library(killd: Daemon) -> None:
    with connection(MEMBER[0]) as (client, server, listener), Client(killd.socket) as c:
        port = listener.getsockname()[1]
        address = listener.getsockname()[0]
        reply = c.sock_kill(local_address=address, local_port=port, states=["listening"])
        assert [(r.state, r.local_port) for r in reply.killed] == [("listening", port)]
        listener.settimeout(1)
        with pytest.raises(OSError) as caught:
            listener.accept()
        assert caught.value.errno == errno.EINVAL  # a destroyed listener no longer listens
        assert alive(client, server)  # connections already accepted stay


def test_ipv6_and_expression_filters(killd: Daemon, user_python: tuple[str, str]) -> None:
    with connection(MEMBER[0], socket.AF_INET6) as (client, server, _):
        port = client.getsockname()[1]
        result = sockctl(
            killd,
            "sock",
            "kill",
            "-6",
            "state",
            "established",
            f"( sport = :{port} and dst [::1] )",
            who=MEMBER,
            user_python=user_python,
        )
        assert result.returncode == 0, result.stderr
        assert "[::1]" in result.stdout
        assert reset_seen(client, server) == (errno.ECONNABORTED, errno.ECONNRESET)


def test_udp_socket_is_aborted(killd: Daemon) -> None:
    address = fresh_address()
    with owned_by(MEMBER[0]):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, Client(killd.socket) as c:
        udp.bind((address, 0))
        udp.settimeout(2)
        reply = c.sock_kill(kinds=["udp"], local_address=address)
        assert [(r.kind, r.uid) for r in reply.killed] == [("udp", MEMBER[0])]
        with pytest.raises(OSError) as caught:
            udp.recv(1)
        assert caught.value.errno == errno.ECONNABORTED


def test_list_dash_k_is_kill(killd: Daemon) -> None:
    with connection(0) as (client, server, _):
        result = sockctl(killd, "sock", "list", "-tK", *dport_filter(client))
        assert result.returncode == 0, result.stderr
        assert "closed 1 socket(s)" in result.stderr
        assert reset_seen(client, server) == (errno.ECONNABORTED, errno.ECONNRESET)


def test_inside_a_named_namespace(killd: Daemon) -> None:
    name = ns_name("kill")
    holder = None
    with Client(killd.socket) as c:
        c.ns_create(name)
        try:
            # A holder inside the namespace: a connection over its loopback; it reports what its
            # client end sees after the kill.
            code = (
                "import socket, sys\n"
                "l = socket.create_server(('127.0.0.1', 0)); c = socket.create_connection("
                "l.getsockname()); s, _ = l.accept()\n"
                "print(l.getsockname()[1], flush=True); sys.stdin.readline()\n"
                "try:\n    c.recv(1); print('open')\n"
                "except OSError as e:\n    print(e.errno)\n"
            )
            holder = subprocess.Popen(
                ["ip", "netns", "exec", name, "/usr/bin/python3", "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout is not None and holder.stdin is not None
            port = int(holder.stdout.readline())
            with pytest.raises(NotFound):
                c.sock_kill(netns=name + "-none", remote_port=port)
            reply = c.sock_kill(netns=name, remote_port=port)
            assert [(r.netns, r.remote_port) for r in reply.killed] == [(name, port)]
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == str(errno.ECONNABORTED)
        finally:
            if holder is not None:
                holder.kill()
                holder.communicate()  # reaps it and closes both pipes
            c.ns_delete(name, force=True)


def test_bad_requests_are_named_and_close_nothing(
    killd: Daemon, user_python: tuple[str, str]
) -> None:
    with connection(MEMBER[0]) as (client, server, _), Client(killd.socket) as c:
        with pytest.raises(InvalidRequest) as caught:
            c.sock_kill(states=["established"])  # no filter: it would close everything
        assert caught.value.field == "expr"
        with pytest.raises(InvalidRequest) as caught:
            c.sock_kill(local_address="/run/*.sock")
        assert caught.value.field == "local_address"
        with pytest.raises(InvalidRequest):
            c.sock_kill(kinds=["unix"], local_port=1)  # type: ignore[list-item]
        # A filter expression with a UNIX-only meaning is refused by the CLI's parser.
        result = sockctl(killd, "sock", "kill", "dport", "=", ":nosuchservice")
        assert result.returncode == 2
        assert "nosuchservice" in result.stderr
        result = sockctl(killd, "sock", "kill", "-x", "sport", "=", ":1")
        assert result.returncode == 2
        assert alive(client, server)
    # Through the library, with an expression: the named error, and the connection lives on.
    with connection(MEMBER[0]) as (client, server, _):
        code = (
            "import json; from sockctl import Client, PermissionDenied\n"
            "from sockctl.protocol import SockHostMatch\n"
            f"c = Client({killd.socket!r})\n"
            "try:\n"
            f"    c.sock_kill(expr=SockHostMatch(op='src', address={client.getsockname()[0]!r}, port=None))\n"
            "    print(json.dumps('closed'))\n"
            "except PermissionDenied as e:\n"
            "    print(json.dumps([e.code.value, e.field, e.details]))\n"
        )
        answer = as_user(OUTSIDER, user_python, code, killd.socket)
        assert answer == ["permission_denied", "uid", {"uid": OUTSIDER[0], "others": 3}]
        assert alive(client, server)


def test_more_matches_than_the_cap_close_nothing(killd: Daemon) -> None:
    from sockctl.protocol import MAX_SOCK_KILL

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, MAX_SOCK_KILL + 256), hard))
    address = fresh_address()
    socks: list[socket.socket] = []
    try:
        for _ in range(MAX_SOCK_KILL + 1):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(udp)
            udp.bind((address, 0))
        with Client(killd.socket) as c, pytest.raises(InvalidRequest) as caught:
            c.sock_kill(kinds=["udp"], local_address=address)
        assert str(MAX_SOCK_KILL) in caught.value.message
        assert caught.value.field == "expr"
        # Nothing was closed: every socket still receives.
        socks[0].sendto(b"x", socks[-1].getsockname())
        socks[-1].settimeout(2)
        assert socks[-1].recv(1) == b"x"
    finally:
        for sock in socks:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
