"""The Kubernetes stream protocols on top of SPDY and WebSocket, sans-IO.

Everything here is pure: protocol names and negotiation, the query options of
``exec`` / ``attach``, the payloads the kubelet writes on the error channel,
the resize messages, and the framing of WebSocket channel messages.

Remote command (``exec``, ``attach``):

* SPDY: the client offers ``X-Stream-Protocol-Version`` values
  (``v5.channel.k8s.io`` ... ``channel.k8s.io``); the server picks the first
  one it supports and opens nothing itself: the client creates one stream per
  channel with a ``streamtype`` header (``error``, ``stdin``, ``stdout``,
  ``stderr``, ``resize``). v5 behaves as v4 over SPDY.
* WebSocket: the client offers ``Sec-WebSocket-Protocol`` values; each
  message starts with the channel number (stdin 0, stdout 1, stderr 2,
  error 3, resize 4; binary protocols) or its ASCII digit followed by base64
  (``base64.`` protocols). ``v5.channel.k8s.io`` adds channel 255: the
  message ``[255, n]`` closes the client's channel ``n`` (stdin).
* The error channel: v4 and v5 carry a JSON ``metav1.Status``
  (``{"metadata":{},"status":"Success"}``, or ``NonZeroExitCode`` with an
  ``ExitCode`` cause); older versions carry the error message as plain text
  and nothing on success.

Port-forward: SPDY protocol ``portforward.k8s.io`` (a pair of streams per
forwarded connection, with ``streamtype`` ``error`` / ``data``, ``port`` and
``requestID`` headers), tunnelled in WebSocket binary messages when the
client offers ``SPDY/3.1+portforward.k8s.io``.  Clients that offer the
kubelet's older WebSocket protocol instead (``v4.channel.k8s.io``,
``v4.base64.channel.k8s.io``, ``base64.channel.k8s.io``, or no subprotocol) get one connection per
port of the ``ports`` query parameter: channel ``2i`` carries port ``i``'s
data and ``2i+1`` its errors, and the server's first message on each
channel is the port number (2 bytes, little-endian).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from karpor.kube.status import ApiError

#: Channel numbers of the remote-command protocols.
STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
#: v5 only: ``[CLOSE, n]`` half-closes the client's channel ``n``.
CLOSE = 255

#: Stream types named by the ``streamtype`` SPDY header.
STREAM_TYPES: dict[str, int] = {
    "stdin": STDIN,
    "stdout": STDOUT,
    "stderr": STDERR,
    "error": ERROR,
    "resize": RESIZE,
}

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
PORT_FORWARD = "portforward.k8s.io"
#: The WebSocket subprotocol prefix of SPDY tunnelled in WebSocket.
TUNNEL_PREFIX = "SPDY/3.1+"
PORT_FORWARD_TUNNEL = TUNNEL_PREFIX + PORT_FORWARD

#: ``X-Stream-Protocol-Version`` values served for exec/attach over SPDY.
SPDY_REMOTE_COMMAND_PROTOCOLS: tuple[str, ...] = (V5, V4, V3, V2, V1)
#: ``Sec-WebSocket-Protocol`` values served for exec/attach over WebSocket.
WEBSOCKET_REMOTE_COMMAND_PROTOCOLS: tuple[str, ...] = (V5, V4, V4_BASE64, V1, V1_BASE64)
#: ``X-Stream-Protocol-Version`` values served for port-forward over SPDY.
SPDY_PORT_FORWARD_PROTOCOLS: tuple[str, ...] = (PORT_FORWARD,)
#: ``Sec-WebSocket-Protocol`` values served for port-forward over WebSocket:
#: SPDY tunnelled (kubectl 1.30+), or the kubelet's older channel protocol
#: (the Python client, client-node), binary or base64.
WEBSOCKET_PORT_FORWARD_PROTOCOLS: tuple[str, ...] = (
    PORT_FORWARD_TUNNEL,
    V4,
    V4_BASE64,
    V1_BASE64,
)

Kind = Literal["exec", "attach", "portforward"]


def split_header_values(values: Iterable[str]) -> list[str]:
    """Comma-separated header values (possibly repeated headers) as a list."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def negotiate(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first protocol the client offered that the server supports."""
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


def status_json_version(protocol: str) -> bool:
    """Whether ``protocol`` reports the exit status as a JSON ``Status``."""
    return protocol in (V5, V4, V4_BASE64)


def is_base64(protocol: str) -> bool:
    """Whether WebSocket ``protocol`` base64-encodes channel payloads."""
    return protocol in (V1_BASE64, V4_BASE64)


def supports_resize(protocol: str) -> bool:
    """Whether a SPDY remote-command ``protocol`` has a resize stream."""
    return protocol in (V5, V4, V3)


# -- request options -----------------------------------------------------


