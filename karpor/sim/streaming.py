"""The kubelet side of ``pods/exec``, ``pods/attach`` and ``pods/portforward``.

The simulator's HTTP server calls one entry point for the three streaming
subresources, once it has authenticated the request and found the pod::

    streams = StreamServer(reactor, workdir=Path(state_dir) / "pods")
    ...
    def render(self, request):            # in the pod subresource Resource
        return streams.handle(request, "exec", pod)   # bytes or NOT_DONE_YET
    ...
    streams.stop()                        # when the simulated cluster stops

:meth:`StreamServer.handle` validates the request as a kube-apiserver and a
kubelet do (a ``Status`` with the right code before any upgrade: unknown
container, pod not running, exec without a command, no stream requested, no
common protocol), answers ``101 Switching Protocols`` for SPDY/3.1
(``X-Stream-Protocol-Version``) or WebSocket (``Sec-WebSocket-Protocol``,
handshake by wsproto), takes the connection over from twisted.web and runs
the session:

* exec: a local process in the pod's scratch directory
  (``workdir/<namespace>/<name>``), see :mod:`karpor.sim.execution`;
* attach: the pod's shared main process, see :mod:`karpor.sim.execution`;
* port-forward: SPDY stream pairs to the echo service or a mapped address,
  see :mod:`karpor.sim.portforward`; over WebSocket, SPDY tunnelled in binary
  messages (``SPDY/3.1+portforward.k8s.io``), or the kubelet's older channel
  protocol (``v4.channel.k8s.io``: a data and an error channel per port of
  the ``ports`` query, each opened by a message with the port number), which
  drives the same :class:`~karpor.sim.portforward.PortForwardApp` through
  :class:`_WebSocketPortForward`.

Backpressure: each upgraded connection is the transport's push producer. When
the client stops reading, process output (or port-forward targets) pauses;
when a process's stdin or a target is full, reading from the client pauses.
Memory therefore does not grow with the amount streamed.

Output is written without copying large payloads: a SPDY DATA frame or a
WebSocket data frame (framed here, not by wsproto, which copies the payload
several times) goes to the transport as its head and its payload, which
is the very ``bytes`` read from the process or target (from
:data:`SEPARATE_WRITE` bytes; smaller ones are joined to their head).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from email.utils import formatdate
from pathlib import Path
from typing import Any, cast
from typing import Protocol as Interface
from urllib.parse import parse_qs, urlsplit

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import NOT_DONE_YET, Request
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError
from zope.interface import implementer

from karpor.kube.status import ApiError
from karpor.sim import channels as ch
from karpor.sim.channels import Kind, StreamOptions
from karpor.sim.execution import (
    AttachSession,
    ChannelSink,
    ExecSession,
    MainProcess,
    ProcessRegistry,
    RemoteCommand,
)
from karpor.sim.portforward import PortForwardApp
from karpor.sim.spdy import (
    SEPARATE_PAYLOAD,
    ConnectionTerminated,
    Data,
    GoAway,
    Headers,
    RstStream,
    SpdyConnection,
)
from karpor.sim.spdy import SynStream as SpdySynStream

__all__ = ["FINISH_TIMEOUT", "StreamServer"]

_log = Logger()

#: How long a finished session waits for the client to close the connection
#: (closing first could make the kernel reset it and drop unread output).
FINISH_TIMEOUT = 60.0

#: Largest WebSocket message accepted from a client.
MAX_MESSAGE = 16 << 20

#: Payloads from this size on are written apart from their frame head (one
#: more TLS record and ``send`` instead of a copy of the payload); SPDY's
#: :meth:`~karpor.sim.spdy.SpdyConnection.pieces_to_send` splits at the same size.
SEPARATE_WRITE = SEPARATE_PAYLOAD


class StreamServer:
    """The streaming subresources of one simulated cluster.

    Holds the per-pod state (scratch directories, attach main processes) and
    every child process and upgraded connection, so that :meth:`stop` ends
    them all.

    :param reactor: provides ``spawnProcess``, ``connectTCP``, ``callLater``.
    :param workdir: base directory of the pods' scratch directories.
    :param allow_remote_targets: let ``sim.karpor.io/port-<N>`` annotations
        name non-loopback addresses (the simulator's explicit unsafe flag).
    """

    def __init__(self, reactor: Any, workdir: Path, *, allow_remote_targets: bool = False) -> None:
        self.reactor = reactor
        self.workdir = Path(workdir)
        self.allow_remote_targets = allow_remote_targets
        self.processes = ProcessRegistry()
        self._mains: dict[tuple[str, str], MainProcess] = {}
        self._connections: set[_Upgraded] = set()

    # -- the entry point ---------------------------------------------------

    def handle(self, request: Request, kind: Kind, pod: dict[str, Any]) -> bytes | int:
        """Serve ``pods/{name}/{kind}`` for ``pod``; return what ``render`` returns.

        Either the error ``Status`` bytes (the response code and headers are
        set on ``request``) or ``NOT_DONE_YET`` once the connection has been
        upgraded and taken over.
        """
        try:
            return self._handle(request, kind, pod)
        except ApiError as e:
            request.setResponseCode(e.code)
            request.setHeader(b"content-type", b"application/json")
            return e.body()

    def pod_dir(self, pod: Mapping[str, Any]) -> Path:
        """The pod's scratch directory (created on demand)."""
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or "pod")
        path = self.workdir / _safe(namespace) / _safe(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stop(self) -> None:
        """Kill every child process and close every streaming connection."""
        self.processes.kill_all()
        for main in list(self._mains.values()):
            main.kill()
        for conn in list(self._connections):
            conn.abort()

    # -- validation and upgrade --------------------------------------------

    def _handle(self, request: Request, kind: Kind, pod: dict[str, Any]) -> bytes | int:
        upgrade = _upgrade_kind(request)
        query = _query(request)
        name = str((pod.get("metadata") or {}).get("name", ""))
        options: StreamOptions | None = None
        if kind == "portforward":
            if (pod.get("status") or {}).get("phase") != "Running":
                raise ApiError(400, "pod does not exist")
        else:
            options = ch.parse_stream_options(kind, query, pod)
            if not ch.container_running(pod, options.container):
                raise ApiError(400, f'container not found ("{options.container}")')
        channel = request.channel
        if not isinstance(channel, HTTPChannel) or channel.transport is None:
            raise ApiError(400, "unable to upgrade: the connection cannot be upgraded")
        if upgrade == "spdy":
            return self._upgrade_spdy(request, kind, pod, options)
        return self._upgrade_websocket(request, kind, pod, options, name)

    def _upgrade_spdy(
        self, request: Request, kind: Kind, pod: dict[str, Any], options: StreamOptions | None
    ) -> int:
        offered = ch.split_header_values(_headers(request, "X-Stream-Protocol-Version"))
        supported = (
            ch.SPDY_PORT_FORWARD_PROTOCOLS
            if kind == "portforward"
            else ch.SPDY_REMOTE_COMMAND_PROTOCOLS
        )
        if not offered:
            raise ApiError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
        chosen = ch.negotiate(offered, supported)
        if chosen is None:
            for accepted in supported:
                request.responseHeaders.addRawHeader(
                    b"X-Accepted-Stream-Protocol-Versions", accepted.encode()
                )
            raise ApiError(
                403,
                "unable to upgrade: unable to negotiate protocol: client supports "
                f"[{' '.join(offered)}], server accepts [{' '.join(supported)}]",
            )
        response = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\n"
            f"X-Stream-Protocol-Version: {chosen}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n"
            "\r\n"
        ).encode()
        protocol = _SpdyProtocol(self, self._spdy_app(kind, pod, options, chosen), ws=None)
        _hijack(request, protocol, response)
        return NOT_DONE_YET

    def _upgrade_websocket(
        self,
        request: Request,
        kind: Kind,
        pod: dict[str, Any],
        options: StreamOptions | None,
        name: str,
    ) -> int:
        handshake = H11Handshake(ConnectionType.SERVER)
        headers = [
            (key, value)
            for key, values in request.requestHeaders.getAllRawHeaders()
            for value in values
        ]
        if not any(key.lower() == b"host" for key, _ in headers):
            headers.append((b"Host", name.encode() or b"localhost"))
        try:
            handshake.initiate_upgrade_connection(headers, request.uri)
        except RemoteProtocolError as e:
            raise ApiError(400, f"unable to upgrade: {e}") from e
        ws_request = next((e for e in handshake.events() if isinstance(e, WsRequest)), None)
        if ws_request is None:
            raise ApiError(400, "unable to upgrade: not a WebSocket request")
        offered = list(ws_request.subprotocols)
        ports: list[int] = []
        if kind == "portforward":
            chosen = ch.negotiate(offered, ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS)
            if chosen is None and offered:
                raise ApiError(
                    400,
                    f"unable to upgrade: requested protocol(s) are not supported: {offered}; "
                    f"supports {list(ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS)}",
                )
            if chosen != ch.PORT_FORWARD_TUNNEL:
                try:
                    ports = ch.parse_port_forward_ports(_query(request))
                except ValueError as e:
                    raise ApiError(400, str(e)) from None
        elif offered:
            chosen = ch.negotiate(offered, ch.WEBSOCKET_REMOTE_COMMAND_PROTOCOLS)
            if chosen is None:
                raise ApiError(
                    403,
                    f"unable to upgrade: requested protocol(s) are not supported: {offered}; "
                    f"supports {list(ch.WEBSOCKET_REMOTE_COMMAND_PROTOCOLS)}",
                )
        else:
            chosen = None
        response = handshake.send(AcceptConnection(subprotocol=chosen))
        ws = handshake.connection
        assert ws is not None
        protocol: _Upgraded
        if kind == "portforward" and chosen == ch.PORT_FORWARD_TUNNEL:
            spdy_version = chosen.removeprefix(ch.TUNNEL_PREFIX)
            protocol = _SpdyProtocol(self, self._spdy_app(kind, pod, None, spdy_version), ws=ws)
        elif kind == "portforward":
            protocol = _WebSocketPortForward(self, ws, chosen or "", pod, ports)
        else:
            assert options is not None
            protocol = _WebSocketRemoteCommand(
                self, ws, chosen or "", options, self._session_factory(kind, pod, options)
            )
        _hijack(request, protocol, response)
        return NOT_DONE_YET

    def _spdy_app(
        self, kind: Kind, pod: dict[str, Any], options: StreamOptions | None, version: str
    ) -> Callable[[_SpdyProtocol], _SpdyApp]:
        if kind == "portforward":
            return lambda conn: PortForwardApp(
                conn, pod, self.reactor, allow_remote=self.allow_remote_targets
            )
        assert options is not None
        factory = self._session_factory(kind, pod, options)
        return lambda conn: _SpdyRemoteCommand(conn, version, options, factory)

    def _session_factory(
        self, kind: Kind, pod: dict[str, Any], options: StreamOptions
    ) -> Callable[[ChannelSink], RemoteCommand]:
        cwd = self.pod_dir(pod)
        env = _environment(pod, options.container, cwd)
        if kind == "exec":
            return lambda sink: ExecSession(
                self.reactor, options, sink, cwd=cwd, env=env, registry=self.processes
            )
        return lambda sink: AttachSession(self._main_process(pod, cwd, env), options, sink)

    def _main_process(self, pod: Mapping[str, Any], cwd: Path, env: dict[str, str]) -> MainProcess:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        main = self._mains.get(key)
        if main is None or main.ended:

            def forget(ended: MainProcess) -> None:
                if self._mains.get(key) is ended:
                    del self._mains[key]

            main = MainProcess(
                self.reactor, cwd=cwd, env=env, registry=self.processes, on_exit=forget
            )
            self._mains[key] = main
            main.start()
        return main


