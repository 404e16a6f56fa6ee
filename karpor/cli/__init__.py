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
    "karpor.cli.login",  # karpor login (the exec plugin of OIDC kubeconfigs)
    "karpor.cli.agentcredentials",  # karpor agent-credentials
    "karpor.cli.revoke",  # karpor revoke
    "karpor.cli.check",  # karpor check DIR
    "karpor.cli.certificates",  # karpor certificates DIR
    "karpor.cli.sim",  # karpor sim
    "karpor.cli.agent",  # karpor agent
)


#: the subcommand kubectl runs before its requests (exec credential plugin):
#: it imports only its own module, to start fast
LOGIN = "login"


def build_parser(modules: Sequence[str] = SUBCOMMANDS) -> argparse.ArgumentParser:
    """The argument parser of the ``karpor`` command (its ``modules``' subcommands)."""
    parser = argparse.ArgumentParser(
        prog="karpor", description="Karpor: one pass to every Kubernetes cluster."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``karpor`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(("karpor.cli.login",) if words[:1] == [LOGIN] else SUBCOMMANDS)
    args = parser.parse_args(words)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
