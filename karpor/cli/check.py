"""``karpor check``: validate a clusters directory (and a settings file).

Problems go to **stderr**, one per line (``file: document N: field:
message``), so that a script can capture them apart from the listing; the
clusters found go to **stdout** as a table (name, endpoint, credential
type, document and file; never a secret).  The exit status is 1 when there is any
problem, 0 when all is clean (an empty directory is clean: the gateway
serves no cluster until files appear), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from karpor.app.settings import SettingsError, load_settings
from karpor.config.clusters import credential_type
from karpor.config.directory import load_path
from karpor.config.model import Cluster


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``karpor check`` to the ``karpor`` command."""
    parser = subparsers.add_parser(
        "check",
        help="validate a clusters directory",
        description=(
            "Validate a clusters directory (or one cluster file): print the clusters "
            "found on stdout and every problem on stderr as 'file: document N: field: "
            "message'. Exit 1 on any problem."
        ),
    )
    parser.add_argument(
        "path",
        nargs="?",
        metavar="DIR",
        help="the clusters directory or a cluster file (default: clustersDir of --config)",
    )
    parser.add_argument("--config", metavar="FILE", help="also check this gateway config file")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print problems only, not the clusters"
    )
    parser.set_defaults(handler=run)


def format_table(clusters: Sequence[Cluster]) -> list[str]:
    """The listing of ``clusters``: aligned columns, no secret."""
    rows = [("NAME", "ENDPOINT", "CREDENTIAL", "DOCUMENT", "FILE")]
    rows += [
        (
            c.name,
            "(tunnel)" if c.tunnel else c.endpoint,
            credential_type(c.credential),
            str(c.document),
            c.source,
        )
        for c in clusters
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def check(
    path: str | None,
    config: str | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check ``path`` (and ``config``); print as described above; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    failed = False
    if config is not None:
        try:
            settings = load_settings(config)
        except SettingsError as exc:
            for line in exc.problems:
                print(line, file=err)
            failed = True
        else:
            path = path or settings.clusters_dir
    if path is None:
        if not failed:
            print("karpor check: give DIR, or --config with clustersDir", file=err)
            return 2
        return 1
    result = load_path(path)
    if not quiet:
        for line in format_table(result.clusters):
            print(line, file=out)
    for problem in result.problems:
        print(problem, file=err)
    if not result.sources and not result.problems:
        print(f"{path}: no *.yaml or *.yml files (an empty directory is valid)", file=err)
    return 1 if failed or result.problems else 0


def run(args: argparse.Namespace) -> int:
    """The handler of ``karpor check``."""
    return check(args.path, args.config, args.quiet)
