"""``karpor agent``: serve one cluster to the gateway through a tunnel.

::

    karpor agent --credentials FILE [--kubeconfig FILE [--context CTX]]

runs beside the cluster: it reads the credentials file ``karpor
agent-credentials`` wrote (the gateway's URL and CA, the agent's client
certificate), takes the cluster's API server and credential from the
kubeconfig's context (or, without ``--kubeconfig``, the in-cluster service
account), dials out to the gateway and serves the cluster through the
tunnel (:mod:`karpor.agent.dialer`) until SIGINT or SIGTERM.  The
cluster's credential never leaves this process.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.logger import globalLogBeginner, textFileLogObserver


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``karpor agent``."""
    parser = subparsers.add_parser(
        "agent",
        help="serve a cluster the gateway cannot dial, through a tunnel",
        description="Dial out to the gateway named in the credentials file and serve this "
        "cluster through the tunnel, with the cluster credential of the kubeconfig context "
        "(or the in-cluster service account).",
    )
    parser.add_argument(
        "--credentials", required=True, metavar="FILE", help="from karpor agent-credentials"
    )
    parser.add_argument(
        "--kubeconfig", default=None, metavar="FILE", help="the cluster (default: in-cluster)"
    )
    parser.add_argument("--context", default=None, metavar="CTX", help="the kubeconfig context")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; the exit status."""
    if "twisted.internet.reactor" not in sys.modules:
        # the gateway workers' event loop (no legacy log context per event)
        from karpor.net import implementation  # noqa: PLC0415
        from karpor.net import reactor as event_loop  # noqa: PLC0415

        event_loop.install(implementation.choose(implementation.FAST).gateway_reactor)
    from twisted.internet import reactor  # noqa: PLC0415 - installed only when running

    from karpor.agent.credentials import AgentCredentialsError, load_agent_credentials  # noqa: PLC0415
    from karpor.agent.dialer import AgentService  # noqa: PLC0415
    from karpor.agent.target import load_agent_cluster  # noqa: PLC0415

    if args.context is not None and args.kubeconfig is None:
        print("karpor agent: --context needs --kubeconfig", file=sys.stderr)
        return 2
    try:
        credentials = load_agent_credentials(args.credentials)
        cluster = load_agent_cluster(credentials.cluster, args.kubeconfig, args.context)
        service = AgentService(credentials, cluster, reactor)
    except (AgentCredentialsError, ValueError, OSError) as exc:
        print(f"karpor agent: {exc}", file=sys.stderr)
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
