"""Bounds on client connections through a real gateway (issue 14, items 3,
5 and 13), with hand-made requests on raw sockets (the edge cases no client
library sends).

The gateway (one worker) runs with small ``clientConnections`` values
(a 64 KiB head, 0.5 s timeouts) and an audit log:

* an oversized head is a 431 (414 for the URL) ``Status``, then the close
  (lingering: a client still sending gets the answer, not a reset);
  a huge header is cut off, not read; the audit log keeps a bounded URL;
* a partial ClientHello, half a head and an idle keep-alive connection are
  closed after their timeouts (half a head with a 408); a watch outlives
  the idle timeout;
* unknown transfer codings are 501, broken chunked bodies and other HTTP
  versions 400/505, plain HTTP on the TLS port Go's plain-text 400;
  ``Connection: Content-Length`` keeps the body.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway import (
    GatewayRun,
    client_context,
    credentials_of,
    rss_bytes,
    start_gateway,
    write_kubeconfig,
)
from support.sim import SimRun
from support.waits import wait_for

LIMIT = 65536
TIMEOUT = 0.5
PROXY = b"/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy"


class Bounded:
    """The gateway under test, its audit log and TLS contexts."""

    def __init__(self, run: GatewayRun, audit: Path, admin: ssl.SSLContext) -> None:
        self.run = run
        self.audit = audit
        self.admin = admin
        self.anonymous = client_context(run.ca_pem)

    def tls(self, admin: bool = False) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.run.port), timeout=10)
        context = self.admin if admin else self.anonymous
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def tcp(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.run.port), timeout=10)


@pytest.fixture(scope="module")
def gw(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bounded]:
    base = tmp_path_factory.mktemp("bounds")
    clusters = base / "clusters"
    clusters.mkdir()
    shutil.copy(sim_clusters["sim-1"].cluster_file, clusters / "sim-1.yaml")
    audit = base / "audit.log"
    config = base / "karpor.yaml"
    config.write_text(
        f"workers: 1\nauditLog: {audit}\n"
        f"clientConnections:\n  maxHeaderBytes: {LIMIT}\n  handshakeTimeout: {TIMEOUT}\n"
        f"  headerReadTimeout: {TIMEOUT}\n  idleTimeout: {TIMEOUT}\n"
    )
    run = start_gateway(clusters, base / "state", "--config", str(config))
    try:
        kubeconfig = write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)
        yield Bounded(run, audit, client_context(*credentials_of(kubeconfig)))
    finally:
        run.stop()


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, bool]:
    """What arrives until the peer closes (``True``) or ``limit`` seconds pass (``False``)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data, True


def status_of(response: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    status = json.loads(body)
    assert status["kind"] == "Status" and status["status"] == "Failure"
    return int(lines[0].split()[1]), headers, status


def refused(gw: Bounded, request: bytes, admin: bool = False) -> tuple[int, dict[str, object]]:
    """Send ``request``; the Status answered and that the connection then closed."""
    with gw.tls(admin) as sock:
        sock.sendall(request)
        response, closed = read_until_closed(sock)
    assert closed, response
    code, headers, status = status_of(response)
    assert headers["connection"] == "close"
    assert status["code"] == code
    return code, status


# -- item 3: the request head ------------------------------------------------------------


def test_an_oversized_header_is_431_then_the_connection_closes(gw: Bounded) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * LIMIT) + b"\r\n\r\n"
    code, status = refused(gw, request)
    assert code == 431 and str(LIMIT) in str(status["message"])


