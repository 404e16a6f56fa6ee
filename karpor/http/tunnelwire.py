"""The wire of an agent's tunnel (sans-IO): what both ends agree on.

An agent (``karpor agent``) opens TLS to the gateway's port, with its
client certificate, and sends one HTTP/1.1 upgrade request
(:func:`upgrade_request`) for :data:`TUNNEL_PATH` asking for
:data:`PROTOCOL`.  The gateway answers ``101 Switching Protocols``
(:func:`switch_response`) saying which of its workers took the connection
and how many it has (:data:`WORKER_HEADER`, ``INDEX/COUNT``); any other
answer is an ordinary response (the path is unknown to anybody but an
agent).  The agent reads that answer with a :class:`SwitchReader`.

After the ``101`` the roles flip: the gateway is the HTTP/2 client, the
agent the HTTP/2 server.  Each request to the cluster is one stream
carrying the request as the gateway would send it to a cluster (the
gateway's :func:`~karpor.upstream.request.h2_header_list`; the agent adds
the cluster's credential).  An upgrade request (exec, attach, cp,
port-forward) is a stream too, marked with :data:`UPGRADE_HEADER` holding
the ``Upgrade`` value; when the cluster switches protocols, the agent
answers ``200`` with :data:`SWITCHED_HEADER` (HTTP/2 has no ``101``) and
the cluster's ``101`` headers (``Upgrade`` again as :data:`UPGRADE_HEADER`),
and from then on the stream's DATA frames carry the session's bytes both
ways, exactly as read (the gateway and the agent splice them).  A
non-``101`` answer is an ordinary response (kubectl's WebSocket→SPDY
fallback relies on it).

:func:`agent_request` reads a stream's header list back into what the
agent asks its cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from karpor.http.headers import Header

#: The path of the upgrade request (unknown to anybody but an agent).
TUNNEL_PATH = b"/apis/tunnel.karpor.io/v1/connect"
#: The ``Upgrade`` token of the tunnel.
PROTOCOL = b"karpor-tunnel.v1"
#: Request header: the agent's version (shown by ``get clusters``).
VERSION_HEADER = b"Karpor-Agent-Version"
#: ``101`` header: ``INDEX/COUNT``, the worker that took the tunnel and how
#: many workers the gateway runs.
WORKER_HEADER = b"Karpor-Worker"
#: Stream header (request and switched response): the ``Upgrade`` value.
UPGRADE_HEADER = b"karpor-upgrade"
#: Stream response header: the cluster answered ``101 Switching Protocols``.
SWITCHED_HEADER = b"karpor-switched"
#: The most bytes of the gateway's answer head the agent reads.
MAX_ANSWER_HEAD = 16 * 1024
#: The most characters of an agent version kept.
MAX_VERSION = 64


def upgrade_request(host: str, version: str) -> bytes:
    """The agent's upgrade request for the gateway at ``host`` (``HOST[:PORT]``)."""
    return (
        b"GET %b HTTP/1.1\r\nHost: %b\r\nConnection: Upgrade\r\nUpgrade: %b\r\n"
        b"%b: %b\r\nContent-Length: 0\r\n\r\n"
        % (
            TUNNEL_PATH,
            host.encode("idna"),
            PROTOCOL,
            VERSION_HEADER,
            clean_version(version.encode("ascii", "replace")),
        )
    )


def clean_version(raw: bytes) -> bytes:
    """An agent's version as the gateway keeps it: printable ASCII, bounded."""
    kept = bytes(c for c in raw[:MAX_VERSION] if 0x21 <= c < 0x7F)
    return kept or b"unknown"


def is_tunnel_request(target: bytes, upgrade: bytes | None) -> bool:
    """Whether a request (its raw target and ``Upgrade`` value) asks to open
    a tunnel."""
    return target == TUNNEL_PATH and upgrade is not None and upgrade.lower() == PROTOCOL


