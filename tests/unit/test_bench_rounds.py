"""The bench's request/response rounds (bench/reqresp.py): every peer runs
once per round at each concurrency, the order rotated each round, and the
rows hold the medians of the rounds; the Python client's peers take turns
the same way, each on its one kept connection."""

from __future__ import annotations

import http.server
import sys
import threading
from pathlib import Path
from typing import ClassVar

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


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    #: (port, Authorization header) of every request, in order
    seen: ClassVar[list[tuple[int, str]]] = []

    def do_GET(self) -> None:
        port = self.connection.getsockname()[1]
        self.seen.append((port, self.headers.get("Authorization", "")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_python_client_interleaves_the_peers_on_kept_connections() -> None:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ports = [server.server_address[1] for server in servers]
        peers = [
            Peer("a", "a", ports[0], "/", None, token="sesame"),
            Peer("b", "b", ports[1], "/", None),
            Peer("gone", "gone", 0, "", None, unavailable="not installed"),
        ]
        _KeepAlive.seen.clear()
        results = Results()
        reqresp.python_latency(results, peers, 40, chunk=10)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    measured = _KeepAlive.seen[8:]  # after the warm-up (a tenth of the requests each)
    # rounds of 10 requests, the peers' order rotated each round
    turns = [measured[i][0] for i in range(0, len(measured), 10)]
    assert turns == [ports[0], ports[1], ports[1], ports[0], ports[0], ports[1], ports[1], ports[0]]
    assert {auth for port, auth in measured if port == ports[0]} == {"Bearer sesame"}
    rows = {row.peer: row for row in results.rows}
    assert set(rows) == {"a", "b"}
    # every measured request went over the warm-up's connection
    assert rows["a"].values["connections"] == 0 and rows["b"].values["connections"] == 0
    assert "cpu_us" not in rows["a"].values  # no process of the bench's own to count
