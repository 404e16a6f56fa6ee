"""What each worker tells the status page of its clusters, and the merge (sans-IO).

The metrics carry numbers; what a cluster *is* (its version, how it is
reached, its last probe and that probe's message, since when its agent is
connected) lives in each worker: every worker loads the clusters directory,
probes the clusters and holds its own tunnels.  :func:`worker_report` is
what one worker says (built off the request path, when the status page's
sampler asks: :class:`karpor.app.control.Report`); :func:`merge` combines
the reports of every worker (the latest probe wins; agents' links add up).

A report is built from an allow-list of fields: name, display name,
provider, labels, the endpoint without any user information, query or
fragment, whether it is tunnelled, the probe's verdict, version, time and
message, the agent's link count, time and version, the reload generation
and the problem lines of the last load (the lines the log shows).  Never a
credential, a token, a key, a certificate or a file name from the
credential: a cluster's ``Cluster`` object is never serialized.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from karpor.config.model import Cluster
from karpor.health.probe import ClusterStatus
from karpor.upstream.tunnel import AgentStatus

#: the longest text a report keeps of a message or a problem line
MAX_TEXT = 300
#: the most reload problem lines a report keeps
MAX_PROBLEMS = 20
#: the most labels shown of a cluster
MAX_LABELS = 20


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis says so)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def public_endpoint(endpoint: str) -> str:
    """``endpoint`` without user information, query or fragment."""
    if not endpoint:
        return ""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class ClusterInfo:
    """What the page shows of a cluster besides its numbers."""

    name: str
    display_name: str = ""
    provider: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    endpoint: str = ""
    #: ``direct`` or ``tunnel``
    reach: str = "direct"
    #: the last probe's verdict (``None``: not probed yet)
    healthy: bool | None = None
    version: str = ""
    message: str = ""
    #: when the last probe ended (epoch seconds; ``None``: never)
    probed_at: float | None = None
    #: agent links connected (summed over workers), since when, its version
    agent_links: int = 0
    agent_since: float | None = None
    agent_version: str = ""
    #: workers an agent is connected to, and workers that reported
    agent_workers: int = 0
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        """The report's form (see :func:`from_json`)."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "provider": self.provider,
            "labels": dict(self.labels),
            "endpoint": self.endpoint,
            "reach": self.reach,
            "healthy": self.healthy,
            "version": self.version,
            "message": self.message,
            "probedAt": self.probed_at,
            "agentLinks": self.agent_links,
            "agentSince": self.agent_since,
            "agentVersion": self.agent_version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterInfo:
        """A report's cluster (fields of the wrong type are left at their default)."""
        labels = data.get("labels")
        return cls(
            name=_str(data.get("name")),
            display_name=_str(data.get("displayName")),
            provider=_str(data.get("provider")),
            labels={
                _str(k): _str(v) for k, v in (labels.items() if isinstance(labels, dict) else ())
            },
            endpoint=_str(data.get("endpoint")),
            reach="tunnel" if data.get("reach") == "tunnel" else "direct",
            healthy=data.get("healthy") if isinstance(data.get("healthy"), bool) else None,
            version=_str(data.get("version")),
            message=_str(data.get("message")),
            probed_at=_num(data.get("probedAt")),
            agent_links=int(_num(data.get("agentLinks")) or 0),
            agent_since=_num(data.get("agentSince")),
            agent_version=_str(data.get("agentVersion")),
            agent_workers=1 if (_num(data.get("agentLinks")) or 0) > 0 else 0,
        )


def _str(value: object) -> str:
    return clip(value) if isinstance(value, str) else ""


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cluster_info(
    cluster: Cluster, status: ClusterStatus | None, agent: AgentStatus | None
) -> ClusterInfo:
    """What one worker knows of ``cluster`` (the allow-list of the module docstring)."""
    labels = dict(list(sorted(cluster.labels.items()))[:MAX_LABELS])
    return ClusterInfo(
        name=cluster.name,
        display_name=clip(cluster.display_name),
        provider=clip(cluster.provider),
        labels={clip(k): clip(v) for k, v in labels.items()},
        endpoint="" if cluster.tunnel else clip(public_endpoint(cluster.endpoint)),
        reach="tunnel" if cluster.tunnel else "direct",
        healthy=status.healthy if status is not None else None,
        version=clip(status.version) if status is not None else "",
        message=clip(status.message) if status is not None else "",
        probed_at=status.probed_at if status is not None else None,
        agent_links=agent.connected if agent is not None else 0,
        agent_since=agent.since if agent is not None else None,
        agent_version=clip(agent.version) if agent is not None else "",
        agent_workers=1 if agent is not None and agent.connected else 0,
    )


