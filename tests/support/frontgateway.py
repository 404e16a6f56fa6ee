"""The gateway's front alone, for proxy tests: ``python -m support.frontgateway CONFIG``.

A :class:`~karpor.front.protocol.GatewayFactory` over the clusters of a JSON
config (``clusters`` with ``name``, ``endpoint``, ``ca``, and ``auth`` —
``token``, the default, or ``cert`` — and optionally a ``token`` of their
own; ``token``, ``client_cert``, ``client_key``; the serving
``cert``/``key``; the callers' ``client_ca``),
served with TLS on the socket exactly as the gateway serves
(:class:`karpor.net.tlstransport.TLSPort`). Its own API answers ``/healthz``,
``/stats?cluster=NAME`` (the cluster's pool: HTTP/1.1 and HTTP/2
connections, streams, whether it speaks h2) and a 404 ``Status`` for
anything else. Prints the port once listening.

:func:`start` and :func:`stop` run such a script (or any that prints its
port on its first line) as a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.config.model import Cluster, Credential, TokenCredential, X509Credential
from karpor.front.protocol import GatewayFactory
from karpor.kube.status import ApiError
from karpor.net.tls import server_options
from karpor.net.tlstransport import TLSPort
from karpor.upstream.pool import UpstreamPools

TESTS = __file__.rsplit("/support/", 1)[0]


def start(argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``python ARGV…`` (with ``tests`` importable); the port it prints."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=TESTS,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"{' '.join(argv)} did not start: {err.decode()}")
    return proc, int(line)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(config_path: str) -> None:
    from twisted.internet import reactor as _reactor  # noqa: PLC0415 (not in pytest's process)

    reactor: Any = _reactor
    with open(config_path) as f:
        cfg = json.load(f)

    pools = UpstreamPools(reactor, connect_timeout=3.0)

    class Api:
        def handle(self, request: Any, responder: Any) -> None:
            if request.path == "/healthz":
                responder.respond(200, [(b"Content-Type", b"text/plain")], b"ok")
            elif request.path == "/stats":
                pool = pools.get(clusters[request.query.split("=", 1)[1]])
                mux = pool.multiplexer
                stats = {
                    "h2_connections": pool.h2_connections,
                    "h1_connections": pool.open_connections,
                    "streams": mux.streams if mux is not None else 0,
                    "speaks_h2": mux.speaks_h2 if mux is not None else None,
                }
                responder.respond(
                    200, [(b"Content-Type", b"application/json")], json.dumps(stats).encode()
                )
            else:
                body = ApiError(404, "no such path").body()
                responder.respond(404, [(b"Content-Type", b"application/json")], body)

    def credential(c: dict[str, Any]) -> Credential:
        if c.get("auth") == "cert":
            return X509Credential(
                certificate=cfg["client_cert"].encode(), private_key=cfg["client_key"].encode()
            )
        return TokenCredential(token=c.get("token") or cfg["token"])

    clusters = {
        c["name"]: Cluster(
            name=c["name"],
            endpoint=c["endpoint"],
            ca_pem=c["ca"].encode(),
            credential=credential(c),
        )
        for c in cfg["clusters"]
    }
    auth = CertificateAuthenticator([cfg["client_ca"].encode()])
    factory = GatewayFactory(lambda: clusters, Api(), auth, pools, reactor=reactor)
    context = server_options(cfg["cert"].encode(), cfg["key"].encode()).getContext()
    port = TLSPort.listen(reactor, 0, factory, context, interface="127.0.0.1", backlog=1024)
    print(port.getHost().port, flush=True)  # type: ignore[attr-defined]
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
