"""Daemon memory: RSS when idle and after 100 000 requests (it must not grow with traffic).

Run as root: python bench/rss.py [--requests 100000]
"""

import argparse
import json
import socket
from pathlib import Path

from common import running_sockd, table

REQUESTS = [
    b'{"proto":2,"op":"ping"}',
    b'{"proto":2,"op":"whoami"}',
    b'{"proto":2,"op":"ns.list"}',
    b'{"proto":2,"op":"ns.create","name":"../bad"}',
    b"not json",
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run(requests: int) -> str:
    with running_sockd() as (path, proc):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        sock.send(REQUESTS[0])
        sock.recv(65536)
        idle = rss_kib(proc.pid)
        rows = [["idle (after one ping)", idle, 0]]
        done = 0
        for checkpoint in (requests // 10, requests // 2, requests):
            while done < checkpoint:
                sock.send(REQUESTS[done % len(REQUESTS)])
                while json.loads(sock.recv(65536)).get("more"):
                    pass
                done += 1
            rows.append([f"after {done:,} requests", rss_kib(proc.pid), rss_kib(proc.pid) - idle])
        sock.close()
    return table(["moment", "RSS KiB", "growth KiB"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    print(run(parser.parse_args().requests))
