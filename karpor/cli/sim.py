"""``karpor sim``: run simulated kube-apiservers and write their Cluster files.

::

    karpor sim --clusters N --out DIR [--token T] [--host 127.0.0.1] [--base-port P]

runs N clusters ``sim-1`` … ``sim-N`` (free loopback ports, or ``P``,
``P+1``, …) and writes into ``DIR``, per cluster:

- ``sim-K.yaml``: the karpor ``Cluster`` (endpoint, CA bundle, token inline),
  the form ``twistd karpor --clusters-dir DIR`` reads;
- ``sim-K.kubeconfig``: a kubeconfig straight to the cluster with its token;
- ``sim-K-cert.kubeconfig``: the same with a client certificate from the
  cluster's CA (user ``sim-admin``, group ``system:masters``).

It prints one ``serving`` line per cluster, then ``ready``, and runs until
SIGINT or SIGTERM.  ``--allow-non-loopback`` is needed to bind anything but
a loopback address; see :mod:`karpor.sim.cluster` for why you should not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import globalLogBeginner, textFileLogObserver

from karpor.auth.policy import PolicyError, load_policy
from karpor.sim.cluster import NonLoopbackAddress, SimulatedCluster, SimulatedClusterOptions


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``karpor sim``."""
    parser = subparsers.add_parser(
        "sim",
        help="run simulated Kubernetes API servers",
        description="Run N simulated kube-apiservers (sim-1 ... sim-N) on loopback and write "
        "one karpor Cluster file and kubeconfigs per cluster into DIR.",
    )
    parser.add_argument("--clusters", type=int, default=1, metavar="N", help="how many (1)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write")
    parser.add_argument(
        "--token", default=None, metavar="T", help="the token of every cluster (random each)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        metavar="P",
        help="listen on P, P+1, ... (default: free ports)",
    )
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="DANGEROUS: allow binding a non-loopback --host (anyone reaching it with the "
        "token or a CA certificate controls the simulator and runs commands on this machine "
        "with kubectl exec) and let sim.karpor.io/port-N pod annotations forward to "
        "non-loopback addresses",
    )
    parser.add_argument(
        "--log-interval", type=float, default=1.0, help="seconds between pod log lines (1)"
    )
    parser.add_argument(
        "--history",
        type=int,
        default=10_000,
        metavar="N",
        help="changes kept for watches resuming from a resourceVersion (10000)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="authorize as a karpor policy file says (the clusters' RBAC; default: allow all)",
    )
    parser.set_defaults(handler=run)


def build_clusters(args: argparse.Namespace, reactor: Any) -> list[SimulatedCluster]:
    """The clusters ``args`` ask for (not started)."""
    options = SimulatedClusterOptions(
        log_interval=args.log_interval,
        history=args.history,
        access_log=args.access_log,
        policy=load_policy(str(args.policy)) if args.policy is not None else None,
    )
    return [
        SimulatedCluster(
            f"sim-{index}",
            token=args.token,
            host=args.host,
            port=args.base_port + index - 1 if args.base_port else 0,
            allow_non_loopback=args.allow_non_loopback,
            reactor=reactor,
            options=options,
        )
        for index in range(1, args.clusters + 1)
    ]


def run(args: argparse.Namespace) -> int:
    """Run the clusters until SIGINT/SIGTERM; the exit status."""
    from twisted.internet import reactor  # noqa: PLC0415 - installed only when running

    if args.clusters < 1:
        print("karpor sim: --clusters must be at least 1", file=sys.stderr)
        return 2
    try:
        clusters = build_clusters(args, reactor)
    except NonLoopbackAddress as exc:
        print(f"karpor sim: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"karpor sim: {exc}", file=sys.stderr)
        return 2
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    services = MultiService()
    for cluster in clusters:
        cluster.setServiceParent(services)
    status = {"code": 0}

    def start() -> None:
        try:
            services.startService()
        except Exception as exc:
            print(f"karpor sim: cannot start: {exc}", file=sys.stderr, flush=True)
            status["code"] = 1
            reactor.stop()
            return
        for cluster in clusters:
            files = cluster.write_files(args.out)
            print(
                f"serving {cluster.name} {cluster.endpoint} cluster={files.cluster} "
                f"kubeconfig={files.kubeconfig} cert-kubeconfig={files.cert_kubeconfig}",
                flush=True,
            )
        print(
            f"ready: {len(clusters)} simulated cluster(s); try: "
            f"kubectl --kubeconfig {args.out / 'sim-1.kubeconfig'} get pods -A",
            flush=True,
        )

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", services.stopService)
    reactor.run()
    return status["code"]
