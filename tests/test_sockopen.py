"""``sock.open``: sockets made by sockd inside a namespace or the host, handed over by descriptor."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockctl import Client, InvalidRequest, _address
from tests.conftest import (
    MEMBER,
    MONITOR,
    MONITOR_GID,
    OTHER_MEMBER,
    REPO,
    Daemon,
    as_user,
    ns_name,
    sockctl,
    sockctl_command,
)

SERVER = """\
import os, socket
# sd_listen_fds(3): the descriptors are ours only if LISTEN_PID names this process.
assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID is not mine"
count = int(os.environ["LISTEN_FDS"])
listener = socket.socket(fileno=3)
print(f"serving {count} {os.environ['LISTEN_FDNAMES']} {listener.getsockname()}", flush=True)
conn, _ = listener.accept()
conn.sendall(f"hello from uid {os.getuid()}\\n".encode())
conn.close()
"""

CLIENT = """\
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as conn:
    print(conn.makefile().readline(), end="")
"""


@pytest.fixture(scope="module")
def scripts() -> Iterator[Path]:
    """The test server and client, readable by the test uids."""
    directory = Path(tempfile.mkdtemp(prefix="sockd-scripts-"))
    directory.chmod(0o755)
    for name, text in (("server.py", SERVER), ("client.py", CLIENT)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o644)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


@pytest.fixture(scope="module")
def owned(shared_daemon: Daemon, user_python: tuple[str, str]) -> Iterator[str]:
    name = ns_name("sock")
    created = sockctl(shared_daemon, "ns", "create", name, who=MEMBER, user_python=user_python)
    assert created.returncode == 0, created.stderr
    yield name
    sockctl(shared_daemon, "ns", "delete", "--force", "-y", name)


def hold_socket(
    daemon: Daemon, user_python: tuple[str, str], name: str, address: str
) -> "subprocess.Popen[bytes]":
    """MEMBER's `sock open --ns NAME ADDRESS -- sleep 30`: the socket, held by sleep as fd 3."""
    cmd, env = sockctl_command(
        daemon,
        "sock",
        "open",
        "--ns",
        name,
        address,
        "--",
        "sleep",
        "30",
        who=MEMBER,
        user_python=user_python,
    )
    return subprocess.Popen(cmd, env=env, cwd="/")


def in_netns(name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *command], capture_output=True, text=True, check=False
    )


