"""The peers, each started in front of the same upstream.

- ``direct``: the upstream itself, nginx over TLS serving the pod with a
  bearer-token check (the limit every proxy is compared with);
- ``karpor-1`` / ``karpor-N``: ``twistd -n karpor`` with 1 and N workers;
- ``kubectl-proxy``: ``kubectl proxy`` with a kubeconfig holding the
  upstream token (it serves plain HTTP on loopback);
- ``nginx-proxy``: nginx as a TLS reverse proxy with upstream keep-alive,
  injecting the upstream token as karpor does.

A peer that cannot be measured carries the reason in :attr:`Peer.unavailable`
instead of failing the run.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.fixture import KARPOR_PREFIX, POD_PATH, Workspace
from bench.procs import (
    LOOPBACK,
    BenchError,
    Proc,
    Processes,
    client_context,
    free_port,
    https_status,
    log_contains,
    wait_for,
)

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
READY_TIMEOUT = 60.0


@dataclass
class Peer:
    """One thing wrk (or a Python client) sends requests to."""

    key: str
    label: str
    port: int
    path: str
    #: TLS context to reach it (None: plain HTTP)
    context: ssl.SSLContext | None
    #: the bearer token wrk sends (None: none)
    token: str | None = None
    proc: Proc | None = None
    note: str = ""
    #: why it is not measured ("" when it is)
    unavailable: str = ""
    #: for karpor: a context with the bench user's client certificate
    cert_context: ssl.SSLContext | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The URL of the pod through this peer."""
        scheme = "https" if self.context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}{self.path}"

    def headers(self) -> dict[str, str]:
        """The request headers wrk sends."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def find_kubectl() -> Path | None:
    """``kubectl`` from PATH, else the newest ``kubectl.1.NN`` of the Cloud SDK."""
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    versions = sorted(KUBECTL_DIR.glob("kubectl.1.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return versions[-1] if versions else None


def _nginx_conf(ws: Workspace, name: str, workers: int, http_block: str) -> Path:
    temp = ws.root / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = ws.root / f"{name}.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes {workers};
pid {ws.root / name}.pid;
error_log {ws.root / name}-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:{name}:1m;
{http_block}
}}
"""
    )
    return conf


def _start_nginx(procs: Processes, ws: Workspace, name: str, conf: Path) -> Proc:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return procs.start(
        name, [nginx, "-p", str(ws.root), "-e", str(ws.root / f"{name}-error.log"), "-c", str(conf)]
    )


def _ready_200(peer: Peer, proc: Proc) -> None:
    def check() -> bool:
        status, _ = https_status(peer.port, peer.path, peer.context, peer.headers())
        if status in (200, 401, 403):
            if status != 200:
                raise BenchError(f"{peer.label}: GET {peer.path} answered {status}")
            return True
        return False

    wait_for(f"{peer.label} serving", check, READY_TIMEOUT, proc)


#: the upstream's ``/version`` (a kube-apiserver's shape)
VERSION_JSON = (
    '{"major": "1", "minor": "33", "gitVersion": "v1.33.0-bench-nginx", "platform": "linux/amd64"}'
)


def start_upstream(procs: Processes, ws: Workspace, workers: int) -> Peer:
    """nginx over TLS serving the pod JSON behind a bearer-token check, and
    playing an OpenID provider (its discovery document and JWKS, public)."""
    port = free_port()
    ws.oidc_files(f"https://{LOOPBACK}:{port}")
    block = f"""    server {{
        listen {LOOPBACK}:{port} ssl;
        ssl_certificate {ws.root / "upstream.crt"};
        ssl_certificate_key {ws.root / "upstream.key"};
        location = {POD_PATH} {{
            if ($http_authorization != "Bearer {ws.upstream_token}") {{ return 401; }}
            default_type application/json;
            alias {ws.root / "www" / "pod.json"};
        }}
        # what a gateway's health probe reads (kube-apiserver answers these too)
        location = /readyz {{
            if ($http_authorization != "Bearer {ws.upstream_token}") {{ return 401; }}
            default_type text/plain;
            return 200 "ok";
        }}
        location = /version {{
            if ($http_authorization != "Bearer {ws.upstream_token}") {{ return 401; }}
            default_type application/json;
            return 200 '{VERSION_JSON}';
        }}
        location = /.well-known/openid-configuration {{
            default_type application/json;
            alias {ws.root / "www" / "openid-configuration.json"};
        }}
        location = /jwks {{
            default_type application/json;
            alias {ws.root / "www" / "jwks.json"};
        }}
        location / {{ return 404; }}
    }}"""
    conf = _nginx_conf(ws, "upstream", workers, block)
    proc = _start_nginx(procs, ws, "upstream", conf)
    peer = Peer(
        "direct",
        "upstream (nginx TLS, direct)",
        port,
        POD_PATH,
        client_context(ws.upstream_ca),
        token=ws.upstream_token,
        proc=proc,
        note=f"nginx, {workers} worker processes, TLS",
    )
    _ready_200(peer, proc)
    return peer