def switch_response(worker: int, workers: int, extra: Sequence[Header] = ()) -> bytes:
    """The gateway's ``101`` to an agent: worker ``worker`` of ``workers`` took it."""
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %b\r\n" % PROTOCOL,
        b"%b: %d/%d\r\n" % (WORKER_HEADER, worker, workers),
    ]
    for name, value in extra:
        parts.append(b"%b: %b\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


class Answer(NamedTuple):
    """The gateway's answer to the upgrade request, as the agent reads it."""

    code: int
    #: the worker that took the tunnel, and the gateway's worker count (``101`` only)
    worker: int
    workers: int
    #: the reason phrase (for a log line)
    reason: str


class TunnelAnswerError(ValueError):
    """The gateway's answer cannot be read."""


def _worker(value: bytes) -> tuple[int, int]:
    index, _, count = value.strip().partition(b"/")
    if not (index.isdigit() and count.isdigit()):
        raise TunnelAnswerError(f"bad {WORKER_HEADER.decode()} header")
    worker, workers = int(index), int(count)
    if not 0 <= worker < workers <= 1024:
        raise TunnelAnswerError(f"bad {WORKER_HEADER.decode()} header")
    return worker, workers


def parse_answer(head: bytes) -> Answer:
    """Read the gateway's answer head (status line and headers, without the
    blank line); raises :class:`TunnelAnswerError`."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise TunnelAnswerError("not an HTTP/1.1 answer")
    code = int(status[1])
    reason = status[2].decode("latin-1") if len(status) > 2 else ""
    if code != 101:
        return Answer(code, 0, 0, reason)
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise TunnelAnswerError("bad header line")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"upgrade", b"").lower() != PROTOCOL:
        raise TunnelAnswerError("the gateway switched to another protocol")
    worker, workers = _worker(headers.get(WORKER_HEADER.lower(), b"0/1"))
    return Answer(101, worker, workers, reason)


class SwitchReader:
    """Reads the gateway's answer head from the bytes the agent receives:
    :meth:`feed` returns ``None`` until the head is complete, then the
    :class:`Answer` and the bytes that followed it (the first HTTP/2
    bytes).  Raises :class:`TunnelAnswerError` past
    :data:`MAX_ANSWER_HEAD` bytes or for a head it cannot read."""

    def __init__(self, limit: int = MAX_ANSWER_HEAD) -> None:
        self._buffer = b""
        self._limit = limit

    def feed(self, data: bytes) -> tuple[Answer, bytes] | None:
        """Take received bytes (see the class docstring)."""
        buffer = self._buffer + data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self._limit:
                raise TunnelAnswerError("the gateway's answer head is too large")
            self._buffer = buffer
            return None
        if end > self._limit:
            raise TunnelAnswerError("the gateway's answer head is too large")
        self._buffer = b""
        return parse_answer(buffer[:end]), buffer[end + 4 :]


class AgentRequest(NamedTuple):
    """A stream's request as the agent forwards it to its cluster."""

    method: bytes
    target: bytes
    #: the headers to forward (lower-case names), without those below
    headers: list[Header]
    forwarded_for: bytes | None
    audit_id: bytes
    #: the ``Upgrade`` value of an upgrade request (``None``: a plain one)
    upgrade: bytes | None
    #: ``Content-Length`` (``None``: absent)
    content_length: int | None


#: Stream headers the agent never forwards: the gateway's pseudo-headers,
#: connection-specific ones, a credential (the agent adds its own).
_AGENT_DROP = frozenset(
    {
        b"host",
        b"authorization",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
    }
)


class StreamRequestError(ValueError):
    """A stream's header list is not a request the agent forwards."""


def agent_request(headers: Sequence[Header]) -> AgentRequest:
    """Read a stream's header list (see the module docstring); raises
    :class:`StreamRequestError` without ``:method`` or a ``:path``
    starting with ``/``."""
    method = b""
    target = b""
    forward: list[Header] = []
    forwarded_for: bytes | None = None
    audit_id = b""
    upgrade: bytes | None = None
    content_length: int | None = None
    for name, value in headers:
        if name.startswith(b":"):
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
            continue
        lname = name.lower()
        if lname in _AGENT_DROP:
            continue
        if lname == UPGRADE_HEADER:
            upgrade = value
        elif lname == b"x-forwarded-for":
            forwarded_for = value
        elif lname == b"audit-id":
            audit_id = value
        else:
            if lname == b"content-length":
                stripped = value.strip()
                content_length = int(stripped) if stripped.isdigit() else None
            forward.append((lname, value))
    if not method or not target.startswith(b"/"):
        raise StreamRequestError("a stream without :method or :path")
    return AgentRequest(method, target, forward, forwarded_for, audit_id, upgrade, content_length)