def test_port_80_in_own_namespace_served_by_a_socket_activated_program(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str, scripts: Path
) -> None:
    cmd, env = sockctl_command(
        shared_daemon,
        "sock",
        "open",
        "--ns",
        owned,
        "--fd-name",
        "web",
        "tcp:0.0.0.0:80",
        "--",
        "/usr/bin/python3",
        str(scripts / "server.py"),
        who=MEMBER,
        user_python=user_python,
    )
    server = subprocess.Popen(cmd, env=env, cwd="/", text=True, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "serving 1 web ('0.0.0.0', 80)\n"
        # The socket lives in the namespace: the host's port 80 has nobody behind it...
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", 80), timeout=5).close()
        # ... and from inside the namespace (as the user, through ns exec) it answers.
        inside = sockctl(
            shared_daemon,
            "ns",
            "exec",
            owned,
            "--",
            "/usr/bin/python3",
            str(scripts / "client.py"),
            "80",
            who=MEMBER,
            user_python=user_python,
        )
        assert (inside.returncode, inside.stdout) == (0, f"hello from uid {MEMBER[0]}\n")
        assert server.wait(10) == 0
    finally:
        server.kill()
        server.communicate()


def test_the_socket_is_the_caller_s(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    holder = hold_socket(shared_daemon, user_python, owned, "tcp:127.0.0.1:81")
    try:
        for _ in range(500):
            listed = in_netns(owned, "ss", "-Htlne", "sport", "= :81").stdout
            if listed:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert f"uid:{MEMBER[0]}" in listed
        assert f"pid={holder.pid}," in in_netns(owned, "ss", "-Htlnp", "sport", "= :81").stdout
    finally:
        holder.kill()
        holder.wait()


def test_without_a_command_it_prints_and_holds_nothing(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    shown = sockctl(
        shared_daemon,
        "--json",
        "sock",
        "open",
        "--ns",
        owned,
        "tcp:[::]:80",
        who=MEMBER,
        user_python=user_python,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.json() == {"ns": owned, "kind": "tcp", "address": "[::]:80", "listening": True}
    # The daemon closes its copy once the descriptor is sent, as the client may already exit.
    deadline = time.monotonic() + 5
    while (listening := in_netns(owned, "ss", "-Htln").stdout) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listening == ""


def test_privileged_host_ports_only_as_the_policy_grants(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    def try_bind(who: tuple[int, int, tuple[int, ...]], address: str) -> int:
        return sockctl(daemon, "sock", "open", address, who=who, user_python=user_python).returncode

    assert try_bind(MEMBER, "tcp:127.0.0.1:1000") == 4
    assert try_bind(MEMBER, "tcp:127.0.0.1:0") == 0  # unprivileged ports are anyone's
    rules = f"""
[[policy.privileged_ports]]
users = [{MEMBER[0]}]
ports = ["999-1000"]
addresses = ["127.0.0.1/32"]

[[policy.privileged_ports]]
groups = [{MONITOR_GID}]
ports = [1000]
"""
    daemon.config.write_text(daemon.config.read_text() + rules)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_log("configuration reloaded")
    code = """
import json
from sockctl import Client
with Client().open_socket("tcp:127.0.0.1:1000") as sock:
    print(json.dumps([list(sock.getsockname()), sock.getsockopt(1, 30)]))
"""
    assert as_user(MEMBER, user_python, code, daemon.socket) == [["127.0.0.1", 1000], 1]
    assert try_bind(MEMBER, "tcp:0.0.0.0:1000") == 4  # not in 127.0.0.1/32
    assert try_bind(MEMBER, "udp:127.0.0.1:998") == 4  # not in the range
    assert try_bind(OTHER_MEMBER, "tcp:127.0.0.1:1000") == 4
    assert try_bind(MONITOR, "tcp:0.0.0.0:1000") == 0  # the group's rule: any address


def test_unix_sockets_are_made_with_the_caller_s_permissions(
    shared_daemon: Daemon, user_python: tuple[str, str]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sockd-unix-"))
    try:
        directory.chmod(0o777)
        made = sockctl(
            shared_daemon,
            "sock",
            "open",
            f"unix:{directory}/a.sock",
            who=MEMBER,
            user_python=user_python,
        )
        assert made.returncode == 0, made.stderr
        st = (directory / "a.sock").stat()
        assert (st.st_uid, st.st_gid) == (MEMBER[0], MEMBER[1])
        directory.chmod(0o755)  # root's, not writable for the user any more
        refused = sockctl(
            shared_daemon,
            "sock",
            "open",
            f"unix:{directory}/b.sock",
            who=MEMBER,
            user_python=user_python,
        )
        assert refused.returncode == 4
        assert not (directory / "b.sock").exists()
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def test_abstract_unix_listener_in_a_namespace_names_its_real_owner(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    # The listener's SO_PEERCRED must be the user's process, not root: sockctl listens itself.
    holder = hold_socket(shared_daemon, user_python, owned, "unix:@sockd-test-abstract")
    probe = textwrap.dedent(
        """
        import socket, struct, time
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(b"\\0sockd-test-abstract")
                break
            except (ConnectionRefusedError, FileNotFoundError):
                s.close()
                time.sleep(0.01)
        print(*struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))
        """
    )
    try:
        inside = in_netns(owned, "python3", "-c", probe)
        assert inside.returncode == 0, inside.stderr
        pid, uid, gid = map(int, inside.stdout.split())
        assert (pid, uid, gid) == (holder.pid, MEMBER[0], MEMBER[1])
        # Abstract names are per namespace: the host does not have it.
        host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError), host:
            host.connect(b"\0sockd-test-abstract")
    finally:
        holder.kill()
        holder.wait()


def test_library_sockets_of_every_kind(shared_daemon: Daemon, owned: str) -> None:
    client = shared_daemon.client()
    with client.open_socket("udp:[::1]:0", ns=owned) as udp:
        assert (udp.family, udp.type) == (socket.AF_INET6, socket.SOCK_DGRAM)
        assert udp.getsockname()[1] != 0
    with (
        client.open_socket("tcp:127.0.0.1:0", ns=owned) as listener,
        client.open_socket("tcp", ns=owned) as outbound,
    ):
        assert outbound.getsockname() == ("0.0.0.0", 0)  # noqa: S104 -- unbound, not bound to all
        outbound.connect(listener.getsockname())  # inside the namespace, from this process
        accepted, _ = listener.accept()
        with accepted:
            outbound.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
    with client.open_socket("unix-seqpacket:@sockd-test-seqpacket", ns=owned) as seq:
        assert seq.type == socket.SOCK_SEQPACKET
        assert seq.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    with client.open_socket("tcp6:[::]:0", ns=owned, v6only=True) as v6:
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_refusals_are_named_errors(
    shared_daemon: Daemon, user_python: tuple[str, str], owned: str
) -> None:
    def code_of(*args: str, who: tuple[int, int, tuple[int, ...]] = MEMBER) -> int:
        return sockctl(
            shared_daemon, "sock", "open", *args, who=who, user_python=user_python
        ).returncode

    assert code_of("--ns", owned, "tcp:0.0.0.0:80", who=OTHER_MEMBER) == 4  # not the owner
    assert code_of("--ns", ns_name("none"), "tcp:0.0.0.0:80") == 5
    assert code_of("--ns", owned, "tcp:10.9.8.7:80") == 9  # no such address inside
    assert code_of("--ns", owned, "tcp:localhost:80") == 9  # addresses, not names
    assert code_of("--ns", owned, "tcp:127.0.0.1:70000") == 9
    assert code_of("--ns", owned, "sctp:127.0.0.1:80") == 9
    client = shared_daemon.client()
    with client.open_socket("tcp:127.0.0.1:0", ns=owned) as first:
        port = first.getsockname()[1]
        assert code_of("--ns", owned, f"tcp:127.0.0.1:{port}") == 8  # busy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp:0.0.0.0:80", ("inet", "stream", "0.0.0.0", 80)),  # noqa: S104 -- parsing only
        ("udp:[::1]:53", ("inet6", "dgram", "::1", 53)),
        ("tcp6:[::]:8080", ("inet6", "stream", "::", 8080)),
        ("tcp", ("inet", "stream", None, 0)),
        ("udp6", ("inet6", "dgram", None, 0)),
        ("unix:@name", ("unix", "stream", "@name", 0)),
        ("unix-dgram:/run/x.sock", ("unix", "dgram", "/run/x.sock", 0)),
        ("unix-seqpacket", ("unix", "seqpacket", None, 0)),
    ],
)
def test_address_syntax(text: str, expected: tuple[str, str, str | None, int]) -> None:
    parsed = _address.parse(text)
    assert (parsed.family, parsed.type, parsed.address, parsed.port) == expected


@pytest.mark.parametrize(
    "text", ["tcp:80", "tcp:host:80", "tcp:1.2.3.4:x", "tcp6:1.2.3.4:80", "raw:1.2.3.4:1", "unix:"]
)
def test_address_syntax_errors(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _address.parse(text)
    assert caught.value.field == "address"


def test_unix_listen_is_left_to_the_client_on_the_wire(shared_daemon: Daemon) -> None:
    request = {
        "proto": 2,
        "op": "sock.open",
        "family": "unix",
        "address": "@sockd-test-wire",
        "backlog": 5,
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as raw:
        raw.connect(shared_daemon.socket)
        raw.send(json.dumps(request).encode())
        reply = json.loads(raw.recv(65536))
    assert reply["error"]["code"] == "invalid_request"
    assert reply["error"]["field"] == "backlog"


def test_library_open_socket_checks_client_side(shared_daemon: Daemon) -> None:
    with pytest.raises(InvalidRequest):
        Client(shared_daemon.socket).open_socket("tcp:not-an-ip:1")


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ('ports = ["80-70"]', "not a port or a low-high range"),
        ('ports = ["http"]', "not a port or a low-high range"),
        ('ports = [80]\naddresses = ["10.0.0.300/8"]', "does not appear to be an IPv4 or IPv6"),
        ("users = [1000]", "ports"),
    ],
)
def test_bad_privileged_port_rules_are_refused_at_load(
    tmp_path: Path, rule: str, complaint: str
) -> None:
    config = tmp_path / "sockd.toml"
    config.write_text(f"[[policy.privileged_ports]]\n{rule}\n")
    checked = subprocess.run(
        [sys.executable, "-m", "sockd", "--check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert checked.returncode != 0
    assert complaint in checked.stderr


def test_the_audit_record_tells_where_the_socket_was_opened(
    shared_daemon: Daemon, owned: str
) -> None:
    # The daemon and the namespace are shared with other tests, whose sock.open records are in the
    # log too: an address no other test uses finds this one (logged just after the reply).
    address = "tcp:127.9.8.7:0"
    with shared_daemon.client() as client:
        server = client.open_socket(address, ns=owned)
        server.close()
    deadline = time.monotonic() + 10
    while not (
        records := [
            r
            for r in shared_daemon.audit()
            if r.get("SOCKD_OP") == "sock.open" and r.get("SOCKD_ADDRESS") == address
        ]
    ):
        assert time.monotonic() < deadline, shared_daemon.log()
        time.sleep(0.05)
    (record,) = records
    assert record["SOCKD_NS"] == owned
    assert record["SOCKD_RESULT"] == "ok"
