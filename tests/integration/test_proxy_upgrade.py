"""Upgrade requests through the gateway over real TLS sockets on loopback.

An upstream (a raw Twisted TLS protocol with its own CA: it answers ``101``
to an upgrade request, reports what it received on the first line, then
echoes every byte with backpressure) and the gateway (front protocol +
upstream pools) run as subprocesses; an asyncio TLS client presenting a
client certificate drives them.  One cluster is reached with a bearer token,
another with a client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import ssl
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.frontgateway import start, stop
from support.procs import free_port

from karpor.auth.ca import CertificateAuthority

TOKEN = "splice-token-0123456789"
ECHO = 16 * 1024 * 1024
#: generous bound on one network step, so a broken splice fails instead of hanging
STEP = 60.0

UPSTREAM = textwrap.dedent(
    r"""
    import base64, hashlib, json, sys
    from twisted.internet import protocol, reactor
    from karpor.net.tls import server_options

    TOKEN = sys.argv[1]
    cert, key = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    live = set()

    def status(code, message):
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "code": code}).encode()
        return (b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (code, len(body), body))

    class Upstream(protocol.Protocol):
        def connectionMade(self):
            self.buf = b""
            self.tunnel = False

        def connectionLost(self, reason):
            live.discard(self)

        def dataReceived(self, data):
            if self.tunnel:
                self.transport.write(data)
                return
            self.buf += data
            while not self.tunnel and b"\r\n\r\n" in self.buf:
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                self.request(head)
            if self.tunnel and self.buf:
                rest, self.buf = self.buf, b""
                self.transport.write(rest)

        def request(self, head):
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ")
            headers = {}
            for line in lines[1:]:
                name, value = line.split(b":", 1)
                headers.setdefault(name.strip().lower().decode(), []).append(value.strip().decode())
            peer = self.transport.getPeerCertificate()
            cn = peer.get_subject().CN if peer is not None else None
            if headers.get("authorization") == ["Bearer " + TOKEN]:
                auth = "token"
            elif cn == "gateway-client" and "authorization" not in headers:
                auth = "cert"
            else:
                self.transport.write(status(401, "Unauthorized"))
                return
            path = target.split(b"?")[0]
            if path == b"/live":
                body = str(len(live)).encode()
                ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                self.transport.write(ok + body)
                return
            if path == b"/forbidden":
                self.transport.write(status(403, "pods/exec is forbidden"))
                return
            upgrade = headers.get("upgrade", [""])[0]
            if "upgrade" not in headers.get("connection", [""])[0].lower() or not upgrade:
                self.transport.write(status(400, "an upgrade was expected"))
                return
            out = [b"HTTP/1.1 101 Switching Protocols", b"Connection: Upgrade",
                   b"Upgrade: " + upgrade.encode()]
            if upgrade.lower() == "websocket":
                digest = hashlib.sha1(headers["sec-websocket-key"][0].encode() + GUID).digest()
                out.append(b"Sec-WebSocket-Accept: " + base64.b64encode(digest))
                out.append(b"Sec-WebSocket-Protocol: v5.channel.k8s.io")
            else:
                out.append(b"X-Stream-Protocol-Version: v4.channel.k8s.io")
            seen = {
                "method": method.decode(),
                "target": target.decode(),
                "auth": auth,
                "headers": {k: v for k, v in headers.items() if k != "authorization"},
            }
            first = json.dumps(seen).encode() + b"\n"
            # the report follows the 101 head in the same write
            self.transport.write(b"\r\n".join(out) + b"\r\n\r\n" + first)
            self.tunnel = True
            if path == b"/bye":
                self.transport.write(b"bye")
                self.transport.loseConnection()
                return
            live.add(self)
            # echo with backpressure: a full write buffer pauses our reading
            self.transport.registerProducer(self.transport, True)

    factory = protocol.Factory.forProtocol(Upstream)
    options = server_options(cert, key, request_client_certificate=True)
    port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
    """
)


@dataclass
class Setup:
    port: int
    ssl: ssl.SSLContext


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("proxy-upgrade")
    upstream_ca = CertificateAuthority.create("upstream-ca")
    other_ca = CertificateAuthority.create("other-ca")
    gateway_ca = CertificateAuthority.create("gateway-ca")
    upstream_ca.issue_server("upstream", ["127.0.0.1"]).write(tmp / "up.crt", tmp / "up.key")
    gateway_client = upstream_ca.issue_client("gateway-client", [])
    gw_cert = gateway_ca.issue_server("gateway", ["127.0.0.1", "localhost"])
    gateway_ca.issue_client("alice", ["dev"]).write(tmp / "alice.crt", tmp / "alice.key")
    (tmp / "upstream.py").write_text(UPSTREAM)
    upstream, up_port = start(
        [str(tmp / "upstream.py"), TOKEN, str(tmp / "up.crt"), str(tmp / "up.key")]
    )
    gateway = None
    try:
        endpoint = f"https://127.0.0.1:{up_port}"
        ca = upstream_ca.cert_pem.decode()
        config = {
            "token": TOKEN,
            "client_cert": gateway_client.cert_pem.decode(),
            "client_key": gateway_client.key_pem.decode(),
            "client_ca": gateway_ca.cert_pem.decode(),
            "cert": gw_cert.cert_pem.decode(),
            "key": gw_cert.key_pem.decode(),
            "clusters": [
                {"name": "token", "auth": "token", "endpoint": endpoint, "ca": ca},
                {"name": "cert", "auth": "cert", "endpoint": endpoint, "ca": ca},
                {
                    "name": "closed",
                    "auth": "token",
                    "endpoint": f"https://127.0.0.1:{free_port()}",
                    "ca": ca,
                },
                {
                    "name": "wrongca",
                    "auth": "token",
                    "endpoint": endpoint,
                    "ca": other_ca.cert_pem.decode(),
                },
            ],
        }
        (tmp / "gateway.json").write_text(json.dumps(config))
        gateway, gw_port = start(["-m", "support.frontgateway", str(tmp / "gateway.json")])
        context = ssl.create_default_context(cadata=gateway_ca.cert_pem.decode())
        context.load_cert_chain(tmp / "alice.crt", tmp / "alice.key")
        context.set_alpn_protocols(["http/1.1"])
        yield Setup(gw_port, context)
    finally:
        if gateway is not None:
            stop(gateway)
        stop(upstream)


# -- a small HTTP/1.1 client on asyncio streams ----------------------------------------


@dataclass
class Response:
    code: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


def proxy(cluster: str, path: str) -> str:
    return f"/apis/cluster.karpor.io/v1beta1/clusters/{cluster}/proxy{path}"


def spdy_request(target: str, extra: str = "") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n"
        "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        f"X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n{extra}\r\n"
    ).encode()


def websocket_request(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n{extra}\r\n"
    ).encode()


async def connect(setup: Setup) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", setup.port, ssl=setup.ssl, server_hostname="127.0.0.1", limit=1 << 20
        ),
        STEP,
    )


async def read_response(reader: asyncio.StreamReader, body: bool = True) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP)
    lines = head[:-4].decode("latin-1").split("\r\n")
    code = int(lines[0].split(" ", 2)[1])
    headers = [(n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in lines[1:])]
    response = Response(code, headers)
    length = response.header("Content-Length")
    if body and length is not None:
        response.body = await asyncio.wait_for(reader.readexactly(int(length)), STEP)
    return response


async def wait_closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), STEP)


async def live_tunnels(setup: Setup) -> int:
    reader, writer = await connect(setup)
    writer.write(f"GET {proxy('token', '/live')} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    response = await read_response(reader)
    await wait_closed(writer)
    assert response.code == 200
    return int(response.body)


async def until_no_tunnels(setup: Setup) -> int:
    """The upstream's count of open tunnels, once it drops to 0 (or the last
    count seen after many tries)."""
    count = -1
    for _ in range(300):
        count = await live_tunnels(setup)
        if count == 0:
            break
        await asyncio.sleep(0.1)  # the poll of this wait (support.waits.wait_for blocks the loop)
    return count


# -- tests ---------------------------------------------------------------------------


async def _echo(setup: Setup, cluster: str) -> None:
    reader, writer = await connect(setup)
    target = proxy(cluster, "/exec?command=sh&command=-c&command=echo%20a%26b&stdin=true")
    writer.write(
        spdy_request(
            target,
            "Authorization: Bearer caller-token\r\nImpersonate-User: root\r\n"
            "X-Remote-User: mallory\r\n",
        )
    )
    response = await read_response(reader, body=False)
    assert response.code == 101
    assert response.header("Upgrade") == "SPDY/3.1"
    assert response.header("Connection") == "Upgrade"
    assert response.header("X-Stream-Protocol-Version") == "v4.channel.k8s.io"
    seen = json.loads(await asyncio.wait_for(reader.readline(), STEP))
    assert seen["method"] == "POST"
    assert seen["target"] == "/exec?command=sh&command=-c&command=echo%20a%26b&stdin=true"
    assert seen["auth"] == cluster  # the cluster's own credential, not the caller's
    headers = seen["headers"]
    assert headers["upgrade"] == ["SPDY/3.1"]
    assert headers["connection"] == ["Upgrade"]
    assert headers["x-stream-protocol-version"] == ["v4.channel.k8s.io", "v3.channel.k8s.io"]
    assert not [h for h in headers if h.startswith("x-remote-")]
    # no policy file: the caller's impersonation is honoured, in the gateway's headers
    assert [h for h in headers if h.startswith("impersonate-")] == ["impersonate-user"]
    assert headers["impersonate-user"] == ["root"]

    payload = random.Random(cluster).randbytes(ECHO)

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(payload), 1 << 16):
            writer.write(view[i : i + (1 << 16)])
            await writer.drain()

    sender = asyncio.create_task(send())
    received = hashlib.sha256()
    got = 0
    while got < ECHO:
        piece = await asyncio.wait_for(reader.read(1 << 18), STEP)
        assert piece, f"the tunnel closed after {got} bytes"
        received.update(piece)
        got += len(piece)
    await sender
    assert got == ECHO
    assert received.hexdigest() == hashlib.sha256(payload).hexdigest()
    # closing the client closes the cluster side of the tunnel
    await wait_closed(writer)
    assert await until_no_tunnels(setup) == 0


@pytest.mark.parametrize("cluster", ["token", "cert"])
def test_spdy_upgrade_echoes_16_mib_intact(setup: Setup, cluster: str) -> None:
    asyncio.run(_echo(setup, cluster))


async def _websocket(setup: Setup) -> None:
    reader, writer = await connect(setup)
    # bytes sent right behind the request head reach the cluster after the 101
    writer.write(websocket_request(proxy("token", "/exec?command=ls&tty=false")) + b"EARLY")
    response = await read_response(reader, body=False)
    assert response.code == 101
    assert response.header("Upgrade") == "websocket"
    assert response.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.header("Sec-WebSocket-Protocol") == "v5.channel.k8s.io"
    seen = json.loads(await asyncio.wait_for(reader.readline(), STEP))
    assert seen["target"] == "/exec?command=ls&tty=false"
    assert seen["headers"]["sec-websocket-key"] == ["dGhlIHNhbXBsZSBub25jZQ=="]
    assert await asyncio.wait_for(reader.readexactly(5), STEP) == b"EARLY"
    writer.write(b"\x82\x03\x00abc")
    assert await asyncio.wait_for(reader.readexactly(6), STEP) == b"\x82\x03\x00abc"
    await wait_closed(writer)


def test_websocket_upgrade_and_early_bytes(setup: Setup) -> None:
    asyncio.run(_websocket(setup))


async def _forbidden(setup: Setup) -> None:
    reader, writer = await connect(setup)
    writer.write(websocket_request(proxy("token", "/forbidden?command=ls")))
    response = await read_response(reader)
    assert response.code == 403
    assert response.header("Content-Type") == "application/json"
    assert response.header("Upgrade") is None
    status = json.loads(response.body)
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "pods/exec is forbidden",
        "code": 403,
    }
    # the client connection goes on: kubectl's SPDY fallback on the same one
    writer.write(spdy_request(proxy("token", "/exec?command=ls")))
    switched = await read_response(reader, body=False)
    assert switched.code == 101
    seen = json.loads(await asyncio.wait_for(reader.readline(), STEP))
    assert seen["target"] == "/exec?command=ls"
    await wait_closed(writer)


def test_non_101_answer_passes_through_unchanged(setup: Setup) -> None:
    asyncio.run(_forbidden(setup))


async def _cluster_closes(setup: Setup) -> None:
    reader, writer = await connect(setup)
    writer.write(spdy_request(proxy("cert", "/bye")))
    assert (await read_response(reader, body=False)).code == 101
    await asyncio.wait_for(reader.readline(), STEP)
    # everything the cluster wrote arrives, then the client sees the end
    assert await asyncio.wait_for(reader.read(), STEP) == b"bye"
    await wait_closed(writer)


def test_cluster_closing_closes_the_client(setup: Setup) -> None:
    asyncio.run(_cluster_closes(setup))


async def _errors(setup: Setup) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for cluster in ("nope", "closed", "wrongca"):
        reader, writer = await connect(setup)
        writer.write(spdy_request(proxy(cluster, "/exec?command=ls")))
        response = await read_response(reader)
        out.append((response.code, json.loads(response.body)))
        await wait_closed(writer)
    return out


def test_errors_before_the_upgrade_are_statuses(setup: Setup) -> None:
    (nf, nf_status), (unreachable, un_status), (bad_tls, tls_status) = asyncio.run(_errors(setup))
    assert nf == 404 and nf_status["message"] == 'clusters.cluster.karpor.io "nope" not found'
    assert unreachable == 503 and "'closed' is unreachable" in un_status["message"]
    assert bad_tls == 502
    assert "'wrongca'" in tls_status["message"]
    assert "certificate verify failed" in tls_status["message"]
    assert TOKEN not in json.dumps([nf_status, un_status, tls_status])
