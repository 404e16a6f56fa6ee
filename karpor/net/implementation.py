"""Which TLS transport and event loop a process uses (``tlsImplementation``).

``fast`` (the default): karpor's socket TLS transport
(:mod:`karpor.net.tlstransport`), pyOpenSSL's cffi binding for its record reads
and writes and its bulk mode (:mod:`karpor.net.openssl_internals`), and in
worker processes the :class:`~karpor.net.twisted_internals.GatewayReactor`.
Each rests on private names of Twisted or pyOpenSSL, checked once per
process (:func:`choose`): what the installed versions lack falls back on its
own, with one warning naming the reason:

* Twisted's tcp internals missing: Twisted's own TLS
  (:mod:`karpor.net.twistedtls`) serves and connects instead;
* pyOpenSSL's binding missing: the socket transport uses pyOpenSSL's public
  ``recv``/``send`` and no bulk mode;
* ``EPollReactor`` internals missing: workers run Twisted's stock epoll reactor.

``twisted``: all of the fallbacks at once, no private name of Twisted or
pyOpenSSL used (an escape hatch should a new release break something the
checks cannot see).
"""

from __future__ import annotations

from dataclasses import dataclass

import OpenSSL
from twisted.logger import Logger

import twisted
from karpor.net import openssl_internals, twisted_internals

log = Logger(namespace="karpor.net")

FAST = "fast"
TWISTED = "twisted"
#: the values of ``tlsImplementation``
CHOICES = (FAST, TWISTED)


@dataclass(frozen=True)
class Choice:
    """What a process uses (see the module docstring)."""

    #: :data:`FAST` (the socket transport) or :data:`TWISTED` (Twisted's TLS)
    transport: str
    #: whether pyOpenSSL's binding is used (record reads and writes, bulk
    #: mode, TLS 1.3 suites where pyOpenSSL has no method for them)
    openssl_binding: bool
    #: whether workers run the :class:`~karpor.net.twisted_internals.GatewayReactor`
    gateway_reactor: bool
    #: why a fast part fell back (the capability checks' reasons)
    problems: tuple[str, ...] = ()


def choose(requested: str) -> Choice:
    """What ``tlsImplementation: requested`` gives with the installed
    Twisted and pyOpenSSL (runs the capability checks)."""
    if requested == TWISTED:
        return Choice(TWISTED, openssl_binding=False, gateway_reactor=False)
    if requested != FAST:
        raise ValueError(f"tlsImplementation must be one of {', '.join(CHOICES)}")
    problems: list[str] = []
    transport = twisted_internals.check_transport()
    if transport is not None:
        problems.append(f"Twisted's own TLS serves ({transport})")
    binding = openssl_internals.check()
    if binding is not None:
        problems.append(f"pyOpenSSL's public recv/send are used, no bulk mode ({binding})")
    reactor = twisted_internals.check_reactor()
    if reactor is not None:
        problems.append(f"workers run Twisted's stock epoll reactor ({reactor})")
    return Choice(
        FAST if transport is None else TWISTED,
        openssl_binding=binding is None,
        gateway_reactor=reactor is None,
        problems=tuple(problems),
    )


class _Selection:
    """The process's choice, once made."""

    choice: Choice | None = None


_selection = _Selection()


def select(requested: str, *, warn: bool = True) -> Choice:
    """Choose for this process (:func:`choose`) and keep the choice; what
    fell back is logged as one warning (``warn``; otherwise at debug level:
    a worker, whose supervisor warned already)."""
    choice = _selection.choice = choose(requested)
    if choice.problems:
        emit = log.warn if warn else log.debug
        emit(
            "tlsImplementation {requested}: the installed Twisted {twisted} / pyOpenSSL "
            "{openssl} lack what karpor's fast path needs, falling back: {problems} "
            "(set tlsImplementation: twisted to use Twisted's own TLS on purpose)",
            requested=requested,
            twisted=twisted.__version__,
            openssl=OpenSSL.__version__,
            problems="; ".join(choice.problems),
        )
    else:
        emit = log.info if warn else log.debug
        emit(
            "tlsImplementation {requested}: {what}",
            requested=requested,
            what="karpor's socket TLS transport and worker reactor"
            if choice.transport == FAST
            else "Twisted's own TLS and stock epoll reactor",
        )
    return choice


def current() -> Choice:
    """This process's choice (``fast`` with its fallbacks unless
    :func:`select` said otherwise)."""
    chosen = _selection.choice
    return chosen if chosen is not None else select(FAST)
