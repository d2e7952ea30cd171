"""Benchmark: `sockctl sock list` against ss and psutil, on N established TCP connections.

    python bench/socklist.py [--sizes 1000,10000,50000] [--repeat 5]

Run as root from the checkout. For each N it builds a fresh network namespace holding N established
loopback TCP connections (2N sockets, both ends inside) plus 200 UNIX sockets, spread over several
holder processes because the open-files limit here is 20 000 and cannot be raised; then it times,
interleaved in the same run (median of --repeat):

- `ss -tan` and `ss -tanp` inside the namespace (nsenter --net; the tools' whole run);
- `psutil.net_connections("tcp")` inside the namespace (the call alone, in a process in it);
- sockd's library call `Client.sock_list(kinds=["tcp"], netns=NAME)` with and without processes
  (connected client: the request and the whole streamed reply, decoded to SockInfo objects), and
  `Client.sock_batches` (the same reply kept as checked columns, no object per socket);
- the same call with processes to a second daemon configured with `process_scan = "proc"`, which
  reads /proc/*/fd as ss and psutil do, where the first uses the kernel's BPF task_file iterator
  when it loads (the table says which it used);
- the whole CLI command `sockctl sock list -t -N NAME [--no-processes]` (start-up included), its
  table written to a pipe like ss's;
- with every socket's tcp_info (`-i`): `ss -tani` beside the library call with `info=True` and
  the CLI's `sock list -t -i --no-processes` (issue 15: <= 1.2x).

The targets (issue 4): with processes <= 1.0 x `ss -tanp`; without <= 1.3 x `ss -tan`;
>= 2.5 x faster than psutil. It also reports the daemon's peak RSS growth (VmHWM after the runs
minus VmRSS before them). Everything it makes (namespaces, holders, the daemon) is removed at the
end, also on Ctrl-C or failure.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import running_sockd  # noqa: E402

from sockctl import Client  # noqa: E402

PER_HOLDER = 9000
"""Connections per holder process: 2 fds each, under the 20 000 open-files limit."""
UNIX_SOCKETS = 200

HOLDER = r"""
import os, socket, sys
n, unix_dir = int(sys.argv[1]), sys.argv[2]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
held = [listener]
address = listener.getsockname()
for i in range(n):
    client = socket.create_connection(address)
    server, _ = listener.accept()
    held += (client, server)
if unix_dir:
    for i in range(50):
        held += socket.socketpair()
    for i in range(50):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        u.bind(os.path.join(unix_dir, f"u{i}.sock"))
        held.append(u)
    for i in range(50):
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.bind(b"\0sockbench-%d-%d" % (os.getpid(), i))
        u.listen()
        held.append(u)
print("ready", flush=True)
sys.stdin.read()
"""

PSUTIL = r"""
import json, sys, time, psutil
times, cpu = [], []
for _ in range(int(sys.argv[1])):
    start, start_cpu = time.perf_counter(), time.process_time()
    count = len(psutil.net_connections("tcp"))
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps({"times": times, "cpu": cpu, "count": count}))
"""


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


class Namespace:
    """A named namespace with N connections held by holder processes."""

    def __init__(self, name: str, connections: int, workdir: Path) -> None:
        self.name = name
        self.holders: list[subprocess.Popen[str]] = []
        run(["ip", "netns", "add", name])
        try:
            self._fill(connections, workdir)
        except BaseException:
            self.close()  # the caller never gets the object: clean up here
            raise

    def _fill(self, connections: int, workdir: Path) -> None:
        name = self.name
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        unix_dir = workdir / name
        unix_dir.mkdir()
        left = connections
        first = True
        while left > 0 or first:
            n = min(left, PER_HOLDER)
            holder = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    sys.executable,
                    "-c",
                    HOLDER,
                    str(n),
                    str(unix_dir) if first else "",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.holders.append(holder)
            left -= n
            first = False
        for holder in self.holders:
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a holder in {name} failed")

    def close(self) -> None:
        for holder in self.holders:
            with contextlib.suppress(OSError):
                holder.kill()
            holder.communicate()
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def cpu_of(pid: int) -> float:
    """User + system CPU seconds a process and its reaped children (the daemon's /proc scan
    helpers) have used (/proc/PID/stat utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], object], daemon_pids: list[int]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of everything involved: this process, its children (the
    tools run as commands) and the daemons. CPU is the steadier number on a shared machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + sum(map(cpu_of, daemon_pids))
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + sum(map(cpu_of, daemon_pids)) - cpu
    cpu += after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return wall, cpu


