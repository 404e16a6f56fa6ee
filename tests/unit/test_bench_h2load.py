"""h2load's summary, as workload 9 (``bench/h2work.py``) reads it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ sits beside the package, not in it: reachable at the end of the path
sys.path.append(str(Path(__file__).resolve().parents[2]))

from bench.h2work import parse_h2load

OUTPUT = """starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 4s of main duration
Application protocol: h2
finished in 4.00s, 1234.50 req/s, 5.12MB/s
requests: 4938 total, 5066 started, 4938 done, 4930 succeeded, 8 failed, 0 errored, 0 timeout
status codes: 4930 2xx, 0 3xx, 8 4xx, 0 5xx
traffic: 20.48MB (21474836) total, 1.02MB (1069548) headers (space savings 94.12%)
                     min         max         mean         sd        +/- sd
time for request:      465us     30.05ms    812us      3.13ms    71.08%
"""


def test_summary_figures() -> None:
    result = parse_h2load(OUTPUT)
    assert (result.done, result.succeeded, result.ok_2xx) == (4938, 4930, 4930)
    assert result.duration_s == pytest.approx(4.0)
    assert result.rps == pytest.approx(1234.5)
    assert result.mean_ms == pytest.approx(0.812)


def test_no_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no summary"):
        parse_h2load("could not connect to address 127.0.0.1:1\n")
