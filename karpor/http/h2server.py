"""The front's HTTP/2 connection, sans-IO, on the ``h2`` library: frames
in, request events out, responses framed within the client's flow-control
windows (no socket, no clock, no timer).

:meth:`H2FrontConnection.receive_data` feeds ``h2`` and turns its events
into the front's (:data:`Event`), in order:

* :class:`StreamRequest`: a request head (method, ``:path`` as the target,
  ``:authority`` as ``Host`` when the request has none) as a
  :class:`~karpor.http.connection.RequestHead`; ``ended`` when no body
  follows; ``error`` set for a request the gateway refuses before it reaches
  the pipeline (:func:`request_refusal`: an upgrade-only subresource, a
  header HTTP/1.1 could not carry safely);
* :class:`StreamBody` and :class:`StreamEnd`: the request body, its end;
* :class:`StreamGone`: the client reset the stream (or it cannot go on);
* :class:`StreamWritable`: a stream whose output waited for the client's
  window sent it all (its producer may resume);
* :class:`ConnectionDone`: the connection is over (a protocol error: its
  ``GOAWAY`` is queued; or the client's ``GOAWAY``).

Bounds, as on HTTP/1.1, refusing the one stream past them as Go and
kube-apiserver do, not the connection: ``SETTINGS_MAX_CONCURRENT_STREAMS``
is ``max_streams``, and a stream a client opens past it is reset
(``RST_STREAM`` ``REFUSED_STREAM``: never processed, the client may retry
it); ``SETTINGS_MAX_HEADER_LIST_SIZE`` is ``max_header_bytes``, and a
request whose header list is larger (counted as HTTP/2 counts it, 32 bytes
a field beside its name and value) is answered ``431`` on its stream.  The
header block is still decoded (the HPACK state the connection shares must
stay whole), up to :data:`HEADER_LIST_HARD_FACTOR` times
``max_header_bytes``: a larger one is a connection error
(``ENHANCE_YOUR_CALM``), so memory stays bounded.  Request bodies are flow-controlled: bytes are
acknowledged (``WINDOW_UPDATE``) only as the caller hands them on
(:meth:`~H2FrontConnection.acknowledge`), so a stream the caller paused
holds at most one stream window (64 KiB) of its client.

Responses: :meth:`~H2FrontConnection.send_head` (``:status``, names
lower-cased, connection-specific headers dropped),
:meth:`~H2FrontConnection.send_body` (what the windows allow goes now, the
rest waits on that stream alone, and ``False`` says the caller should pause
its producer), :meth:`~H2FrontConnection.end` (after what waits),
:meth:`~H2FrontConnection.reset`.

Draining is race-free, as Go's server does it
(:meth:`~H2FrontConnection.drain`): a first ``GOAWAY`` announces the
largest possible stream id with a ``PING``; when its ``PONG`` is back
(every stream the client opened before seeing the ``GOAWAY`` has arrived)
a second ``GOAWAY`` names the last stream taken.  Streams the client opens
after it are refused (``REFUSED_STREAM``: never processed, so the client
retries them elsewhere); streams already started finish.  The ``GOAWAY``
frames are written here, beside ``h2`` (whose own ``close_connection``
would stop every stream at once).

The connection's timeout phase (:mod:`karpor.http.bounds`) is kept in
:attr:`~H2FrontConnection.phase` with the caller's clock at its start in
:attr:`~H2FrontConnection.since`: ``BUSY`` while a stream is open, else
``IDLE`` (``idleTimeout``).
"""

from __future__ import annotations

import contextlib
from itertools import chain
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import GoAwayFrame

from karpor.http.bounds import BUSY, IDLE
from karpor.http.connection import RequestHead
from karpor.http.headers import HOP_BY_HOP, Header, valid_header
from karpor.kube.status import ApiError

