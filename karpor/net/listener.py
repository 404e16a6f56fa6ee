"""Listening sockets for the worker pool.

The supervisor opens one ``SO_REUSEPORT`` listening socket per worker slot
(the kernel spreads new connections across them) and hands it to the
slot's worker process, which adopts it (``reactor.adoptStreamPort``).  The
supervisor keeps its own copy of each socket open, so the socket, and the
connections queued on it, outlive any one worker: a replacement worker (after
a crash, or during a rolling restart) adopts the same socket and nothing
queued is dropped — Linux resets the queue of a ``SO_REUSEPORT`` listener
only when its last descriptor closes.

``SO_REUSEPORT`` lets any process of the same user join the port, so a
second gateway started on a port already served would silently get a share
of its connections: :func:`refuse_if_served` refuses such a start.  A slot whose
worker is down for a while gets a socket that is bound but not listening
(``listen=False``, :mod:`karpor.app.supervisor`): it takes no connection
until its worker calls :func:`start_listening` on it.
"""

from __future__ import annotations

import errno
import socket

DEFAULT_BACKLOG = 4096


def family_of(host: str) -> socket.AddressFamily:
    """The address family for a listening host (an IPv6 literal has a colon)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_free(host: str, port: int) -> None:
    """Raise ``OSError(EADDRINUSE)`` if anything listens on ``host:port``.

    A probe socket without ``SO_REUSEPORT`` cannot bind where any listener
    is (one of another gateway's ``SO_REUSEPORT`` sockets included), while
    ``SO_REUSEADDR`` lets it bind over connections in ``TIME_WAIT`` (a
    gateway restarted at once).  Port 0 is always free.
    """
    if port == 0:
        return
    probe = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family_of(host) == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, "address already in use") from None
        raise
    finally:
        probe.close()


def refuse_if_served(host: str, port: int) -> None:
    """Exit (``SystemExit`` with the reason) if anything listens on ``host:port``."""
    try:
        check_free(host, port)
    except OSError as exc:
        raise SystemExit(
            f"karpor: cannot listen on {host}:{port}: {exc.strerror} "
            "(is another gateway serving it? choose another --port)"
        ) from None


def start_listening(sock: socket.socket, backlog: int = DEFAULT_BACKLOG) -> None:
    """Make a bound socket listen (a no-op but for the backlog if it does)."""
    sock.listen(backlog)


def open_listener(
    host: str, port: int, backlog: int = DEFAULT_BACKLOG, *, listen: bool = True
) -> socket.socket:
    """A non-blocking, inheritable ``SO_REUSEPORT`` TCP socket listening on ``host:port``.

    With ``port`` 0 the kernel picks a port; open the other slots' sockets
    on the port this one got (``sock.getsockname()[1]``).  With ``listen``
    false the socket is only bound: it joins the port's group, and takes
    connections, once :func:`start_listening` is called on it.
    """
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock
