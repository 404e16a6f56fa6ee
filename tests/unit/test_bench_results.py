"""``python -m bench --merge``: a run of some workloads keeps the others' figures."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ sits beside the package, not in it: reachable at the end of the path
sys.path.append(str(Path(__file__).resolve().parents[2]))

from bench import cli
from bench.results import Results, Row, owner

WORKLOADS = ("latency", "throughput", "tunnel", "fanout", "fanout-watch")


def test_a_row_belongs_to_its_workload_or_the_longest_prefix() -> None:
    assert owner("latency", WORKLOADS) == "latency"
    assert owner("latency-py", WORKLOADS) == "latency"
    assert owner("oidc", WORKLOADS) == "latency"
    assert owner("tunnel-exec", WORKLOADS) == "tunnel"
    assert owner("fanout-watch", WORKLOADS) == "fanout-watch"
    assert owner("fanout-watch-rss", WORKLOADS) == "fanout-watch"
    assert owner("fanout-list", WORKLOADS) == "fanout"


def test_merge_keeps_what_this_run_did_not_measure(tmp_path: Path) -> None:
    old = Results()
    old.add(Row("latency", "karpor-2", "karpor", "c=1", {"p50": 1.0}))
    old.add(Row("latency-py", "karpor-2", "karpor", "", {"p50": 2.0}))
    old.add(Row("tunnel", "karpor-tunnel", "t", "c=1", {"p50": 3.0}))
    old.add(Row("tunnel-exec", "karpor-tunnel", "t", "", {"mbps": 4.0}))
    old.note("tunnel", "an old tunnel note")
    old.note("latency", "an old latency note")
    old.peers = {"karpor-2": "old description", "karpor-tunnel": "tunnel peer"}
    old.measured = {"latency": "day 1 (full)", "tunnel": "day 1 (full)"}
    saved = tmp_path / "results.json"
    old.save(saved)

    new = Results()
    new.add(Row("latency", "karpor-2", "karpor", "c=1", {"p50": 9.0}))
    new.note("latency", "a new latency note")
    new.peers = {"karpor-2": "new description"}
    new.measured = {"latency": "day 2 (full)"}
    new.merge_from(saved, ["latency"])

    assert sorted((r.workload, r.values.get("p50") or r.values.get("mbps")) for r in new.rows) == [
        ("latency", 9.0),
        ("tunnel", 3.0),
        ("tunnel-exec", 4.0),
    ]
    assert new.notes == {"latency": ["a new latency note"], "tunnel": ["an old tunnel note"]}
    assert new.peers == {"karpor-2": "new description", "karpor-tunnel": "tunnel peer"}
    assert new.measured == {"latency": "day 2 (full)", "tunnel": "day 1 (full)"}

    new.save(saved)
    again = Results()
    again.merge_from(saved, [])
    assert len(again.rows) == 3 and again.measured == new.measured


def test_rewrite_writes_the_report_again_from_results_json(tmp_path: Path) -> None:
    saved = Results()
    saved.add(Row("latency", "karpor-2", "karpor, 2 workers", "c=1", {"p50": 0.4321, "rps": 10}))
    saved.measured = {"latency": "day 1 (full)"}
    saved.save(tmp_path / "results.json")
    assert cli.main(["--rewrite", "--out", str(tmp_path), "--no-plots", "--workers", "2"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "nothing measured" in text and "latency: day 1 (full)" in text
    assert "0.43" in text  # the row's p50, in its table
    assert cli.main(["--rewrite", "--out", str(tmp_path / "none"), "--no-plots"]) == 2
