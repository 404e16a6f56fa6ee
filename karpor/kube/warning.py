"""``Warning`` response headers, as kube-apiserver sends them and kubectl prints them.

kube-apiserver tells a client about something worth knowing with a header
``Warning: 299 - "text"`` (RFC 7234 section 5.5, code 299, no agent);
client-go hands it to its warning handler on *every* response, errors
included, and kubectl prints ``Warning: text`` on stderr (once per text).
The gateway uses it where a ``Status`` message alone would be lost, e.g.
on the 503 of an unhealthy cluster, which kubectl's discovery turns into
"the server is currently unable to handle the request".

:func:`warning_header` makes the text safe for a header: printable ASCII
only (anything else becomes ``?``), quotes and backslashes escaped, at
most :data:`MAX_WARNING` characters.  It adds nothing secret: callers pass
text already shown in the response's body.
"""

from __future__ import annotations

#: the longest warning text sent (kube-apiserver truncates warnings too)
MAX_WARNING = 1024

WARNING = b"warning"


def _clean(text: str) -> str:
    text = text.replace("\u2026", "...")  # the ellipsis of a shortened probe message
    text = "".join(c if " " <= c <= "~" else " " if c in "\t\r\n" else "?" for c in text)
    text = " ".join(text.split())
    if len(text) > MAX_WARNING:
        text = text[: MAX_WARNING - 3] + "..."
    return text


def warning_header(text: str) -> tuple[bytes, bytes]:
    """The ``Warning`` header carrying ``text`` (code 299, agent ``-``)."""
    escaped = _clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return WARNING, f'299 - "{escaped}"'.encode("ascii")
