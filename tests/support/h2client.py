"""A small blocking HTTP/2 client for tests (the ``h2`` library over an
``ssl`` socket offering ALPN ``h2``): many streams on one connection, each
one's status, headers, body, end or reset; the server's ``GOAWAY``."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class Stream:
    """What one stream received."""

    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


class H2Client:
    """One HTTP/2 connection to ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(self, port: int, context: ssl.SSLContext, *, window: int = 65_535) -> None:
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.alpn = self.sock.selected_alpn_protocol()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if window != 65_535:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.streams: dict[int, Stream] = {}
        #: the server's last GOAWAY's ``last_stream_id`` (``None``: none came)
        self.goaway: int | None = None
        self.closed = False
        #: streams whose DATA is not acknowledged (a slow reader: no window
        #: granted) until :meth:`release`
        self.withheld: dict[int, int] = {}
        self._send()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(
        self,
        path: str,
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> int:
        """Open a stream for ``method path``; its id."""
        sid = self.conn.get_next_available_stream_id()
        block = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            *[(n.encode(), v.encode()) for n, v in headers],
        ]
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, block, end_stream=body is None)
        self._send()
        if body is not None:
            self._send_body(sid, body)
        return sid

    def _send_body(self, sid: int, body: bytes) -> None:
        """Send ``body`` within the server's windows (waiting for them)."""
        deadline = time.monotonic() + 20
        while body:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                if time.monotonic() > deadline:
                    raise AssertionError("the server granted no window for the request body")
                self.pump(0.2)
                continue
            self.conn.send_data(sid, body[:room])
            body = body[room:]
            self._send()
        self.conn.end_stream(sid)
        self._send()

    def pump(self, timeout: float = 1.0) -> None:
        """Read and handle what the server sent within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            sid = getattr(event, "stream_id", 0)
            stream = self.streams.get(sid) if sid else None
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                for name, value in event.headers or []:
                    if name == b":status":
                        stream.status = int(value)
                    else:
                        stream.headers[name] = value
            elif isinstance(event, h2.events.DataReceived):
                if stream is not None:
                    stream.body += event.data or b""
                size = event.flow_controlled_length or 0
                if sid in self.withheld:
                    self.withheld[sid] += size
                elif size:
                    self.conn.acknowledge_received_data(size, sid)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream.ended = True
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event.last_stream_id
        self._send()

    def withhold(self, sid: int) -> None:
        """Grant stream ``sid`` no more window (read it slowly)."""
        self.withheld.setdefault(sid, 0)

    def release(self, sid: int) -> None:
        """Grant ``sid`` the window withheld, and from now on as data comes."""
        size = self.withheld.pop(sid, 0)
        if size:
            self.conn.acknowledge_received_data(size, sid)
            self._send()

    def wait(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Pump until ``done()`` (``AssertionError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.closed or time.monotonic() > deadline:
                raise AssertionError("the HTTP/2 exchange did not complete")
            self.pump(0.2)

    def get(self, path: str, **kwargs: object) -> Stream:
        """One complete request."""
        sid = self.start(path, **kwargs)  # type: ignore[arg-type]
        stream = self.streams[sid]
        self.wait(lambda: stream.ended or stream.reset is not None)
        return stream

    def close(self) -> None:
        """Close the connection."""
        try:
            self.conn.close_connection()
            self._send()
        except Exception:
            pass
        self.sock.close()
