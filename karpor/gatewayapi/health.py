"""The gateway's health: what ``/healthz``, ``/livez`` and ``/readyz`` report.

``/readyz`` fails (500, as kube-apiserver answers a failed check) until the
clusters directory has loaded, and again as soon as a drain begins, so a load
balancer or a Kubernetes Service stops sending new connections before the
worker stops accepting them.  ``/healthz`` and ``/livez`` report the process
alive.  ``?verbose`` lists every check with its details, including the
supervisor's state (workers, generations, restarts) when the gateway runs a
process pool, and (``/healthz``, ``/readyz``) a warning while the clusters
directory, or a file in it, cannot be read: the last good clusters keep
serving, so the check does not fail (a failing liveness check would restart
the process and lose them).  The API serves ``?verbose`` to authenticated
callers only (:mod:`karpor.gatewayapi.handler`); a failed check without
``?verbose`` lists the checks without details (``[-]shutdown failed: reason
withheld``), as kube-apiserver does.  With OpenID providers configured
(``authentication.jwt``), ``oidc-issuers`` (``/healthz``, ``/readyz``)
says each issuer's key state (``pending``, ``ready``, ``failing`` with the
reason); it never fails: other authenticators serve while an issuer's
tokens get 401.  With ``sessionRecording``, ``session-recording``
(``/healthz``, ``/readyz``) says where sessions are recorded, or warns
that the directory is not writable (or full) and how many sessions were
refused or cut; it does not fail either: only sessions on recorded
clusters need the directory (they are refused), every other request is
served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Health:
    """Mutable health state of one gateway process."""

    loaded: bool = False
    draining: bool = False
    #: the supervisor's last published state (``None`` without a process pool)
    supervisor: dict[str, Any] | None = None
    #: this worker process (``pid N generation G``; ``None`` outside a pool)
    worker: str | None = None
    #: extra details per check, e.g. how many clusters loaded
    notes: dict[str, str] = field(default_factory=dict)
    #: what of the clusters directory the last reload could not read (empty: all)
    clusters_directory: str = ""
    #: the OpenID providers' ``(url, state, problem)`` (``None``: none configured)
    oidc_issuers: Callable[[], list[tuple[str, str, str]]] | None = None
    #: the session recording directory's state (``None``: nothing is recorded)
    recordings: Callable[[], str] | None = None

    def checks(self, endpoint: str) -> list[tuple[str, bool, str]]:
        """``(name, passed, detail)`` for every check of ``endpoint``
        (``healthz``, ``livez`` or ``readyz``)."""
        out: list[tuple[str, bool, str]] = [("ping", True, "")]
        if endpoint == "readyz":
            out.append(("clusters-loaded", self.loaded, self.notes.get("clusters-loaded", "")))
            out.append(("shutdown", not self.draining, "draining" if self.draining else ""))
        if self.clusters_directory and endpoint != "livez":
            out.append(("clusters-directory", True, f"warning: {self.clusters_directory}"))
        if self.oidc_issuers is not None and endpoint != "livez":
            out.append(("oidc-issuers", True, describe_issuers(self.oidc_issuers())))
        if self.recordings is not None and endpoint != "livez":
            out.append(("session-recording", True, self.recordings()))
        if self.worker is not None:
            out.append(("worker", True, self.worker))
        if self.supervisor is not None:
            out.append(("supervisor", True, describe_supervisor(self.supervisor)))
        return out

    def report(self, endpoint: str, verbose: bool) -> tuple[int, bytes]:
        """The status code and body kube-apiserver would answer."""
        checks = self.checks(endpoint)
        failed = [name for name, passed, _ in checks if not passed]
        if not verbose and not failed:
            return 200, b"ok"
        lines = []
        for name, passed, found in checks:
            mark = "+" if passed else "-"
            state = "ok" if passed else "failed"
            # kube's words: no detail for whoever did not ask
            detail = found if verbose else "" if passed else "reason withheld"
            lines.append(f"[{mark}]{name} {state}" + (f": {detail}" if detail else ""))
        if failed:
            lines.append(f"{endpoint} check failed")
            return 500, ("\n".join(lines) + "\n").encode()
        lines.append(f"{endpoint} check passed")
        return 200, ("\n".join(lines) + "\n").encode()


def describe_issuers(issuers: list[tuple[str, str, str]]) -> str:
    """One line for operators: each OpenID provider's key state."""
    return "; ".join(
        f"{url} {state}" + (f" ({problem})" if problem else "") for url, state, problem in issuers
    )


def describe_supervisor(state: dict[str, Any]) -> str:
    """One line for operators: pid, workers (pid/generation/state), restarts."""
    workers = ", ".join(
        f"slot {w.get('slot')} pid {w.get('pid')} gen {w.get('generation')} {w.get('state')}"
        for w in state.get("workers", [])
    )
    crash = state.get("crashLooping") or []
    text = (
        f"supervisor pid {state.get('pid')}; workers: {workers}; "
        f"restarts {state.get('restarts', 0)}; rolling restarts {state.get('rolls', 0)}"
    )
    if crash:
        text += f"; crash loop in slot(s) {', '.join(str(s) for s in crash)}"
    return text
