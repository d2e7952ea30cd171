"""1 000 ns.exec and 1 000 sock.open requests leave the daemon as they found it."""

import os
import time

import pytest

from tests.conftest import MEMBER, Daemon, as_user, ns_name, sockctl

ROUNDS = 1000

LOAD = f"""
import json, sockctl
from sockctl import Client
client = Client()
statuses = set()
for i in range({ROUNDS}):
    statuses.add(client.exec(NAME, ["true"], stdin=sockctl.DEVNULL, stdout=sockctl.DEVNULL))
    with client.open_socket("tcp:127.0.0.1:0", ns=NAME):
        pass
    with client.open_socket("udp", ns=None):
        pass
print(json.dumps(sorted(statuses)))
"""


def settled(daemon: Daemon) -> tuple[int, int]:
    """(open descriptors, threads) once the last connection's thread has gone."""
    deadline = time.monotonic() + 5
    while True:
        counts = daemon.fd_count(), len(os.listdir(f"/proc/{daemon.proc.pid}/task"))
        if counts[1] <= 1 or time.monotonic() > deadline:  # only the main thread left
            return counts
        time.sleep(0.02)


@pytest.mark.slow
def test_no_descriptor_thread_or_process_leaks(
    daemon: Daemon, user_python: tuple[str, str]
) -> None:
    name = ns_name("leak")
    assert (
        sockctl(daemon, "ns", "create", name, who=MEMBER, user_python=user_python).returncode == 0
    )
    try:
        warm_up = LOAD.replace(f"range({ROUNDS})", "range(3)").replace("NAME", repr(name))
        assert as_user(MEMBER, user_python, warm_up, daemon.socket) == [0]
        before = settled(daemon)
        load = LOAD.replace("NAME", repr(name))
        assert as_user(MEMBER, user_python, load, daemon.socket, timeout=600) == [0]
        assert settled(daemon) == before
        assert daemon.children() == []  # every command reaped: no zombies, no strays
    finally:
        sockctl(daemon, "ns", "delete", "--force", "-y", name)
