"""What a caller may not tell a cluster, over real TLS sockets on loopback:
its own source address (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``)
and a bearer token inside ``Sec-WebSocket-Protocol``.

An upstream (a Twisted web server with its own CA) answers every request
with the headers it received, as JSON; the gateway's front
(:mod:`support.frontgateway`) forwards to it with a token of its own.
"""

from __future__ import annotations

import http.client
import json
import ssl
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.frontgateway import start, stop

from karpor.auth.ca import CertificateAuthority

TOKEN = "cluster-token-0123456789"
USER_TOKEN = "dXNlci10b2tlbi1zZWNyZXQ"  # base64url of a user's token
BEARER_PROTOCOL = f"base64url.bearer.authorization.k8s.io.{USER_TOKEN}"

UPSTREAM = textwrap.dedent(
    """
    import json, sys
    from twisted.internet import reactor
    from twisted.web import resource, server
    from karpor.net.tls import server_options

    cert, key = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()

    class Headers(resource.Resource):
        isLeaf = True
        def render(self, request):
            raw = request.requestHeaders.getAllRawHeaders()
            seen = {k.decode().lower(): [x.decode() for x in v] for k, v in raw}
            request.setHeader("content-type", "application/json")
            return json.dumps(seen).encode()

    options = server_options(cert, key, request_client_certificate=False)
    port = reactor.listenSSL(0, server.Site(Headers()), options, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
    """
)


@dataclass
class Setup:
    port: int
    context: ssl.SSLContext


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("forwarded-headers")
    upstream_ca = CertificateAuthority.create("upstream-ca")
    gateway_ca = CertificateAuthority.create("gateway-ca")
    upstream_ca.issue_server("upstream", ["127.0.0.1"]).write(tmp / "up.crt", tmp / "up.key")
    gw_cert = gateway_ca.issue_server("gateway", ["127.0.0.1"])
    gateway_ca.issue_client("alice", ["dev"]).write(tmp / "alice.crt", tmp / "alice.key")
    (tmp / "upstream.py").write_text(UPSTREAM)
    upstream, up_port = start([str(tmp / "upstream.py"), str(tmp / "up.crt"), str(tmp / "up.key")])
    gateway = None
    try:
        config = {
            "token": TOKEN,
            "client_ca": gateway_ca.cert_pem.decode(),
            "cert": gw_cert.cert_pem.decode(),
            "key": gw_cert.key_pem.decode(),
            "clusters": [
                {
                    "name": "up",
                    "endpoint": f"https://127.0.0.1:{up_port}",
                    "ca": upstream_ca.cert_pem.decode(),
                }
            ],
        }
        (tmp / "gateway.json").write_text(json.dumps(config))
        gateway, gw_port = start(["-m", "support.frontgateway", str(tmp / "gateway.json")])
        context = ssl.create_default_context(cadata=gateway_ca.cert_pem.decode())
        context.load_cert_chain(tmp / "alice.crt", tmp / "alice.key")
        yield Setup(gw_port, context)
    finally:
        if gateway is not None:
            stop(gateway)
        stop(upstream)


def seen_upstream(setup: Setup, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """The headers the cluster received for a GET carrying ``headers``."""
    conn = http.client.HTTPSConnection("127.0.0.1", setup.port, context=setup.context, timeout=30)
    try:
        conn.putrequest("GET", "/apis/cluster.karpor.io/v1beta1/clusters/up/proxy/api/v1/x")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        seen: dict[str, Any] = json.loads(body)
        return seen
    finally:
        conn.close()


def test_the_cluster_sees_the_address_the_gateway_saw(setup: Setup) -> None:
    seen = seen_upstream(
        setup,
        [
            ("X-Forwarded-For", "203.0.113.66"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Real-IP", "203.0.113.66"),
            ("Forwarded", "for=203.0.113.66;proto=https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "http"),
        ],
    )
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    claims = {"x-real-ip", "forwarded", "x-forwarded-host", "x-forwarded-proto"}
    assert not claims & set(seen)
    assert seen["authorization"] == [f"Bearer {TOKEN}"]


def test_a_websocket_upgrade_loses_the_bearer_protocol_only(setup: Setup) -> None:
    upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    # kubectl's order: the channel protocols, then the token
    seen = seen_upstream(
        setup,
        [*upgrade, ("Sec-WebSocket-Protocol", f"v5.channel.k8s.io, {BEARER_PROTOCOL}")],
    )
    assert seen["sec-websocket-protocol"] == ["v5.channel.k8s.io"]
    assert USER_TOKEN not in json.dumps(seen)
    # nothing left: no header at all
    seen = seen_upstream(setup, [*upgrade, ("Sec-WebSocket-Protocol", BEARER_PROTOCOL)])
    assert "sec-websocket-protocol" not in seen
    assert USER_TOKEN not in json.dumps(seen)
