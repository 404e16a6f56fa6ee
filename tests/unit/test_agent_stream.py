"""One tunnel stream at the agent: the response within the send window, the
request body with backpressure, failures, a switched session."""

from __future__ import annotations

import json
from typing import Any

from karpor.agent.stream import AgentStream
from karpor.http.headers import Header, ResponseHeaders
from karpor.http.tunnelwire import SWITCHED_HEADER, UPGRADE_HEADER
from karpor.kube.status import ApiError
from karpor.upstream.request import CHUNKED, NO_BODY, UpstreamRequest


class Side:
    """The tunnel connection, with a send window the test controls."""

    def __init__(self, window: int = 1 << 20) -> None:
        self.window = window
        self.heads: list[tuple[list[Header], bool]] = []
        self.sent = b""
        self.ended = False
        self.reset_ = False
        self.acked = 0
        self.forgotten = False

    def send_head(self, stream_id: int, headers: list[Header], end: bool) -> None:
        self.heads.append((headers, end))

    def send_data(self, stream_id: int, data: bytes) -> int:
        n = min(self.window, len(data))
        self.window -= n
        self.sent += data[:n]
        return n

    def end_stream(self, stream_id: int) -> None:
        self.ended = True

    def reset(self, stream_id: int) -> None:
        self.reset_ = True

    def acknowledge(self, stream_id: int, size: int) -> None:
        self.acked += size

    def forget(self, stream_id: int) -> None:
        self.forgotten = True


class Valve:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.data += data

    def loseConnection(self) -> None:
        self.closed = True

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer


class Carrier:
    """An HTTP/1.1 connection (``transport`` set) or an HTTP/2 stream (``None``)."""

    def __init__(self, http1: bool = True) -> None:
        self.closed = False
        self.transport: Any = Transport() if http1 else None
        self.body = b""
        self.finished = False
        self.aborted = False
        self.the_valve = Valve()
        self.body_producer: Any = None

    def write(self, data: bytes) -> None:
        self.body += data

    def finish_request(self) -> None:
        self.finished = True

    def valve(self, exchange: Any) -> Valve:
        return self.the_valve

    def abort(self) -> None:
        self.aborted = True

    def register_body_producer(self, producer: Any) -> None:
        self.body_producer = producer

    def unregister_body_producer(self) -> None:
        self.body_producer = None

    def pause_reading(self) -> None:
        self.the_valve.paused = True

    def resume_reading(self) -> None:
        self.the_valve.paused = False


def response(*headers: Header) -> ResponseHeaders:
    return ResponseHeaders(list(headers), None, False, False)


def test_response_streams_within_the_window_and_pauses_the_cluster() -> None:
    side = Side(window=10)
    stream = AgentStream(side, 1, UpstreamRequest(b"GET", b"/api"))
    carrier = Carrier()
    stream.attach(carrier)  # type: ignore[arg-type]
    assert carrier.finished
    stream.upstream_head(200, b"OK", response((b"Content-Type", b"application/json")))
    assert side.heads == [([(b":status", b"200"), (b"content-type", b"application/json")], False)]
    stream.upstream_body(b"0123456789abcdef")
    assert side.sent == b"0123456789"
    assert carrier.the_valve.paused  # the cluster's reading waits for the gateway's window
    stream.upstream_end()
    assert not side.ended  # the rest goes first
    side.window = 100
    stream.window_opened()
    assert side.sent == b"0123456789abcdef"
    assert not carrier.the_valve.paused
    assert side.ended and side.forgotten


def test_failure_before_the_head_is_a_status_after_it_a_reset() -> None:
    side = Side()
    stream = AgentStream(side, 1, UpstreamRequest(b"GET", b"/api"))
    stream.upstream_failed(ApiError(503, "cluster down"))
    headers, _ = side.heads[0]
    assert headers[0] == (b":status", b"503")
    assert json.loads(side.sent)["message"] == "cluster down"
    assert side.ended
    side = Side()
    stream = AgentStream(side, 1, UpstreamRequest(b"GET", b"/api"))
    stream.upstream_head(200, b"OK", response())
    stream.upstream_failed(ApiError(502, "cut"))
    assert side.reset_ and not side.ended


def test_request_body_is_chunked_for_http1_and_acknowledged_as_written() -> None:
    side = Side()
    request = UpstreamRequest(b"POST", b"/api/v1/namespaces", body=CHUNKED)
    stream = AgentStream(side, 1, request)
    stream.gateway_data(b"early", 5)  # before the carrier: held, not acknowledged
    assert side.acked == 0
    carrier = Carrier()
    stream.attach(carrier)  # type: ignore[arg-type]
    assert carrier.body == b"5\r\nearly\r\n" and side.acked == 5
    assert carrier.body_producer is stream
    stream.pauseProducing()  # the cluster's connection is full
    stream.gateway_data(b"more", 4)
    assert side.acked == 5
    stream.resumeProducing()
    assert side.acked == 9
    stream.gateway_end()
    assert carrier.body.endswith(b"4\r\nmore\r\n0\r\n\r\n") and carrier.finished


def test_request_body_goes_raw_on_an_http2_carrier() -> None:
    side = Side()
    request = UpstreamRequest(b"PUT", b"/x", body=CHUNKED)
    stream = AgentStream(side, 1, request)
    carrier = Carrier(http1=False)
    stream.attach(carrier)  # type: ignore[arg-type]
    stream.gateway_data(b"abc", 3)
    stream.gateway_end()
    assert carrier.body == b"abc" and carrier.finished


def test_a_switched_session_carries_bytes_both_ways() -> None:
    side = Side()
    request = UpstreamRequest(b"GET", b"/exec", body=NO_BODY, upgrade=b"websocket")
    stream = AgentStream(side, 3, request)
    carrier = Carrier()
    stream.attach(carrier)  # type: ignore[arg-type]
    tunnel = stream.upstream_switch(
        b"Switching Protocols",
        response(
            (b"Upgrade", b"websocket"),
            (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io"),
            (b"Connection", b"Upgrade"),
        ),
    )
    assert tunnel is stream
    headers, end = side.heads[0]
    assert not end
    assert headers[0] == (b":status", b"200")
    assert (SWITCHED_HEADER, b"101") in headers and (UPGRADE_HEADER, b"websocket") in headers
    assert (b"sec-websocket-protocol", b"v5.channel.k8s.io") in headers
    assert not any(name in (b"connection", b"upgrade") for name, _ in headers)
    stream.gateway_data(b"\x82\x01\x00", 3)
    assert carrier.transport.data == b"\x82\x01\x00" and side.acked == 3
    stream.upstream_data(b"from the pod")
    assert side.sent == b"from the pod"
    stream.gateway_reset()  # the client went away
    assert carrier.transport.closed


def test_a_refused_upgrade_is_an_ordinary_response() -> None:
    side = Side()
    request = UpstreamRequest(b"GET", b"/exec", upgrade=b"websocket")
    stream = AgentStream(side, 3, request)
    carrier = Carrier()
    stream.attach(carrier)  # type: ignore[arg-type]
    stream.upstream_head(400, b"Bad Request", response((b"Content-Length", b"2")))
    stream.upstream_body(b"no")
    stream.upstream_end()
    assert side.heads[0][0][0] == (b":status", b"400") and side.sent == b"no" and side.ended
