"""Reading tables by column name: a ``meta.k8s.io/v1`` Table's JSON, and
kubectl's printed table.

Tests read cells by column name, never by position, so that a column added
(or moved between ``-o wide`` and the default) breaks no test that does not
look at it.
"""

from __future__ import annotations

import re
from typing import Any


def table_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a Table document as ``{column name: cell}``."""
    names = [column["name"] for column in table["columnDefinitions"]]
    return [dict(zip(names, row["cells"], strict=True)) for row in table["rows"]]


def printed_columns(header: str) -> list[str]:
    """The column names of kubectl's header line (``DISPLAY NAME`` is one:
    columns are at least two spaces apart)."""
    return re.split(r"\s{2,}", header.strip())


def printed_row(header: str, line: str, spaced: str = "DISPLAY NAME") -> dict[str, str]:
    """One printed row as ``{COLUMN: cell}``.

    The cells are split on whitespace (watch lines are not aligned to the
    header); only the cell of column ``spaced`` may hold spaces (a display
    name): it takes the words the others leave.
    """
    names = printed_columns(header)
    cells = line.split()
    extra = len(cells) - len(names)
    if extra > 0 and spaced in names:
        at = names.index(spaced)
        cells = [*cells[:at], " ".join(cells[at : at + extra + 1]), *cells[at + extra + 1 :]]
    if len(cells) != len(names):
        raise AssertionError(f"{len(cells)} cells for columns {names}: {line!r}")
    return dict(zip(names, cells, strict=True))


def printed_rows(text: str) -> dict[str, dict[str, str]]:
    """kubectl's printed table (header first) as ``{NAME: {COLUMN: cell}}``."""
    header, *lines = text.splitlines()
    rows = [printed_row(header, line) for line in lines if line.strip()]
    return {row["NAME"]: row for row in rows}
