"""Benchmark: `sockctl ns exec NAME -- true` against `ip netns exec NAME true`, and where the time goes.

Everything is measured in the same run, on the same namespace (run as root)::

    ip netns exec           iproute2 doing the same job (the comparison)
    sockctl ns exec         the CLI, process start included: what a person feels
    Client.exec             the library over the daemon's socket (a fresh connection per call)

and the parts those are made of:

    python -c pass          the interpreter alone
    sockctl --version       interpreter + click + sockctl imports, no daemon
    Client.ping             a round trip on a fresh connection (connect, JSON, pydantic, reply)
    spawn phases            the daemon's steps, replayed in-process with the same functions:
                            thread, namespace environment (setns, unshare, mounts),
                            restrictions + filesystem identity, fork/exec/wait of /bin/true
    /bin/true               a bare vfork/exec/wait from Python, for scale

    sudo python bench/exec.py [--runs 200] [--cli-runs 50]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sockctl import DEVNULL, Client  # noqa: E402 -- after the path set-up above
from sockd import enter, linux  # noqa: E402

NS = f"sdbench-exec-{os.getpid()}"


def timed(runs: int, fn: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def start_daemon(directory: Path) -> subprocess.Popen[bytes]:
    config = directory / "sockd.toml"
    config.write_text("")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockd",
            "--socket",
            str(directory / "s.sock"),
            "--state-dir",
            str(directory / "state"),
            "--config",
            str(config),
            "--log-target",
            "stderr",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 10
    while not (directory / "s.sock").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("sockd did not start")
        time.sleep(0.02)
    return proc


# The daemon's spawn, replayed phase by phase (sockd.execution._spawn does the same calls). ------


def phase_thread() -> None:
    linux.run_in_thread(lambda: None)


def phase_environment(fd: int) -> None:
    linux.run_in_thread(lambda: enter.enter_netns_environment(NS, fd))


def phase_identity(fd: int) -> None:
    def work() -> None:
        enter.enter_netns_environment(NS, fd)
        enter.restrict_exec()
        enter.adopt_fs_identity(0, 0, ())

    linux.run_in_thread(work)


def phase_spawn(fd: int) -> None:
    def work() -> "subprocess.Popen[bytes]":
        enter.enter_netns_environment(NS, fd)
        enter.restrict_exec()
        enter.adopt_fs_identity(0, 0, ())
        os.chdir("/")
        return subprocess.Popen(
            ["/bin/true"],
            env={},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
            user=0,
            group=0,
            extra_groups=[],
        )

    linux.run_in_thread(work).wait()


def bare_true() -> None:  # no user/group change: subprocess may vfork
    subprocess.run(["/bin/true"], check=True)


def ms(times: list[float]) -> tuple[float, float]:
    values = sorted(t * 1000 for t in times)
    return statistics.median(values), values[max(0, int(len(values) * 0.9) - 1)]


def measure(socket_path: str, runs: int, cli_runs: int) -> list[tuple[str, str, list[float]]]:
    """Every row, headline rows first (the first one is the reference)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    cli_env = {**env, "SOCKD_SOCKET": socket_path}
    py = sys.executable
    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY | os.O_CLOEXEC)
    try:

        def library_exec() -> None:
            status = Client(socket_path).exec(NS, ["/bin/true"], stdout=DEVNULL, stderr=DEVNULL)
            assert status == 0

        def library_ping() -> None:
            with Client(socket_path) as client:
                client.ping()

        cli = partial(run, py, "-m", "sockctl", "ns", "exec", NS, "--", "true", env=cli_env)
        ip = partial(run, "ip", "netns", "exec", NS, "true")
        for fn in (library_exec, cli, ip):  # warm-up: page cache, the daemon's first threads
            timed(3, fn)
        ip_times: list[float] = []
        cli_times: list[float] = []
        for _ in range(cli_runs):  # interleaved, so that load from elsewhere hits both alike
            ip_times += timed(1, ip)
            cli_times += timed(1, cli)
        startup = partial(run, py, "-m", "sockctl", "--version", env=env)
        return [
            ("headline", "ip netns exec NAME true", ip_times),
            ("headline", "sockctl ns exec NAME -- true", cli_times),
            ("headline", "Client.exec(NAME, ['true']) in-process", timed(runs, library_exec)),
            ("part", "python -c pass", timed(cli_runs, partial(run, py, "-c", "pass"))),
            ("part", "sockctl --version (start-up, imports)", timed(cli_runs, startup)),
            ("part", "Client.ping() on a fresh connection", timed(runs, library_ping)),
            ("part", "spawn: short-lived thread", timed(runs, phase_thread)),
            ("part", "spawn: + netns environment", timed(runs, partial(phase_environment, fd))),
            (
                "part",
                "spawn: + restrictions, fs identity",
                timed(runs, partial(phase_identity, fd)),
            ),
            ("part", "spawn: + fork/exec/wait /bin/true", timed(runs, partial(phase_spawn, fd))),
            ("part", "bare vfork/exec/wait /bin/true", timed(runs, bare_true)),
        ]
    finally:
        os.close(fd)


def report(results: list[tuple[str, str, list[float]]]) -> None:
    reference = statistics.median(results[0][2]) * 1000
    system = f"{os.uname().release}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    print(f"## `ns exec` of `true` ({system})\n")
    print("| what | runs | median ms | p90 ms | x ip netns exec |")
    print("|---|---|---|---|---|")
    for kind, name, times in results:
        median, p90 = ms(times)
        label = f"**{name}**" if kind == "headline" else name
        print(f"| {label} | {len(times)} | {median:.2f} | {p90:.2f} | {median / reference:.2f} |")
    medians = {name: ms(times)[0] for _, name, times in results}
    cli = medians["sockctl ns exec NAME -- true"]
    lib = medians["Client.exec(NAME, ['true']) in-process"]
    startup = medians["sockctl --version (start-up, imports)"]
    print(
        f"\nWhere `sockctl ns exec` spends its {cli:.1f} ms: CLI start-up {startup:.1f} "
        f"({medians['python -c pass']:.1f} of it the interpreter), the exec round trip {lib:.1f} "
        f"(the daemon's spawn replayed in-process: "
        f"{medians['spawn: + fork/exec/wait /bin/true']:.1f}; a plain round trip: "
        f"{medians['Client.ping() on a fresh connection']:.1f}), the rest "
        f"{cli - startup - lib:.1f} (exec-only imports, stdio, signal handlers)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="in-process runs per row")
    parser.add_argument("--cli-runs", type=int, default=50, help="process runs per row")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes a namespace and compares with `ip netns exec`")
    directory = Path(tempfile.mkdtemp(prefix="sockd-bench-"))
    directory.chmod(0o755)
    daemon = start_daemon(directory)
    socket_path = str(directory / "s.sock")
    try:
        Client(socket_path).ns_create(NS)
        results = measure(socket_path, args.runs, args.cli_runs)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False, stderr=subprocess.DEVNULL)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        shutil.rmtree(directory, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
