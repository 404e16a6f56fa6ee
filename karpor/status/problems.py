"""The last problems the gateway had, found by comparing two observations (sans-IO).

Nothing on the request path records a problem: :func:`find_problems`
compares what the status page's sampler saw last time with what it sees
now, and :class:`Problems` keeps the newest :data:`MAX_PROBLEMS`:

* ``probe-failure``: a cluster's probe failed (healthy or never probed
  before, unhealthy now; its message);
* ``tunnel-disconnect``: a cluster's agent tunnels (``karpor_tunnels``) went down;
* ``reload-error``: a reload of the clusters directory found bad documents
  (``karpor_config_reload_errors`` grew; the first problem line);
* ``directory-unreadable``: the clusters directory, or a file in it, could
  no longer be read;
* ``worker-restart``: a worker died and was replaced (``karpor_worker_restarts`` grew);
* ``crash-loop``: a worker slot began crash-looping (the supervisor's state);
* ``oidc-failing``: an OpenID provider's keys could no longer be fetched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from karpor.status.clusters import ClusterInfo, clip
from karpor.status.sample import Sample

#: the most problems kept
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem, found at ``time`` (epoch seconds)."""

    time: float
    kind: str
    message: str
    #: the cluster it is about ("": the gateway)
    cluster: str = ""


@dataclass(frozen=True)
class Observation:
    """What one round of the sampler saw."""

    sample: Sample
    #: the clusters as the workers describe them
    clusters: Sequence[ClusterInfo] = ()
    #: the reload problem lines the workers report
    reload_problems: Sequence[str] = ()
    #: slots of the worker pool crash-looping
    crash_looping: frozenset[int] = field(default_factory=frozenset)


def find_problems(before: Observation | None, now: Observation) -> list[Problem]:
    """The problems that began between ``before`` (``None``: the first
    observation) and ``now``."""
    t = now.sample.time
    found: list[Problem] = []
    was: Mapping[str, ClusterInfo] = (
        {c.name: c for c in before.clusters} if before is not None else {}
    )
    for info in now.clusters:
        old = was.get(info.name)
        if info.healthy is False and (old is None or old.healthy is not False):
            found.append(
                Problem(t, "probe-failure", clip(info.message or "probe failed"), info.name)
            )
    if before is None:
        return found
    old_sample, sample = before.sample, now.sample
    for cluster, count in sorted(old_sample.tunnels.items()):
        left = sample.tunnels.get(cluster, 0.0)
        if left < count and cluster in was:
            found.append(
                Problem(
                    t,
                    "tunnel-disconnect",
                    f"agent tunnels {int(count)} → {int(left)}",
                    cluster,
                )
            )
    if sample.reload_errors > old_sample.reload_errors:
        first = now.reload_problems[0] if now.reload_problems else "bad documents skipped"
        found.append(Problem(t, "reload-error", clip(f"reload found problems: {first}")))
    if sample.directory_readable is False and old_sample.directory_readable is not False:
        found.append(
            Problem(
                t,
                "directory-unreadable",
                "the clusters directory (or a file in it) cannot be read; "
                "the last good definitions keep serving",
            )
        )
    if sample.restarts > old_sample.restarts:
        n = int(sample.restarts - old_sample.restarts)
        found.append(Problem(t, "worker-restart", f"{n} worker(s) died and were replaced"))
    for slot in sorted(now.crash_looping - before.crash_looping):
        found.append(Problem(t, "crash-loop", f"worker slot {slot} is crash-looping"))
    for issuer, state in sorted(sample.oidc.items()):
        if state == "failing" and old_sample.oidc.get(issuer) != "failing":
            found.append(
                Problem(t, "oidc-failing", clip(f"OpenID provider {issuer}: keys not fetched"))
            )
    return found


class Problems:
    """The newest :data:`MAX_PROBLEMS` problems."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self._kept: deque[Problem] = deque(maxlen=limit)

    def add(self, problems: Sequence[Problem]) -> None:
        """Keep ``problems`` (found now)."""
        self._kept.extend(problems)

    def newest_first(self) -> Iterator[Problem]:
        """The problems kept, newest first."""
        return reversed(self._kept)

    def __len__(self) -> int:
        return len(self._kept)
