"""Watches through the gateway as HTTP/2 streams, against a real simulator.

``karpor sim`` (serving ALPN ``h2`` as kube-apiserver does) and the gateway
(front protocol + upstream pools, as in ``test_proxy_gateway``) run as
subprocesses on loopback.  Two hundred HTTP/1.1 watch clients (TLS, client
certificate) hold watches through the gateway at once: the gateway must
carry them as streams over one or two upstream connections, and every
watch must see the event of one change.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import urllib3
from support.frontgateway import start, stop
from support.sim import SimRun, start_sim
from support.waits import wait_for

from karpor.auth.ca import CertificateAuthority

WATCHES = 200
PROBE = "probe-h2"


@dataclass
class Setup:
    port: int
    gateway: subprocess.Popen[bytes]
    sim: SimRun
    http: urllib3.PoolManager
    context: ssl.SSLContext

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def proxy(self, path: str) -> str:
        return f"/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy{path}"

    def stats(self) -> dict[str, int]:
        r = self.http.request("GET", f"{self.base}/stats?cluster=sim-1")
        assert r.status == 200
        result: dict[str, int] = json.loads(r.data)
        return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("proxy-h2")
    sim = start_sim(tmp / "clusters")
    gateway: subprocess.Popen[bytes] | None = None
    try:
        cluster = sim["sim-1"]
        ca = CertificateAuthority.create("gateway-ca")
        serving = ca.issue_server("gateway", ["127.0.0.1"])
        alice = ca.issue_client("alice", ["dev"])
        alice.write(tmp / "alice.crt", tmp / "alice.key")
        (tmp / "gateway-ca.crt").write_bytes(ca.cert_pem)
        config = {
            "client_ca": ca.cert_pem.decode(),
            "cert": serving.cert_pem.decode(),
            "key": serving.key_pem.decode(),
            "clusters": [
                {
                    "name": "sim-1",
                    "endpoint": cluster.endpoint,
                    "ca": cluster.ca_pem.decode(),
                    "token": cluster.token,
                }
            ],
        }
        (tmp / "config.json").write_text(json.dumps(config))
        gateway, port = start(["-m", "support.frontgateway", str(tmp / "config.json")])
        http = urllib3.PoolManager(
            ca_certs=str(tmp / "gateway-ca.crt"),
            cert_file=str(tmp / "alice.crt"),
            key_file=str(tmp / "alice.key"),
            retries=False,
        )
        context = ssl.create_default_context(cafile=str(tmp / "gateway-ca.crt"))
        context.load_cert_chain(str(tmp / "alice.crt"), str(tmp / "alice.key"))
        context.set_alpn_protocols(["http/1.1"])
        yield Setup(port, gateway, sim, http, context)
    finally:
        if gateway is not None:
            stop(gateway)
        sim.stop()


class Watch:
    """One HTTP/1.1 watch client over TLS, reading the chunked event stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""
        self._buffer = b""

    @classmethod
    async def open(cls, setup: Setup, target: str) -> Watch:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", setup.port, ssl=setup.context, server_hostname="127.0.0.1"
        )
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode()
        )
        watch = cls(reader, writer)
        watch.head = await reader.readuntil(b"\r\n\r\n")
        return watch

    async def event(self) -> dict[str, object]:
        """The next watch event (one JSON line, maybe across chunks)."""
        while b"\n" not in self._buffer:
            size = int((await self.reader.readline()).strip(), 16)
            assert size > 0, "the watch ended"
            self._buffer += await self.reader.readexactly(size + 2)
            self._buffer = self._buffer[:-2]
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, object] = json.loads(line)
        return event

    def close(self) -> None:
        self.writer.close()