def start_nginx_proxy(procs: Processes, ws: Workspace, upstream: Peer, workers: int) -> Peer:
    """nginx as a TLS reverse proxy with upstream keep-alive, injecting the upstream token."""
    from karpor.auth.ca import CertificateAuthority  # noqa: PLC0415

    ca = CertificateAuthority.create("bench-proxy-ca")
    (ws.root / "proxy-ca.crt").write_bytes(ca.cert_pem)
    ca.issue_server("bench-proxy", ["127.0.0.1", "localhost"]).write(
        ws.root / "proxy.crt", ws.root / "proxy.key"
    )
    port = free_port()
    block = f"""    upstream bench_upstream {{
        server {LOOPBACK}:{upstream.port};
        keepalive 256;
    }}
    server {{
        listen {LOOPBACK}:{port} ssl;
        ssl_certificate {ws.root / "proxy.crt"};
        ssl_certificate_key {ws.root / "proxy.key"};
        location {KARPOR_PREFIX}/ {{
            proxy_pass https://bench_upstream/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {ws.upstream_token}";
            proxy_ssl_trusted_certificate {ws.upstream_ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_buffering off;
        }}
        location / {{ return 404; }}
    }}"""
    conf = _nginx_conf(ws, "nginx-proxy", workers, block)
    proc = _start_nginx(procs, ws, "nginx-proxy", conf)
    peer = Peer(
        "nginx-proxy",
        "nginx reverse proxy",
        port,
        KARPOR_PREFIX + POD_PATH,
        client_context(ws.root / "proxy-ca.crt"),
        token=ws.user_token,
        proc=proc,
        note=f"{workers} worker processes, TLS both sides, upstream keep-alive",
    )
    _ready_200(peer, proc)
    return peer


def start_kubectl_proxy(procs: Processes, ws: Workspace, kubectl: Path, upstream: Peer) -> Peer:
    """``kubectl proxy`` on loopback (plain HTTP) in front of the upstream."""
    port = free_port()
    kubeconfig = ws.upstream_kubeconfig(upstream.port)
    env = {**os.environ, "KUBECACHEDIR": str(ws.root / "kube-cache"), "HOME": str(ws.root)}
    proc = procs.start(
        "kubectl-proxy",
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "proxy",
            f"--address={LOOPBACK}",
            f"--port={port}",
            r"--accept-hosts=^(localhost|127\.0\.0\.1)$",
        ],
        env=env,
    )
    peer = Peer(
        "kubectl-proxy",
        "kubectl proxy",
        port,
        POD_PATH,
        None,
        proc=proc,
        note="plain HTTP on loopback (kubectl proxy serves no TLS); TLS to the upstream",
    )
    wait_for("kubectl proxy serving", log_contains(proc, "Starting to serve"), READY_TIMEOUT, proc)
    _ready_200(peer, proc)
    return peer


def twistd() -> str:
    """The ``twistd`` of this Python (the venv's), else from PATH."""
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    return shutil.which("twistd") or "twistd"


@dataclass
class Karpor:
    """A started gateway: its process, port, state directory, client contexts."""

    proc: Proc
    port: int
    state_dir: Path
    clusters_dir: Path
    #: context trusting the gateway CA (no client certificate)
    context: ssl.SSLContext
    #: context with the bench user's client certificate
    cert_context: ssl.SSLContext
    #: "" when the --config with token authentication was accepted, else why not
    config_problem: str
    startup_s: float


