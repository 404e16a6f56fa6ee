"""Helpers for the streaming tests through the gateway.

* :func:`established`: the established TCP connections of one process to (or
  from) one loopback port, read from ``/proc/PID/net/tcp`` and the process's
  socket inodes in ``/proc/PID/fd`` (no ``ss`` needed);
* :func:`wait_until`: poll a condition with a bounded wait;
* :class:`PeakRss`: samples a process's ``VmRSS`` in a thread, keeps the peak;
* :class:`Http11Relay`: a loopback TLS relay offering ALPN ``http/1.1`` only,
  re-originating TLS to a cluster; it sees the plain HTTP/1.1 requests and
  records, per connection, the request lines and whether the caller closed
  it.  Put in front of the simulator (which speaks HTTP/2), it makes the
  gateway carry watches on pooled HTTP/1.1 connections, whose closing can be
  observed.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.gateway import rss_bytes

_ESTABLISHED = "01"
_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.1\r\n")


@dataclass(frozen=True, order=True)
class Connection:
    """One TCP connection as seen by its owner: (local port, remote port)."""

    local_port: int
    remote_port: int


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def established(
    pid: int, *, remote_port: int | None = None, local_port: int | None = None
) -> set[Connection]:
    """The established TCP (IPv4 and IPv6) connections owned by ``pid``,
    filtered by remote or local port."""
    inodes = _socket_inodes(pid)
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != _ESTABLISHED or fields[9] not in inodes:
                continue
            conn = Connection(
                int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            )
            if remote_port is not None and conn.remote_port != remote_port:
                continue
            if local_port is not None and conn.local_port != local_port:
                continue
            found.add(conn)
    return found


def wait_until(condition: Callable[[], bool], deadline: float = 5.0, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``deadline`` seconds pass (False)."""
    end = time.monotonic() + deadline
    while True:
        if condition():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)  # the poll of this wait


class PeakRss:
    """The peak ``VmRSS`` of a process, sampled in a thread (use as a context manager)."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        """How far the peak rose above the baseline, in bytes."""
        return self.peak - self.baseline


# --- the HTTP/1.1 relay ---------------------------------------------------------------


def self_signed(common_name: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a self-signed loopback server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(common_name))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class RelayedConnection:
    """One connection the relay accepted."""

    #: (method, target) of every request line the caller sent
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: set once the caller (the gateway) closed or reset its side
    caller_closed: threading.Event = field(default_factory=threading.Event)
    #: which side ended the connection first: "caller" or "upstream"
    closed_first: str | None = None
    _buffer: bytes = b""

    def saw(self, data: bytes) -> None:
        self._buffer = (self._buffer + data)[-65536:]
        for match in _REQUEST_LINE.finditer(self._buffer):
            self.requests.append((match.group(1), match.group(2)))
        if self._buffer.rfind(b"\r\n") >= 0:
            self._buffer = self._buffer[self._buffer.rfind(b"\r\n") + 2 :]


class Http11Relay:
    """A TLS relay on a loopback port: ALPN ``http/1.1`` to its callers, TLS
    (ALPN ``http/1.1``, ``upstream_ca`` verified) to ``upstream_port``.
    Runs an asyncio loop in a thread; :meth:`stop` ends it."""

    def __init__(self, upstream_port: int, upstream_ca: bytes) -> None:
        self.upstream_port = upstream_port
        self.connections: list[RelayedConnection] = []
        cert_pem, key_pem = self_signed()
        self.cert_pem = cert_pem
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "c.pem").write_bytes(cert_pem)
            (Path(tmp) / "k.pem").write_bytes(key_pem)
            self._server_context.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
        self._server_context.set_alpn_protocols(["http/1.1"])
        self._client_context = ssl.create_default_context(cadata=upstream_ca.decode())
        self._client_context.set_alpn_protocols(["http/1.1"])
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the relay did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self._server_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = RelayedConnection()
        self.connections.append(record)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1",
                self.upstream_port,
                ssl=self._client_context,
                server_hostname="127.0.0.1",
            )
        except OSError:
            writer.close()
            record.caller_closed.set()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, caller: bool) -> None:
            try:
                while data := await src.read(65536):
                    if caller:
                        record.saw(data)
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                if record.closed_first is None:
                    record.closed_first = "caller" if caller else "upstream"
                if caller:
                    record.caller_closed.set()
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def stop(self) -> None:
        """Stop accepting and end the loop (open relayed connections are dropped)."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
