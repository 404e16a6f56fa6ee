"""The status page's state and the document ``/status.json`` serves (sans-IO).

:class:`StatusBoard` takes one observation per sampler round
(:meth:`StatusBoard.observe`: a :class:`~karpor.status.sample.Sample` of the
aggregated metrics, the workers' merged reports, the gateway's facts), keeps
the last hour of samples (:class:`~karpor.status.history.History`) and the
last problems (:class:`~karpor.status.problems.Problems`), and builds the
document (:meth:`StatusBoard.document`), whose shape README "Seeing the
fleet" documents: ``version`` changes only when a field changes meaning or
goes away (new fields may appear).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from karpor.status.clusters import ClusterInfo, Fleet
from karpor.status.derive import Window, increase, window
from karpor.status.gateway import GatewayFacts, days_left, rfc3339
from karpor.status.history import History
from karpor.status.problems import Observation, Problem, Problems, find_problems
from karpor.status.sample import AUTHENTICATION, POLICY, Sample

#: the document's format version
VERSION = 1
#: seconds between two rounds of the sampler
SAMPLE_INTERVAL = 5.0
#: the windows figures and charts cover: name -> seconds
WINDOWS = {"5m": 300.0, "60m": 3600.0}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _window_json(w: Window) -> dict[str, Any]:
    return {
        "seconds": round(w.seconds, 1),
        "requests": int(w.requests),
        "rate": _round(w.rate, 3),
        "errorRate": _round(w.error_rate, 3),
        "errorRatio": _round(w.error_ratio, 4),
        "p50": _round(w.p50),
        "p99": _round(w.p99),
    }


def _time(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def _health(info: ClusterInfo) -> str:
    if info.healthy is None:
        return "unknown"
    return "healthy" if info.healthy else "unhealthy"


class StatusBoard:
    """What the status page knows (see the module docstring)."""

    def __init__(self, interval: float = SAMPLE_INTERVAL, history: History | None = None) -> None:
        self.interval = interval
        self.history = history or History()
        self.problems = Problems()
        self._last: Observation | None = None
        self.fleet = Fleet()
        self.facts: GatewayFacts | None = None
        #: observations taken, and the clusters' part of the document as of one
        self._rounds = 0
        self._clusters: tuple[int, list[dict[str, Any]]] = (-1, [])

    def observe(self, sample: Sample, fleet: Fleet, facts: GatewayFacts) -> list[Problem]:
        """Take one round's observation; return the problems it found."""
        now = Observation(sample, fleet.clusters, fleet.problems, facts.crash_looping)
        found = find_problems(self._last, now)
        self.problems.add(found)
        self.history.add(sample)
        self._last = now
        self.fleet = fleet
        self.facts = facts
        self._rounds += 1
        return found

    def cluster(self, name: str) -> ClusterInfo | None:
        """The cluster ``name`` as last reported (``None``: not defined)."""
        for info in self.fleet.clusters:
            if info.name == name:
                return info
        return None

    def document(self, now: float) -> dict[str, Any]:
        """The ``/status.json`` document at ``now``."""
        latest = self.history.latest
        windows = {name: self.history.window(seconds) for name, seconds in WINDOWS.items()}
        if self._clusters[0] != self._rounds:
            # the same until the next observation: built once per round
            built = [self._cluster(info, latest, windows) for info in self.fleet.clusters]
            self._clusters = (self._rounds, built)
        return {
            "kind": "KarporStatus",
            "version": VERSION,
            "generatedAt": rfc3339(now),
            "sampledAt": _time(latest.time if latest else None),
            "sampleInterval": self.interval,
            "windows": {name: seconds for name, seconds in WINDOWS.items()},
            "gateway": self._gateway(now, latest, windows["5m"]),
            "clusters": self._clusters[1],
            "problems": [
                {
                    "time": rfc3339(p.time),
                    "kind": p.kind,
                    "cluster": p.cluster,
                    "message": p.message,
                }
                for p in self.problems.newest_first()
            ],
        }

    def _cluster(
        self, info: ClusterInfo, latest: Sample | None, windows: dict[str, list[Sample]]
    ) -> dict[str, Any]:
        name = info.name
        figures: dict[str, Any] = {}
        series: dict[str, Any] = {}
        for label, samples in windows.items():
            if samples:
                first, last = samples[0], samples[-1]
                seconds = last.time - first.time
                w = window(first.clusters.get(name), last.clusters.get(name), seconds)
            else:
                w = window(None, None, 0.0)
            figures[label] = _window_json(w)
            series[label] = _series(name, samples)
        agent = None
        if info.reach == "tunnel":
            agent = {
                "connected": info.agent_links > 0,
                "links": info.agent_links,
                "workers": info.agent_workers,
                "since": _time(info.agent_since),
                "version": info.agent_version,
            }
        return {
            "name": name,
            "displayName": info.display_name,
            "provider": info.provider,
            "labels": dict(info.labels),
            "endpoint": info.endpoint,
            "reach": info.reach,
            "health": _health(info),
            "version": info.version,
            "lastProbe": _time(info.probed_at),
            "message": info.message,
            "agent": agent,
            "tunnels": int(latest.tunnels.get(name, 0)) if latest else 0,
            "watches": int(latest.watches.get(name, 0)) if latest else 0,
            "sessions": int(latest.sessions.get(name, 0)) if latest else 0,
            "windows": figures,
            "series": series,
        }

    def _gateway(self, now: float, latest: Sample | None, last5m: list[Sample]) -> dict[str, Any]:
        facts = self.facts or GatewayFacts(pid=0)
        fleet = self.fleet
        first = last5m[0] if last5m else None
        reasons = sorted(
            r for r in (latest.rejected if latest else {}) if r not in (AUTHENTICATION, POLICY)
        )
        rejected = []
        for reason in [*reasons, AUTHENTICATION, POLICY]:
            total = latest.rejected.get(reason, 0.0) if latest else 0.0
            before = first.rejected.get(reason, 0.0) if first else 0.0
            rejected.append(
                {"reason": reason, "total": int(total), "last5m": int(increase(before, total))}
            )
        return {
            "pid": facts.pid,
            "mode": facts.mode,
            "workers": [
                {
                    "slot": w.slot,
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": w.state,
                    "restarts": w.restarts,
                    "rssBytes": w.rss,
                }
                for w in facts.workers
            ],
            "restarts": int(latest.restarts) if latest else 0,
            "rollingRestarts": max(facts.rolls, int(latest.rolls) if latest else 0),
            "crashLooping": sorted(facts.crash_looping),
            "reload": {
                "generation": fleet.generation,
                "reloads": int(latest.reloads) if latest else 0,
                "reloadErrors": int(latest.reload_errors) if latest else 0,
                "directoryReadable": latest.directory_readable if latest else None,
                "problems": list(fleet.problems),
            },
            "rejected": rejected,
            "streams": {k: int(v) for k, v in sorted((latest.streams if latest else {}).items())},
            "certificates": [
                {
                    "name": c.name,
                    "notAfter": _time(c.not_after),
                    "daysLeft": None
                    if c.not_after is None
                    else round(days_left(c.not_after, now), 1),
                    "problem": c.problem,
                }
                for c in facts.certificates
            ],
            "oidcIssuers": [
                {"issuer": issuer, "state": state}
                for issuer, state in sorted((latest.oidc if latest else {}).items())
            ],
        }


def _series(name: str, samples: Sequence[Sample]) -> list[dict[str, Any]]:
    points = []
    for old, new in itertools.pairwise(samples):
        w = window(old.clusters.get(name), new.clusters.get(name), new.time - old.time)
        points.append(
            {
                "t": round(new.time, 1),
                "rate": _round(w.rate, 3),
                "errorRate": _round(w.error_rate, 3),
                "p50": _round(w.p50),
                "p99": _round(w.p99),
            }
        )
    return points
