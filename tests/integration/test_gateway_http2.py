"""HTTP/2 to clients: ALPN ``h2`` on the gateway's port (issue 21, item 1).

``curl --http2`` and the Python client (HTTP/1.1) are both served on the
session's gateway; 50 watches from one HTTP/2 client share its one
connection; a request HTTP/2 cannot carry (exec) gets a ``400`` saying so;
a rolling restart (``SIGHUP``) under HTTP/2 load fails no stream.
kubectl's exec, cp and port-forward with ``h2`` offered are
``test_gateway_streams.py`` (the gateway offers ``h2`` by default).
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

from support.gateway import (
    GatewayRun,
    client_context,
    credentials_of,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.h2client import H2Client
from support.streams import Connection, established

pytest_plugins = ("support.gateway",)

PREFIX = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy"


def _context(kubeconfig: Path) -> ssl.SSLContext:
    ca, cert, key = credentials_of(kubeconfig, "sim-1")
    return client_context(ca, cert, key)


def test_curl_http2_and_python_http11_both_served(
    gateway: GatewayRun, gateway_kubeconfig: Path, tmp_path: Path
) -> None:
    ca, cert, key = credentials_of(gateway_kubeconfig, "sim-1")
    for name, pem in (("ca.crt", ca), ("client.crt", cert), ("client.key", key)):
        (tmp_path / name).write_bytes(pem)
    url = f"https://127.0.0.1:{gateway.port}{PREFIX}/api/v1/namespaces/default"
    out = subprocess.run(
        [
            "curl",
            "--silent",
            "--http2",
            "--cacert",
            str(tmp_path / "ca.crt"),
            "--cert",
            str(tmp_path / "client.crt"),
            "--key",
            str(tmp_path / "client.key"),
            "--write-out",
            "\n%{http_version} %{http_code}",
            url,
        ],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    body, _, last = out.rpartition("\n")
    assert last == "2 200", out
    assert json.loads(body)["metadata"]["name"] == "default"
    # the same request over HTTP/1.1 (Python's http.client offers no ALPN h2)
    plain = request(
        gateway.port, f"{PREFIX}/api/v1/namespaces/default", _context(gateway_kubeconfig)
    )
    assert plain.status == 200
    assert plain.json()["metadata"]["name"] == "default"
    assert "audit-id" in plain.headers


def test_fifty_watches_share_one_connection(gateway: GatewayRun, gateway_kubeconfig: Path) -> None:
    client = H2Client(gateway.port, _context(gateway_kubeconfig))
    try:
        assert client.alpn == "h2"
        listed = client.get(f"{PREFIX}/api/v1/namespaces/default/configmaps")
        assert listed.status == 200, listed.body
        assert listed.headers.get(b"audit-id")
        version = json.loads(listed.body)["metadata"]["resourceVersion"]
        ids = [
            client.start(
                f"{PREFIX}/api/v1/namespaces/default/configmaps?watch=true"
                f"&resourceVersion={version}&timeoutSeconds=60"
            )
            for _ in range(50)
        ]
        streams = [client.streams[i] for i in ids]
        client.wait(lambda: all(s.status for s in streams))
        assert {s.status for s in streams} == {200}
        # the streams stay open (watches), all on this one connection
        assert not any(s.ended or s.reset is not None for s in streams)
        ours = client.sock.getsockname()[1]
        served = established(gateway.serving_pid, local_port=gateway.port)
        assert [c for c in served if c.remote_port == ours] == [Connection(gateway.port, ours)]
        # an event reaches every watch
        created = client.get(
            f"{PREFIX}/api/v1/namespaces/default/configmaps",
            method="POST",
            headers=[("content-type", "application/json")],
            body=json.dumps(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "h2-"}}
            ).encode(),
        )
        assert created.status == 201, created.body
        client.wait(lambda: all(b'"ADDED"' in s.body for s in streams))
        name = json.loads(created.body)["metadata"]["name"]
        client.get(f"{PREFIX}/api/v1/namespaces/default/configmaps/{name}", method="DELETE")
    finally:
        client.close()


def test_a_slow_stream_is_flow_controlled_and_blocks_no_other(
    gateway: GatewayRun, gateway_kubeconfig: Path
) -> None:
    window = 16_384
    client = H2Client(gateway.port, _context(gateway_kubeconfig), window=window)
    namespace = f"h2-{uuid.uuid4().hex[:8]}"
    base = f"{PREFIX}/api/v1/namespaces"
    try:
        json_type = [("content-type", "application/json")]
        made = client.get(
            base,
            method="POST",
            headers=json_type,
            body=json.dumps({"metadata": {"name": namespace}}).encode(),
        )
        assert made.status == 201, made.body
        for i in range(8):
            cm = {"metadata": {"name": f"cm-{i}"}, "data": {"blob": "x" * 100_000}}
            body = json.dumps(cm).encode()
            assert (
                client.get(
                    f"{base}/{namespace}/configmaps",
                    method="POST",
                    headers=json_type,
                    body=body,
                ).status
                == 201
            )
        # a large list read by a client that grants no window: it stalls at the window
        sid = client.start(f"{base}/{namespace}/configmaps")
        client.withhold(sid)
        slow = client.streams[sid]
        client.wait(lambda: len(slow.body) >= window)
        client.pump(0.5)
        assert len(slow.body) == window and not slow.ended
        # meanwhile other streams on the connection are answered at once
        other = client.get(f"{base}/{namespace}")
        assert other.status == 200
        assert json.loads(other.body)["metadata"]["name"] == namespace
        # once read, the list arrives whole
        client.release(sid)
        client.wait(lambda: slow.ended, timeout=30)
        listed = json.loads(slow.body)
        names = sorted(i["metadata"]["name"] for i in listed["items"])
        assert [n for n in names if n.startswith("cm-")] == [f"cm-{i}" for i in range(8)]
    finally:
        client.get(f"{base}/{namespace}", method="DELETE")
        client.close()


def test_exec_over_http2_is_refused_clearly(gateway: GatewayRun, gateway_kubeconfig: Path) -> None:
    client = H2Client(gateway.port, _context(gateway_kubeconfig))
    try:
        answer = client.get(f"{PREFIX}/api/v1/namespaces/default/pods/box/exec?command=ls")
        assert answer.status == 400
        status = json.loads(answer.body)
        assert status["kind"] == "Status"
        assert "HTTP/1.1" in status["message"]
    finally:
        client.close()


def _curl_round(port: int, files: Path, paths: list[str]) -> list[str]:
    """One ``curl --http2`` process fetching ``paths`` as streams multiplexed
    on one connection; each transfer's ``http_version code``."""
    out = subprocess.run(
        [
            "curl",
            "--silent",
            "--http2",
            "--parallel",
            "--parallel-max",
            "16",
            "--cacert",
            str(files / "ca.crt"),
            "--cert",
            str(files / "client.crt"),
            "--key",
            str(files / "client.key"),
            "--write-out",
            "%{http_version} %{http_code}\n",
            *[a for p in paths for a in ("--output", "/dev/null", f"https://127.0.0.1:{port}{p}")],
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = out.stdout.decode().splitlines()
    if out.returncode != 0:
        lines.append(f"curl exited {out.returncode}: {out.stderr.decode()[-500:]}")
    return lines


def test_rolling_restart_under_http2_load_fails_no_stream(
    gateway_clusters_dir: Path, tmp_path: Path
) -> None:
    run = start_gateway(
        gateway_clusters_dir, tmp_path / "state", "--workers", "1", "--drain-timeout", "10"
    )
    try:
        kubeconfig = write_kubeconfig(run.state_dir, tmp_path / "admin.kubeconfig", run.url)
        ca, cert, key = credentials_of(kubeconfig, "sim-1")
        for name, pem in (("ca.crt", ca), ("client.crt", cert), ("client.key", key)):
            (tmp_path / name).write_bytes(pem)
        paths = [f"{PREFIX}/api/v1/namespaces/default", "/healthz"] * 20
        results: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                results.extend(_curl_round(run.port, tmp_path, paths))

        before = set(run.worker_pids())
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while len(results) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        run.process.popen.send_signal(signal.SIGHUP)
        # the old worker drains under the load (a GOAWAY on each connection)
        while time.monotonic() < deadline:
            now = set(run.worker_pids())
            if len(now) == 1 and not now & before:
                break
            time.sleep(0.2)
        served = len(results)
        while len(results) < served + 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(60)
        assert not set(run.worker_pids()) & before, "the worker was not replaced"
        assert "drained; exiting" in run.process.output
        failed = [line for line in results if line != "2 200"]
        assert failed == [], failed[:20]
        assert len(results) >= 200
    finally:
        run.stop()
