"""The benchmark report's table reading (bench/report.py): the plot must not depend on one layout."""

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import report

SIZES_DOWN = """
| sockets | sockd ms | sockd -p ms | ss -tan ms | psutil ms |
|---|---|---|---|---|
| 1 000 | 2.1 | 9.0 | 3.5 | 40.2 |
| 10k | 15.0 | 80.1 | 30.0 | 410 |
| 50,000 | 80.5 | 400 | 150.2 | 2 100.5 |
"""

SIZES_ACROSS = """
Socket listing (median of 5)

| method | 1 k | 10 k | 50 k |
|:--|--:|--:|--:|
| sockctl sock list (library) | 2.1 ms | 15.0 ms | 80.5 ms |
| `ss -tan` | 3.5 ms | 30.0 ms | 0.15 s |
| psutil.net_connections | 40.2 | 410 | 2100.5 |
| /proc/net/tcp | 5 | 50 | 250 |
"""

EXPECTED = {
    "sockd": [(1000, 2.1), (10000, 15.0), (50000, 80.5)],
    "ss": [(1000, 3.5), (10000, 30.0), (50000, 150.0)],
    "psutil": [(1000, 40.2), (10000, 410.0), (50000, 2100.5)],
}


def _rounded(series: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    return {tool: [(n, round(ms, 1)) for n, ms in points] for tool, points in series.items()}


def test_listing_series_reads_sizes_down_the_first_column() -> None:
    series = _rounded(report.listing_series(SIZES_DOWN))
    assert series["sockd"] == EXPECTED["sockd"]  # the first sockd column, not `sockd -p`
    assert series["ss"] == [*EXPECTED["ss"][:2], (50000, 150.2)]
    assert series["psutil"] == EXPECTED["psutil"]


def test_listing_series_reads_sizes_across_the_header() -> None:
    assert _rounded(report.listing_series(SIZES_ACROSS)) == EXPECTED


def test_sizes_and_times_in_their_usual_spellings() -> None:
    assert [report.parse_size(c) for c in ("1k", "1 000", "50,000", "2 k sockets", "x")] == [
        1000,
        1000,
        50000,
        2000,
        None,
    ]
    assert [report.parse_ms(c) for c in ("2.5", "1 025 ms", "0.5 s", "-")] == [
        2.5,
        1025.0,
        500.0,
        None,
    ]


def test_no_listing_table_means_no_series() -> None:
    assert report.listing_series("") == {}
    assert report.listing_series("| a | b |\n|---|---|\n| c | d |") == {}


PLAIN = """
load average at the end: 1.23 on 2 CPUs

wall time, ms (median)
N conns |  ss -tan | ss -tanp |   psutil |      lib | lib+proc |      cli
   1000 |      3.5 |     12.0 |     40.2 |      2.1 |     10.0 |     90.0
  10000 |     30.0 |    110.0 |    410.0 |     15.0 |     90.0 |    130.0
  50000 |    150.0 |    600.0 |   2100.5 |     80.5 |    500.0 |    300.0

ratios (wall time)             |    1000 |   10000 |   50000
lib+proc / ss -tanp  (<= 1.0)  |    0.83 |    0.82 |    0.83

CPU time incl. daemon, ms
N conns |  ss -tan | ss -tanp |   psutil |      lib | lib+proc |      cli
   1000 |      1.0 |      2.0 |      3.0 |      4.0 |      5.0 |      6.0
"""


def test_listing_series_reads_a_plain_pipe_layout_and_its_first_table() -> None:
    # bench/socklist.py (issue 4) prints aligned columns without the outer pipes; sockd's first
    # column there is the library call ("lib"), and the wall-time table comes before CPU time.
    assert _rounded(report.listing_series(PLAIN)) == EXPECTED
    assert report.as_markdown(PLAIN).startswith("```")
    assert report.as_markdown(SIZES_DOWN) == SIZES_DOWN.strip()