def test_an_oversized_url_is_414(gw: Bounded) -> None:
    code, _ = refused(gw, b"GET /healthz?" + b"q" * (2 * LIMIT) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 414


def test_a_client_still_sending_after_its_head_was_refused_gets_the_answer(gw: Bounded) -> None:
    # the gateway answers once the head is over the limit; the client sends
    # on after the answer arrived (before reading it), as a client sending
    # a long URL does: a closed socket meeting those bytes resets the
    # connection, and the client's next write fails before it reads
    with gw.tls() as sock:
        sock.sendall(b"GET /healthz?" + b"q" * (LIMIT + 4096))
        readable, _, _ = select.select([sock], [], [], 10)
        assert readable
        sock.sendall(b"q" * 32768)
        time.sleep(0.02)  # not a wait: room for a reset to come back (loopback), if any
        sock.sendall(b"q" * 32768 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response, closed = read_until_closed(sock)
    assert closed and response
    assert status_of(response)[0] == 414


def test_a_huge_header_is_cut_off_not_read(gw: Bounded) -> None:
    worker = gw.run.serving_pid
    before = rss_bytes(worker)
    sent = 0
    with gw.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        piece = b"a" * 65536
        try:
            while sent < 16 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        response, closed = read_until_closed(sock)
    assert closed and sent < 16 * 1024 * 1024  # the gateway stopped reading
    if response:
        assert status_of(response)[0] == 431
    assert rss_bytes(worker) - before < 8 * 1024 * 1024


def test_the_audit_log_keeps_a_bounded_prefix_of_a_long_url(gw: Bounded) -> None:
    url = PROXY + b"/api/v1/namespaces?x=" + b"u" * (LIMIT - 1024)
    with gw.tls() as sock:
        sock.sendall(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response, _ = read_until_closed(sock)
    code, headers, _ = status_of(response)
    assert code == 401  # answered, and audited
    audit_id = headers["audit-id"]

    def audited() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in gw.audit.read_text().splitlines()]
        return [r for r in lines if r.get("requestID") == audit_id]

    [record] = wait_for(audited, 5, "the audit record")
    assert len(record["path"]) < 4096 + 64
    assert record["path"].startswith(url[:100].decode())
    assert "truncated" in record["path"]


# -- item 5: timeouts -----------------------------------------------------------------------


def test_a_partial_client_hello_is_closed_after_the_handshake_timeout(gw: Bounded) -> None:
    with gw.tcp() as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        response, closed = read_until_closed(sock)
    assert closed and response == b""


def test_half_a_head_gets_a_408_then_the_connection_closes(gw: Bounded) -> None:
    with gw.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        response, closed = read_until_closed(sock)
    assert closed
    code, headers, status = status_of(response)
    assert (code, status["reason"], headers["connection"]) == (408, "Timeout", "close")


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(gw: Bounded) -> None:
    with gw.tls() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response, closed = read_until_closed(sock)
    assert closed and response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nok")  # answered, kept alive, then closed silently


def test_a_watch_outlives_the_idle_timeout(gw: Bounded) -> None:
    path = PROXY + b"/api/v1/namespaces/default/configmaps"
    with gw.tls(admin=True) as watch:
        watch.sendall(b"GET " + path + b"?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        watch.settimeout(5)
        head = watch.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        # not a wait: the watch idles past the idle timeout and two sweeps (1.5 * TIMEOUT)
        time.sleep(3 * TIMEOUT)
        body = json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "outlived"}}
        ).encode()
        with gw.tls(admin=True) as sock:
            sock.sendall(
                b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
            )
            created, _ = read_until_closed(sock)
        assert created.startswith(b"HTTP/1.1 201 "), created
        seen = head
        deadline = time.monotonic() + 5
        while b'"outlived"' not in seen and time.monotonic() < deadline:
            chunk = watch.recv(65536)
            assert chunk, "the watch was closed"
            seen += chunk
        assert b'"ADDED"' in seen and b'"outlived"' in seen


# -- item 13: malformed requests ----------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"Transfer-Encoding: gzip\r\n\r\nabc", 501),
        (b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),
        (b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nabc\r\n0\r\n\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 400),
    ],
    ids=["gzip", "xchunked", "gzip-chunked", "chunk-size-overflow", "lf-only-chunks"],
)
def test_bad_transfer_codings_and_chunks_are_answered(
    gw: Bounded, request_bytes: bytes, code: int
) -> None:
    head = b"POST " + PROXY + b"/api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
    assert refused(gw, head + request_bytes, admin=True)[0] == code


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ],
    ids=["http-0.9", "http-2.0"],
)
def test_other_http_versions_are_refused(gw: Bounded, request_bytes: bytes, code: int) -> None:
    assert refused(gw, request_bytes)[0] == code


def test_plain_http_on_the_tls_port_gets_a_plain_text_400(gw: Bounded) -> None:
    with gw.tcp() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response, closed = read_until_closed(sock)
    assert closed
    assert response == (
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    )


def test_connection_naming_content_length_keeps_the_body(gw: Bounded) -> None:
    body = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "framed"}}
    ).encode()
    path = PROXY + b"/api/v1/namespaces/default/configmaps"
    with gw.tls(admin=True) as sock:
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: Content-Length\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        sock.settimeout(5)
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 201 "), response
    assert b'"framed"' in response