#: ``SETTINGS_MAX_CONCURRENT_STREAMS`` by default (kube-apiserver's)
DEFAULT_MAX_STREAMS = 1000
#: the connection's receive window: every stream's window and room to spare
#: (a paused stream holds at most its own window of it)
CONNECTION_WINDOW = 16 * 1024 * 1024
#: the largest stream id (the first ``GOAWAY`` of a drain)
_MAX_STREAM_ID = 2**31 - 1
#: the opaque data of the drain's ``PING``
DRAIN_PING = b"karpor\x00\x01"
#: a header list up to this many times ``max_header_bytes`` is refused on
#: its stream (431); a larger one ends the connection (the HPACK decoder's limit)
HEADER_LIST_HARD_FACTOR = 2
_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
_CANCEL = h2.errors.ErrorCodes.CANCEL
#: request headers HTTP/2 does not carry (``h2`` refuses most already)
_DROPPED = HOP_BY_HOP | {b"host"}
#: the subresources only an upgrade (SPDY, WebSocket) serves
_UPGRADE_ONLY = (b"/exec", b"/attach", b"/portforward")


class StreamRequest:
    """A request head arrived on ``stream_id`` (see the module docstring)."""

    __slots__ = ("ended", "error", "head", "stream_id")

    def __init__(
        self, stream_id: int, head: RequestHead, ended: bool, error: ApiError | None
    ) -> None:
        self.stream_id = stream_id
        self.head = head
        #: no body follows
        self.ended = ended
        #: the ``Status`` to answer at once (``None``: a request for the pipeline)
        self.error = error


