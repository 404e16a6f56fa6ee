"""The supervisor ↔ worker control protocol (AMP over a socketpair).

Each worker process gets one end of a ``socketpair`` as a file descriptor;
both sides adopt it (``reactor.adoptStreamConnection``) and speak AMP:

* worker → supervisor: :class:`Ready` once it serves (its listener adopted);
* supervisor → worker: :class:`Drain` (stop accepting, finish in-flight
  requests, end long-running streams at the deadline, exit 0),
  :class:`State` (the supervisor's state, shown in the gateway's health
  output) and :class:`Report` (what the worker knows of its clusters, for
  the status page: :mod:`karpor.status.clusters`).

When the control connection drops (the supervisor died), a worker drains and
exits: no orphan keeps serving with nobody to supervise it.
"""

from __future__ import annotations

from twisted.protocols import amp


class Ready(amp.Command):
    """The worker serves: its listener is adopted and its clusters are loaded."""

    arguments = [(b"pid", amp.Integer()), (b"generation", amp.Integer())]
    response = []


class Drain(amp.Command):
    """Stop accepting; end in-flight work within ``deadline`` seconds; exit 0.

    Upgraded sessions (exec, attach, port-forward) are cut after
    ``sessions`` seconds (``deadline`` when not given).  Sent again to a
    draining worker, it shortens the sessions' time.
    """

    arguments = [(b"deadline", amp.Float()), (b"sessions", amp.Float(optional=True))]
    response = []


class State(amp.Command):
    """The supervisor's state as JSON (workers, generations, restarts)."""

    arguments = [(b"state", amp.Unicode())]
    response = []
    requiresAnswer = False


#: characters of a report per :class:`Report` answer (an AMP value holds at
#: most 65,535 bytes; reports are ASCII JSON)
REPORT_CHUNK = 16000


class Report(amp.Command):
    """The worker's status report (JSON text, :class:`karpor.status.clusters.WorkerReport`),
    asked for in pieces: ``chunk`` is the text from ``offset`` on (at most
    :data:`REPORT_CHUNK` characters), ``total`` its whole length; asking at
    offset 0 makes a fresh report, later offsets read the same one."""

    arguments = [(b"offset", amp.Integer())]
    response = [(b"chunk", amp.Unicode()), (b"total", amp.Integer())]
