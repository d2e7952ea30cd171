"""Namespace create + delete pairs per second: sockctl (library and CLI) vs `ip netns add` + `del`.

Run as root: python bench/churn.py [--pairs 200]
"""

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import running_sockd, table, user_python

from sockctl import Client

PREFIX = f"bench{os.getpid()}-"


def pairs_per_second(fn: Callable[[int], None], pairs: int) -> float:
    start = time.perf_counter()
    for i in range(pairs):
        fn(i)
    return pairs / (time.perf_counter() - start)


def run(pairs: int) -> str:
    rows = []

    def ip_pair(i: int) -> None:
        name = f"{PREFIX}ip{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "del", name], check=True)

    ip_rate = pairs_per_second(ip_pair, pairs)
    rows.append(["ip netns add + del", f"{ip_rate:.0f}", "1.00"])
    with running_sockd() as (sock, _), Client(sock) as client:

        def lib_pair(i: int) -> None:
            name = f"{PREFIX}lib{i}"
            client.ns_create(name)
            client.ns_delete(name)

        lib_rate = pairs_per_second(lib_pair, pairs)
        rows.append(
            ["sockctl library (one Client)", f"{lib_rate:.0f}", f"{lib_rate / ip_rate:.2f}"]
        )
        cli = [user_python(), "-m", "sockctl", "--socket", sock]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

        def cli_pair(i: int) -> None:
            name = f"{PREFIX}cli{i}"
            subprocess.run([*cli, "ns", "create", name], check=True, capture_output=True, env=env)
            subprocess.run([*cli, "ns", "delete", name], check=True, capture_output=True, env=env)

        cli_pairs = max(10, pairs // 10)
        cli_rate = pairs_per_second(cli_pair, cli_pairs)
        rows.append(["sockctl CLI (two commands)", f"{cli_rate:.0f}", f"{cli_rate / ip_rate:.2f}"])
    return table(["method", "pairs/s", "x ip"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=200)
    print(run(parser.parse_args().pairs))