def _safe(part: str) -> str:
    return part.replace("/", "_").replace("\x00", "_") or "_"


def _headers(request: Request, name: str) -> list[str]:
    return [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(name.encode(), [])]


def _query(request: Request) -> dict[str, list[str]]:
    uri: Any = request.uri
    text = uri.decode("latin-1") if isinstance(uri, bytes) else str(uri)
    return parse_qs(urlsplit(text).query, keep_blank_values=True)


def _upgrade_kind(request: Request) -> str:
    connection = ",".join(_headers(request, "Connection")).lower()
    upgrade = ",".join(_headers(request, "Upgrade")).lower()
    if "upgrade" in connection:
        if "websocket" in upgrade:
            return "websocket"
        if "spdy/3.1" in upgrade:
            return "spdy"
    raise ApiError(400, "Upgrade request required")


def _environment(pod: Mapping[str, Any], container: str, cwd: Path) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(cwd),
        "HOSTNAME": str(meta.get("name", "")),
        "LANG": "C.UTF-8",
    }
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if c.get("name") == container:
            for var in c.get("env") or []:
                if isinstance(var, dict) and "name" in var and isinstance(var.get("value"), str):
                    env[str(var["name"])] = var["value"]
    return env


def _hijack(request: Request, protocol: _Upgraded, response: bytes) -> None:
    """Take the connection of ``request`` away from twisted.web.

    The HTTP channel stays the transport's protocol (it may be wrapped by
    TLS or twisted.web's protocol switcher), but its ``dataReceived`` and
    ``connectionLost`` now lead to ``protocol``, like Twisted's own WebSocket
    support does. Bytes the channel buffered after the request go to
    ``protocol`` too; the channel's idle timeout is cancelled; ``protocol``
    becomes the transport's producer.
    """
    channel = request.channel
    transport = channel.transport
    assert transport is not None
    channel.setTimeout(None)
    buffered = b"".join(getattr(channel, "_dataBuffer", []) or [])
    with contextlib.suppress(AttributeError):
        channel._dataBuffer = []
    original_lost = channel.connectionLost

    def connection_lost(reason: Failure = connectionDone) -> None:
        try:
            protocol.connectionLost(reason)
        finally:
            original_lost(reason)

    channel.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
    channel.connectionLost = connection_lost  # type: ignore[method-assign]
    cast(Any, transport).unregisterProducer()
    transport.write(response)
    protocol.makeConnection(transport)
    cast(Any, transport).resumeProducing()
    if buffered:
        protocol.dataReceived(buffered)