def command(argv: list[str], env: dict[str, str] | None = None) -> Callable[[], object]:
    def go() -> None:
        # Output goes to a pipe that is read, as a user's terminal or `| grep` would take it.
        subprocess.run(argv, check=True, stdout=subprocess.PIPE, env=env)

    return go


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def bpf_links(pid: int) -> int:
    """How many BPF links a process holds: 1 for a daemon that loaded the task_file iterator."""
    fd_dir = f"/proc/{pid}/fd"
    return sum(os.readlink(f"{fd_dir}/{fd}") == "anon_inode:bpf_link" for fd in os.listdir(fd_dir))


def measure(
    size: int, repeat: int, workdir: Path, daemons: list[tuple[str, int]]
) -> dict[str, float]:
    (sock, daemon_pid), (proc_sock, _) = daemons
    name = f"sockbench-{os.getpid()}-{size}"
    ns = Namespace(name, size, workdir)
    try:
        nsenter = ["nsenter", f"--net=/run/netns/{name}"]
        cli_env = {**os.environ, "PYTHONPATH": str(REPO), "SOCKD_SOCKET": sock}
        sockctl = [sys.executable, "-m", "sockctl", "sock", "list", "-t", "-N", name]
        client = Client(sock, timeout=120)
        proc_client = Client(proc_sock, timeout=120)
        sockets, _ = client.sock_list(kinds=["tcp"], netns=name, processes=False)
        expected = 2 * size + len(ns.holders)  # both ends of each connection, one listener each
        if len(sockets) != expected:
            raise RuntimeError(f"sock_list found {len(sockets)} TCP sockets, expected {expected}")
        del sockets
        for warm_up in (client, proc_client):  # the first listing loads the BPF iterator
            warm_up.sock_list(kinds=["tcp"], netns=name)
        cases: dict[str, Callable[[], object]] = {
            "ss -tan": command([*nsenter, "ss", "-tan"]),
            "ss -tanp": command([*nsenter, "ss", "-tanp"]),
            "ss -tani": command([*nsenter, "ss", "-tani"]),
            "lib -i": lambda: client.sock_list(
                kinds=["tcp"], netns=name, processes=False, info=True
            ),
            "cli -i": command([*sockctl, "--no-processes", "-i"], cli_env),
            "lib sock_list": lambda: client.sock_list(kinds=["tcp"], netns=name, processes=False),
            "lib sock_list +proc": lambda: client.sock_list(kinds=["tcp"], netns=name),
            "lib +/proc": lambda: proc_client.sock_list(kinds=["tcp"], netns=name),
            "lib batches": lambda: client.sock_batches(kinds=["tcp"], netns=name, processes=False),
            "cli sock list": command([*sockctl, "--no-processes"], cli_env),
            "cli sock list +proc": command(sockctl, cli_env),
        }
        walls: dict[str, list[float]] = {key: [] for key in cases}
        cpus: dict[str, list[float]] = {key: [] for key in cases}
        for _ in range(repeat):  # interleaved: background load hits every tool alike
            for key, fn in cases.items():
                wall, cpu = timed(fn, [pid for _, pid in daemons])
                walls[key].append(wall)
                cpus[key].append(cpu)
        psutil_run = json.loads(run([*nsenter, sys.executable, "-c", PSUTIL, str(repeat)]).stdout)
        client.close()
        proc_client.close()
        medians = {key: statistics.median(times) for key, times in walls.items()}
        medians.update({f"cpu {key}": statistics.median(times) for key, times in cpus.items()})
        medians["psutil"] = statistics.median(psutil_run["times"])
        medians["cpu psutil"] = statistics.median(psutil_run["cpu"])
        medians["rss_kib"] = vm(daemon_pid, "VmHWM")
        medians["bpf_links"] = bpf_links(daemon_pid)
        return medians
    finally:
        ns.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="connection counts")
    parser.add_argument("--repeat", type=int, default=5, help="runs per tool and size (median)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates namespaces")
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.exit("psutil is missing: pip install -e '.[test]'")
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="sockbench-"))
    workdir.chmod(0o755)
    rows = []
    first: list[float] = []
    try:
        config = "[policy]\ncreate_groups = []\nmonitor_groups = []\n"
        reading_proc = config + '[sockets]\nprocess_scan = "proc"\n'
        with running_sockd(config) as (sock, proc), running_sockd(reading_proc) as second:
            with Client(sock) as client:
                client.ping()
                base_rss = vm(proc.pid, "VmRSS")
                first = [timed(lambda: client.sock_list(kinds=["unix"]), [proc.pid])[0]]
                first.append(timed(lambda: client.sock_list(kinds=["unix"]), [proc.pid])[0])
            daemons = [(sock, proc.pid), (second[0], second[1].pid)]
            for size in sizes:
                print(f"measuring N = {size} ...", file=sys.stderr, flush=True)
                rows.append((size, measure(size, args.repeat, workdir, daemons)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(rows, base_rss)
    print(
        f"\nthe host's UNIX sockets with processes: first listing {first[0] * 1000:.1f} ms "
        f"(loads the BPF iterator, if it loads), second {first[1] * 1000:.1f} ms"
    )


COLUMNS = [
    ("ss -tan", "ss -tan"),
    ("ss -tanp", "ss -tanp"),
    ("ss -tani", "ss -tani"),
    ("psutil", "psutil"),
    ("lib", "lib sock_list"),
    ("lib+proc", "lib sock_list +proc"),
    ("lib+/proc", "lib +/proc"),
    ("batches", "lib batches"),
    ("cli", "cli sock list"),
    ("cli+proc", "cli sock list +proc"),
    ("lib -i", "lib -i"),
    ("cli -i", "cli -i"),
]
CHECKS = [
    ("lib+proc / ss -tanp  (<= 1.0)", "lib sock_list +proc", "ss -tanp"),
    ("cli+proc / ss -tanp  (<= 1.0)", "cli sock list +proc", "ss -tanp"),
    ("lib+/proc / ss -tanp (<= 1.0)", "lib +/proc", "ss -tanp"),
    ("lib / ss -tan        (<= 1.3)", "lib sock_list", "ss -tan"),
    ("batches / ss -tan    (<= 1.3)", "lib batches", "ss -tan"),
    ("cli / ss -tan        (<= 1.3)", "cli sock list", "ss -tan"),
    ("lib -i / ss -tani    (<= 1.2)", "lib -i", "ss -tani"),
    ("cli -i / ss -tani    (<= 1.2)", "cli -i", "ss -tani"),
    ("psutil / lib+proc    (>= 2.5)", "psutil", "lib sock_list +proc"),
    ("psutil / cli+proc    (>= 2.5)", "psutil", "cli sock list +proc"),
]


def report(rows: list[tuple[int, dict[str, float]]], base_rss: int) -> None:
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    how = "the BPF task_file iterator" if rows and rows[-1][1]["bpf_links"] else "/proc/*/fd"
    print(f"+proc: processes found with {how}; +/proc: with /proc/*/fd (process_scan = proc)")
    for title, prefix in (("wall time, ms (median)", ""), ("CPU time incl. daemon, ms", "cpu ")):
        print(f"\n{title}")
        print("N conns | " + " | ".join(f"{name:>8}" for name, _ in COLUMNS))
        for size, m in rows:
            cells = " | ".join(f"{m[prefix + key] * 1000:8.1f}" for _, key in COLUMNS)
            print(f"{size:7d} | {cells}")
        print(
            f"\nratios ({title.split(',')[0]})" + " " * 9 + " | ".join(f"{s:>7d}" for s, _ in rows)
        )
        for label, a, b in CHECKS:
            print(
                f"{label:<31}| "
                + " | ".join(f"{m[prefix + a] / m[prefix + b]:7.2f}" for _, m in rows)
            )
    print()
    for size, m in rows:
        growth = (m["rss_kib"] - base_rss) / 1024
        print(
            f"daemon peak RSS after N = {size}: {m['rss_kib'] / 1024:.1f} MiB "
            f"(+{growth:.1f} MiB over {base_rss / 1024:.1f} MiB idle)"
        )


if __name__ == "__main__":
    main()