def _flag(query: Mapping[str, Sequence[str]], name: str) -> bool:
    values = query.get(name)
    if not values:
        return False
    value = values[0]
    # Like apimachinery's Convert_Slice_string_To_bool.
    return value.lower() not in ("", "0", "f", "false")


@dataclass(frozen=True)
class StreamOptions:
    """What an ``exec`` / ``attach`` request asks for."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    container: str
    command: tuple[str, ...] = ()


def _containers(pod: Mapping[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in spec.get("containers") or []]
    names += [c.get("name", "") for c in spec.get("initContainers") or []]
    names += [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    return names


def resolve_container(pod: Mapping[str, Any], requested: str) -> str:
    """The container a request addresses, or the ``ApiError`` the apiserver gives."""
    name = (pod.get("metadata") or {}).get("name", "")
    if requested:
        if requested not in _containers(pod):
            raise ApiError(400, f"container {requested} is not valid for pod {name}")
        return requested
    containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if len(containers) == 1:
        return str(containers[0])
    if not containers:
        raise ApiError(400, f"a container name must be specified for pod {name}")
    choices = " ".join(_containers(pod))
    raise ApiError(
        400, f"a container name must be specified for pod {name}, choose one of: [{choices}]"
    )


def parse_stream_options(
    kind: Literal["exec", "attach"], query: Mapping[str, Sequence[str]], pod: Mapping[str, Any]
) -> StreamOptions:
    """Validate an exec/attach request as the apiserver and kubelet do.

    Raises :class:`ApiError` (400) for an invalid container, an exec without
    a command, or a request for no stream at all.
    """
    container = resolve_container(pod, (query.get("container") or [""])[0])
    tty = _flag(query, "tty")
    stdin = _flag(query, "stdin")
    stdout = _flag(query, "stdout")
    stderr = _flag(query, "stderr") and not tty
    command = tuple(query.get("command") or ())
    if kind == "exec" and not command:
        raise ApiError(400, "you must specify at least one command for the container")
    if not (stdin or stdout or stderr):
        raise ApiError(400, "you must specify at least 1 of stdin, stdout, stderr")
    return StreamOptions(stdin, stdout, stderr, tty, container, command)


def container_running(pod: Mapping[str, Any], container: str) -> bool:
    """Whether the pod runs (phase ``Running``) and the container is not terminated."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") == container:
            state = cs.get("state") or {}
            return "terminated" not in state and "waiting" not in state
    return True


# -- error channel payloads ---------------------------------------------


