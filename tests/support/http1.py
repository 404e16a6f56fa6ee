"""HTTP/1.1 requests as bytes for property tests: a hypothesis strategy of
requests (with no body, a Content-Length body or a chunked one), their
encoding, and arbitrary splits of a byte string into reads."""

from __future__ import annotations

from hypothesis import strategies as st

#: (method, path, framing: "none" | "length" | "chunked", body, chunks)
Request = tuple[bytes, bytes, str, bytes, int]

requests_strategy = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]),
    st.sampled_from([b"/", b"/a", b"/api/v1/pods?limit=1", b"/x/" + b"y" * 300]),
    st.sampled_from(["none", "length", "chunked"]),
    st.binary(max_size=40),
    st.integers(min_value=1, max_value=4),
)


def encode(request: Request) -> bytes:
    """The request as bytes on the wire."""
    method, path, framing, body, pieces = request
    head = method + b" " + path + b" HTTP/1.1\r\nHost: gw\r\n"
    if framing == "none":
        return head + b"\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    step = max(1, len(body) // pieces)
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    return (
        head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
        + b"0\r\n\r\n"
    )


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (modulo its length) into reads."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