def _upstream_connections(pid: int, port: int) -> int:
    """The gateway's established TCP connections to ``port`` (``ss -tnp``)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def test_many_watches_share_one_or_two_upstream_connections(setup: Setup) -> None:
    target = setup.proxy(
        f"/api/v1/namespaces/default/configmaps?watch=true&fieldSelector=metadata.name%3D{PROBE}"
    )
    create = setup.proxy("/api/v1/namespaces/default/configmaps")

    async def run() -> tuple[list[bytes], list[dict[str, object]], dict[str, int], int]:
        watches = await asyncio.gather(*(Watch.open(setup, target) for _ in range(WATCHES)))
        try:
            heads = [w.head for w in watches]
            # every response head arrived: every stream is open upstream
            stats = await asyncio.to_thread(setup.stats)
            sockets = await asyncio.to_thread(
                _upstream_connections, setup.gateway.pid, setup.sim["sim-1"].port
            )
            r = await asyncio.to_thread(
                setup.http.request,
                "POST",
                setup.base + create,
                body=json.dumps({"metadata": {"name": PROBE}, "data": {"k": "v"}}),
                headers={"Content-Type": "application/json"},
            )
            assert r.status == 201, r.data
            events = await asyncio.wait_for(
                asyncio.gather(*(w.event() for w in watches)), timeout=120
            )
            return heads, events, stats, sockets
        finally:
            for w in watches:
                w.close()

    heads, events, stats, sockets = asyncio.run(run())
    assert all(h.startswith(b"HTTP/1.1 200 ") for h in heads)
    assert all(b"Transfer-Encoding: chunked\r\n" in h for h in heads)
    assert stats["speaks_h2"] is True
    assert stats["streams"] == WATCHES
    assert 1 <= stats["h2_connections"] <= 2
    # the only other upstream connection is the pooled HTTP/1.1 one (none yet)
    assert 1 <= sockets <= 2 + stats["h1_connections"]
    assert len(events) == WATCHES
    for event in events:
        obj = event["object"]
        assert event["type"] == "ADDED"
        assert isinstance(obj, dict) and obj["metadata"]["name"] == PROBE

    # the clients are gone: their streams were cancelled, the connection stays
    def cancelled() -> dict[str, int]:
        now = setup.stats()
        return now if now["streams"] == 0 else {}

    stats = wait_for(cancelled, 10, "every stream cancelled")
    assert 1 <= stats["h2_connections"] <= 2


def _running_pod(setup: Setup, name: str) -> None:
    pods = setup.base + setup.proxy("/api/v1/namespaces/default/pods")
    pod = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    r = setup.http.request(
        "POST", pods, body=json.dumps(pod), headers={"Content-Type": "application/json"}
    )
    assert r.status == 201, r.data

    def running() -> bool:
        r = setup.http.request("GET", f"{pods}/{name}")
        return bool(json.loads(r.data).get("status", {}).get("phase") == "Running")

    # the pod runs after the simulator's start delay
    wait_for(running, 10, f"pod {name} running")


def test_short_requests_keep_http11_and_logs_follow_streams(setup: Setup) -> None:
    r = setup.http.request("GET", setup.base + setup.proxy("/api/v1/namespaces/default/pods"))
    assert r.status == 200 and json.loads(r.data)["kind"] == "PodList"
    assert setup.stats()["h1_connections"] >= 1
    _running_pod(setup, "logger")
    target = setup.proxy("/api/v1/namespaces/default/pods/logger/log?follow=true")

    async def follow() -> tuple[bytes, bytes, dict[str, int]]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", setup.port, ssl=setup.context, server_hostname="127.0.0.1"
        )
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        size = int((await reader.readline()).strip(), 16)
        line = await reader.readexactly(size)
        stats = await asyncio.to_thread(setup.stats)
        writer.close()
        return head, line, stats

    head, line, stats = asyncio.run(follow())
    assert head.startswith(b"HTTP/1.1 200 ")
    assert line.strip()
    assert stats["streams"] == 1  # the followed log is a stream


def test_exec_upgrades_still_travel_on_http11(setup: Setup) -> None:
    """An upgrade goes on a dedicated HTTP/1.1 connection and switches (the
    simulator refuses upgrades over HTTP/2)."""
    _running_pod(setup, "shell")
    target = setup.proxy("/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=1")

    async def exec_() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", setup.port, ssl=setup.context, server_hostname="127.0.0.1"
        )
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        return head

    head = asyncio.run(exec_())
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"v4.channel.k8s.io" in head
