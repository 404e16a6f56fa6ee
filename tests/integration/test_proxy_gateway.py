"""The request path over real TLS sockets on loopback.

An upstream (a small Twisted TLS server with its own CA) and the gateway
(front protocol + upstream pools + a minimal own-API handler) run as
subprocesses; a urllib3 client presenting a client certificate drives them.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import urllib3
from support.frontgateway import start, stop
from support.procs import free_port

from karpor.auth.ca import CertificateAuthority

TOKEN = "integration-token-0123456789"
LARGE = 8 * 1024 * 1024

UPSTREAM = textwrap.dedent(
    """
    import json, sys
    from twisted.internet import reactor
    from twisted.web import resource, server
    from karpor.net.tls import server_options

    TOKEN, large = sys.argv[1], int(sys.argv[4])
    cert, key = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
    waiting = []

    def blob(n):
        return bytes(range(256)) * (n // 256)

    class Root(resource.Resource):
        isLeaf = True
        def render(self, request):
            if request.getHeader("authorization") != "Bearer " + TOKEN:
                request.setResponseCode(401)
                return b'{"kind":"Status","code":401}'
            path = request.path.decode()
            if path == "/json":
                request.setHeader("content-type", "application/json")
                return json.dumps({"kind": "Pod", "q": request.uri.decode()}).encode()
            if path == "/headers":
                raw = request.requestHeaders.getAllRawHeaders()
                seen = {k.decode().lower(): [x.decode() for x in v] for k, v in raw}
                return json.dumps(seen).encode()
            if path == "/echo":
                return request.content.read()
            if path == "/large":
                return blob(large)
            if path == "/chunked":
                for i in range(50):
                    request.write(b'{"type":"ADDED","n":%d}\\n' % i)
                request.finish()
                return server.NOT_DONE_YET
            if path == "/slow":
                request.write(b"first line\\n")
                waiting.append(request)
                return server.NOT_DONE_YET
            if path == "/release":
                for r in waiting:
                    r.write(b"second line\\n")
                    r.finish()
                waiting.clear()
                return b"released"
            request.setResponseCode(404)
            return b"nope"

    site = server.Site(Root())
    options = server_options(cert, key, request_client_certificate=False)
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
    """
)


@dataclass
class Setup:
    base: str
    http: urllib3.PoolManager
    anonymous: urllib3.PoolManager
    upstream_port: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("proxy-gateway")
    upstream_ca = CertificateAuthority.create("upstream-ca")
    other_ca = CertificateAuthority.create("other-ca")
    gateway_ca = CertificateAuthority.create("gateway-ca")
    up_cert = upstream_ca.issue_server("upstream", ["127.0.0.1"])
    up_cert.write(tmp / "up.crt", tmp / "up.key")
    gw_cert = gateway_ca.issue_server("gateway", ["127.0.0.1", "localhost"])
    alice = gateway_ca.issue_client("alice", ["dev"])
    alice.write(tmp / "alice.crt", tmp / "alice.key")
    (tmp / "gateway-ca.crt").write_bytes(gateway_ca.cert_pem)
    (tmp / "upstream.py").write_text(UPSTREAM)

    upstream, up_port = start(
        [str(tmp / "upstream.py"), TOKEN, str(tmp / "up.crt"), str(tmp / "up.key"), str(LARGE)]
    )
    gateway = None
    try:
        closed = free_port()
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
                },
                {
                    "name": "closed",
                    "endpoint": f"https://127.0.0.1:{closed}",
                    "ca": upstream_ca.cert_pem.decode(),
                },
                {
                    "name": "wrongca",
                    "endpoint": f"https://127.0.0.1:{up_port}",
                    "ca": other_ca.cert_pem.decode(),
                },
            ],
        }
        (tmp / "gateway.json").write_text(json.dumps(config))
        gateway, gw_port = start(["-m", "support.frontgateway", str(tmp / "gateway.json")])
        ca = str(tmp / "gateway-ca.crt")
        http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca,
            retries=False,
            cert_file=str(tmp / "alice.crt"),
            key_file=str(tmp / "alice.key"),
        )
        anonymous = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=ca, retries=False)
        yield Setup(f"https://127.0.0.1:{gw_port}", http, anonymous, up_port)
    finally:
        if gateway is not None:
            stop(gateway)
        stop(upstream)


def _proxy(setup: Setup, cluster: str, path: str) -> str:
    return f"{setup.base}/apis/cluster.karpor.io/v1beta1/clusters/{cluster}/proxy{path}"


def test_json_through_both_paths(setup: Setup) -> None:
    for url in (
        _proxy(setup, "up", "/json?labelSelector=a%3Db&x=%2F"),
        f"{setup.base}/apis/cluster.core.oam.dev/v1alpha1/clustergateways/up/proxy/json?labelSelector=a%3Db&x=%2F",
    ):
        r = setup.http.request("GET", url)
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/json"
        assert json.loads(r.data) == {"kind": "Pod", "q": "/json?labelSelector=a%3Db&x=%2F"}


def test_credentials_are_replaced(setup: Setup) -> None:
    r = setup.http.request(
        "GET",
        _proxy(setup, "up", "/headers"),
        headers={
            "Authorization": "Bearer caller",
            "Impersonate-User": "root",
            "X-Remote-User": "x",
        },
    )
    seen = json.loads(r.data)
    assert seen["authorization"] == [f"Bearer {TOKEN}"]
    assert "x-remote-user" not in seen
    # no policy file: the caller may impersonate; the gateway writes the headers
    assert seen["impersonate-user"] == ["root"] and "impersonate-group" not in seen
    assert seen["host"] == [f"127.0.0.1:{setup.upstream_port}"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]


def test_large_body_identical(setup: Setup) -> None:
    r = setup.http.request("GET", _proxy(setup, "up", "/large"), preload_content=False)
    assert r.headers["Content-Length"] == str(LARGE)
    expected = bytes(range(256)) * (LARGE // 256)
    got = b"".join(r.stream(1 << 16))
    assert got == expected
    r.release_conn()


def test_chunked_stream_identical(setup: Setup) -> None:
    r = setup.http.request("GET", _proxy(setup, "up", "/chunked"))
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert r.data == b"".join(b'{"type":"ADDED","n":%d}\n' % i for i in range(50))


def test_stream_is_not_held_back(setup: Setup) -> None:
    r = setup.http.request(
        "GET", _proxy(setup, "up", "/slow"), preload_content=False, timeout=urllib3.Timeout(read=20)
    )
    # the first line arrives while the upstream still holds the response open
    assert r.read1(1024) == b"first line\n"
    assert setup.http.request("GET", _proxy(setup, "up", "/release")).data == b"released"
    assert r.read() == b"second line\n"
    r.release_conn()


def test_request_body_streams_up(setup: Setup) -> None:
    body = bytes(range(256)) * 4096

    def gen() -> Iterator[bytes]:
        for i in range(0, len(body), 50_000):
            yield body[i : i + 50_000]

    chunked = setup.http.request("POST", _proxy(setup, "up", "/echo"), body=gen(), chunked=True)
    assert chunked.status == 200 and chunked.data == body
    sized = setup.http.request("PUT", _proxy(setup, "up", "/echo"), body=body)
    assert sized.status == 200 and sized.data == body


def test_without_client_certificate_401(setup: Setup) -> None:
    r = setup.anonymous.request("GET", _proxy(setup, "up", "/json"))
    assert r.status == 401
    assert json.loads(r.data)["reason"] == "Unauthorized"
    assert setup.anonymous.request("GET", f"{setup.base}/healthz").data == b"ok"


def test_unknown_cluster_404(setup: Setup) -> None:
    r = setup.http.request("GET", _proxy(setup, "nope", "/json"))
    assert r.status == 404
    assert json.loads(r.data)["message"] == 'clusters.cluster.karpor.io "nope" not found'


def test_closed_port_503(setup: Setup) -> None:
    r = setup.http.request("GET", _proxy(setup, "closed", "/json"))
    assert r.status == 503
    status = json.loads(r.data)
    assert status["reason"] == "ServiceUnavailable" and "'closed'" in status["message"]


def test_ca_mismatch_502_naming_cluster(setup: Setup) -> None:
    r = setup.http.request("GET", _proxy(setup, "wrongca", "/json"))
    assert r.status == 502
    message = json.loads(r.data)["message"]
    assert "'wrongca'" in message and "certificate verify failed" in message
    assert TOKEN not in message


def test_many_requests_on_one_connection(setup: Setup) -> None:
    for i in range(50):
        r = setup.http.request("GET", _proxy(setup, "up", f"/json?i={i}"))
        assert json.loads(r.data)["q"] == f"/json?i={i}"
