"""``twistd -n karpor --demo``: two simulated clusters behind the gateway, in one process.

The demo starts :class:`~karpor.sim.cluster.SimulatedCluster` ``sim-1`` and
``sim-2`` on free loopback ports, writes their Cluster files (and direct
kubeconfigs) into ``STATE_DIR/clusters``, serves the gateway on ``--port``
(8443 by default) with that clusters directory, writes an admin kubeconfig
(``STATE_DIR/admin.kubeconfig``: user ``admin``, group ``system:masters``;
a context per cluster, ``all`` across both, ``karpor`` for the gateway's own
API) and prints the one line to try::

    kubectl --kubeconfig karpor-demo/admin.kubeconfig --context sim-1 get pods -A

The demo is one service tree (:func:`make_demo_service`): the simulated
clusters, their files, the gateway, the admin kubeconfig, started in that
order and stopped in reverse.  The state directory is ``./karpor-demo``
unless ``--state-dir`` says otherwise.  Nothing but this package is needed.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IService, Service
from twisted.logger import Logger

from karpor.app.service import GatewayService, Serving
from karpor.app.settings import Settings
from karpor.app.state import create_directory
from karpor.app.tree import ServiceTree
from karpor.auth.ca import write_private
from karpor.auth.kubeconfig import FANOUT_CONTEXT, build_kubeconfig, dump_kubeconfig
from karpor.sim.cluster import SimulatedCluster

CLUSTER_NAMES = ("sim-1", "sim-2")
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
ADMIN_KUBECONFIG = "admin.kubeconfig"
CLUSTERS_SUBDIR = "clusters"


#: the pod each demo cluster starts with, so the first ``get pods`` shows one
DEMO_POD: dict[str, Any] = {
    "metadata": {"name": "hello", "labels": {"app": "hello"}},
    "spec": {"containers": [{"name": "hello", "image": "busybox"}]},
}


class ClusterFilesService(Service):
    """Once the simulated clusters listen (their ports known): writes their
    files and creates the demo pod in each."""

    def __init__(self, clusters: list[SimulatedCluster], directory: Path) -> None:
        self.clusters = clusters
        self.directory = directory

    def startService(self) -> None:
        """Write ``<name>.yaml`` (and direct kubeconfigs) for every cluster."""
        for cluster in self.clusters:
            cluster.write_files(self.directory)
            pods = cluster.store.catalog.lookup("", "v1", "pods")
            if pods is not None:
                cluster.store.create(pods, "default", copy.deepcopy(DEMO_POD))
        super().startService()


def shown_path(path: Path, cwd: str | None = None) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    relative = os.path.relpath(path, cwd or os.getcwd())
    return str(path) if relative.startswith("..") else relative


class AdminKubeconfig(Service):
    """Once the gateway serves: writes the admin kubeconfig and prints the line to try."""

    log = Logger()

    def __init__(self, gateway: GatewayService, state_dir: Path, out: Any = None) -> None:
        self.gateway = gateway
        self.path = state_dir / ADMIN_KUBECONFIG
        self._out = out

    def startService(self) -> None:
        """Write the kubeconfig for where the gateway serves."""
        assert self.gateway.serving is not None
        self.write(self.gateway.serving)
        super().startService()

    def write(self, serving: Serving) -> None:
        """Issue the admin certificate and write the kubeconfig (mode 0600)."""
        ca = serving.state.ca
        issued = ca.issue_client(ADMIN_USER, ADMIN_GROUPS)
        config = build_kubeconfig(
            serving.url,
            ca.cert_pem,
            ADMIN_USER,
            issued.cert_pem,
            issued.key_pem,
            CLUSTER_NAMES,
            fanouts=((FANOUT_CONTEXT, ""),),
        )
        write_private(self.path, dump_kubeconfig(config))
        line = f"kubectl --kubeconfig {shown_path(self.path)} --context sim-1 get pods -A"
        self.log.info("demo ready: admin kubeconfig {path}; try: {line}", path=self.path, line=line)
        out = self._out or sys.__stdout__
        if out is not None:
            out.write(f"\nkarpor demo: 2 simulated clusters behind {serving.url}. Try:\n\n")
            out.write(f"    {line}\n\n")
            out.flush()


def make_demo_service(settings: Settings, reactor: Any = None, out: Any = None) -> IService:
    """The demo, a :class:`~karpor.app.tree.ServiceTree`: the simulated
    clusters, their files, the gateway, the admin kubeconfig (started in
    that order, stopped in reverse)."""
    assert settings.state_dir is not None
    state_dir = Path(settings.state_dir)
    clusters_dir = state_dir / CLUSTERS_SUBDIR
    create_directory(state_dir)
    clusters_dir.mkdir(mode=0o700, exist_ok=True)
    top = ServiceTree()
    sims = [SimulatedCluster(name, reactor=reactor) for name in CLUSTER_NAMES]
    for sim in sims:
        sim.setServiceParent(top)
    ClusterFilesService(sims, clusters_dir).setServiceParent(top)
    gateway_settings = Settings(
        port=settings.port,
        host=settings.host,
        workers=1,
        metrics_address=settings.metrics_address,
        clusters_dir=str(clusters_dir),
        state_dir=str(state_dir),
        source=settings.source,
    )
    gateway = GatewayService(gateway_settings, reactor=reactor)
    gateway.setServiceParent(top)
    AdminKubeconfig(gateway, state_dir, out).setServiceParent(top)
    return top
