"""``karpor revoke``: revoke client certificates issued by the gateway CA.

::

    karpor revoke --state-dir DIR SERIAL...
    karpor revoke --state-dir DIR --user U [--user V]...

Adds the certificates to the revocation list ``revoked.json`` in the state
directory (:func:`karpor.auth.revocation.add_revocations`: atomic, locked
against concurrent runs).  Every gateway worker re-checks the list every half
second (:class:`karpor.auth.access.Access`), so a revoked certificate is
refused with 401 within 1 s, on new and on open connections alike.
``SERIAL`` is hexadecimal, as ``openssl x509 -serial`` prints it; ``--user``
revokes every certificate of that user issued until now (``karpor
kubeconfig`` issues new ones that are valid).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from karpor.auth.revocation import (
    REVOKED_FILE,
    RevocationError,
    add_revocations,
    format_serial,
    parse_serial,
)


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``revoke`` subcommand."""
    parser = subparsers.add_parser(
        "revoke",
        help="revoke client certificates (by serial number or user)",
        description=(
            "Add certificates to the gateway's revocation list (STATE_DIR/revoked.json); "
            "running gateways refuse them within a second."
        ),
    )
    parser.add_argument("--state-dir", required=True, type=Path, help="the gateway's state dir")
    parser.add_argument(
        "serials", nargs="*", metavar="SERIAL", help="certificate serial numbers (hexadecimal)"
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        dest="users",
        metavar="USER",
        help="revoke every certificate issued to USER until now; repeat for several",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``karpor revoke``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not args.serials and not args.users:
        print("karpor revoke: error: give a SERIAL or --user USER", file=err)
        return 2
    if not args.state_dir.is_dir():
        print(f"karpor revoke: error: {args.state_dir}: not a directory", file=err)
        return 1
    try:
        serials = [parse_serial(s) for s in args.serials]
        if any(not user for user in args.users):
            raise RevocationError("--user must not be empty")
        add_revocations(str(args.state_dir / REVOKED_FILE), serials, args.users)
    except (RevocationError, OSError) as exc:
        print(f"karpor revoke: error: {exc}", file=err)
        return 1
    what = [f"serial {format_serial(s)}" for s in serials] + [f"user {u}" for u in args.users]
    print(f"karpor revoke: revoked {', '.join(what)} in {args.state_dir / REVOKED_FILE}", file=out)
    return 0