def _go_json(obj: object) -> bytes:
    """JSON as Go's ``encoding/json`` writes it (compact, HTML-escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


def exit_message(command: Sequence[str], exit_code: int) -> str:
    """The message of a non-zero exit, as the kubelet words it."""
    return (
        "command terminated with non-zero exit code: error executing command "
        f"[{' '.join(command)}], exit code {exit_code}"
    )


def exit_status(command: Sequence[str], exit_code: int) -> dict[str, Any]:
    """The ``metav1.Status`` the kubelet reports for a finished command."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": exit_message(command, exit_code),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def internal_error_status(message: str) -> dict[str, Any]:
    """The ``metav1.Status`` of ``apierrors.NewInternalError(message)``."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def error_channel_payload(protocol: str, status: Mapping[str, Any]) -> bytes:
    """What the kubelet writes on the error channel for ``status``.

    v4/v5: the Status as JSON. Older: the message as text, nothing on success.
    """
    if status_json_version(protocol):
        return _go_json(dict(status))
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode("utf-8")


# -- resize --------------------------------------------------------------


@dataclass(frozen=True)
class TerminalSize:
    """A terminal size from a resize message."""

    width: int
    height: int


class ResizeDecoder:
    """Decodes the resize channel: a stream of JSON ``{"Width":..,"Height":..}``.

    Objects may arrive split across frames or several in one; field names
    match case-insensitively, as Go's ``encoding/json`` does. Malformed
    input is dropped (the kubelet stops reading resizes then).
    """

    _LIMIT = 4096

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()
        self._broken = False

    def receive_data(self, data: bytes) -> list[TerminalSize]:
        """Feed bytes; return complete sizes."""
        if self._broken:
            return []
        self._buf += data.decode("utf-8", "replace")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                break
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                if len(text) > self._LIMIT or not text.startswith("{"):
                    self._broken = True
                    self._buf = ""
                else:
                    self._buf = text
                break
            self._buf = text[end:]
            if isinstance(obj, dict):
                fields = {str(k).lower(): v for k, v in obj.items()}
                width, height = fields.get("width", 0), fields.get("height", 0)
                if isinstance(width, int) and isinstance(height, int):
                    sizes.append(TerminalSize(width & 0xFFFF, height & 0xFFFF))
        return sizes


# -- WebSocket channel messages ------------------------------------------


class ChannelMessageError(ValueError):
    """A WebSocket channel message that cannot be decoded."""


def encode_channel_message(channel: int, data: bytes, *, base64_codec: bool) -> bytes | str:
    """A WebSocket message for ``data`` on ``channel``.

    Binary protocols: ``bytes`` (a binary message). Base64 protocols: ``str``
    (a text message, the channel digit then base64).
    """
    if base64_codec:
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes([channel]) + data


def websocket_frame_head(length: int) -> bytes:
    """The head of a server's WebSocket frame carrying ``length`` bytes.

    One final, unmasked binary frame (RFC 6455, section 5.2) with the
    shortest length encoding, byte for byte what wsproto writes before the
    payload of ``BytesMessage(data)`` on a connection without extensions.
    Head and payload can go to the transport separately, so a large payload
    is not copied to be framed.
    """
    if length <= 125:
        return bytes((0x82, length))
    if length <= 0xFFFF:
        return _WS_HEAD_16.pack(0x82, 126, length)
    return _WS_HEAD_64.pack(0x82, 127, length)


def channel_frame_head(channel: int, length: int) -> bytes:
    """What precedes ``length`` bytes on ``channel`` in a server's WebSocket frame.

    For binary protocols: :func:`websocket_frame_head` of the message
    ``encode_channel_message(channel, data)`` (``length + 1`` bytes), then
    the channel number: ``channel_frame_head(channel, len(data)) + data`` is
    that message's frame.
    """
    return websocket_frame_head(length + 1) + bytes((channel,))


_WS_HEAD_16 = struct.Struct(">BBH")
_WS_HEAD_64 = struct.Struct(">BBQ")


def decode_channel_message(message: bytes | str, *, base64_codec: bool) -> tuple[int, bytes] | None:
    """The channel and payload of a complete WebSocket message.

    ``None`` for an empty message (which kubelets skip). Raises
    :class:`ChannelMessageError` for bad base64.
    """
    raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    if not raw:
        return None
    channel = raw[0]
    payload = raw[1:]
    if base64_codec:
        channel = (channel - ord("0")) & 0xFF
        try:
            payload = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ChannelMessageError(f"bad base64 on channel {channel}") from e
    return channel, payload


# -- port-forward --------------------------------------------------------


@dataclass(frozen=True)
class PortForwardStream:
    """The headers of one port-forward SPDY stream."""

    stream_type: Literal["error", "data"]
    port: int
    request_id: str


def parse_port_forward_headers(headers: Mapping[str, str], stream_id: int) -> PortForwardStream:
    """Validate a port-forward stream's headers as the kubelet does.

    Without ``requestID`` (very old clients) the kubelet derives one from
    the stream ID; so does this. Raises ``ValueError`` with the kubelet's
    message for a bad stream.
    """
    port_text = headers.get("port", "")
    if not port_text:
        raise ValueError('"port" header is required')
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"unable to parse {port_text!r} as a port") from None
    if not 0 < port < 65536:
        raise ValueError(f'port "{port_text}" must be > 0')
    stream_type = headers.get("streamtype", "")
    if not stream_type:
        raise ValueError('"streamType" header is required')
    if stream_type not in ("error", "data"):
        raise ValueError(f"invalid stream type {stream_type!r}")
    request_id = headers.get("requestid", "")
    if not request_id:
        request_id = str(stream_id if stream_type == "error" else stream_id - 2)
    return PortForwardStream("error" if stream_type == "error" else "data", port, request_id)


def port_forward_error(port: int, pod: str, uid: str, reason: str) -> bytes:
    """The error-stream text of a failed forward, as the kubelet words it."""
    return f"error forwarding port {port} to pod {pod}, uid {uid}: {reason}".encode()


#: the most ports one WebSocket port-forward carries: a channel number is
#: one byte, and each port takes two channels
MAX_WEBSOCKET_PORTS = 128


def parse_port_forward_ports(query: Mapping[str, Sequence[str]]) -> list[int]:
    """The ports of a WebSocket port-forward request (``ports``, repeated or
    comma-separated); ``ValueError`` with the kubelet's message when none or bad."""
    ports: list[int] = []
    for value in [*query.get("ports", []), *query.get("port", [])]:
        for part in value.split(","):
            text = part.strip()
            try:
                port = int(text)
            except ValueError:
                raise ValueError(f"unable to parse {text!r} as a port") from None
            if not 0 < port < 65536:
                raise ValueError(f'port "{text}" must be > 0')
            ports.append(port)
    if not ports:
        raise ValueError('query parameter "port" is required')
    if len(ports) > MAX_WEBSOCKET_PORTS:
        raise ValueError(
            f"at most {MAX_WEBSOCKET_PORTS} ports can be forwarded over one WebSocket "
            f"(asked for {len(ports)})"
        )
    return ports


def port_prefix(port: int) -> bytes:
    """The first server message of a WebSocket port-forward channel: the port,
    two bytes little-endian."""
    return struct.pack("<H", port)


def port_forward_channels(index: int) -> tuple[int, int]:
    """The data and the error channel of the ``index``-th forwarded port."""
    return 2 * index, 2 * index + 1
