"""Many clients at once: one winner per name, every distinct name made, quotas that hold."""

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from sockctl import AlreadyExists, Client
from tests.conftest import MEMBER, Daemon, as_user, ns_name


def _parallel(count: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 -- the outcome is what we count
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_fifty_clients_creating_one_name_exactly_one_wins(daemon: Daemon) -> None:
    name = ns_name("race")

    def create(_: int) -> str:
        with Client(daemon.socket, timeout=30) as client:
            return client.ns_create(name).name

    try:
        outcomes = Counter(type(r).__name__ for r in _parallel(50, create))
        assert outcomes == {"str": 1, "AlreadyExists": 49}
    finally:
        with daemon.client() as client:
            client.ns_delete(name)


def test_fifty_distinct_names_in_parallel_all_succeed(daemon: Daemon) -> None:
    names = [ns_name("par") for _ in range(50)]

    def create(i: int) -> str:
        with Client(daemon.socket, timeout=30) as client:
            return client.ns_create(names[i]).name

    try:
        assert sorted(_parallel(50, create)) == sorted(names)
        with daemon.client() as client:
            listed = {i.name for i in client.ns_list()}
        assert set(names) <= listed
    finally:
        with daemon.client() as client:
            for name in names:
                try:
                    client.ns_delete(name)
                except Exception:  # noqa: BLE001,S112 -- cleanup of what did get made
                    continue


def test_quota_holds_under_concurrency(daemon: Daemon, user_python: tuple[str, str]) -> None:
    # The test config gives each non-root user 4 namespaces (and 16 connections); 12 parallel
    # creates race for them.
    prefix = ns_name("quota")
    code = f"""
import json, threading
from sockctl import Client, SockdError
results = []
lock = threading.Lock()
barrier = threading.Barrier(12)
def run(i):
    barrier.wait()
    try:
        with Client() as c:
            c.ns_create("{prefix}-%d" % i)
        out = "ok"
    except SockdError as exc:
        out = type(exc).__name__
    with lock:
        results.append(out)
threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(results))
"""
    try:
        results = as_user(MEMBER, user_python, code, daemon.socket)
        assert Counter(results) == {"ok": 4, "QuotaExceeded": 8}
    finally:
        with daemon.client() as client:
            for info in client.ns_list():
                if info.name.startswith(prefix):
                    client.ns_delete(info.name)


def test_same_name_race_against_ip_netns_add(daemon: Daemon) -> None:
    import subprocess

    name = ns_name("vsip")
    outcomes: list[str] = []

    def with_sockd() -> None:
        try:
            with Client(daemon.socket) as client:
                client.ns_create(name)
            outcomes.append("sockd")
        except AlreadyExists:
            outcomes.append("exists")

    def with_ip() -> None:
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
        outcomes.append("ip" if proc.returncode == 0 else "exists")

    threads = [threading.Thread(target=with_sockd), threading.Thread(target=with_ip)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(outcomes) in (["exists", "ip"], ["exists", "sockd"])
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
