"""The bench's request/response rounds (bench/reqresp.py): every peer runs
once per round at each concurrency, the order rotated each round, and the
rows hold the medians of the rounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ sits beside the package, not in it: reachable at the end of the path
# (karpor itself still comes from where the test run installed it)
sys.path.append(str(Path(__file__).resolve().parents[2]))

from bench import reqresp, wrk
from bench.peers import Peer
from bench.results import Results


def _result(rps: float, p50: float) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=int(rps),
        duration_s=1.0,
        errors=0,
        non_2xx=0,
        timeouts=0,
        percentiles_ms={50.0: p50, 99.0: p50 * 2},
    )


def test_rounds_alternate_the_peers_and_report_medians(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = [Peer(key, key, 1, "/", None) for key in ("a", "b", "c")]
    peers.append(Peer("gone", "gone", 1, "/", None, unavailable="not installed"))
    # a's rounds: 100, 300, 200 req/s; b's: 10, 30, 20; c's: 1, 3, 2
    speeds = {"a": iter([100, 300, 200]), "b": iter([10, 30, 20]), "c": iter([1, 3, 2])}
    order: list[tuple[str, int]] = []

    def run(binary: str, url: str, script: Path, c: int, duration: float) -> wrk.WrkResult:
        key = script.stem.removeprefix("wrk-")
        if duration == 1 and c == 16:  # the warm-up
            return _result(1, 1)
        order.append((key, c))
        rps = next(speeds[key])
        return _result(rps, 1000 / rps)

    monkeypatch.setattr(wrk, "run", run)
    results = Results()
    reqresp.measure_peers(
        results, "wrk", tmp_path, peers, [64], 4.0, [reqresp.THROUGHPUT], rounds=3
    )
    # each round runs every available peer once, starting one further each time
    assert [key for key, _ in order] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    rows = {row.peer: row for row in results.rows}
    assert rows["a"].values["rps"] == 200 and rows["b"].values["rps"] == 20
    assert rows["c"].values["p50"] == pytest.approx(500)
    assert rows["a"].values["requests"] == 600
    assert rows["gone"].note == "not installed" and not rows["gone"].values
