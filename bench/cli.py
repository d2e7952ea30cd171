"""Whole-command time a person feels: `sockctl ns list` vs `ip netns list` vs `python3 -c pass`.

Uses the world-readable venv interpreter (what an installed sockctl runs on), never pyenv's shim.
Run as root: python bench/cli.py [--runs 30]
"""

import argparse
import os
import shutil

from common import median, ms, percentile, running_sockd, table, time_command, user_python


def run(runs: int) -> str:
    python = user_python()
    sockctl = os.path.join(os.path.dirname(python), "sockctl")
    sockctl_cmd = [sockctl] if os.access(sockctl, os.X_OK) else [python, "-m", "sockctl"]
    rows = []
    with running_sockd() as (sock, _):
        env = {**os.environ, "SOCKD_SOCKET": sock}
        commands = {
            "python3 -c pass": [python, "-c", "pass"],
            "ip netns list": [shutil.which("ip") or "ip", "netns", "list"],
            "sockctl ping": [*sockctl_cmd, "ping"],
            "sockctl ns list": [*sockctl_cmd, "ns", "list"],
            "sockctl --json ns list": [*sockctl_cmd, "--json", "ns", "list"],
        }
        for label, argv in commands.items():
            times = time_command(argv, runs, env)
            rows.append([label, ms(median(times)), ms(percentile(times, 0.9)), ms(min(times))])
    return table(["command", "median ms", "p90 ms", "min ms"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    print(run(parser.parse_args().runs))
