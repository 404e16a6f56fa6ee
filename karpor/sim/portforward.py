"""The kubelet side of ``port-forward``: SPDY stream pairs to targets.

The client opens two SPDY streams per forwarded connection, an ``error``
stream and a ``data`` stream, with the same ``port`` and ``requestID``
headers. Once both exist the pair is connected to a target:

* by default an echo service in this process (every byte sent comes back);
* if the pod has the annotation ``sim.karpor.io/port-<N>: host:port``, a TCP
  connection to that address, loopback only unless the simulator was started
  with its explicit unsafe flag.

Either way the data stream carries the bytes; a failure is written as text on
the error stream, as the kubelet does. The client's FIN on the data stream
half-closes the target; the target's end FINs the data stream and the error
stream; a RST from the client tears the target down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IReactorTCP
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from karpor.sim.channels import parse_port_forward_headers, port_forward_error
from karpor.sim.execution import Valve
from karpor.sim.spdy import Headers

__all__ = ["ANNOTATION_PREFIX", "PortForwardApp", "SpdyStreams", "resolve_target"]

#: Pod annotation prefix mapping a pod port to a local address.
ANNOTATION_PREFIX = "sim.karpor.io/port-"


class SpdyStreams(Protocol):
    """What a SPDY application needs from the connection carrying it."""

    def reply(self, stream_id: int) -> None:
        """Send SYN_REPLY for a stream the client opened."""

    def send(self, stream_id: int, data: bytes) -> None:
        """Send data on a stream (if our side is still open)."""

    def end(self, stream_id: int) -> None:
        """Half-close our side of a stream."""

    def reset(self, stream_id: int) -> None:
        """RST_STREAM a stream."""

    def pause_input(self, reason: str) -> None:
        """Stop reading from the client until :meth:`resume_input`."""

    def resume_input(self, reason: str) -> None:
        """Undo :meth:`pause_input` for ``reason``."""


def resolve_target(
    pod: Mapping[str, Any], port: int, *, allow_remote: bool
) -> tuple[str, int] | None:
    """The TCP address pod ``port`` maps to, or ``None`` for the echo service.

    Raises ``ValueError`` for a malformed or (without ``allow_remote``)
    non-loopback mapping.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(f"{ANNOTATION_PREFIX}{port}")
    if not value:
        return None
    host, sep, port_text = str(value).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"annotation {ANNOTATION_PREFIX}{port}: {value!r} is not host:port")
    if not allow_remote and host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"{host} is not a loopback address (the simulator forwards only to "
                "loopback unless started with its unsafe flag)"
            )
    return host, int(port_text)


class _Pair:
    def __init__(self, request_id: str, port: int) -> None:
        self.request_id = request_id
        self.port = port
        self.error_id: int | None = None
        self.data_id: int | None = None
        self.target: _Target | None = None
        self.pending: list[bytes] = []
        self.client_done = False
        self.closed = False


