"""StreamServer over in-memory transports: upgrade, hijack, SPDY port-forward, errors."""

from __future__ import annotations

import json
from typing import Any

from support.streamfixture import Root, make_pod
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.server import Site
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WsProtoConnection
from wsproto.events import AcceptConnection, BytesMessage, Request

from karpor.sim import channels as ch
from karpor.sim.channels import StreamOptions, TerminalSize
from karpor.sim.execution import ChannelSink
from karpor.sim.spdy import Data, SpdyConnection, SynReply
from karpor.sim.streaming import (
    StreamServer,
    _SpdyProtocol,
    _SpdyRemoteCommand,
    _WebSocketRemoteCommand,
)


def connect(tmp_path):
    reactor = MemoryReactorClock()
    streams = StreamServer(reactor, tmp_path)
    pods = {"demo": make_pod("demo"), "pending": make_pod("pending", phase="Pending")}
    site = Site(Root(streams, pods), reactor=reactor)
    proto = site.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return streams, proto, transport


def spdy_request(path: str, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: sim",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "Content-Length: 0",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


PF = "/api/v1/namespaces/default/pods/demo/portforward"


def test_spdy_port_forward_echo_in_memory(tmp_path) -> None:
    streams, proto, transport = connect(tmp_path)
    proto.dataReceived(spdy_request(PF, "X-Stream-Protocol-Version: portforward.k8s.io"))
    head, _rest = split_response(transport.value())
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"X-Stream-Protocol-Version: portforward.k8s.io" in head
    transport.clear()

    client = SpdyConnection(server=False)
    headers = {"streamtype": "error", "port": "80", "requestid": "0"}
    err = client.send_syn_stream(headers)
    client.end_stream(err)
    data = client.send_syn_stream({**headers, "streamtype": "data"})
    client.send_data(data, b"hello", fin=True)
    proto.dataReceived(client.data_to_send())
    events = client.receive_data(transport.value())
    assert SynReply(err, {}) in events
    assert SynReply(data, {}) in events
    got = b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == data)
    assert got == b"hello"
    fins = {e.stream_id for e in events if isinstance(e, Data) and e.fin}
    assert fins == {err, data}
    assert len(streams._connections) == 1
    proto.connectionLost(None)
    assert not streams._connections


def test_websocket_tunnelled_port_forward(tmp_path) -> None:
    _streams, proto, transport = connect(tmp_path)
    ws = WSConnection(ConnectionType.CLIENT)
    proto.dataReceived(
        ws.send(Request(host="sim", target=PF, subprotocols=["SPDY/3.1+portforward.k8s.io"]))
    )
    ws.receive_data(transport.value())
    accepted = list(ws.events())
    assert isinstance(accepted[0], AcceptConnection)
    assert accepted[0].subprotocol == "SPDY/3.1+portforward.k8s.io"
    transport.clear()

    client = SpdyConnection(server=False)
    headers = {"streamtype": "error", "port": "8080", "requestid": "1"}
    client.send_syn_stream(headers)
    data = client.send_syn_stream({**headers, "streamtype": "data"})
    client.send_data(data, b"tunnel", fin=True)
    proto.dataReceived(ws.send(BytesMessage(client.data_to_send())))
    ws.receive_data(transport.value())
    spdy_bytes = b"".join(bytes(e.data) for e in ws.events() if isinstance(e, BytesMessage))
    events = client.receive_data(spdy_bytes)
    assert b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == data) == (
        b"tunnel"
    )


def status_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, body = split_response(raw)
    code = int(head.split(b" ", 2)[1])
    # twisted.web answers with chunked or content-length bodies; both end in the JSON.
    text = body[body.index(b"{") : body.rindex(b"}") + 1]
    return code, json.loads(text)


def test_errors_before_upgrade(tmp_path) -> None:
    cases = [
        (
            "/api/v1/namespaces/default/pods/pending/exec?command=ls&stdout=1",
            ("X-Stream-Protocol-Version: v4.channel.k8s.io",),
            400,
            'container not found ("main")',
        ),
        (
            "/api/v1/namespaces/default/pods/demo/exec?stdout=1",
            ("X-Stream-Protocol-Version: v4.channel.k8s.io",),
            400,
            "you must specify at least one command for the container",
        ),
        (
            "/api/v1/namespaces/default/pods/demo/exec?command=ls",
            ("X-Stream-Protocol-Version: v4.channel.k8s.io",),
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "/api/v1/namespaces/default/pods/demo/exec?command=ls&stdout=1&container=x",
            ("X-Stream-Protocol-Version: v4.channel.k8s.io",),
            400,
            "container x is not valid for pod demo",
        ),
        (
            "/api/v1/namespaces/default/pods/demo/exec?command=ls&stdout=1",
            ("X-Stream-Protocol-Version: v9.channel.k8s.io",),
            403,
            "unable to upgrade: unable to negotiate protocol: client supports "
            "[v9.channel.k8s.io], server accepts [v5.channel.k8s.io v4.channel.k8s.io "
            "v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]",
        ),
    ]
    for path, extra, code, message in cases:
        _streams, proto, transport = connect(tmp_path)
        proto.dataReceived(spdy_request(path, *extra))
        got_code, status = status_of(transport.value())
        assert (got_code, status["code"], status["message"]) == (code, code, message)
        assert status["kind"] == "Status"


