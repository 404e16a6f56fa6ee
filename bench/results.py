"""What a bench run measured: rows per workload and peer, notes, targets."""

from __future__ import annotations

from dataclasses import dataclass, field


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
