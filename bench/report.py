"""Every benchmark of the project in one run, into one markdown report and a plot.

    sudo python bench/report.py [--quick] [--output bench/RESULTS.md] [--plot bench/socklist.png]

Runs each ``bench/<name>.py`` that exists (transport, cli, churn, rss, links, socklist, exec) as its
own process; each measures sockd and the comparison tools in the same run and prints its tables.
Collects them, with the machine they ran on, into ``--output``; and draws the
socket-listing times against N for sockd, ``ss`` and psutil (from the socklist table) into ``--plot``
(matplotlib, from the ``bench`` extra; without it the report says so and has no plot). The latest
fuzzing report (``bench/FUZZ.md``, written by ``make fuzz``) is appended when present.

A benchmark added later needs one entry in ``BENCHMARKS`` (its title and its ``--quick`` flags).
``--quick`` uses small budgets: a smoke test, not numbers to quote.
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))


@dataclass(frozen=True)
class Benchmark:
    module: str
    title: str
    quick: tuple[str, ...] = ()
    """Command-line arguments of ``--quick`` (the full report runs each script's defaults)."""


BENCHMARKS = [
    Benchmark(
        "transport",
        "Transport: ping round trips, sockd vs a C epoll echo server",
        ("--seconds", "0.5"),
    ),
    Benchmark("cli", "CLI: whole-command time vs `ip netns list`", ("--runs", "5")),
    Benchmark("churn", "Namespace churn: create + delete vs `ip netns add/del`", ("--pairs", "20")),
    Benchmark("rss", "Daemon memory under traffic", ("--requests", "5000")),
    Benchmark(
        "links",
        "Links: veth make + remove vs iproute2 (and pyroute2 when given)",
        ("--cycles", "10", "--cli-cycles", "3"),
    ),
    Benchmark(
        "socklist",
        "Socket listing at 1k / 10k / 50k connections vs ss and psutil",
        ("--sizes", "1000,4000", "--repeat", "2"),
    ),
    Benchmark("exec", "ns exec vs `ip netns exec`", ("--runs", "20", "--cli-runs", "5")),
]
"""In report order. Missing scripts (built by other issues) are noted, not fatal."""

LISTING = "socklist"
TOOLS = ("sockd", "ss", "psutil")


def run_all(quick: bool) -> list[tuple[Benchmark, str | None, float]]:
    """(benchmark, what it printed or None when the script does not exist, seconds).

    Each script runs as its own process, as a person runs it: its tables are what it prints, its
    progress goes to our stderr, and one that fails leaves the others their numbers.
    """
    done: list[tuple[Benchmark, str | None, float]] = []
    for bench in BENCHMARKS:
        script = BENCH / f"{bench.module}.py"
        if not script.exists():
            done.append((bench, None, 0.0))
            continue
        argv = [sys.executable, str(script), *(bench.quick if quick else ())]
        print(f"== {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        start = time.monotonic()
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
        )
        text = proc.stdout
        if proc.returncode != 0:
            text = f"**failed** (exit {proc.returncode}; its error is on the report's stderr)\n\n{text}"
        done.append((bench, text, time.monotonic() - start))
    return done


def as_markdown(text: str) -> str:
    """Output made of markdown tables stays as is; a plain-text layout goes into a code block."""
    lines = [line for line in text.strip().splitlines() if "|" in line]
    if all(line.lstrip().startswith("|") for line in lines):
        return text.strip()
    return f"```\n{text.strip()}\n```"


# The listing plot -------------------------------------------------------------------------------------


def parse_size(cell: str) -> int | None:
    """``1k``, ``10 000``, ``50,000``, ``1 k sockets`` -> the number; None if it is not one."""
    match = re.fullmatch(r"\s*([0-9][0-9 ,_.]*)\s*([kKmM]?)\b.*", cell)
    if not match:
        return None
    digits = re.sub(r"[ ,_]", "", match.group(1))
    try:
        value = float(digits)
    except ValueError:
        return None
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    return int(value * scale)


def parse_ms(cell: str) -> float | None:
    """The first number of a cell, in milliseconds (a cell in seconds says ``s``)."""
    match = re.search(r"([0-9][0-9 ,]*(?:\.[0-9]+)?)\s*(ms|s\b)?", cell)
    if not match:
        return None
    value = float(re.sub(r"[ ,]", "", match.group(1)))
    return value * 1000 if match.group(2) == "s" else value


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table in ``text``: rows of cells (the header row first, the rule dropped).

    Markdown tables, and plain ``a | b | c`` layouts without the outer pipes.
    """
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3:
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def tool_of(label: str) -> str | None:
    """Which compared tool a row or column label names (``sockd``, ``ss`` or ``psutil``).

    sockd's rows may say ``sockd``, ``sockctl``, or how it was called (``lib``, ``cli``).
    """
    lower = label.lower()
    if "/" in lower:
        return None  # a ratio of two tools
    if "psutil" in lower:
        return "psutil"
    if re.search(r"sockd|sockctl|^lib|^cli|^batches", lower):
        return "sockd"
    if re.search(r"(^|[^a-z])ss([^a-z]|$)", lower):
        return "ss"
    return None


@dataclass
class Series:
    """One tool's listing times: where it came from (row or column label), and (N, ms) points."""

    label: str
    points: list[tuple[int, float]]


def listing(text: str) -> tuple[dict[str, Series], str]:
    """Each tool's series from a socklist table in either orientation, and what N counts.

    Sizes down the first column and tools across (``| N | sockd ms | ss ms | psutil ms |``), or
    tools down and sizes across (``| method | 1 k | 10 k | 50 k |``). When a tool has several rows
    or columns (``lib`` and ``lib+proc``), the first one counts.
    """
    found: dict[str, Series] = {}
    unit = "N"
    for table in markdown_tables(text):
        header, rows = table[0], table[1:]
        sizes_across = [parse_size(c) for c in header[1:]]
        if sizes_across and all(s is not None for s in sizes_across):
            for row in rows:
                tool = tool_of(row[0])
                if tool is None or tool in found:
                    continue
                cells = zip(sizes_across, row[1:], strict=False)
                points = [
                    (n, ms) for n, c in cells if n is not None and (ms := parse_ms(c)) is not None
                ]
                found[tool] = Series(row[0], points)
            continue
        columns: dict[str, int] = {}  # each tool's first column
        for i, label in enumerate(header[1:], start=1):
            tool = tool_of(label)
            if tool is not None and tool not in found:
                columns.setdefault(tool, i)
        for row in rows:
            n = parse_size(row[0])
            for tool, i in columns.items():
                ms = parse_ms(row[i]) if n is not None and i < len(row) else None
                if n is not None and ms is not None:
                    found.setdefault(tool, Series(header[i], [])).points.append((n, ms))
                    unit = header[0] or unit
    return {tool: Series(s.label, sorted(s.points)) for tool, s in found.items() if s.points}, unit


def listing_series(text: str) -> dict[str, list[tuple[int, float]]]:
    """Time (ms) against N for each tool (see :func:`listing`)."""
    return {tool: series.points for tool, series in listing(text)[0].items()}


def plot(series: dict[str, Series], unit: str, path: Path, subtitle: str) -> str | None:
    """Draw the series (log-log); None on success, else why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install -e '.[bench]'`, or `make bench-report`)"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for tool in TOOLS:
        if tool in series:
            xs, ys = zip(*series[tool].points, strict=True)
            label = series[tool].label.strip("`* ")
            ax.plot(xs, ys, marker="o", label=tool if label == tool else f"{tool} ({label})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("time to list, ms (median)")
    ax.set_title(f"Socket listing time vs N\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# The report -----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}"
    )


def report(
    results: list[tuple[Benchmark, str | None, float]],
    plot_path: Path,
    output: Path,
    quick: bool,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmark results",
        "",
        f"Measured {when} on {machine()}, by `python bench/report.py`"
        + (" --quick (small budgets: not numbers to quote)" if quick else "")
        + ". Every table compares sockd with the tool it replaces, measured in the same run.",
        "",
    ]
    for bench, text, seconds in results:
        lines.append(f"## {bench.title}")
        lines.append("")
        if text is None:
            lines.append(f"`bench/{bench.module}.py` is not in this checkout yet.")
        else:
            flags = " ".join(bench.quick) if quick else ""
            lines.append(
                f"`python bench/{bench.module}.py {flags}`".replace(" `", "`")
                + f" ({seconds:.0f} s)"
            )
            lines.append("")
            lines.append(as_markdown(text))
        if bench.module == LISTING:
            lines.append("")
            series, unit = listing(text or "")
            missing = [t for t in TOOLS if t not in series]
            if text is None:
                why: str | None = "no socklist benchmark yet"
            elif missing:
                why = f"the socklist table has no {', '.join(missing)} series"
            else:
                why = plot(series, unit, plot_path, machine())
            if why is None:
                relative = os.path.relpath(plot_path, output.parent)
                lines.append(f"![socket listing time vs N]({relative})")
            else:
                lines.append(f"(No plot: {why}.)")
        lines.append("")
    fuzz = BENCH / "FUZZ.md"
    if fuzz.exists():
        lines += [
            "## Fuzzing (`make fuzz`: `python bench/fuzz.py --inputs 1000000`)",
            "",
            fuzz.read_text().strip(),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a smoke test)")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=BENCH / "socklist.png")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmarks make namespaces, veths and a daemon")
    results = run_all(args.quick)
    text = report(results, args.plot, args.output, args.quick)
    args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