class StreamBody:
    """A piece of a request body (``flow`` bytes of window it took)."""

    __slots__ = ("data", "flow", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flow: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow = flow


class StreamEnd:
    """The request body on ``stream_id`` is complete."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamGone:
    """The client reset ``stream_id``: nothing more goes to it."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamWritable:
    """What waited on ``stream_id`` for the client's window went out."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class ConnectionDone:
    """The connection is over (``error``: ours, a protocol error)."""

    __slots__ = ("error",)

    def __init__(self, error: bool) -> None:
        self.error = error


Event = StreamRequest | StreamBody | StreamEnd | StreamGone | StreamWritable | ConnectionDone


def upgrade_refusal(path: bytes) -> ApiError | None:
    """The ``400`` for a request HTTP/2 cannot carry: exec, attach and
    port-forward need an upgrade (SPDY or WebSocket), which only HTTP/1.1
    has (kubectl and client-go ask for ALPN ``http/1.1`` for them)."""
    path = path.partition(b"?")[0].rstrip(b"/")
    if b"/pods/" in path and path.endswith(_UPGRADE_ONLY):
        return ApiError(
            400,
            "exec, attach and port-forward need an upgrade (SPDY or WebSocket), which HTTP/2 "
            "does not carry: connect over HTTP/1.1 (ALPN http/1.1)",
            "BadRequest",
        )
    return None


def request_refusal(head: RequestHead) -> ApiError | None:
    """The ``400`` for a request the gateway does not take over HTTP/2: a
    method that is not a token or ``CONNECT``, a header HTTP/1.1 could not
    carry as one safe line (``h2`` already refuses CR, LF and NUL; the
    cluster's side may be HTTP/1.1), or an upgrade-only subresource
    (:func:`upgrade_refusal`); ``None`` for a request to serve."""
    method = head.method
    if not valid_header(method, b"") or method == b"CONNECT":
        return ApiError(400, "the request method is not supported", "BadRequest")
    for name, value in head.headers:
        if not valid_header(name, value):
            return ApiError(400, "malformed HTTP request: an invalid header field", "BadRequest")
    return upgrade_refusal(head.target)


def request_head(headers: list[tuple[bytes, bytes]], ended: bool = True) -> RequestHead:
    """The :class:`RequestHead` of an HTTP/2 request's header block
    (``:authority`` becomes ``Host`` unless the request has one).  A body
    of unknown length (the stream did not end with its head, and no
    ``Content-Length``) is marked ``Transfer-Encoding: chunked``, as HTTP/1.1
    would carry it (HTTP/2 frames it in DATA)."""
    method = b"GET"
    target = b"/"
    authority: bytes | None = None
    plain: list[Header] = []
    host = False
    length = False
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
            elif name == b":authority":
                authority = value
        else:
            if name == b"host":
                host = True
            elif name == b"content-length":
                length = True
            plain.append((name, value))
    if authority is not None and not host:
        plain.append((b"host", authority))
    if not ended and not length:
        plain.append((b"transfer-encoding", b"chunked"))
    return RequestHead(method, target, plain, True, True, False)


def header_list_size(headers: list[tuple[bytes, bytes]]) -> int:
    """The size of a header list as ``SETTINGS_MAX_HEADER_LIST_SIZE``
    counts it: each field's name and value, and 32 bytes for each."""
    return sum(map(len, chain.from_iterable(headers))) + 32 * len(headers)


def header_list_too_large(max_header_bytes: int) -> ApiError:
    """The ``431`` for a request whose header list is over ``max_header_bytes``."""
    return ApiError(
        431,
        f"the request header fields are too large (limited to {max_header_bytes} bytes)",
        "RequestEntityTooLarge",
    )


class _RefusingConnection(h2.connection.H2Connection):
    """``h2``'s server connection refusing a stream past
    ``SETTINGS_MAX_CONCURRENT_STREAMS`` with ``RST_STREAM``
    ``REFUSED_STREAM`` instead of ending the connection (``h2`` raises a
    connection error): the stream is taken as any other (its header block
    decoded, so the HPACK state stays whole; its id counted), then reset
    at once, and nothing of it is told to the caller.  Relies on
    ``H2Connection._receive_headers_frame`` checking the count of open
    streams through :attr:`open_inbound_streams` (``h2`` 4)."""

    def __init__(self, config: h2.config.H2Configuration, max_streams: int) -> None:
        super().__init__(config=config)
        self.max_streams = max_streams
        #: while a stream past the limit is taken: no stream counts as open
        self._taking = False

    @property
    def open_inbound_streams(self) -> int:
        """The client's open streams (none while one past the limit is taken)."""
        if self._taking:
            return 0
        count: int = super().open_inbound_streams
        return count

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        stream_id = frame.stream_id
        if stream_id in self.streams or super().open_inbound_streams < self.max_streams:
            result: tuple[list[Any], list[Any]] = super()._receive_headers_frame(frame)
            return result
        self._taking = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._taking = False
        self.reset_stream(stream_id, _REFUSED)
        return frames, [e for e in events if getattr(e, "stream_id", None) != stream_id]


class _LiteralEncoder(hpack.Encoder):
    """HPACK without Huffman coding: hpack codes strings byte by byte in
    Python, and a response's new strings (its ``Audit-Id``, ``Date``) are
    new every time; literal strings are a few bytes longer on the wire."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        """The header block of ``headers`` (never Huffman-coded)."""
        return super().encode(headers, huffman=False)


def _response_block(code: int, headers: list[Header]) -> list[Header]:
    """The header block of a response head: ``:status``, then the headers
    with lower-case names and surrounding blanks stripped, without the
    connection-specific ones (``Connection``, ``Transfer-Encoding``, …,
    ``Proxy-*``) HTTP/2 forbids; credentials (``Authorization``, a short
    ``Cookie``) never indexed by HPACK.  What h2's outbound normalization
    and validation would do, in one pass (they are off)."""
    block: list[Header] = [(b":status", b"%d" % code)]
    append = block.append
    for name, value in headers:
        lname = name.lower().strip()
        if lname in _DROPPED or lname.startswith(b"proxy-"):
            continue
        stripped = value.strip()
        if lname == b"authorization" or (lname == b"cookie" and len(stripped) < 20):
            append(hpack.NeverIndexedHeaderTuple(lname, stripped))
        else:
            append((lname, stripped))
    return block


class _Out:
    """Response bytes waiting for the client's window on one stream."""

    __slots__ = ("data", "end")

    def __init__(self) -> None:
        self.data = b""
        self.end = False


class H2FrontConnection:
    """One client's HTTP/2 connection (see the module docstring)."""

    def __init__(
        self, max_streams: int = DEFAULT_MAX_STREAMS, max_header_bytes: int = 1 << 20
    ) -> None:
        # the response heads are normalized here (:func:`_response_block`), once,
        # instead of by h2's chain of generators per header
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.h2 = _RefusingConnection(config, max_streams)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            },
        )
        conn.decoder.max_header_list_size = max_header_bytes * HEADER_LIST_HARD_FACTOR
        conn.encoder = _LiteralEncoder()
        self.max_streams = max_streams
        self.max_header_bytes = max_header_bytes
        self._out: dict[int, _Out] = {}
        #: streams whose request arrived and whose response is not over
        self.open: set[int] = set()
        #: the last stream taken (the drain's second ``GOAWAY`` names it)
        self.last_stream = 0
        #: 0: serving; 1: the first ``GOAWAY`` went; 2: the second went
        self.goaway = 0
        self._extra = b""
        #: the timeout phase and the caller's clock at its start
        self.phase = IDLE
        self.since = 0.0
        #: the caller's clock, as last given
        self.now = 0.0
        #: the connection ended (a protocol error, the client's ``GOAWAY``)
        self.done = False

    def initiate(self) -> None:
        """Queue the server preface (SETTINGS) and the connection window."""
        conn = self.h2
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)

    def data_to_send(self) -> bytes:
        """The bytes to write to the client (frames queued so far)."""
        data = self.h2.data_to_send()
        extra = self._extra
        if extra:
            # a GOAWAY goes before the frames queued with it (the drain's PING)
            self._extra = b""
            return extra + data
        return data

    # -- frames from the client ----------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> list[Event]:
        """Parse ``data`` from the client into events (see the module
        docstring); ``now``: the caller's clock (for the phase)."""
        if now is not None:
            self.now = now
        if self.done:
            return []
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.done = True
            return [ConnectionDone(True)]
        out: list[Event] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                out.append(
                    StreamBody(
                        event.stream_id or 0, event.data or b"", event.flow_controlled_length or 0
                    )
                )
            elif isinstance(event, h2.events.RequestReceived):
                self._request(event, out)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self.open:
                    out.append(StreamEnd(event.stream_id or 0))
            elif isinstance(event, h2.events.StreamReset):
                self._gone(event.stream_id or 0, out)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window(event.stream_id or 0, out)
            elif isinstance(event, h2.events.PingAckReceived):
                if event.ping_data == DRAIN_PING and self.goaway == 1:
                    self._goaway(self.last_stream)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.done = True
                out.append(ConnectionDone(False))
        return out

    def _request(self, event: h2.events.RequestReceived, out: list[Event]) -> None:
        stream_id = event.stream_id or 0
        ended = event.stream_ended is not None
        if self.goaway == 2 and stream_id > self.last_stream:
            # opened after the last GOAWAY: never processed, retried elsewhere
            self.reset(stream_id, _REFUSED)
            return
        fields = list(event.headers or [])
        head = request_head(fields, ended)
        self.last_stream = max(self.last_stream, stream_id)
        if not self.open:
            self.phase = BUSY
            self.since = self.now
        self.open.add(stream_id)
        if header_list_size(fields) > self.max_header_bytes:
            refusal: ApiError | None = header_list_too_large(self.max_header_bytes)
        else:
            refusal = request_refusal(head)
        out.append(StreamRequest(stream_id, head, ended, refusal))

    def _gone(self, stream_id: int, out: list[Event]) -> None:
        if stream_id in self.open:
            self._closed(stream_id)
            out.append(StreamGone(stream_id))

    def _window(self, stream_id: int, out: list[Event]) -> None:
        waiting = self._out
        if not waiting:
            return
        for sid in [stream_id] if stream_id else list(waiting):
            if sid in waiting and self._flush_stream(sid):
                out.append(StreamWritable(sid))

    # -- the request body ------------------------------------------------------

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Give ``size`` bytes of window back to the client (they were handed on)."""
        if size:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(size, stream_id)

    # -- responses -------------------------------------------------------------

    def send_head(self, stream_id: int, code: int, headers: list[Header], end: bool) -> None:
        """Queue a response head (``end``: no body follows, the stream is done)."""
        block = _response_block(code, headers)
        try:
            self.h2.send_headers(stream_id, block, end_stream=end)
        except h2.exceptions.ProtocolError:
            self._closed(stream_id)  # reset by the client meanwhile
            return
        if end:
            self._closed(stream_id)

    def send_interim(self, stream_id: int, code: int, headers: list[Header]) -> None:
        """Queue a ``1xx`` head (``100 Continue``)."""
        block = _response_block(code, headers)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.send_headers(stream_id, block)

    def send_body(self, stream_id: int, data: bytes) -> bool:
        """Queue what the windows allow of ``data``; the rest waits on the
        stream.  ``False``: the stream is blocked (pause its producer until
        :class:`StreamWritable`)."""
        out = self._out.get(stream_id)
        if out is not None:
            out.data += data
            return False
        sent = self._send_within_window(stream_id, data)
        if sent == len(data):
            return True
        out = self._out[stream_id] = _Out()
        out.data = data[sent:]
        return False

    def _send_within_window(self, stream_id: int, data: bytes) -> int:
        conn = self.h2
        try:
            room = min(conn.local_flow_control_window(stream_id), len(data))
            size = conn.max_outbound_frame_size
            sent = 0
            while sent < room:
                piece = data[sent : sent + min(size, room - sent)]
                conn.send_data(stream_id, piece)
                sent += len(piece)
        except h2.exceptions.ProtocolError:
            self._closed(stream_id)
            return len(data)  # the stream is gone: drop the rest
        return sent

    def _flush_stream(self, stream_id: int) -> bool:
        """Send what waits on ``stream_id``; whether all of it went."""
        out = self._out[stream_id]
        if out.data:
            sent = self._send_within_window(stream_id, out.data)
            out.data = out.data[sent:]
            if out.data:
                return False
        self._out.pop(stream_id, None)
        if out.end:
            self._end_now(stream_id)
        return True

    def end(self, stream_id: int, now: float | None = None) -> None:
        """End the response on ``stream_id`` (once what waits went)."""
        if now is not None:
            self.now = now
        out = self._out.get(stream_id)
        if out is not None:
            out.end = True
            return
        self._end_now(stream_id)

    def _end_now(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.end_stream(stream_id)
        self._closed(stream_id)

    def reset(self, stream_id: int, code: int = _CANCEL, now: float | None = None) -> None:
        """Reset ``stream_id`` (a response broke off; a refused stream)."""
        if now is not None:
            self.now = now
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, code)
        self._closed(stream_id)

    def _closed(self, stream_id: int) -> None:
        self._out.pop(stream_id, None)
        opened = self.open
        if stream_id in opened:
            opened.discard(stream_id)
            if not opened:
                self.phase = IDLE
                self.since = self.now

    def blocked(self, stream_id: int) -> bool:
        """Whether output waits on ``stream_id`` for the client's window."""
        return stream_id in self._out

    # -- the end ---------------------------------------------------------------

    def drain(self) -> None:
        """Begin a race-free drain (see the module docstring): the first
        ``GOAWAY`` and its ``PING``; nothing when one began."""
        if self.goaway or self.done:
            return
        self._goaway(_MAX_STREAM_ID)
        try:
            self.h2.ping(DRAIN_PING)
        except h2.exceptions.ProtocolError:
            self._goaway(self.last_stream)

    def go_away(self) -> None:
        """Send the final ``GOAWAY`` now (closing: idle, or the drain's end)."""
        if self.goaway < 2 and not self.done:
            self._goaway(self.last_stream)

    def _goaway(self, last_stream: int) -> None:
        self.goaway = 1 if last_stream == _MAX_STREAM_ID else 2
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream
        frame.error_code = _NO_ERROR
        self._extra += frame.serialize()

    @property
    def finished(self) -> bool:
        """The drain is over: the final ``GOAWAY`` went and no stream is open."""
        return self.goaway == 2 and not self.open
