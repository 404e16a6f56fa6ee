"""The ``karpor`` command.

Subcommands live with what they operate on; each module named in
:data:`SUBCOMMANDS` provides ``add_parser(subparsers)``, which adds its
parser and sets ``handler`` (a function of the parsed arguments returning
the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: modules providing the subcommands, in the order ``--help`` lists them
SUBCOMMANDS = (
    "karpor.cli.kubeconfig",  # karpor kubeconfig
    "karpor.cli.agentcredentials",  # karpor agent-credentials
    "karpor.cli.revoke",  # karpor revoke
    "karpor.cli.check",  # karpor check DIR
    "karpor.cli.certificates",  # karpor certificates DIR
    "karpor.cli.sim",  # karpor sim
    "karpor.cli.agent",  # karpor agent
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``karpor`` command."""
    parser = argparse.ArgumentParser(
        prog="karpor", description="Karpor: one pass to every Kubernetes cluster."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``karpor`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
