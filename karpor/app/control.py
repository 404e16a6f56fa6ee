"""The supervisor ↔ worker control protocol (AMP over a socketpair).

Each worker process gets one end of a ``socketpair`` as a file descriptor;
both sides adopt it (``reactor.adoptStreamConnection``) and speak AMP:

* worker → supervisor: :class:`Ready` once it serves (its listener adopted);
* supervisor → worker: :class:`Drain` (stop accepting, finish in-flight
  requests, end long-running streams at the deadline, exit 0) and
  :class:`State` (the supervisor's state, shown in the gateway's health output).

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
