"""Round trips per second of `ping`, 1 and 8 concurrent clients: sockd vs a C SEQPACKET echo server.

Both servers are driven by the same raw-socket client processes (one JSON datagram out, one in), so
the ratio is the servers' difference. Run as root: python bench/transport.py [--seconds 3]
"""

import argparse
import multiprocessing
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common import percentile, running_sockd, table

PING = b'{"proto":2,"op":"ping"}'


def _client(path: str, seconds: float, queue: "multiprocessing.Queue[list[float]]") -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    latencies = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        sock.send(PING)
        sock.recv(65536)
        latencies.append(time.perf_counter() - start)
    sock.close()
    queue.put(latencies)


def measure(path: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """(round trips/s, p50 ms, p99 ms)."""
    queue: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_client, args=(path, seconds, queue)) for _ in range(clients)
    ]
    for p in procs:
        p.start()
    latencies: list[float] = []
    for _ in procs:
        latencies.extend(queue.get())
    for p in procs:
        p.join()
    return (
        len(latencies) / seconds,
        percentile(latencies, 0.5) * 1e3,
        percentile(latencies, 0.99) * 1e3,
    )


def c_server(directory: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = directory / "echo"
    subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(Path(__file__).with_name("echo.c"))], check=True
    )
    path = str(directory / "echo.sock")
    proc = subprocess.Popen([str(binary), path], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return path, proc


def run(seconds: float) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_sockd() as (sockd_path, _):
        echo_path, echo = c_server(Path(tmp))
        try:
            for clients in (1, 8):
                c_rate, c_p50, c_p99 = measure(echo_path, clients, seconds)
                s_rate, s_p50, s_p99 = measure(sockd_path, clients, seconds)
                rows.append(
                    [
                        clients,
                        f"{c_rate:,.0f}",
                        f"{s_rate:,.0f}",
                        f"{s_rate / c_rate:.2f}",
                        f"{c_p50:.3f} / {c_p99:.3f}",
                        f"{s_p50:.3f} / {s_p99:.3f}",
                    ]
                )
        finally:
            echo.terminate()
            echo.wait()
    return table(
        ["clients", "C echo rt/s", "sockd rt/s", "ratio", "C p50/p99 ms", "sockd p50/p99 ms"], rows
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    print(run(parser.parse_args().seconds))
