"""sock.events (ss -E): sockets reported as the kernel destroys them, to users who are not root.

Each test makes its own namespace through the daemon and destroys sockets inside it with a
process it starts there (`ip netns exec`), so what the kernel reports is only what the test did.
"""

import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from sockctl import Client, InvalidRequest, NotFound, SockInfo
from sockctl.protocol import SockEventsResult
from tests.conftest import OUTSIDER, Daemon, ns_name, sockctl_command

# Made and destroyed inside the namespace, one line of stdin at a time: a TCP connection with its
# listener (the port is printed), then a UDP socket on ::1.
_MAKER = r"""
import socket, sys
print("ready", flush=True)
sys.stdin.readline()
listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
print(listener.getsockname()[1], flush=True)
client.close(); server.close(); listener.close()
sys.stdin.readline()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
print(udp.getsockname()[1], flush=True)
udp.close()
sys.stdin.readline()
"""


@pytest.fixture
def namespace(shared_daemon: Daemon) -> Iterator[str]:
    name = ns_name("ev")
    with Client(shared_daemon.socket) as client:
        client.ns_create(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        try:
            yield name
        finally:
            client.ns_delete(name, force=True)


class Maker:
    """The process in the namespace that makes and destroys the sockets, a step at a time."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", name, "/usr/bin/python3", "-c", _MAKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # Started before any window of events opens: a cold interpreter on a loaded machine can
        # take a good part of one.
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def step(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate()


def test_destroyed_sockets_reach_a_user_who_is_not_root(
    shared_daemon: Daemon, namespace: str, user_python: tuple[str, str]
) -> None:
    """As an outsider (ss -E would need CAP_NET_ADMIN): both ends of a TCP connection and its
    listener, then a UDP socket, each once, as ss prints them; the header comes once the daemon
    follows the namespace; --count ends it."""
    cmd, env = sockctl_command(
        shared_daemon,
        "sock",
        "events",
        "-N",
        namespace,
        "--count",
        "4",
        who=OUTSIDER,
        user_python=user_python,
    )
    maker = Maker(namespace)
    watcher = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()  # printed once the daemon follows the namespace
        assert header.split() == ["Netid", "State", "Recv-Q", "Send-Q", "Local", "Address:Port",
                                  "Peer", "Address:Port"]  # fmt: skip
        tcp_port = maker.step()
        udp_port = maker.step()
        out, err = watcher.communicate(timeout=30)
    finally:
        maker.close()
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert len(rows) == 4, out
    assert all(row[0] == f"[{namespace}]" for row in rows)
    tcp = [row for row in rows if row[1] == "tcp"]
    (listener,) = [row for row in tcp if row[6] == "0.0.0.0:*"]
    assert listener[5] == f"127.0.0.1:{tcp_port}"
    (client_end,) = [row for row in tcp if row[6] == f"127.0.0.1:{tcp_port}"]
    (server_end,) = [row for row in tcp if row[5] == f"127.0.0.1:{tcp_port}" and row != listener]
    assert client_end[5] == server_end[6]
    (udp,) = [row for row in rows if row[1] == "udp"]
    assert udp[2] == "UNCONN" and udp[5] == f"[::1]:{udp_port}"


def test_the_library_follows_filters_and_ends(shared_daemon: Daemon, namespace: str) -> None:
    """Client.sock_events: a port filter keeps to one socket; after `seconds` the generator
    returns the summary; closing it early ends the daemon's side (its next one still works)."""
    maker = Maker(namespace)
    try:
        with Client(shared_daemon.socket) as client:
            events = client.sock_events(netns=namespace, kinds=["udp"], seconds=3)
            got: list[SockInfo] = []

            def drain() -> None:
                got.extend(events)

            reader = threading.Thread(target=drain)
            reader.start()
            maker.step()  # a TCP connection: filtered out (udp only)
            udp_port = maker.step()
            reader.join(timeout=30)
            assert not reader.is_alive()
            assert [(s.kind, s.family, s.local, s.local_port) for s in got] == [
                ("udp", "inet6", "::1", udp_port)
            ]
            assert got[0].send_q == -1  # as the kernel reports a destroyed UDP socket, like ss
            assert events.result == SockEventsResult(events=1, overflows=0, ended="seconds")
            assert events.fileno() == -1  # its connection closed with the end
            assert client.ping().version  # this client's own connection open before counting
            before = shared_daemon.settled_fd_count()
            for _ in range(20):
                with client.sock_events(netns=namespace, local_port=1) as early:
                    assert early.fileno() >= 0  # never iterated: closed at the block's end
            # Each session's connection, namespace and netlink socket were closed behind it.
            shared_daemon.wait_fd_count(before)
            assert client.ping().version
    finally:
        maker.close()


def test_bad_requests_are_named(shared_daemon: Daemon) -> None:
    with Client(shared_daemon.socket) as client:
        with pytest.raises(NotFound):
            client.sock_events(netns=ns_name("missing"))
        with pytest.raises(InvalidRequest) as named:
            client.sock_events(local_address="/run/x.sock")
        assert named.value.field == "local_address"
        with pytest.raises(InvalidRequest) as count:
            client.sock_events(count=0)
        assert count.value.field == "count"
        with pytest.raises(InvalidRequest):
            client.sock_events(kinds=["raw"])  # type: ignore[list-item]
    cmd, env = sockctl_command(shared_daemon, "sock", "events", "state", "established")
    words = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert words.returncode == 2 and "drop the state words" in words.stderr
    cmd, env = sockctl_command(shared_daemon, "sock", "list", "-E", "-x")
    unix = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert unix.returncode == 2 and "-E follows TCP/UDP sockets" in unix.stderr


def test_udp_of_the_host_is_not_mixed_with_other_namespaces(
    shared_daemon: Daemon, namespace: str
) -> None:
    """Following the host's namespace does not report a socket destroyed in another one."""
    maker = Maker(namespace)
    try:
        with Client(shared_daemon.socket) as client:
            events = client.sock_events(
                kinds=["udp"], families=["inet6"], local_address="::1", seconds=2
            )
            maker.step()
            port = maker.step()
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as host_udp:
                host_udp.bind(("::1", 0))
                host_port = host_udp.getsockname()[1]
            seen = list(events)
        assert [s.local_port for s in seen] == [host_port]
        assert port != host_port
    finally:
        maker.close()
