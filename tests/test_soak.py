"""Soak: mixed traffic from 8 clients of 3 uids, then nothing may be left over or have grown.

Duration: ``SOCKD_SOAK_SECONDS`` (default 120, what ``make test`` runs; the issue's long run is
``SOCKD_SOAK_SECONDS=1800 pytest -m soak tests/test_soak.py``). A warm-up of the same traffic
(a quarter of it, at most 30 s) comes first; then the baseline; then the soak proper. At the end:

- every client ran without one unexpected outcome (internal error, broken reply, lost connection);
- no leaked descriptors: the daemon holds exactly as many as at the baseline;
- no leaked namespaces, registry records, mounts, host ends of links, or processes (the daemon has
  no children, and no more threads than clients that can be busy at once);
- RSS grew by at most ``RSS_BOUND_KIB`` over the warmed-up baseline.

Marked ``soak``: the Makefile runs it once, on 3.11 (like the ``system`` test): it proves the
daemon, not the interpreter, and three 2-minute runs would triple the suite's time for nothing.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import NonInteractiveExampleWarning

from sockctl.protocol import OPERATIONS
from sockd.server import _TRIM_AFTER
from tests.conftest import (
    DEFAULT_CONFIG,
    MEMBER,
    NETNS_DIR,
    OTHER_MEMBER,
    PREFIX,
    REPO,
    Daemon,
    ns_name,
    start_daemon,
    with_links,
)
from tests.strategies import Case, valid_request
from tests.test_hostile import Baseline, settle
from tests.test_links import host_ends

SECONDS = float(os.environ.get("SOCKD_SOAK_SECONDS", "120"))
RSS_BOUND_KIB = 8 * 1024
"""RSS growth allowed over the warmed-up baseline, whatever the duration. Measured after the idle
trim: the 30-minute run's floor rose ~6.5 MiB in its first 14 minutes (allocator arenas and
caches filling), then 0.2 MiB in the next 16. Before glibc's malloc arenas were capped
(sockd/linux.py) the daemon grew ~2 MiB a minute for as long as the traffic lasted."""

CLIENTS: list[tuple[int, int, tuple[int, ...]] | None] = [
    None,  # root (no setpriv)
    None,
    None,
    MEMBER,
    MEMBER,
    MEMBER,
    OTHER_MEMBER,
    OTHER_MEMBER,
]
"""8 clients of 3 uids: root, and two members of the create group."""

CONFIG = with_links(
    DEFAULT_CONFIG.replace("namespace_quota = 4", "namespace_quota = 8"), 'pool = "10.213.192.0/18"'
)

pytestmark = pytest.mark.soak


def generic_requests() -> list[dict[str, Any]]:
    """Valid requests of every read-only operation (the soak clients add scenarios of their own)."""
    found: list[dict[str, Any]] = []
    for op, operation in sorted(OPERATIONS.items()):
        if operation.mutating or operation.takes_fds or op == "sock.events":
            continue  # sock.events goes on until the client leaves: a scenario of soak_client

        @settings(max_examples=5, database=None, suppress_health_check=list(HealthCheck))
        @given(valid_request(op))
        def collect(case: Case) -> None:
            found.append(case.message)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            collect()
    return found


def run_clients(
    daemon: Daemon, user_python: tuple[str, str], seconds: float
) -> list[dict[str, Any]]:
    code = (REPO / "tests" / "soak_client.py").read_text()
    generic = generic_requests()
    procs = []
    for i, who in enumerate(CLIENTS):
        config = json.dumps(
            {"seconds": seconds, "prefix": ns_name(f"soak{i}-"), "seed": i, "generic": generic}
        )
        env = {"SOCKD_SOCKET": daemon.socket, "PATH": "/usr/bin:/bin"}
        if who is None:
            argv = [sys.executable, "-c", code, config]
            env["PYTHONPATH"] = str(REPO)
        else:
            python, tree = user_python
            uid, gid, groups = who
            argv = [
                *("setpriv", f"--reuid={uid}", f"--regid={gid}"),
                f"--groups={','.join(map(str, groups))}",
                *(python, "-c", code, config),
            ]
            env["PYTHONPATH"] = tree
        procs.append(
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", env=env
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def leftover_state(daemon: Daemon) -> dict[str, list[str]]:
    state = Path(daemon.state_dir)
    return {
        "namespaces": sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX + "soak")),
        "records": sorted(str(p.relative_to(state)) for p in state.rglob("*.json")),
        "mounts": [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if PREFIX + "soak" in line or daemon.state_dir in line
        ],
        "host ends": host_ends(),
        "children": Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children")
        .read_text()
        .split(),
    }


def settled(daemon: Daemon) -> Baseline:
    """``settle``, then past the daemon's idle heap trim: RSS is then what the daemon keeps, not
    the leftovers of the last burst (a sock.list among the generic requests peaks ~2 MiB)."""
    settle(daemon)
    time.sleep(_TRIM_AFTER + 1.0)  # the loop looks every 0.25-0.5 s
    return settle(daemon)


def threads(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.proc.pid}/task"))


def test_soak(user_python: tuple[str, str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sockd-"))
    directory.chmod(0o755)
    daemon = start_daemon(directory, config=CONFIG)
    try:
        warm_up = min(30.0, SECONDS / 4)
        run_clients(daemon, user_python, warm_up)
        baseline = settled(daemon)
        started = time.monotonic()
        results = run_clients(daemon, user_python, SECONDS)
        elapsed = time.monotonic() - started
        after = settled(daemon)
        total = sum(sum(r["ops"].values()) for r in results)
        summary = {
            "seconds": round(elapsed),
            "requests": total,
            "per second": round(total / elapsed),
            "outcomes": dict(sum((Counter(r["outcomes"]) for r in results), Counter())),
            "not exercised": sorted({op for r in results for op in r["not_exercised"]}),
            "fds": (baseline.fds, after.fds),
            "rss KiB": (baseline.rss_kib, after.rss_kib),
            "threads": threads(daemon),
        }
        print(f"soak: {summary}")
        errors = [line for line in daemon.log().splitlines() if "internal error" in line]
        for result in results:
            assert result["unexpected"] == [], (result, errors)
        assert {r["uid"] for r in results} == {0, MEMBER[0], OTHER_MEMBER[0]}
        assert all(r["ops"].get("ns.create", 0) > 0 for r in results)
        assert after.fds == baseline.fds, summary
        assert after.rss_kib - baseline.rss_kib <= RSS_BOUND_KIB, summary
        assert threads(daemon) <= 2 + len(CLIENTS) + 4, summary
        assert leftover_state(daemon) == {
            "namespaces": [],
            "records": [],
            "mounts": [],
            "host ends": [],
            "children": [],
        }
        assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)
