"""Listening sockets for the worker pool.

The supervisor opens one ``SO_REUSEPORT`` listening socket per worker slot
(the kernel spreads new connections across them) and hands it to the
slot's worker process, which adopts it (``reactor.adoptStreamPort``).  The
supervisor keeps its own copy of each socket open, so the socket, and the
connections queued on it, outlive any one worker: a replacement worker (after
a crash, or during a rolling restart) adopts the same socket and nothing
queued is dropped — Linux resets the queue of a ``SO_REUSEPORT`` listener
only when its last descriptor closes.
"""

from __future__ import annotations

import socket

DEFAULT_BACKLOG = 4096


def family_of(host: str) -> socket.AddressFamily:
    """The address family for a listening host (an IPv6 literal has a colon)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_listener(host: str, port: int, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """A non-blocking, inheritable ``SO_REUSEPORT`` TCP socket listening on ``host:port``.

    With ``port`` 0 the kernel picks a port; open the other slots' sockets
    on the port this one got (``sock.getsockname()[1]``).
    """
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock
