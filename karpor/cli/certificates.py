"""``karpor certificates``: the content of a read-only state directory, for replicas.

::

    karpor certificates DIR [--name NAME]...

Writes the gateway CA (``ca.crt``, ``ca.key``) and a serving certificate
(``serving.crt``, ``serving.key``) into ``DIR`` (created readable by its
owner only), the serving certificate covering every ``--name`` (default:
:data:`DEFAULT_NAMES`, the Service of ``etc/kubernetes``), the loopback
names and ``*.clusters.karpor`` (host routing's default suffix; give
``--name '*.SUFFIX'`` for another).  Run again on the same ``DIR`` it
keeps the CA and keeps the serving certificate unless it is missing a name
or expires within 30 days (then it is issued again, keeping the names it
had).

Standard output gets the CA certificate base64-encoded: the ``caBundle`` of
the ``APIService``; a summary (never a key) goes to standard error, ending
with the command that makes the Secret of the replicas
(:func:`secret_command`)::

    kubectl -n karpor create secret generic karpor-state \
        --from-file=DIR/ca.crt --from-file=DIR/serving.crt --from-file=DIR/serving.key

(and ``--from-file=DIR/revoked.json`` once ``karpor revoke`` wrote one).
Every replica mounting that Secret as its read-only state directory serves
with the same certificate and trusts the same client certificates
(:mod:`karpor.app.state`).  The CA key stays out of the cluster: whoever
reads it can issue a certificate for any user and group.  Keep ``DIR``
private: ``karpor kubeconfig --state-dir DIR`` issues users' certificates
from it.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from karpor.app.state import (
    CA_COMMON_NAME,
    LOOPBACK,
    SERVING_CERT_FILE,
    SERVING_KEY_FILE,
    GatewayState,
    create_directory,
    ensure_serving_certificate,
)
from karpor.auth.ca import CA_CERT_FILE, CertificateAuthority
from karpor.auth.revocation import REVOKED_FILE
from karpor.config.hostnames import check_host
from karpor.http.route import HostRouting

#: the DNS names of the Service in ``etc/kubernetes`` (``karpor`` in namespace ``karpor``)
DEFAULT_NAMES = ("karpor.karpor.svc", "karpor.karpor.svc.cluster.local")


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``certificates`` subcommand."""
    parser = subparsers.add_parser(
        "certificates",
        help="write a CA and serving certificate for replicas (a read-only state directory)",
        description=(
            "Write the gateway CA (ca.crt, ca.key) and a serving certificate (serving.crt, "
            "serving.key) covering every --name into DIR, for the replicas' Secret (every file "
            "but ca.key, which stays in DIR); print the APIService caBundle (the CA, base64)."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="where to write the files")
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        default=None,
        metavar="NAME",
        help="a DNS name or IP address the serving certificate covers (repeatable; "
        f"default: {', '.join(DEFAULT_NAMES)})",
    )
    parser.set_defaults(handler=run)


def write_state(directory: Path, names: Sequence[str]) -> GatewayState:
    """Create (or complete) the state in ``directory`` for ``names``."""
    create_directory(directory)
    ca = CertificateAuthority.load_or_create(directory, CA_COMMON_NAME)
    wildcard = HostRouting().wildcard  # host routing, default suffix
    serving = ensure_serving_certificate(directory, ca, [*names, *LOOPBACK, wildcard])
    return GatewayState(directory, ca, serving)


def secret_command(directory: Path) -> str:
    """The ``kubectl`` command making the Secret ``karpor-state`` of the
    replicas from ``directory``: what they read (the CA certificate, the
    serving certificate and key, the revocation list when there is one),
    never the CA key."""
    names = [CA_CERT_FILE, SERVING_CERT_FILE, SERVING_KEY_FILE]
    if (directory / REVOKED_FILE).exists():
        names.append(REVOKED_FILE)
    files = " ".join(f"--from-file={directory / name}" for name in names)
    return f"kubectl -n karpor create secret generic karpor-state {files}"


def ca_bundle(state: GatewayState) -> str:
    """The ``caBundle`` of the ``APIService``: the CA certificate, base64."""
    return base64.b64encode(state.ca.cert_pem).decode("ascii")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``karpor certificates``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        names = [check_host(n) for n in (args.names or DEFAULT_NAMES)]
    except ValueError as exc:
        print(f"karpor certificates: --name: {exc}", file=err)
        return 2
    try:
        state = write_state(args.directory, names)
    except (OSError, ValueError) as exc:
        print(f"karpor certificates: {args.directory}: {exc}", file=err)
        return 1
    reason = state.serving.issued_because
    what = f"issued ({reason})" if reason else "kept (it already covers every name)"
    print(
        f"karpor certificates: {args.directory}: CA {state.ca.cert.subject.rfc4514_string()}; "
        f"{SERVING_CERT_FILE} {what}, covering {', '.join(state.serving.hosts)}\n"
        f"next (the CA key stays here): {secret_command(args.directory)}\n"
        "the APIService caBundle follows on standard output",
        file=err,
    )
    print(ca_bundle(state), file=out)
    return 0
