"""The ``sessionRecording`` settings section: where exec and attach
sessions are recorded, and on which clusters (sans-IO).

.. code-block:: yaml

    sessionRecording:
      dir: /var/lib/karpor/recordings   # required
      clusters: ["*"]                   # default: every cluster

``clusters`` entries are globs of cluster names (``prod-*``, ``*``; shell
rules, :func:`fnmatch.fnmatchcase`) or label selectors of the clusters'
labels (``env=prod``, ``tier in (a,b)``, ``!sandbox``): an entry holding
``=``, ``!`` or ``(`` is a selector, any other a glob.  A cluster is
recorded when any entry matches it.  Without the section nothing is
recorded.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from karpor.config.model import Cluster
from karpor.config.validation import Checker, Key, item, join, parse_section
from karpor.kube.selectors import LabelSelector, parse_label_selector
from karpor.kube.status import ApiError

_SELECTOR_MARKS = ("=", "!", "(")


@dataclass(frozen=True)
class ClusterPattern:
    """One ``clusters`` entry: a glob of names, or a label selector."""

    text: str
    selector: LabelSelector | None = None

    def matches(self, cluster: Cluster) -> bool:
        """Whether ``cluster`` is one this entry names."""
        if self.selector is not None:
            return self.selector.matches(cluster.labels)
        return fnmatch.fnmatchcase(cluster.name, self.text)


@dataclass(frozen=True)
class SessionRecordingSettings:
    """``sessionRecording``: the directory and the recorded clusters."""

    dir: str
    clusters: tuple[ClusterPattern, ...] = (ClusterPattern("*"),)

    def records(self, cluster: Cluster) -> bool:
        """Whether ``cluster``'s exec and attach sessions are recorded."""
        return any(p.matches(cluster) for p in self.clusters)


def _patterns(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> tuple[ClusterPattern, ...] | None:
    entries = c.strings(obj, key, path, empty=False, empty_items=False)
    if entries is None:
        return None
    out: list[ClusterPattern] = []
    for i, text in enumerate(entries):
        if any(mark in text for mark in _SELECTOR_MARKS):
            try:
                out.append(ClusterPattern(text, parse_label_selector(text)))
            except (ApiError, ValueError) as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                c.error(item(join(path, key), i), f"not a label selector: {message}")
        else:
            out.append(ClusterPattern(text))
    return tuple(out)


#: the keys of ``sessionRecording``
SESSION_RECORDING_KEYS: tuple[Key, ...] = (
    Key("dir", "dir", Checker.path, "sessionRecording"),
    Key("clusters", "clusters", _patterns, "sessionRecording"),
)


def parse_session_recording(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> SessionRecordingSettings | None:
    """``sessionRecording`` (see the module docstring)."""
    section = c.section(obj, key, path)
    if section is None:
        return None
    field = join(path, key)
    before = len(c.errors)
    values = parse_section(c, section, SESSION_RECORDING_KEYS, field)
    if len(c.errors) > before:
        return None
    if "dir" not in values:
        c.error(join(field, "dir"), "is required (the directory recordings are written to)")
        return None
    return SessionRecordingSettings(**values)


__all__ = [
    "SESSION_RECORDING_KEYS",
    "ClusterPattern",
    "SessionRecordingSettings",
    "parse_session_recording",
]
