"""`sockctl ns exec NAME -- true` against `ip netns exec NAME true`, and where the time goes.

Everything is measured in the same run, on the same namespace (run as root)::

    ip netns exec           iproute2 doing the same job (the comparison)
    sockctl ns exec         the CLI, process start included: what a person feels
    Client.exec             the library over the daemon's socket (a fresh connection per call)

and the parts those are made of:

    python -c pass          the interpreter alone
    sockctl --version       interpreter + click + sockctl imports, no daemon
    Client.ping             a round trip on a fresh connection (connect, JSON, pydantic, reply)
    spawn phases            the daemon's steps, replayed in this process with the same functions
                            (sockd.execution._spawn): a short-lived thread, the namespace's
                            environment (setns, unshare, mounts), no_new_privs and the filesystem
                            identity, then subprocess's fork + setreuid + exec of /bin/true, waited for
    bare /bin/true          subprocess's vfork + exec, waited for, for scale

and, through a pty like a person's terminal, the delay of one keystroke's echo:

    through sockctl's relay   `sockctl ns exec -t NAME -- cat`: key → the client's raw-mode relay →
                            the command's pty (which echoes) → the relay → the terminal
    a pty's own echo        `cat` straight on the terminal: the line discipline echoes (the floor)

Under a running systemd (``--units``, e.g. in the booted container of tests/test_systemd.py) the
daemon starts commands as transient units: that path is measured next to `systemd-run --wait true`
and against the direct spawn of the same daemon build.

    python bench/exec.py [--runs 200] [--cli-runs 50] [--keys 2000] [--units | --in-container]

``--in-container`` boots that container itself (tests/nspawn.py) and runs ``--units`` inside it.
"""

import argparse
import os
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from functools import partial

from common import REPO, median, ms, percentile, running_sockd, table, time_calls, time_command

sys.path.insert(0, str(REPO))

from sockctl import DEVNULL, Client
from sockd import enter, linux

NS = f"sdbench-exec-{os.getpid()}"


def replay_spawn(fd: int, *, until: str) -> None:
    """The daemon's spawn (sockd.execution._spawn, as root for root) up to phase ``until``."""

    def work() -> "subprocess.Popen[bytes] | None":
        if until == "thread":
            return None
        enter.enter_netns_environment(NS, fd)
        if until == "environment":
            return None
        enter.restrict_exec()
        enter.adopt_fs_identity(0, 0, ())
        os.chdir("/")
        if until == "identity":
            return None
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

    process = linux.run_in_thread(work)
    if process is not None:
        process.wait()


