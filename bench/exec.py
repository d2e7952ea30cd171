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

    python bench/exec.py [--runs 200] [--cli-runs 50]
"""

import argparse
import os
import subprocess
import sys
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
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes a namespace and compares with `ip netns exec`")
    with running_sockd() as (sock, _):
        Client(sock).ns_create(NS)
        try:
            results = measure(sock, args.runs, args.cli_runs)
        finally:
            Client(sock).ns_delete(NS, force=True)
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
    print(f"`ns exec` of `true` ({system})\n")
    print(table(["what", "runs", "median ms", "p90 ms", "x ip netns exec"], rows))
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
