"""wrk: the request/response load generator, and the parsing of what it reports.

A Lua script adds the peer's headers and, in wrk's ``done()`` hook, prints
one line ``BENCH-JSON {...}`` with the request count, the duration, the
errors and the latency percentiles (microseconds), read by :func:`parse`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PERCENTILES = (50.0, 90.0, 99.0, 99.9)

_DONE = """
done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 90, 99, 99.9}) do
    table.insert(p, string.format('"%g":%d', q, latency:percentile(q)))
  end
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"mean_us":%f,"max_us":%d,"percentiles_us":{%s}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency.mean, latency.max, table.concat(p, ",")))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    errors: int
    non_2xx: int
    timeouts: int
    percentiles_ms: dict[float, float]

    @property
    def rps(self) -> float:
        """Requests per second (successful or not)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> bool:
        """Whether most requests succeeded."""
        return self.requests > 0 and (self.errors + self.non_2xx) <= self.requests * 0.01


def find_wrk() -> str | None:
    """The wrk binary, if installed."""
    return shutil.which("wrk")


def lua_script(path: Path, headers: dict[str, str]) -> Path:
    """Write the Lua script adding ``headers`` and the ``done()`` reporter."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + _DONE)
    path.chmod(0o600)  # it may hold a token
    return path


def parse(output: str) -> WrkResult:
    """The result in wrk's output (the ``BENCH-JSON`` line); ValueError if absent."""
    for line in output.splitlines():
        if line.startswith("BENCH-JSON "):
            data = json.loads(line[len("BENCH-JSON ") :])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=int(data["duration_us"]) / 1e6,
                errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
                non_2xx=int(data["status"]),
                timeouts=int(data["timeout"]),
                percentiles_ms={
                    float(q): int(v) / 1000.0 for q, v in data["percentiles_us"].items()
                },
            )
    raise ValueError("wrk printed no BENCH-JSON line:\n" + output[-2000:])


def run(
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration: float,
    threads: int = 2,
    timeout_s: int = 5,
) -> WrkResult:
    """One wrk run; bounded by ``duration`` (plus a margin for the process)."""
    threads = max(1, min(threads, connections))
    seconds = max(1, round(duration))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise ValueError(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse(done.stdout)