@implementer(IPushProducer)
class _Upgraded(Protocol):
    """An upgraded connection: flow control both ways and an orderly end."""

    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self._input_pauses: set[str] = set()
        self._finish_call: IDelayedCall | None = None
        self._lost = False

    def connectionMade(self) -> None:
        self.server._connections.add(self)
        cast(Any, self.transport).registerProducer(self, True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._lost:
            return
        self._lost = True
        self.server._connections.discard(self)
        if self._finish_call is not None and self._finish_call.active():
            self._finish_call.cancel()
        self.lost()

    # IPushProducer: the transport calls these for our output.
    def pauseProducing(self) -> None:
        """The client is not reading: stop producing output."""
        self.output_paused()

    def resumeProducing(self) -> None:
        """The client drained our output."""
        self.output_resumed()

    def stopProducing(self) -> None:
        """The transport is going away."""

    # for subclasses
    def output_paused(self) -> None:
        """Override: pause the sources of output."""

    def output_resumed(self) -> None:
        """Override: resume the sources of output."""

    def lost(self) -> None:
        """Override: the connection is gone."""

    def pause_input(self, reason: str) -> None:
        """Stop reading from the client until every reason is resumed."""
        if self._lost:
            return
        if not self._input_pauses:
            cast(Any, self.transport).pauseProducing()
        self._input_pauses.add(reason)

    def resume_input(self, reason: str) -> None:
        """Drop one reason to pause reading."""
        if reason not in self._input_pauses or self._lost:
            return
        self._input_pauses.discard(reason)
        if not self._input_pauses:
            cast(Any, self.transport).resumeProducing()

    def await_close(self) -> None:
        """All is sent: wait for the client to close (bounded by FINISH_TIMEOUT)."""
        if self._finish_call is None and not self._lost:
            self._input_pauses.clear()
            cast(Any, self.transport).resumeProducing()
            self._finish_call = self.server.reactor.callLater(FINISH_TIMEOUT, self.close)

    def close(self) -> None:
        """Close after the queued bytes are written."""
        if not self._lost and self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection now."""
        if not self._lost and self.transport is not None:
            cast(Any, self.transport).abortConnection()


class _SpdyApp(Interface):
    """What runs on a SPDY connection: remote command or port-forward."""

    def stream_opened(self, stream_id: int, headers: Headers) -> None:
        """The client opened a stream (the app must reply or reset it)."""

    def stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        """DATA from the client."""

    def stream_reset(self, stream_id: int) -> None:
        """The client reset a stream."""

    def pause_output(self) -> None:
        """The client is not reading."""

    def resume_output(self) -> None:
        """The client is reading again."""

    def disconnected(self) -> None:
        """The connection is gone."""


class _SpdyProtocol(_Upgraded):
    """A SPDY/3.1 session, on the raw connection or tunnelled in WebSocket."""

    def __init__(
        self,
        server: StreamServer,
        app: Callable[[_SpdyProtocol], _SpdyApp],
        *,
        ws: WsConnection | None,
    ) -> None:
        super().__init__(server)
        self.spdy = SpdyConnection(server=True)
        self._ws = ws
        self.app = app(self)
        self._finished = False

    def dataReceived(self, data: bytes) -> None:
        if self._ws is None:
            self._spdy_bytes(data)
        else:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, BytesMessage):
                    self._spdy_bytes(bytes(event.data))
                elif isinstance(event, Ping):
                    self._ws_send(event.response())
                elif isinstance(event, CloseConnection):
                    if self._ws.state != ConnectionState.CLOSED:
                        self._ws_send(event.response())
                    self.close()
                elif isinstance(event, TextMessage):
                    self._ws_send(CloseConnection(1003, "invalid message type received"))
                    self.close()
        self._flush()

    def _ws_send(self, event: Any) -> None:
        assert self._ws is not None
        if self._lost or self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.transport.write(self._ws.send(event))

    def _spdy_bytes(self, data: bytes) -> None:
        for event in self.spdy.receive_data(data):
            if isinstance(event, SpdySynStream):
                self.app.stream_opened(event.stream_id, event.headers)
                if event.fin:
                    self.app.stream_data(event.stream_id, b"", True)
            elif isinstance(event, Data):
                self.app.stream_data(event.stream_id, event.data, event.fin)
            elif isinstance(event, RstStream):
                self.app.stream_reset(event.stream_id)
            elif isinstance(event, GoAway):
                self._flush()
                self.close()
            elif isinstance(event, ConnectionTerminated):
                _log.info("SPDY protocol error: {message}", message=event.message)
                self._flush()
                self.close()

    def _flush(self) -> None:
        pieces = self.spdy.pieces_to_send()
        transport = self.transport
        if not pieces or transport is None or self._lost:
            return
        if self._ws is not None:
            # one binary message (no extension is ever accepted: a data
            # frame needs nothing from wsproto but an open connection)
            if self._ws.state != ConnectionState.OPEN:
                return
            head = ch.websocket_frame_head(sum(len(piece) for piece in pieces))
            if len(pieces[0]) < SEPARATE_WRITE:
                pieces[0] = head + pieces[0]
            else:
                pieces.insert(0, head)
        for piece in pieces:
            transport.write(piece)

    # SpdyStreams, for the app
    def reply(self, stream_id: int) -> None:
        """SYN_REPLY a client stream."""
        with contextlib.suppress(ValueError):
            self.spdy.send_syn_reply(stream_id)
        self._flush()

    def send(self, stream_id: int, data: bytes) -> None:
        """Send on a stream while our side is open."""
        if self.spdy.is_open_locally(stream_id):
            self.spdy.send_data(stream_id, data)
            self._flush()

    def end(self, stream_id: int) -> None:
        """FIN our side of a stream."""
        self.spdy.end_stream(stream_id)
        self._flush()

    def reset(self, stream_id: int) -> None:
        """RST_STREAM a stream."""
        self.spdy.send_rst_stream(stream_id)
        self._flush()

    def finished(self) -> None:
        """The session is over: wait for the client to hang up."""
        self._finished = True
        self.await_close()

    def output_paused(self) -> None:
        self.app.pause_output()

    def output_resumed(self) -> None:
        self.app.resume_output()

    def lost(self) -> None:
        self.app.disconnected()


class _SpdyRemoteCommand:
    """exec/attach over SPDY: one client stream per channel."""

    def __init__(
        self,
        conn: _SpdyProtocol,
        version: str,
        options: StreamOptions,
        factory: Callable[[ChannelSink], RemoteCommand],
    ) -> None:
        self._conn = conn
        self._version = version
        self._options = options
        self._expected = (
            1
            + options.stdin
            + options.stdout
            + options.stderr
            + (1 if options.tty and ch.supports_resize(version) else 0)
        )
        self._ids: dict[int, int] = {}
        self._channel_of: dict[int, int] = {}
        self._session = factory(self)
        self._started = False
        self._early_stdin: list[bytes | None] = []
        self._resize = ch.ResizeDecoder()
        self._done = False

    # _SpdyApp
    def stream_opened(self, stream_id: int, headers: Headers) -> None:
        """Reply at once; start when every expected stream is there."""
        self._conn.reply(stream_id)
        channel = ch.STREAM_TYPES.get(headers.get("streamtype", ""))
        if channel is None or channel in self._ids:
            return
        self._ids[channel] = stream_id
        self._channel_of[stream_id] = channel
        if not self._started and len(self._ids) >= self._expected:
            self._started = True
            self._session.start()
            for item in self._early_stdin:
                if item is None:
                    self._session.stdin_eof()
                else:
                    self._session.stdin_data(item)
            self._early_stdin.clear()

    def stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        """stdin and resize from the client."""
        channel = self._channel_of.get(stream_id)
        if channel == ch.STDIN:
            if not self._started:
                if data:
                    self._early_stdin.append(data)
                if fin:
                    self._early_stdin.append(None)
                return
            if data:
                self._session.stdin_data(data)
            if fin:
                self._session.stdin_eof()
        elif channel == ch.RESIZE:
            for size in self._resize.receive_data(data):
                self._session.resize(size)

    def stream_reset(self, stream_id: int) -> None:
        """A reset stdin stream ends stdin."""
        if self._channel_of.get(stream_id) == ch.STDIN and self._started:
            self._session.stdin_eof()

    def pause_output(self) -> None:
        """Forwarded to the session."""
        self._session.pause_output()

    def resume_output(self) -> None:
        """Forwarded to the session."""
        self._session.resume_output()

    def disconnected(self) -> None:
        """Forwarded to the session."""
        if not self._done:
            self._done = True
            self._session.disconnected()

    # ChannelSink
    def write(self, channel: int, data: bytes) -> None:
        """Output on a channel's stream."""
        sid = self._ids.get(channel)
        if sid is not None:
            self._conn.send(sid, data)

    def close_channel(self, channel: int) -> None:
        """FIN a channel's stream."""
        sid = self._ids.get(channel)
        if sid is not None:
            self._conn.end(sid)

    def finish(self, status: dict[str, Any]) -> None:
        """Write the status on the error stream and end every stream."""
        if self._done:
            return
        self._done = True
        sid = self._ids.get(ch.ERROR)
        payload = ch.error_channel_payload(self._version, status)
        if sid is not None and payload:
            self._conn.send(sid, payload)
        for stream_id in self._ids.values():
            self._conn.end(stream_id)
        self._conn.finished()

    def pause_input(self, reason: str) -> None:
        """Forwarded to the connection."""
        self._conn.pause_input(reason)

    def resume_input(self, reason: str) -> None:
        """Forwarded to the connection."""
        self._conn.resume_input(reason)


class _WebSocketChannels(_Upgraded):
    """A WebSocket of kube's channel messages (wsproto framing): whole
    messages (at most :data:`MAX_MESSAGE` bytes) decoded to their channel
    for :meth:`channel_message`; :meth:`write` sends one."""

    def __init__(self, server: StreamServer, ws: WsConnection, subprotocol: str) -> None:
        super().__init__(server)
        self._ws = ws
        self._subprotocol = subprotocol
        self._base64 = ch.is_base64(subprotocol)
        self._parts: list[bytes | str] = []
        self._size = 0

    def channel_message(self, channel: int, payload: bytes) -> None:
        """Override: a whole message from the client on ``channel``."""

    def dataReceived(self, data: bytes) -> None:
        try:
            self._ws.receive_data(data)
        except Exception:  # a broken frame: wsproto already queued nothing useful
            self.abort()
            return
        for event in self._ws.events():
            if isinstance(event, Message):
                self._message_part(event)
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state != ConnectionState.CLOSED:
                    self._send(event.response())
                self.close()

    def _message_part(self, event: Message[Any]) -> None:
        self._parts.append(event.data)
        self._size += len(event.data)
        if self._size > MAX_MESSAGE:
            self._send(CloseConnection(1009, "message too big"))
            self.close()
            return
        if not event.message_finished:
            return
        parts, self._parts, self._size = self._parts, [], 0
        message: bytes | str
        if isinstance(event, TextMessage):
            message = "".join(str(p) for p in parts)
        else:
            message = b"".join(bytes(p) if not isinstance(p, str) else p.encode() for p in parts)
        try:
            decoded = ch.decode_channel_message(message, base64_codec=self._base64)
        except ch.ChannelMessageError:
            return
        if decoded is not None:
            self.channel_message(*decoded)

    def _send(self, event: Any) -> None:
        if self._lost or self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.transport.write(self._ws.send(event))

    def write(self, channel: int, data: bytes) -> None:
        """One WebSocket message on ``channel``.

        Binary protocols frame the message here (no extension is ever
        accepted, so a data frame needs nothing from wsproto's state but
        that the connection is open) and write a large payload apart from
        its frame head rather than copy it into one frame.
        """
        if self._base64:
            text = ch.encode_channel_message(channel, data, base64_codec=True)
            assert isinstance(text, str)
            self._send(TextMessage(data=text))
            return
        if self._lost or self.transport is None or self._ws.state != ConnectionState.OPEN:
            return
        head = ch.channel_frame_head(channel, len(data))
        if len(data) < SEPARATE_WRITE:
            self.transport.write(head + data)
        else:
            self.transport.write(head)
            self.transport.write(data)


class _WebSocketRemoteCommand(_WebSocketChannels):
    """exec/attach over WebSocket channel messages."""

    def __init__(
        self,
        server: StreamServer,
        ws: WsConnection,
        subprotocol: str,
        options: StreamOptions,
        factory: Callable[[ChannelSink], RemoteCommand],
    ) -> None:
        super().__init__(server, ws, subprotocol)
        self._options = options
        self._session = factory(self)
        self._resize = ch.ResizeDecoder()
        self._done = False

    def connectionMade(self) -> None:
        super().connectionMade()
        # Tell the client the connection is up: an empty message on the
        # lowest writable channel, as the kubelet and the apiserver do.
        if self._options.stdout:
            first = ch.STDOUT
        elif self._options.stderr:
            first = ch.STDERR
        else:
            first = ch.ERROR
        self.write(first, b"")
        self._session.start()

    def channel_message(self, channel: int, payload: bytes) -> None:
        """stdin, resize, and (v5) the close of stdin."""
        if channel == ch.STDIN:
            if payload and not self._done:
                self._session.stdin_data(payload)
        elif channel == ch.RESIZE:
            for size in self._resize.receive_data(payload):
                self._session.resize(size)
        elif (
            channel == ch.CLOSE and self._subprotocol == ch.V5 and payload[:1] == bytes([ch.STDIN])
        ):
            self._session.stdin_eof()

    # ChannelSink (write: see the base class)
    def close_channel(self, channel: int) -> None:
        """WebSocket channels have no end-of-stream signal from the server."""

    def finish(self, status: dict[str, Any]) -> None:
        """Status on the error channel, then a normal close."""
        if self._done:
            return
        self._done = True
        payload = ch.error_channel_payload(self._subprotocol, status)
        if payload:
            self.write(ch.ERROR, payload)
        self._send(CloseConnection(1000, ""))
        self.await_close()

    def output_paused(self) -> None:
        self._session.pause_output()

    def output_resumed(self) -> None:
        self._session.resume_output()

    def lost(self) -> None:
        if not self._done:
            self._done = True
            self._session.disconnected()


class _WebSocketPortForward(_WebSocketChannels):
    """Port-forward over the kubelet's older WebSocket channel protocol.

    Each port of the request is one forwarded connection: its data channel
    ``2i`` and error channel ``2i+1`` play the SPDY data and error streams
    of a :class:`~karpor.sim.portforward.PortForwardApp` pair (the channel
    numbers stand for stream ids).  When every pair is closed the WebSocket
    closes normally, as the kubelet's handler returns.
    """

    def __init__(
        self,
        server: StreamServer,
        ws: WsConnection,
        subprotocol: str,
        pod: dict[str, Any],
        ports: list[int],
    ) -> None:
        super().__init__(server, ws, subprotocol)
        self._ports = ports
        self._open_data = {ch.port_forward_channels(i)[0] for i in range(len(ports))}
        self._done = False
        self.app = PortForwardApp(
            self, pod, server.reactor, allow_remote=server.allow_remote_targets
        )

    def connectionMade(self) -> None:
        super().connectionMade()
        for index, port in enumerate(self._ports):
            data, error = ch.port_forward_channels(index)
            self.write(data, ch.port_prefix(port))
            self.write(error, ch.port_prefix(port))
        for index, port in enumerate(self._ports):
            data, error = ch.port_forward_channels(index)
            for stream_id, stream_type in ((error, "error"), (data, "data")):
                headers = {"port": str(port), "streamtype": stream_type, "requestid": str(index)}
                self.app.stream_opened(stream_id, headers)

    def channel_message(self, channel: int, payload: bytes) -> None:
        """Bytes for a port's target (the error channels carry nothing from clients)."""
        if channel in self._open_data and payload:
            self.app.stream_data(channel, payload, False)

    # SpdyStreams, for the app (channel numbers stand for stream ids)
    def reply(self, stream_id: int) -> None:
        """Nothing to reply: the channels opened with their port messages."""

    def send(self, stream_id: int, data: bytes) -> None:
        """Bytes from the target (data channel) or a failure (error channel)."""
        if not self._done:
            self.write(stream_id, data)

    def end(self, stream_id: int) -> None:
        """A channel is done; once every data channel is, close normally."""
        self._open_data.discard(stream_id)
        if not self._open_data and not self._done:
            self._done = True
            self._send(CloseConnection(1000, ""))
            self.await_close()

    def reset(self, stream_id: int) -> None:
        """As :meth:`end` (a channel cannot be reset)."""
        self.end(stream_id)

    def output_paused(self) -> None:
        self.app.pause_output()

    def output_resumed(self) -> None:
        self.app.resume_output()

    def lost(self) -> None:
        self._done = True
        self.app.disconnected()
