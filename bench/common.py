"""Shared helpers for the benchmarks: a private sockd, timing, tables."""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def running_sockd(config: str = "") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A root sockd on a temporary socket; yields (socket path, process)."""
    directory = Path(tempfile.mkdtemp(prefix="sockd-bench-"))
    directory.chmod(0o755)
    (directory / "sockd.toml").write_text(config)
    sock = str(directory / "sockd.sock")
    # The registry on tmpfs, as in production (/run/sockd), not on the disk behind /tmp.
    state = tempfile.mkdtemp(prefix="sockd-bench-", dir="/run")
    log = (directory / "sockd.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockd",
            "--socket",
            sock,
            "--state-dir",
            state,
            "--config",
            str(directory / "sockd.toml"),
            "--log-target",
            "stderr",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((directory / "sockd.log").read_text())
            time.sleep(0.02)
        yield sock, proc
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def time_command(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    """Wall-clock seconds of ``runs`` runs of a whole command (after one warm-up)."""
    subprocess.run(argv, check=True, capture_output=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def time_calls(fn: Callable[[], object], runs: int) -> list[float]:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (readable as plain text too)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, rule, *body])


def user_python() -> str:
    """A world-readable interpreter without pyenv's shim: what an installed sockctl runs on."""
    venv = os.environ.get("SOCKD_BENCH_PYTHON", "/var/cache/sockd-test/py3.11/bin/python")
    return venv if os.access(venv, os.X_OK) else "/usr/bin/python3"