class _Target(Protocol):
    def write(self, data: bytes) -> None: ...
    def half_close(self) -> None: ...
    def abort(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class _EchoTarget:
    """The default service behind every pod port: echoes its input."""

    def __init__(self, app: PortForwardApp, pair: _Pair) -> None:
        self._app = app
        self._pair = pair

    def write(self, data: bytes) -> None:
        self._app.target_data(self._pair, data)

    def half_close(self) -> None:
        self._app.target_closed(self._pair, None)

    def abort(self) -> None:
        """Nothing to release."""

    def pause(self) -> None:
        """Echo output is produced by input; input is paused instead."""

    def resume(self) -> None:
        """See :meth:`pause`."""


class _TcpTarget(TwistedProtocol):
    """A TCP connection to a mapped address."""

    def __init__(self, app: PortForwardApp, pair: _Pair) -> None:
        self._app = app
        self._pair = pair
        self._buffer: list[bytes] = []
        self._half_close = False
        self._aborted = False

    @property
    def _t(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        if self._aborted:
            self._t.abortConnection()
            return
        self._t.registerProducer(
            Valve(
                lambda: self._app.streams.pause_input(f"pf-{id(self)}"),
                lambda: self._app.streams.resume_input(f"pf-{id(self)}"),
            ),
            True,
        )
        for data in self._buffer:
            self._t.write(data)
        self._buffer.clear()
        if self._half_close:
            self.half_close()
        if self._app.output_paused:
            self.pause()

    def dataReceived(self, data: bytes) -> None:
        self._app.target_data(self._pair, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._app.streams.resume_input(f"pf-{id(self)}")
        self._app.target_closed(self._pair, None)

    def write(self, data: bytes) -> None:
        if self._t is None:
            self._buffer.append(data)
        else:
            self._t.write(data)

    def half_close(self) -> None:
        if self._t is None:
            self._half_close = True
            return
        lose_write = getattr(self._t, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        else:
            self._t.loseConnection()

    def abort(self) -> None:
        self._aborted = True
        if self._t is not None:
            self._t.abortConnection()

    def pause(self) -> None:
        if self._t is not None:
            self._t.pauseProducing()

    def resume(self) -> None:
        if self._t is not None:
            self._t.resumeProducing()


class _TcpFactory(ClientFactory):
    def __init__(self, target: _TcpTarget, app: PortForwardApp, pair: _Pair, address: str) -> None:
        self._target = target
        self._app = app
        self._pair = pair
        self._address = address

    def buildProtocol(self, addr: IAddress | None) -> _TcpTarget:
        return self._target

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self._app.target_closed(self._pair, f"dial tcp {self._address}: {reason.getErrorMessage()}")


class PortForwardApp:
    """Port-forward over one SPDY connection (``portforward.k8s.io``)."""

    def __init__(
        self,
        streams: SpdyStreams,
        pod: Mapping[str, Any],
        reactor: IReactorTCP,
        *,
        allow_remote: bool = False,
    ) -> None:
        self.streams = streams
        self._pod = pod
        self._reactor = reactor
        self._allow_remote = allow_remote
        self._pairs: dict[str, _Pair] = {}
        self._by_stream: dict[int, _Pair] = {}
        self.output_paused = False
        meta = pod.get("metadata") or {}
        self._pod_name = str(meta.get("name", ""))
        self._uid = str(meta.get("uid", ""))

    # -- SPDY events -------------------------------------------------------

    def stream_opened(self, stream_id: int, headers: Headers) -> None:
        """A SYN_STREAM: validate, reply, pair up."""
        try:
            info = parse_port_forward_headers(headers, stream_id)
        except ValueError:
            self.streams.reset(stream_id)
            return
        self.streams.reply(stream_id)
        pair = self._pairs.get(info.request_id)
        if pair is None:
            pair = self._pairs[info.request_id] = _Pair(info.request_id, info.port)
        if info.stream_type == "error":
            if pair.error_id is not None:
                self.streams.send(pair.error_id, b"error stream already assigned")
                return
            pair.error_id = stream_id
        else:
            if pair.data_id is not None:
                if pair.error_id is not None:
                    self.streams.send(pair.error_id, b"data stream already assigned")
                return
            pair.data_id = stream_id
        self._by_stream[stream_id] = pair
        if pair.error_id is not None and pair.data_id is not None:
            self._connect(pair)

    def stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        """DATA from the client."""
        pair = self._by_stream.get(stream_id)
        if pair is None or stream_id != pair.data_id:
            return
        if data:
            if pair.target is None:
                pair.pending.append(data)
            else:
                pair.target.write(data)
        if fin:
            pair.client_done = True
            if pair.target is not None:
                pair.target.half_close()

    def stream_reset(self, stream_id: int) -> None:
        """RST_STREAM from the client: drop the target."""
        pair = self._by_stream.get(stream_id)
        if pair is None:
            return
        if stream_id == pair.data_id and pair.target is not None:
            pair.target.abort()
        self._close(pair)

    def pause_output(self) -> None:
        """The client connection is full."""
        self.output_paused = True
        self.streams.pause_input("pf-output")
        for pair in self._pairs.values():
            if pair.target is not None:
                pair.target.pause()

    def resume_output(self) -> None:
        """The client connection drained."""
        self.output_paused = False
        self.streams.resume_input("pf-output")
        for pair in list(self._pairs.values()):
            if pair.target is not None:
                pair.target.resume()

    def disconnected(self) -> None:
        """The client went away: close every target."""
        for pair in list(self._pairs.values()):
            if pair.target is not None:
                pair.target.abort()
        self._pairs.clear()
        self._by_stream.clear()

    # -- targets -----------------------------------------------------------

    def _connect(self, pair: _Pair) -> None:
        try:
            address = resolve_target(self._pod, pair.port, allow_remote=self._allow_remote)
        except ValueError as e:
            self._fail(pair, str(e))
            return
        target: _Target
        if address is None:
            target = _EchoTarget(self, pair)
        else:
            host, port = address
            tcp = _TcpTarget(self, pair)
            self._reactor.connectTCP(host, port, _TcpFactory(tcp, self, pair, f"{host}:{port}"))
            target = tcp
        pair.target = target
        for data in pair.pending:
            target.write(data)
        pair.pending.clear()
        if pair.client_done:
            target.half_close()

    def target_data(self, pair: _Pair, data: bytes) -> None:
        """Bytes from the target to the client."""
        if pair.data_id is not None and not pair.closed:
            self.streams.send(pair.data_id, data)

    def target_closed(self, pair: _Pair, error: str | None) -> None:
        """The target ended (``error`` says why, if it failed)."""
        if error is not None:
            self._fail(pair, error)
            return
        self._close(pair)

    def _fail(self, pair: _Pair, reason: str) -> None:
        if pair.error_id is not None and not pair.closed:
            self.streams.send(
                pair.error_id, port_forward_error(pair.port, self._pod_name, self._uid, reason)
            )
        self._close(pair)

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sid in (pair.data_id, pair.error_id):
            if sid is not None:
                self.streams.end(sid)
                self._by_stream.pop(sid, None)
        self._pairs.pop(pair.request_id, None)
