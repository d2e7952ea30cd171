"""Whole-command time a person feels: small `sockctl` commands vs `ip netns list` and `python3 -c pass`.

    python bench/cli.py [--runs 30]

Run as root from the checkout. sockctl is measured as it is installed (issue 15: every small
command <= 40 ms median): this checkout is installed into a throwaway venv with pip, not editable,
so its bytecode is compiled as `make venv` leaves it and no editable-install finder runs at
interpreter start-up (the test venvs' finder alone costs ~15 ms here). `python3 -c pass` runs on
that venv's interpreter, so the difference is sockctl's own import and work; `import click` is
the floor of any click CLI on this machine. The editable test venv is shown as well, for
comparison with the numbers the suite's clients see.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import median, ms, percentile, running_sockd, table, time_command, user_python

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def installed_venv() -> Iterator[str]:
    """A venv holding this checkout as pip installs it (with click, the CLI's one dependency at
    start-up), world-readable; its interpreter's path. Removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sockd-bench-cli-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 -- the venv is run by other uids too
        venv = os.path.join(tmp, "venv")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
        pip = [sys.executable, "-m", "pip", "--python", f"{venv}/bin/python"]
        subprocess.run(
            [*pip, "install", "-q", "--disable-pip-version-check", "--no-deps", str(REPO), "click"],
            check=True,
            capture_output=True,
        )
        yield f"{venv}/bin/python"


def commands(python: str) -> dict[str, list[str]]:
    script = os.path.join(os.path.dirname(python), "sockctl")  # the entry point pip wrote
    sockctl = [script] if os.access(script, os.X_OK) else [python, "-m", "sockctl"]
    return {
        "python3 -c pass": [python, "-c", "pass"],
        "python3 -c 'import click'": [python, "-c", "import click"],
        "sockctl --version": [*sockctl, "--version"],
        "sockctl ping": [*sockctl, "ping"],
        "sockctl ns list": [*sockctl, "ns", "list"],
        "sockctl --json ns list": [*sockctl, "--json", "ns", "list"],
        "sockctl sock list -x": [*sockctl, "sock", "list", "-x", "--no-processes"],
    }


def run(runs: int) -> str:
    rows = []
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    with running_sockd() as (sock, _), installed_venv() as python:
        env["SOCKD_SOCKET"] = sock
        times = time_command([shutil.which("ip") or "ip", "netns", "list"], runs, env)
        rows.append(["ip netns list", "-", ms(median(times)), ms(percentile(times, 0.9))])
        for where, interpreter in (("installed", python), ("editable", user_python())):
            base = None
            for label, argv in commands(interpreter).items():
                times = time_command(argv, runs, env)
                base = median(times) if base is None else base
                rows.append(
                    [
                        f"{label} ({where})",
                        ms(median(times) - base),
                        ms(median(times)),
                        ms(percentile(times, 0.9)),
                    ]
                )
    return table(["command", "over python ms", "median ms", "p90 ms"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    print(run(parser.parse_args().runs))
