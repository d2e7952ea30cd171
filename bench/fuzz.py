"""Coverage-guided fuzzing of every parser of untrusted bytes, then line coverage of what it reached.

    python bench/fuzz.py [--inputs 1000000] [--corpus DIR] [--output FILE]

One libFuzzer target (atheris, instrumenting only sockd and sockctl) whose first byte picks what the
rest of the input goes through:

- ``request``: the daemon's request path in-process (``Daemon.prepare`` as root; ``Daemon.handle`` as
  a uid outside every group, so mutating operations stop at the policy and read-only ones run) on a
  private, empty netns and state directory;
- ``wire``: ``_wire.recv`` on a real SEQPACKET socketpair, with 0 to MAX_FDS + 2 descriptors attached;
- ``reply``: the client's reply decoder (``Client._read_reply``) for one operation, fed the input split
  into datagrams, as a daemon that breaks the contract would send them.

Invariants (a violation is a crash and fails the run): the daemon answers every input with well-formed
envelopes and never ``internal_error``; every refusal is a :class:`sockctl.errors.RequestError` with
a stable code; ``_wire.recv`` returns the datagram or raises a named error and leaks no descriptor; the
client raises nothing but :class:`sockctl.errors.SockdError`.

The seed corpus is every operation's valid requests, generated from ``protocol.OPERATIONS`` by
``tests/strategies.py``; libFuzzer adds what reaches new code. Afterwards the corpus is replayed under
coverage.py and the line coverage of the request path is printed with the number of inputs run.
Without atheris (``pip install atheris coverage``) the same target runs on hypothesis-generated
inputs (not coverage-guided). Exits non-zero on any crash.
"""

import argparse
import array
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sockd.daemon import Message

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODULES = [
    "sockd/daemon.py",
    "sockd/dispatch.py",
    "sockd/policy.py",
    "sockctl/_wire.py",
    "sockctl/protocol.py",
    "sockctl/errors.py",
    "sockctl/schema.py",
    "sockctl/_client.py",
]
"""The request path (and the client's reply path), whose line coverage is reported."""

TARGETS = ("request", "wire", "reply")


class Harness:
    """The fuzz target and its fixtures (an in-process daemon, a socketpair)."""

    def __init__(self, scratch: str) -> None:
        from sockctl import protocol
        from sockd.config import Config
        from sockd.daemon import Daemon
        from sockd.linux import Credentials
        from sockd.log import Logger
        from sockd.policy import Peer
        from tests.conftest import DEFAULT_CONFIG, OUTSIDER

        self.ops = sorted(protocol.OPERATIONS)
        self.daemon = Daemon(
            Config.model_validate(tomllib.loads(DEFAULT_CONFIG)),
            config_path=None,
            state_dir=os.path.join(scratch, "state"),
            log=Logger("stderr", "error", stream=io.StringIO()),
            netns_dir=os.path.join(scratch, "netns"),
        )
        self.root = Peer(Credentials(os.getpid(), 0, 0, (), None))
        self.stranger = Peer(Credentials(os.getpid(), OUTSIDER[0], OUTSIDER[1], (), None))
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.a.setblocking(False)
        self.b.setblocking(False)
        self.pipe = os.pipe()
        # The connection sessions (ns.exec) read follow-ups from; nothing is sent on it.
        self.channel, self.channel_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.runs = 0

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        if not data:
            return
        target = TARGETS[data[0] % len(TARGETS)]
        if target == "request":
            self.request(data[1:])
        elif target == "wire":
            self.wire(data[1:])
        else:
            self.reply(data[1:])

    def request(self, data: bytes) -> None:
        from sockctl.errors import ERROR_CLASSES
        from sockctl.protocol import MAX_MESSAGE, OPERATIONS, ErrorCode

        prepared = self.daemon.prepare(self.root, data, [])
        if prepared.error is not None:
            error = prepared.error
            assert type(error) in ERROR_CLASSES.values(), repr(error)
            assert error.code is not ErrorCode.INTERNAL_ERROR, repr(error)
        elif not OPERATIONS[prepared.op or ""].mutating:
            self._check_replies(self.daemon.execute(self.root, prepared, self.channel))
        self._check_replies(self.daemon.handle(self.stranger, data, [], self.channel))
        assert len(data) <= MAX_MESSAGE or prepared.error is not None

    @staticmethod
    def _check_replies(replies: "Iterator[Message]") -> None:
        from sockctl import _wire
        from sockctl.protocol import MAX_MESSAGE, ErrorInfo, from_wire

        last: dict[str, Any] = {"more": True}
        for message in replies:
            assert last.get("more") is True, "a reply after the last part"
            assert len(message.payload) <= MAX_MESSAGE
            _wire.close_all(list(message.fds))
            last = json.loads(message.payload)
            if last["ok"] is not True:
                error = from_wire(ErrorInfo, last["error"])
                assert error.code != "internal_error", last
        assert last.get("more") is not True, "a listing without its last part"

    def wire(self, data: bytes) -> None:
        from sockctl import _wire
        from sockctl.errors import InvalidRequest, MessageTooLarge
        from sockctl.protocol import MAX_FDS

        nfds = data[0] % (MAX_FDS + 3) if data else 0
        payload = data[1:]
        fds = array.array("i", [self.pipe[1]] * nfds).tobytes()
        try:
            self.a.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if nfds else [])
        except BlockingIOError:
            return
        try:
            received, got = _wire.recv(self.b)
        except MessageTooLarge:
            return
        except InvalidRequest as exc:
            assert exc.field == "fds" and nfds > MAX_FDS, repr(exc)
            return
        assert received == payload and len(got) == nfds
        _wire.close_all(got)

    def reply(self, data: bytes) -> None:
        from sockctl import Client, SockdError, _wire
        from sockctl.protocol import OPERATIONS

        if not data:
            return
        operation = OPERATIONS[self.ops[data[0] % len(self.ops)]]
        if operation.follow_ups:
            return  # a session's replies are read by its handle (Client.exec), not _read_reply
        for datagram in data[1:].split(b"\x1e")[:8]:
            with contextlib.suppress(BlockingIOError):
                self.a.send(datagram)
        self.a.send(b"")  # an empty datagram reads as the end of the stream
        client = Client("/nonexistent", timeout=1)
        with contextlib.suppress(SockdError):
            _wire.close_all(client._read_reply(self.b, operation)[2])
        while True:  # whatever the decoder left unread
            try:
                self.b.recv(1 << 17)
            except BlockingIOError:
                break


