"""The agent's end of one tunnel: upgrade, then serve HTTP/2 streams.

An :class:`AgentTunnel` is the protocol of one TLS connection the agent
opened to the gateway (:mod:`karpor.agent.dialer`): it sends the upgrade
request (:func:`karpor.http.tunnelwire.upgrade_request`), reads the
gateway's answer (:class:`~karpor.http.tunnelwire.SwitchReader`), and
after the ``101`` is the HTTP/2 *server* of the connection: each stream
the gateway opens is read back into a request
(:func:`~karpor.http.tunnelwire.agent_request`) and submitted, as an
:class:`~karpor.agent.stream.AgentStream`, to the agent's own
:class:`~karpor.upstream.pool.ClusterPool` (the cluster's credential is
added there; it never leaves the agent).

Bounds: the gateway may open at most :data:`MAX_STREAMS` streams at once
(``SETTINGS_MAX_CONCURRENT_STREAMS``; more are refused by ``h2``), and a
request head at most :data:`MAX_HEADER_LIST` bytes.  Liveness: the dialer
sweeps its tunnels (:meth:`AgentTunnel.sweep`): one that received nothing
for :data:`PING_INTERVAL` seconds is sent a ``PING``, one silent for
:data:`DEAD_AFTER` seconds is dropped (and redialled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.agent.stream import AgentStream
from karpor.http.headers import Header
from karpor.http.tunnelwire import (
    Answer,
    StreamRequestError,
    SwitchReader,
    TunnelAnswerError,
    agent_request,
    upgrade_request,
)
from karpor.kube.status import ApiError
from karpor.net.h2window import send_within_window
from karpor.net.hpackplain import use_plain_hpack
from karpor.upstream.connector import describe_failure
from karpor.upstream.h2 import CONNECTION_WINDOW as UPSTREAM_CONNECTION_WINDOW
from karpor.upstream.h2 import MAX_FRAME_SIZE as UPSTREAM_MAX_FRAME_SIZE
from karpor.upstream.h2 import SESSION_WINDOW as UPSTREAM_SESSION_WINDOW
from karpor.upstream.http1 import no_delay
from karpor.upstream.pool import ClusterPool
from karpor.upstream.request import CHUNKED, LENGTH, NO_BODY, UpstreamRequest

log = Logger()

#: Streams the gateway may open at once on one tunnel.
MAX_STREAMS = 10_000
#: The largest request head (decompressed) the agent takes: the gateway's
#: own bound on a client's request head, plus room for what it adds.
MAX_HEADER_LIST = 1024 * 1024 + 64 * 1024
#: Each stream's receive window (request bodies).
STREAM_WINDOW = 65_535
#: The receive window of an upgrade session's stream (what the client sends
#: into exec, cp, port-forward): the gateway's own
#: (:data:`~karpor.upstream.h2.SESSION_WINDOW`).
SESSION_WINDOW = UPSTREAM_SESSION_WINDOW
#: The connection's receive window: the most HTTP/2 allows (each stream's
#: window alone bounds what the agent holds).
CONNECTION_WINDOW = UPSTREAM_CONNECTION_WINDOW
#: The largest DATA frame the agent takes (the gateway's own).
MAX_FRAME_SIZE = UPSTREAM_MAX_FRAME_SIZE
#: Seconds without a received byte before the agent sends a ``PING``.
PING_INTERVAL = 5.0
#: Seconds without a received byte after which the tunnel is dead.
DEAD_AFTER = 15.0


@implementer(IHandshakeListener)
class AgentTunnel(Protocol):
    """One tunnel connection (see the module docstring).

    ``pool()`` is the agent's cluster pool (looked up per stream: a
    changed credential gives a fresh pool); ``switched(tunnel, answer)``
    is told of the gateway's ``101``, ``ended(tunnel, answer)`` of the
    connection's end (``answer`` ``None`` when no answer was read).
    """

    def __init__(
        self,
        host: str,
        version: str,
        pool: Callable[[], ClusterPool],
        clock: IReactorTime,
        switched: Callable[[AgentTunnel, Answer], None],
        ended: Callable[[AgentTunnel, str], None],
    ) -> None:
        self._host = host
        self._version = version
        self._pool = pool
        self._clock = clock
        self._switched = switched
        self._ended = ended
        self._reader: SwitchReader | None = SwitchReader()
        self.answer: Answer | None = None
        self.h2: h2.connection.H2Connection | None = None
        self.streams: dict[int, AgentStream] = {}
        self.closed = False
        self.received = 0
        self._seen = -1
        self._alive_at = clock.seconds()
        self._pinged = False
        self._why = "the connection closed"

    def __repr__(self) -> str:
        return f"<AgentTunnel {self._host} answer={self.answer}>"

    # -- connection ----------------------------------------------------------------

    def connectionMade(self) -> None:
        """Send the upgrade request (TLS sends it after the handshake)."""
        no_delay(self.transport)
        self.transport.write(upgrade_request(self._host, self._version))  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        """TLS is up (the gateway's certificate verified)."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End every stream's cluster side; tell the dialer."""
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.connection_lost()
        why = self._why
        if self._why == "the connection closed" and reason is not None:
            text = describe_failure(reason)
            if text:
                why = f"the connection closed: {text}"
        self._ended(self, why)

    def drop(self, why: str) -> None:
        """Close the connection at once."""
        self._why = why
        if not self.closed and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        """The gateway's answer, then HTTP/2 frames."""
        self.received += len(data)
        reader = self._reader
        if reader is not None:
            try:
                done = reader.feed(data)
            except TunnelAnswerError as exc:
                self.drop(f"the gateway's answer cannot be read: {exc}")
                return
            if done is None:
                return
            self._reader = None
            answer, rest = done
            self.answer = answer
            if answer.code != 101:
                self.drop(f"the gateway refused the tunnel: {answer.code} {answer.reason}")
                return
            self._start()
            self._switched(self, answer)
            if not rest:
                return
            data = rest
        self._frames(data)

    def _start(self) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.h2 = h2.connection.H2Connection(config=config)
        use_plain_hpack(conn)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            },
        )
        conn.decoder.max_header_list_size = MAX_HEADER_LIST
        # settings given as initial values apply at once (no ACK to wait
        # for): the frame size h2 reads it from is set at its start
        conn.max_inbound_frame_size = MAX_FRAME_SIZE
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self.flush()

    def flush(self) -> None:
        """Write what ``h2`` has for the gateway."""
        conn = self.h2
        if conn is None:
            return
        data = conn.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    # -- frames ----------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        conn = self.h2
        assert conn is not None
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self.drop(f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.gateway_end()
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.gateway_reset()
            elif isinstance(event, h2.events.WindowUpdated):
                self._window(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.flush()
                self.drop("the gateway closed the tunnel")
                return
        self.flush()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if stream_id is None:
            return
        headers: list[Header] = list(event.headers or [])
        try:
            asked = agent_request(headers)
        except StreamRequestError:
            self.reset(stream_id)
            return
        ended = event.stream_ended is not None
        if asked.upgrade is not None:
            self._widen(stream_id)
        if asked.upgrade is not None or ended:
            body = NO_BODY
        elif asked.content_length is not None:
            body = LENGTH
        else:
            body = CHUNKED
        request = UpstreamRequest(
            asked.method,
            asked.target,
            asked.headers,
            body,
            (),
            asked.forwarded_for,
            asked.audit_id,
            asked.upgrade,
        )
        pool = self._pool()
        stream = AgentStream(
            self, stream_id, request, pool.head_timeout(asked.method, asked.target)
        )
        self.streams[stream_id] = stream
        if pool.error is not None:
            stream.upstream_failed(pool.error)
            return
        try:
            pool.submit(stream)
        except Exception:
            log.failure("forwarding a tunnel stream failed")
            stream.upstream_failed(ApiError(500, "internal error in the agent"))

    def _widen(self, stream_id: int) -> None:
        """Open an upgrade stream's receive window to :data:`SESSION_WINDOW`."""
        conn = self.h2
        if conn is None:
            return
        try:
            conn.increment_flow_control_window(SESSION_WINDOW - STREAM_WINDOW, stream_id)
        except h2.exceptions.ProtocolError:
            return

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        if stream is None:
            if size:
                self.acknowledge(stream_id, size)
            return
        stream.gateway_data(event.data or b"", size)

    def _window(self, stream_id: int | None) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.window_opened()
            return
        for stream in list(self.streams.values()):
            stream.window_opened()

    # -- StreamSide (for the streams) ------------------------------------------------

    def send_head(self, stream_id: int, headers: list[Header], end: bool) -> None:
        """Send a response's HEADERS."""
        conn = self.h2
        if conn is None or self.closed:
            return
        try:
            conn.send_headers(stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Send what the windows allow of ``data``; how much went."""
        conn = self.h2
        if conn is None or self.closed:
            return len(data)
        sent = send_within_window(conn, stream_id, data)
        self.flush()
        return sent

    def end_stream(self, stream_id: int) -> None:
        """End our side of a stream."""
        conn = self.h2
        if conn is None or self.closed:
            return
        try:
            conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def reset(self, stream_id: int) -> None:
        """Reset a stream (its response broke off)."""
        conn = self.h2
        if conn is None or self.closed:
            return
        try:
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand received bytes back to the gateway's send windows."""
        conn = self.h2
        if conn is None or self.closed or not size:
            return
        try:
            conn.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def forget(self, stream_id: int) -> None:
        """A stream is over on our side."""
        self.streams.pop(stream_id, None)

    # -- liveness ------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Ping a quiet tunnel; drop a silent one (see the module docstring)."""
        if self.closed:
            return
        if self.received != self._seen:
            self._seen = self.received
            self._alive_at = now
            self._pinged = False
            return
        quiet = now - self._alive_at
        if quiet >= DEAD_AFTER:
            self.drop(f"nothing received for {quiet:.0f}s")
        elif quiet >= PING_INTERVAL and not self._pinged and self.h2 is not None:
            self._pinged = True
            try:
                self.h2.ping(os.urandom(8))
            except h2.exceptions.ProtocolError:
                return
            self.flush()


def describe(value: Any) -> str:
    """A short description of a connection failure (for a log line)."""
    text = str(getattr(value, "value", value)).strip()
    return text or type(value).__name__