def echo_delays(command: list[str], env: dict[str, str], keys: int) -> list[float]:
    """Seconds from writing one key into a terminal until its echo comes back, ``keys`` times."""
    master, slave = os.openpty()
    termios.tcsetwinsize(master, (24, 80))
    proc = subprocess.Popen(
        ["setsid", "--ctty", *command], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    delays = []
    try:
        time.sleep(1.0)  # started and in raw mode
        while select.select([master], [], [], 0.2)[0]:
            os.read(master, 4096)
        for _ in range(keys):
            start = time.perf_counter()
            os.write(master, b"x")
            seen = b""
            while b"x" not in seen:
                select.select([master], [], [], 5)
                seen += os.read(master, 4096)
            delays.append(time.perf_counter() - start)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return delays


def measure_units(sock: str, runs: int) -> list[tuple[str, list[float]]]:
    """The transient-unit path next to systemd-run and to this daemon's direct spawn."""

    def library_exec() -> None:
        assert Client(sock).exec(NS, ["/bin/true"], stdout=DEVNULL, stderr=DEVNULL) == 0

    systemd_run = ["systemd-run", "--wait", "--quiet", "--pipe", "--collect", "/bin/true"]
    return [
        ("**systemd-run --wait --pipe true**", time_command(systemd_run, runs)),
        ("**Client.exec(NAME, ['true'])**, transient unit", time_calls(library_exec, runs)),
        (
            "ip netns exec NAME true (for scale)",
            time_command(["ip", "netns", "exec", NS, "true"], runs),
        ),
    ]


def units_in_container(runs: int) -> str:
    """This benchmark's ``--units`` rows, run inside a freshly booted systemd (tests/nspawn.py)."""
    from pathlib import Path

    from tests import nspawn

    wheels = nspawn.ensure_wheelhouse(REPO / "pyproject.toml", Path("/var/cache/sockd-test"))
    with nspawn.booted(REPO, wheels, f"sockd-bench-{os.getpid()}") as container:
        script = f"{nspawn.SRC_MOUNT}/bench/exec.py"
        argv = [sys.executable, script, "--units", "--runs", str(runs)]
        run = container.run(*argv, env={"PYTHONPATH": nspawn.SRC_MOUNT}, timeout=600)
        return run.stdout


def measure(sock: str, runs: int, cli_runs: int) -> list[tuple[str, list[float]]]:
    """Every row; the first is the reference."""
    python = sys.executable
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    cli_env = {**env, "SOCKD_SOCKET": sock}
    # This checkout's sockctl (`python -m`), not whatever a console script was installed from.
    cli = [python, "-m", "sockctl", "ns", "exec", NS, "--", "true"]
    ip = ["ip", "netns", "exec", NS, "true"]

    def library_exec() -> None:
        assert Client(sock).exec(NS, ["/bin/true"], stdout=DEVNULL, stderr=DEVNULL) == 0

    def library_ping() -> None:
        with Client(sock) as client:
            client.ping()

    def library_tty_exec() -> None:
        with Client(sock).popen(NS, ["/bin/true"], tty=True) as proc:
            assert proc.wait() == 0

    # The two headline rows interleaved, so that load from elsewhere on the machine hits both alike.
    ip_times: list[float] = []
    cli_times: list[float] = []
    for _ in range(cli_runs):
        ip_times += time_command(ip, 1)
        cli_times += time_command(cli, 1, cli_env)
    fd = os.open(f"/run/netns/{NS}", os.O_RDONLY | os.O_CLOEXEC)
    try:

        def spawn(phase: str) -> Callable[[], None]:
            return partial(replay_spawn, fd, until=phase)

        return [
            ("**ip netns exec NAME true**", ip_times),
            ("**sockctl ns exec NAME -- true**", cli_times),
            ("**Client.exec(NAME, ['true'])**, in-process", time_calls(library_exec, runs)),
            ("Client.popen(NAME, ['true'], tty=True)", time_calls(library_tty_exec, runs)),
            ("python -c pass", time_command([python, "-c", "pass"], cli_runs)),
            (
                "sockctl --version (start-up)",
                time_command([python, "-m", "sockctl", "--version"], cli_runs, env),
            ),
            ("Client.ping() on a fresh connection", time_calls(library_ping, runs)),
            ("spawn replay: short-lived thread", time_calls(spawn("thread"), runs)),
            ("spawn replay: + namespace environment", time_calls(spawn("environment"), runs)),
            ("spawn replay: + no_new_privs, fs identity", time_calls(spawn("identity"), runs)),
            ("spawn replay: + fork, setreuid, exec, wait", time_calls(spawn("all"), runs)),
            (
                "bare vfork + exec + wait of /bin/true",
                time_calls(partial(subprocess.run, ["/bin/true"]), runs),
            ),
        ]
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="in-process runs per row")
    parser.add_argument("--cli-runs", type=int, default=50, help="process runs per row")
    parser.add_argument("--keys", type=int, default=2000, help="keystrokes per echo row")
    parser.add_argument(
        "--units", action="store_true", help="under systemd: the transient-unit path only"
    )
    parser.add_argument(
        "--in-container", action="store_true", help="boot systemd in a container, run --units there"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes a namespace and compares with `ip netns exec`")
    if args.in_container:
        print(units_in_container(args.runs))
        return
    if args.units:
        with running_sockd('[exec]\nspawn = "unit"\n') as (sock, _):
            Client(sock).ns_create(NS)
            try:
                report(measure_units(sock, args.runs), "transient units")
            finally:
                Client(sock).ns_delete(NS, force=True)
        return
    with running_sockd('[exec]\nspawn = "direct"\n') as (sock, _):
        Client(sock).ns_create(NS)
        try:
            results = measure(sock, args.runs, args.cli_runs)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
            relay = [sys.executable, "-m", "sockctl", "ns", "exec", "-t", NS, "--", "cat"]
            echoes = [
                (
                    "**key echo through sockctl's relay**",
                    echo_delays(relay, {**env, "SOCKD_SOCKET": sock}, args.keys),
                ),
                ("key echo of a pty (cat on the terminal)", echo_delays(["cat"], env, args.keys)),
            ]
        finally:
            Client(sock).ns_delete(NS, force=True)
    report(results, "direct spawn")
    print("\nKeystroke echo through a terminal\n")
    print(
        table(
            ["what", "keys", "median ms", "p99 ms", "max ms"],
            [
                [
                    name,
                    len(t),
                    f"{median(t) * 1e3:.3f}",
                    f"{percentile(t, 0.99) * 1e3:.3f}",
                    f"{max(t) * 1e3:.3f}",
                ]
                for name, t in echoes
            ],
        )
    )


def report(results: list[tuple[str, list[float]]], path: str) -> None:
    reference = median(results[0][1])
    rows = [
        [
            name,
            len(times),
            ms(median(times)),
            ms(percentile(times, 0.9)),
            f"{median(times) / reference:.2f}",
        ]
        for name, times in results
    ]
    system = f"{os.uname().release}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    print(f"`ns exec` of `true`, {path} ({system})\n")
    print(table(["what", "runs", "median ms", "p90 ms", f"x {results[0][0]}"], rows))
    if path != "direct spawn":
        return
    medians = {name: median(times) * 1000 for name, times in results}
    cli = medians["**sockctl ns exec NAME -- true**"]
    start = medians["sockctl --version (start-up)"]
    trip = medians["**Client.exec(NAME, ['true'])**, in-process"]
    print(
        f"\nWhere `sockctl ns exec` spends its {cli:.1f} ms: interpreter and imports "
        f"{start:.1f} (the interpreter alone {medians['python -c pass']:.1f}); the exec round "
        f"trip {trip:.1f}, of which the daemon's spawn (replayed) "
        f"{medians['spawn replay: + fork, setreuid, exec, wait']:.1f} and a bare round trip "
        f"{medians['Client.ping() on a fresh connection']:.1f}; the rest, {cli - start - trip:.1f}, "
        "is the first call's cold path in a fresh interpreter (code run for the first time, "
        "the connection, the environment as JSON; the in-process row is warm)."
    )


if __name__ == "__main__":
    main()
