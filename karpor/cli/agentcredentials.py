"""``karpor agent-credentials``: issue an agent its certificate and write its credentials file.

::

    karpor agent-credentials --state-dir DIR --cluster NAME --server https://GATEWAY:PORT
                             -o FILE [--tls-server-name NAME] [--ttl 90d]

The client certificate is signed by the gateway CA kept in ``--state-dir``,
for user ``system:karpor:agent:NAME`` in group ``system:karpor:agents``
(:mod:`karpor.auth.agentidentity`), with the ``clientAuth`` usage, like
every certificate ``karpor kubeconfig`` issues.  The credentials file
(:mod:`karpor.agent.credentials`: the gateway's URL and CA, the certificate
and its key; no credential of the cluster) is written with mode 0600 to
``-o FILE``; a summary goes to standard error, with the certificate's
serial number.  ``karpor revoke --state-dir DIR SERIAL`` (or ``--user
system:karpor:agent:NAME``: every certificate issued to that agent until
then) revokes it like any other: running gateways refuse it within a
second.

That identity opens the tunnel of cluster ``NAME`` and nothing else: the
gateway refuses it every cluster request and every gateway path, whatever
the policy says.  ``--tls-server-name`` is the name the agent verifies the
gateway's certificate for when the ``--server`` host is not on it (an IP
address, a load balancer's name).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from cryptography import x509

from karpor.agent.credentials import AgentCredentials, write_agent_credentials
from karpor.app import state
from karpor.auth.agentidentity import AGENT_GROUP, agent_user
from karpor.auth.ca import CertificateAuthority
from karpor.auth.kubeconfig import parse_duration
from karpor.auth.revocation import format_serial
from karpor.config.clusters import Validator, is_dns_label
from karpor.config.directory import LocalFiles

DEFAULT_TTL = "90d"


class CommandError(Exception):
    """A failure reported as one line on standard error (exit status 1)."""


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``agent-credentials`` subcommand."""
    parser = subparsers.add_parser(
        "agent-credentials",
        help="issue an agent's client certificate and write its credentials file",
        description=(
            "Issue a client certificate from the gateway CA for the agent of cluster NAME "
            "(user system:karpor:agent:NAME, group system:karpor:agents) and write the "
            "credentials file 'karpor agent --credentials' reads: the gateway's URL and CA "
            "and that certificate, no credential of the cluster."
        ),
    )
    parser.add_argument("--state-dir", required=True, type=Path, help="the gateway's state dir")
    parser.add_argument(
        "--cluster", required=True, help="the cluster the agent serves (its Cluster file's name)"
    )
    parser.add_argument(
        "--server", required=True, help="the gateway's address the agent dials, https://HOST:PORT"
    )
    parser.add_argument("-o", "--output", required=True, help="the credentials file to write")
    parser.add_argument(
        "--tls-server-name",
        help="the name the agent verifies the gateway's certificate for "
        "(default: the --server host)",
    )
    parser.add_argument(
        "--ttl", default=DEFAULT_TTL, help="certificate lifetime, e.g. 90d, 12h (default: 90d)"
    )
    parser.set_defaults(handler=run)


def _checked(cluster: str, server: str, tls_server_name: str | None) -> tuple[str, str | None]:
    """The normalized server URL and TLS server name; raises :class:`CommandError`."""
    if not is_dns_label(cluster):
        raise CommandError(
            f"--cluster {cluster[:80]!r} is not a cluster name (a DNS-1123 label: lower-case "
            "letters, digits and '-', at most 63 characters)"
        )
    v = Validator("", LocalFiles())
    endpoint = v.endpoint(server, "--server")
    name = v.server_name(tls_server_name, "--tls-server-name") if tls_server_name else None
    if v.errors or endpoint is None:
        raise CommandError("; ".join(f"{field}: {message}" for field, message in v.errors))
    return endpoint, name


def _coverage_warning(state_dir: Path, server: str, tls_server_name: str | None) -> str | None:
    """A warning when the gateway's serving certificate does not cover the
    name the agent will verify."""
    cert_path = state_dir / state.SERVING_CERT_FILE
    host = tls_server_name or urlsplit(server).hostname
    if host is None or not cert_path.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return None
    covered = state.certificate_hosts(cert)
    if state.serving_hosts(host)[0] in covered:
        return None
    return (
        f"the gateway's serving certificate does not cover {host!r} (it covers "
        f"{', '.join(covered)}): the agent will refuse it; start the gateway with --host {host}, "
        "or give --tls-server-name with a name it covers"
    )


def issue(
    state_dir: Path,
    cluster: str,
    server: str,
    tls_server_name: str | None,
    ttl: datetime.timedelta,
) -> tuple[AgentCredentials, int]:
    """The agent's credentials and its certificate's serial number."""
    endpoint, name = _checked(cluster, server, tls_server_name)
    if not state.has_ca(state_dir):
        raise CommandError(
            f"{state_dir} holds no gateway CA: start the gateway once with --state-dir "
            f"{state_dir} (or pass the state dir it uses)"
        )
    ca = CertificateAuthority.load(state_dir)
    issued = ca.issue_client(agent_user(cluster), [AGENT_GROUP], ttl)
    credentials = AgentCredentials(
        cluster=cluster,
        server=endpoint,
        ca_pem=ca.cert_pem,
        certificate_pem=issued.cert_pem,
        key_pem=issued.key_pem,
        tls_server_name=name,
    )
    return credentials, issued.serial


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``karpor agent-credentials``; returns the exit status."""
    err = err or sys.stderr
    prefix = "karpor agent-credentials"
    try:
        ttl = datetime.timedelta(seconds=parse_duration(args.ttl))
        credentials, serial = issue(
            args.state_dir, args.cluster, args.server, args.tls_server_name, ttl
        )
        write_agent_credentials(args.output, credentials)
    except OSError as exc:
        print(f"{prefix}: error: {exc.filename or args.output}: {exc.strerror or exc}", file=err)
        return 1
    except (CommandError, ValueError) as exc:
        print(f"{prefix}: error: {exc}", file=err)
        return 1
    warning = _coverage_warning(args.state_dir, credentials.server, credentials.tls_server_name)
    if warning is not None:
        print(f"{prefix}: warning: {warning}", file=err)
    expiry = datetime.datetime.now(datetime.UTC) + ttl
    print(
        f"{prefix}: wrote {args.output}: the agent of cluster {credentials.cluster} "
        f"({agent_user(credentials.cluster)}) dialing {credentials.server}; certificate serial "
        f"{format_serial(serial)} valid until {expiry:%Y-%m-%d %H:%M} UTC "
        f"(revoke: karpor revoke --state-dir {args.state_dir} {format_serial(serial)})",
        file=err,
    )
    return 0
