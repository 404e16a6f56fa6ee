"""A 100 MB LIST through the gateway: the same bytes as straight from the cluster,
and the gateway's memory does not grow with the body (it streams, never buffers).

The objects are created straight on the simulated cluster (100 ConfigMaps of
about 1 MB); the gateway's resident set is sampled from ``/proc/PID/status``
while the body streams (and its peak read from ``VmHWM`` after resetting it),
and must grow far less than the body.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway import GatewayRun, client_context, credentials_of, request, rss_bytes
from support.sim import SimCluster, SimRun

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)

OBJECTS = 100
VALUE_BYTES = 1_000_000
#: the most the gateway's memory may grow while 100 MB pass through it
BOUND = 32 * 1024 * 1024
_LIST_RV = re.compile(rb'"resourceVersion":"\d+"')


def direct_context(sim: SimCluster):
    return client_context(sim.ca_pem)


def direct_headers(sim: SimCluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.token}"}


@pytest.fixture(scope="module")
def big_namespace(sim_clusters: SimRun) -> Iterator[str]:
    """A namespace of sim-1 holding ~100 MB of ConfigMaps (deleted afterwards)."""
    sim = sim_clusters["sim-1"]
    name = f"big-{uuid.uuid4().hex[:8]}"
    context, headers = (
        direct_context(sim),
        {**direct_headers(sim), "Content-Type": "application/json"},
    )
    body = json.dumps({"metadata": {"name": name}}).encode()
    assert request(sim.port, "/api/v1/namespaces", context, "POST", headers, body).status == 201
    filler = "x" * VALUE_BYTES
    for i in range(OBJECTS):
        cm = {"metadata": {"name": f"cm-{i:03d}"}, "data": {"blob": filler}}
        created = request(
            sim.port,
            f"/api/v1/namespaces/{name}/configmaps",
            context,
            "POST",
            headers,
            json.dumps(cm).encode(),
        )
        assert created.status == 201, created.body[:300]
    try:
        yield name
    finally:
        request(sim.port, f"/api/v1/namespaces/{name}", context, "DELETE", direct_headers(sim))


class Sampler:
    """Samples a process's VmRSS in a thread until stopped; keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM (``clear_refs`` 5); whether the kernel allowed it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def streamed_digest(conn_response) -> tuple[str, int]:
    """The SHA-256 and length of a body read in 64 KiB pieces (the list's own
    resourceVersion blanked: nothing else may differ)."""
    digest = hashlib.sha256()
    size = 0
    first = True
    while True:
        piece = conn_response.read(65536)
        if not piece:
            break
        if first:
            piece = _LIST_RV.sub(b'"resourceVersion":"RV"', piece, count=1)
            first = False
        size += len(piece)
        digest.update(piece)
    return digest.hexdigest(), size


def get_streamed(port: int, path: str, context, headers: dict[str, str]) -> tuple[int, str, int]:
    import http.client  # noqa: PLC0415

    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=120)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        digest, size = streamed_digest(response)
        return response.status, digest, size
    finally:
        conn.close()


def test_100_mb_list_streams_through(
    gateway: GatewayRun, gateway_kubeconfig: Path, sim_clusters: SimRun, big_namespace: str
):
    sim = sim_clusters["sim-1"]
    path = f"/api/v1/namespaces/{big_namespace}/configmaps"
    status, want, size = get_streamed(sim.port, path, direct_context(sim), direct_headers(sim))
    assert status == 200
    assert size > OBJECTS * VALUE_BYTES

    ca, cert, key = credentials_of(gateway_kubeconfig)
    context = client_context(ca, cert, key)
    proxied = f"/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy{path}"
    get_streamed(
        gateway.port, "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api", context, {}
    )
    pid = gateway.serving_pid
    peak_reset = reset_peak(pid)
    baseline = rss_bytes(pid)
    sampler = Sampler(pid)
    status, got, got_size = get_streamed(gateway.port, proxied, context, {})
    peak = sampler.stop()
    if peak_reset:
        peak = max(peak, rss_bytes(pid, "VmHWM"))

    assert status == 200
    assert (got, got_size) == (want, size)
    growth = peak - baseline
    assert growth < BOUND, (
        f"the gateway grew by {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB body"
    )
