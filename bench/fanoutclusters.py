"""The clusters of the ``fanout`` workload: one small HTTPS server answering
fixed lists, each after a delay of its own (a remote cluster's LIST takes
time; nginx cannot wait a tenth of a second before answering).

Run as ``python -m bench.fanoutclusters PORT CERT KEY TOKEN PATH=FILE:DELAY...``:
HTTP/1.1 with keep-alive, a ``GET`` of ``PATH`` (query ignored) with
``Authorization: Bearer TOKEN`` answers FILE's bytes after DELAY seconds
(``/readyz``: ``ok`` at once); anything else 404, a wrong token 401.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

Routes = dict[str, tuple[bytes, float]]


def _response(code: int, body: bytes) -> bytes:
    reason = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found"}[code]
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (code, reason, len(body))
        + body
    )


async def _handle(
    routes: Routes, token: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *headers = head.split(b"\r\n")
            path = line.split(b" ")[1].split(b"?")[0].decode("latin-1")
            authorized = any(
                h.lower().startswith(b"authorization:") and h.split(b":", 1)[1].strip() == token
                for h in headers
            )
            if not authorized:
                writer.write(_response(401, b"{}"))
            elif path == "/readyz":
                writer.write(_response(200, b"ok"))
            elif path in routes:
                body, delay = routes[path]
                if delay:
                    await asyncio.sleep(delay)
                writer.write(_response(200, body))
            else:
                writer.write(_response(404, b"{}"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, IndexError):
        pass
    finally:
        writer.close()


async def serve(port: int, cert: str, key: str, token: str, routes: Routes) -> None:
    """Serve ``routes`` on loopback ``port`` until killed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    server = await asyncio.start_server(
        lambda r, w: _handle(routes, b"Bearer " + token.encode(), r, w),
        "127.0.0.1",
        port,
        ssl=context,
        backlog=1024,
    )
    print(f"serving on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """The command line (see the module docstring)."""
    port, cert, key, token, *specs = argv
    routes: Routes = {}
    for spec in specs:
        path, _, rest = spec.partition("=")
        file, _, delay = rest.rpartition(":")
        routes[path] = (Path(file).read_bytes(), float(delay))
    asyncio.run(serve(int(port), cert, key, token, routes))


if __name__ == "__main__":
    main(sys.argv[1:])