@dataclass(frozen=True)
class WorkerReport:
    """One worker's report."""

    clusters: Sequence[ClusterInfo] = ()
    #: the generation of its clusters registry (one per reload)
    generation: int = 0
    #: the problem lines of its last load of the clusters directory
    problems: Sequence[str] = ()

    def to_text(self) -> str:
        """The report as JSON text (ASCII: it is sent in pieces of characters)."""
        return json.dumps(
            {
                "clusters": [c.to_json() for c in self.clusters],
                "generation": self.generation,
                "problems": list(self.problems),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str) -> WorkerReport:
        """Parse :meth:`to_text`'s output (anything unexpected: an empty report)."""
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        clusters = data.get("clusters")
        problems = data.get("problems")
        return cls(
            clusters=[
                ClusterInfo.from_json(c)
                for c in (clusters if isinstance(clusters, list) else ())
                if isinstance(c, dict) and isinstance(c.get("name"), str)
            ],
            generation=int(_num(data.get("generation")) or 0),
            problems=[_str(p) for p in (problems if isinstance(problems, list) else ())][
                :MAX_PROBLEMS
            ],
        )


def worker_report(
    clusters: Mapping[str, Cluster],
    status: Callable[[str], ClusterStatus | None],
    agent: Callable[[str], AgentStatus] | None,
    generation: int,
    problems: Iterable[str],
) -> WorkerReport:
    """What this worker tells the status page (see the module docstring)."""
    return WorkerReport(
        clusters=[
            cluster_info(
                cluster,
                status(name),
                agent(name) if agent is not None and cluster.tunnel else None,
            )
            for name, cluster in sorted(clusters.items())
        ],
        generation=generation,
        problems=[clip(p) for p in list(problems)[:MAX_PROBLEMS]],
    )


@dataclass(frozen=True)
class Fleet:
    """Every worker's reports merged."""

    clusters: Sequence[ClusterInfo] = ()
    #: the highest reload generation reported
    generation: int = 0
    #: the problem lines of the last load (every worker's, each once)
    problems: Sequence[str] = ()
    #: workers that reported
    workers: int = 0


def merge(reports: Sequence[WorkerReport]) -> Fleet:
    """Combine the workers' reports: a cluster any worker defines is listed
    (a reload reaches every worker within moments); its latest probe wins;
    its agent's links add up, ``since`` is the oldest link's."""
    by_name: dict[str, ClusterInfo] = {}
    for report in reports:
        for info in report.clusters:
            known = by_name.get(info.name)
            by_name[info.name] = info if known is None else _combine(known, info)
    problems: list[str] = []
    for report in reports:
        problems += [p for p in report.problems if p not in problems]
    count = len(reports)
    return Fleet(
        clusters=[_with_workers(by_name[name], count) for name in sorted(by_name)],
        generation=max((r.generation for r in reports), default=0),
        problems=problems[:MAX_PROBLEMS],
        workers=count,
    )


def _with_workers(info: ClusterInfo, workers: int) -> ClusterInfo:
    return dataclasses.replace(info, workers=max(workers, 1))


def _combine(a: ClusterInfo, b: ClusterInfo) -> ClusterInfo:
    newer = b if (b.probed_at or 0.0) > (a.probed_at or 0.0) else a
    sinces = [s for s in (a.agent_since, b.agent_since) if s is not None]
    return ClusterInfo(
        name=a.name,
        display_name=newer.display_name,
        provider=newer.provider,
        labels=newer.labels,
        endpoint=newer.endpoint,
        reach=newer.reach,
        healthy=newer.healthy,
        version=newer.version or a.version or b.version,
        message=newer.message,
        probed_at=newer.probed_at,
        agent_links=a.agent_links + b.agent_links,
        agent_since=min(sinces) if sinces else None,
        agent_version=b.agent_version or a.agent_version,
        agent_workers=a.agent_workers + b.agent_workers,
    )