def test_plain_request_needs_an_upgrade(tmp_path) -> None:
    _streams, proto, transport = connect(tmp_path)
    proto.dataReceived(
        b"GET /api/v1/namespaces/default/pods/demo/exec?command=ls&stdout=1 HTTP/1.1\r\n"
        b"Host: sim\r\n\r\n"
    )
    code, status = status_of(transport.value())
    assert (code, status["message"]) == (400, "Upgrade request required")


class RecordingTransport(StringTransport):
    """A StringTransport that also keeps each object written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class FakeSession:
    """A RemoteCommand that remembers its sink."""

    def __init__(self, sink: ChannelSink) -> None:
        self.sink = sink

    def start(self) -> None: ...
    def stdin_data(self, data: bytes) -> None: ...
    def stdin_eof(self) -> None: ...
    def resize(self, size: TerminalSize) -> None: ...
    def pause_output(self) -> None: ...
    def resume_output(self) -> None: ...
    def disconnected(self) -> None: ...


EXEC_OPTIONS = StreamOptions(
    stdin=False, stdout=True, stderr=True, tty=False, container="main", command=("cat",)
)
BIG = bytes(range(256)) * 1200  # larger than SEPARATE_WRITE and than 65535


def test_websocket_output_is_framed_without_copying_large_payloads(tmp_path) -> None:
    sessions: list[FakeSession] = []

    def factory(sink: ChannelSink) -> FakeSession:
        sessions.append(FakeSession(sink))
        return sessions[-1]

    proto = _WebSocketRemoteCommand(
        StreamServer(MemoryReactorClock(), tmp_path),
        WsProtoConnection(ConnectionType.SERVER),
        ch.V5,
        EXEC_OPTIONS,
        factory,
    )
    transport = RecordingTransport()
    proto.makeConnection(transport)
    sink = sessions[0].sink
    sink.write(ch.STDOUT, BIG)
    sink.write(ch.STDERR, b"small")
    sink.write(ch.STDOUT, BIG[:200])
    assert any(w is BIG for w in transport.writes)
    client = WsProtoConnection(ConnectionType.CLIENT)
    client.receive_data(transport.value())
    messages = [bytes(e.data) for e in client.events() if isinstance(e, BytesMessage)]
    assert messages == [b"\x01", b"\x01" + BIG, b"\x02small", b"\x01" + BIG[:200]]


def test_spdy_output_is_framed_without_copying_large_payloads(tmp_path) -> None:
    sessions: list[FakeSession] = []

    def factory(sink: ChannelSink) -> FakeSession:
        sessions.append(FakeSession(sink))
        return sessions[-1]

    proto = _SpdyProtocol(
        StreamServer(MemoryReactorClock(), tmp_path),
        lambda conn: _SpdyRemoteCommand(conn, ch.V4, EXEC_OPTIONS, factory),
        ws=None,
    )
    transport = RecordingTransport()
    proto.makeConnection(transport)
    client = SpdyConnection(server=False)
    ids = {
        kind: client.send_syn_stream({"streamtype": kind}) for kind in ("error", "stdout", "stderr")
    }
    proto.dataReceived(client.data_to_send())
    sink = sessions[0].sink
    sink.write(ch.STDOUT, BIG)
    sink.write(ch.STDERR, b"small")
    assert any(w is BIG for w in transport.writes)
    events = client.receive_data(transport.value())
    assert [e for e in events if isinstance(e, Data)] == [
        Data(ids["stdout"], BIG),
        Data(ids["stderr"], b"small"),
    ]


def test_websocket_tunnelled_port_forward_of_large_data(tmp_path) -> None:
    _streams, proto, transport = connect(tmp_path)
    ws = WSConnection(ConnectionType.CLIENT)
    proto.dataReceived(
        ws.send(Request(host="sim", target=PF, subprotocols=["SPDY/3.1+portforward.k8s.io"]))
    )
    ws.receive_data(transport.value())
    list(ws.events())
    transport.clear()
    client = SpdyConnection(server=False)
    headers = {"streamtype": "error", "port": "8080", "requestid": "1"}
    client.send_syn_stream(headers)
    data = client.send_syn_stream({**headers, "streamtype": "data"})
    client.send_data(data, BIG, fin=True)
    proto.dataReceived(ws.send(BytesMessage(client.data_to_send())))
    ws.receive_data(transport.value())
    spdy_bytes = b"".join(bytes(e.data) for e in ws.events() if isinstance(e, BytesMessage))
    events = client.receive_data(spdy_bytes)
    assert b"".join(e.data for e in events if isinstance(e, Data) and e.stream_id == data) == BIG