def seeds() -> list[bytes]:
    """Valid requests of every operation (as ``request`` inputs), plus one seed per other target."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import NonInteractiveExampleWarning

    from sockctl.protocol import OPERATIONS
    from tests.strategies import mutated_request, valid_request

    found: list[bytes] = []
    for op in sorted(OPERATIONS):
        for strategy in (valid_request(op), mutated_request(op)):

            @settings(max_examples=10, database=None, suppress_health_check=list(HealthCheck))
            @given(strategy)
            def collect(case: Any) -> None:
                found.append(b"\x00" + case.encode())

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                collect()
    found.append(b"\x01\x02" + b'{"proto":2,"op":"ping"}')
    found.append(b"\x02\x00" + b'{"ok":true,"more":true,"items":[]}\x1e{"ok":true,"more":false}')
    return found


# Running ----------------------------------------------------------------------------------------


def fuzz_worker(corpus: str, inputs: int, max_len: int, crashes: str) -> None:
    """Runs inside a child: libFuzzer exits the process when it is done."""
    import atheris

    with atheris.instrument_imports(include=["sockd", "sockctl"]):
        import sockctl._client  # noqa: F401
        import sockd.daemon  # noqa: F401
    scratch = tempfile.mkdtemp(prefix="sockd-fuzz-")
    harness = Harness(scratch)
    atheris.Setup(
        [
            *(sys.argv[0], f"-runs={inputs}", f"-max_len={max_len}", "-print_final_stats=1"),
            f"-artifact_prefix={crashes}/",  # the crashing input, kept for the report
            corpus,
        ],
        harness,
    )
    atheris.Fuzz()


def fuzz_with_atheris(corpus: str, inputs: int, max_len: int) -> tuple[int, int, str]:
    """(inputs run, crashes, libFuzzer's last lines)."""
    crashes = tempfile.mkdtemp(prefix="sockd-fuzz-crashes-")
    proc = subprocess.run(
        [
            *(sys.executable, __file__, "--worker", "--corpus", corpus, "--crashes", crashes),
            *("--inputs", str(inputs), "--max-len", str(max_len)),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    done = re.findall(r"Done (\d+) runs", proc.stderr)
    crashed = proc.returncode != 0 or "Uncaught Python exception" in proc.stderr
    tail = "\n".join(proc.stderr.strip().splitlines()[-40 if crashed else -6 :])
    if crashed:
        tail += f"\n(the crashing input is in {crashes})"
    else:
        shutil.rmtree(crashes, ignore_errors=True)
    return (int(done[-1]) if done else 0), int(crashed), tail


def fuzz_with_hypothesis(corpus: str, inputs: int) -> tuple[int, int, str]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from sockctl.protocol import OPERATIONS
    from tests.strategies import JSON, mutated_request, valid_request

    scratch = tempfile.mkdtemp(prefix="sockd-fuzz-")
    harness = Harness(scratch)
    requests = st.sampled_from(sorted(OPERATIONS)).flatmap(
        lambda op: valid_request(op) | mutated_request(op)
    )
    payloads = st.binary(max_size=2048) | requests.map(lambda c: c.encode())
    payloads |= JSON.map(lambda v: json.dumps(v).encode())

    @settings(
        max_examples=inputs, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.integers(0, 255), payloads)
    def run(selector: int, payload: bytes) -> None:
        data = bytes([selector]) + payload
        harness(data)
        if harness.runs % 97 == 0:
            Path(corpus, f"h{harness.runs}").write_bytes(data)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 -- reported as the crash it is
        return harness.runs, 1, repr(exc)
    return harness.runs, 0, "hypothesis (atheris not installed: not coverage-guided)"


def coverage_of(corpus: str) -> list[tuple[str, int, int]]:
    """Replays the corpus under coverage.py: (module, lines run, lines) for each of MODULES."""
    import coverage

    cov = coverage.Coverage(data_file=None, include=[str(REPO / m) for m in MODULES], branch=False)
    cov.start()
    try:
        for module in list(sys.modules):
            if module.startswith(("sockd", "sockctl")):
                del sys.modules[module]  # re-import under the tracer, so definitions count
        harness = Harness(tempfile.mkdtemp(prefix="sockd-fuzz-"))
        for path in sorted(Path(corpus).iterdir()):
            with contextlib.suppress(AssertionError):  # counted as crashes by the fuzz run itself
                harness(path.read_bytes())
    finally:
        cov.stop()
    rows = []
    for module in MODULES:
        _, statements, _, missing, _ = cov.analysis2(str(REPO / module))
        rows.append((module, len(statements) - len(missing), len(statements)))
    return rows


def run(inputs: int, corpus: str | None = None, max_len: int = 4096) -> tuple[str, int]:
    """Fuzz, then measure coverage; (markdown report, crashes)."""
    own = corpus is None
    corpus = corpus or tempfile.mkdtemp(prefix="sockd-fuzz-corpus-")
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(seeds()):
        Path(corpus, f"seed{i:04d}").write_bytes(seed)
    try:
        import atheris  # noqa: F401

        engine = "atheris (libFuzzer), coverage-guided"
        start = time.monotonic()
        runs, crashes, tail = fuzz_with_atheris(corpus, inputs, max_len)
    except ImportError:
        engine = "hypothesis (atheris not installed)"
        start = time.monotonic()
        runs, crashes, tail = fuzz_with_hypothesis(corpus, inputs)
    seconds = time.monotonic() - start
    corpus_size = len(os.listdir(corpus))
    try:
        rows = coverage_of(corpus)
    finally:
        if own:
            shutil.rmtree(corpus, ignore_errors=True)
    covered = sum(r[1] for r in rows)
    total = sum(r[2] for r in rows)
    lines = [
        f"Engine: {engine}; Python {sys.version.split()[0]}.",
        "",
        "| inputs run | crashes | seconds | inputs/s | corpus |",
        "|---|---|---|---|---|",
        f"| {runs:,} | {crashes} | {seconds:.0f} | {runs / max(seconds, 1e-9):,.0f} | {corpus_size} |",
        "",
        "| module (request path) | lines run | lines | coverage |",
        "|---|---|---|---|",
        *(f"| `{m}` | {c} | {t} | {100 * c / t:.0f} % |" for m, c, t in rows),
        f"| **all** | {covered} | {total} | {100 * covered / total:.0f} % |",
    ]
    if crashes:
        lines += ["", "```", tail, "```"]
    return "\n".join(lines), crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--corpus", help="keep the corpus here (default: a temporary directory)")
    parser.add_argument("--max-len", type=int, default=4096, help="libFuzzer's -max_len")
    parser.add_argument("--output", help="also write the report to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--crashes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fuzz_worker(args.corpus, args.inputs, args.max_len, args.crashes)
        return
    report, crashes = run(args.inputs, args.corpus, args.max_len)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