def start_karpor(
    procs: Processes,
    ws: Workspace,
    name: str,
    clusters_dir: Path,
    workers: int,
    use_config: bool = True,
    env: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Karpor:
    """``twistd -n --pidfile= karpor …`` with ``workers``; ready when ``/readyz`` says ok.

    The token-authentication ``--config`` (plus the settings of ``extra``)
    is tried first; a gateway that
    refuses it (an unknown key before the access work lands) is started
    again without it, and the refusal is recorded in ``config_problem``.
    """
    import time  # noqa: PLC0415

    state_dir = ws.root / f"{name}-state"
    # a karpor of another revision (env) may not know authentication.jwt
    config = ws.gateway_config(oidc=env is None) if use_config else None
    if extra is not None:  # keys of the workload's own, beside (or without) those
        merged = yaml.safe_load(config.read_text()) if config is not None else {}
        config = ws.root / f"{name}.yaml"
        config.write_text(yaml.safe_dump({**merged, **extra}))
    config_problem = "" if use_config else "not asked"
    while True:
        port = free_port()
        argv = [
            twistd(),
            "-n",
            "--pidfile=",
            "karpor",
            "--clusters-dir",
            str(clusters_dir),
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
        if config is not None:
            argv += ["--config", str(config)]
        started = time.monotonic()
        proc = procs.start(name, argv, env)
        ca_file = state_dir / "ca.crt"
        holder: dict[str, ssl.SSLContext] = {}

        def ready(
            ca_file: Path = ca_file,
            port: int = port,
            holder: dict[str, ssl.SSLContext] = holder,
        ) -> bool:
            if not ca_file.exists():
                return False
            context = holder.get("ctx") or client_context(ca_file)
            holder["ctx"] = context
            status, _ = https_status(port, "/readyz", context)
            return status == 200

        try:
            wait_for(f"{name} ready", ready, READY_TIMEOUT, proc)
        except BenchError as exc:
            procs.stop(proc)
            text = str(exc)
            if config is not None and re.search(r"authentication|config|unknown", text, re.I):
                config_problem = "the gateway refused `authentication.tokenFile` in --config: " + (
                    text.strip().splitlines()[-1] if text.strip() else ""
                )
                config = None
                continue
            raise
        startup = time.monotonic() - started
        cert, key = ws.client_certificate(state_dir)
        return Karpor(
            proc,
            port,
            state_dir,
            clusters_dir,
            holder["ctx"],
            client_context(state_dir / "ca.crt", cert, key),
            config_problem,
            startup,
        )


def oidc_peer(gw: Karpor, ws: Workspace, key: str, label: str) -> Peer:
    """The gateway reached with the bench user's ID token (the upstream plays
    the OpenID provider); ready once the gateway fetched the provider's keys."""
    peer = Peer(key, label, gw.port, KARPOR_PREFIX + POD_PATH, gw.context, token=ws.oidc_token)
    peer.proc = gw.proc
    peer.note = "the same gateway, a bearer ID token (RS256, cached after its first check)"
    if ws.oidc_token is None or gw.config_problem:
        peer.unavailable = "not measured: no OpenID provider configured"
        return peer

    def accepted() -> bool:
        status, _ = https_status(gw.port, peer.path, gw.context, peer.headers())
        return status == 200

    try:
        wait_for(f"{label} accepted", accepted, READY_TIMEOUT, gw.proc)
    except BenchError as exc:
        peer.unavailable = f"not measured: {str(exc).splitlines()[0]}"
    return peer


def karpor_peer(gw: Karpor, ws: Workspace, key: str, label: str, workers: int) -> Peer:
    """The gateway as a request/response peer; ``unavailable`` unless the token works."""
    peer = Peer(
        key,
        label,
        gw.port,
        KARPOR_PREFIX + POD_PATH,
        gw.context,
        token=ws.user_token,
        proc=gw.proc,
        cert_context=gw.cert_context,
    )
    from bench.procs import tree_size  # noqa: PLC0415

    processes = tree_size(gw.proc.pid)
    peer.note = f"--workers {workers}: {processes} process(es) in the tree"
    if gw.config_problem:
        peer.unavailable = "not measured: token authentication not available"
        peer.note += f"; {gw.config_problem}"
        return peer
    try:
        status, _ = https_status(gw.port, peer.path, gw.context, peer.headers())
    except OSError as exc:
        peer.unavailable = f"not measured: {exc}"
        return peer
    if status == 401:
        peer.unavailable = "not measured: token authentication not available"
        peer.note += "; karpor answered 401 to the bearer token of authentication.tokenFile"
    elif status != 200:
        peer.unavailable = f"not measured: karpor answered {status} to GET {peer.path}"
    return peer
