"""What a bench run measured: rows per workload and peer, notes, targets."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One peer in one workload at one setting (``params``, e.g. ``c=64``).

    ``values`` maps metric names (see :data:`bench.report.METRICS`) to
    numbers; an empty ``values`` with a ``note`` is a peer not measured.
    """

    workload: str
    peer: str
    label: str
    params: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Target:
    """A target of the bench issue, the figure measured, and whether it is met."""

    name: str
    limit: str
    measured: str
    #: "met", "missed" or "not measured"
    status: str


@dataclass
class Results:
    """Everything a run produced, for :mod:`bench.report`."""

    rows: list[Row] = field(default_factory=list)
    #: free lines per workload key
    notes: dict[str, list[str]] = field(default_factory=dict)
    #: peer key -> its description (how it was run)
    peers: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    #: workload -> when and how its figures were measured (``--merge`` keeps
    #: the figures of workloads a run did not measure, with their date)
    measured: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        """Record ``row``."""
        self.rows.append(row)
        return row

    def note(self, workload: str, text: str) -> None:
        """Add a line under ``workload``'s table."""
        self.notes.setdefault(workload, []).append(text)

    def find(self, workload: str, peer: str, params: str) -> Row | None:
        """The row of ``peer`` in ``workload`` at ``params``, if any."""
        for row in self.rows:
            if (row.workload, row.peer, row.params) == (workload, peer, params):
                return row
        return None

    def value(self, workload: str, peer: str, params: str, metric: str) -> float | None:
        """One measured figure, or None."""
        row = self.find(workload, peer, params)
        return None if row is None else row.values.get(metric)

    def save(self, path: Path) -> None:
        """Write what was measured as JSON (``results.json`` beside RESULTS.md)."""
        data = {
            "rows": [asdict(row) for row in self.rows],
            "notes": self.notes,
            "peers": self.peers,
            "measured": self.measured,
            "settings": self.settings,
        }
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    def merge_from(self, path: Path, workloads: Sequence[str]) -> None:
        """Keep, from the run saved at ``path``, the figures of every workload
        this run did not measure (``workloads`` are the ones it did)."""
        data = json.loads(path.read_text())
        ran = set(workloads)

        def kept(key: str) -> bool:
            return owner(key, [*ran, *data.get("measured", {})]) not in ran

        old_rows = [Row(**row) for row in data.get("rows", []) if kept(row["workload"])]
        self.rows[:0] = old_rows
        for key, lines in data.get("notes", {}).items():
            if kept(key):
                self.notes.setdefault(key, list(lines))
        for key, text in data.get("peers", {}).items():
            self.peers.setdefault(key, text)
        for key, when in data.get("measured", {}).items():
            if key not in ran:
                self.measured.setdefault(key, when)
        for key, value in data.get("settings", {}).items():
            self.settings.setdefault(key, value)


#: rows whose workload key names no workload of its own, and the workload
#: that measures them
SUBTABLES = {"oidc": "latency", "latency-py": "latency"}


def owner(key: str, workloads: Iterable[str]) -> str:
    """The workload (of ``workloads``) that measures rows keyed ``key``: the
    same name, the one :data:`SUBTABLES` names, or the longest workload name
    that ``key`` starts with followed by ``-`` (``tunnel-exec`` -> ``tunnel``)."""
    names = set(workloads)
    if key in names:
        return key
    if key in SUBTABLES:
        return SUBTABLES[key]
    prefixes = [w for w in names if key.startswith(w + "-")]
    return max(prefixes, key=len) if prefixes else key
