"""Content negotiation as a kube-apiserver does it, sans-IO.

An ``Accept`` header lists media ranges in the client's order of
preference (kube ignores ``q``); the server answers with the first one it
can produce.  Parameters select an alternate representation:
``application/json;as=Table;v=v1;g=meta.k8s.io`` asks for a ``Table``,
``application/json;as=PartialObjectMetadataList;...`` for metadata only,
``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``
for aggregated discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

JSON = "application/json"
YAML = "application/yaml"

#: the message kube sends with a 406 for a resource request
NOT_ACCEPTABLE_MESSAGE = (
    "only the following media types are accepted: application/json, application/yaml, "
    "application/vnd.kubernetes.protobuf"
)


@dataclass(frozen=True)
class MediaRange:
    """One entry of an ``Accept`` header."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def media_type(self) -> str:
        """``type/subtype`` without parameters."""
        return f"{self.type}/{self.subtype}"

    def matches(self, media_type: str) -> bool:
        """Whether this range accepts ``media_type`` (wildcards allowed)."""
        t, _, s = media_type.partition("/")
        return self.type in ("*", t) and self.subtype in ("*", s)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an ``Accept`` header; an absent or empty header is ``*/*``."""
    ranges: list[MediaRange] = []
    for raw_item in (header or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        main, *raw_params = item.split(";")
        kind, _, sub = main.strip().lower().partition("/")
        params: dict[str, str] = {}
        for raw in raw_params:
            key, _, value = raw.strip().partition("=")
            if key:
                params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(kind or "*", sub or "*", params))
    return ranges or [MediaRange("*", "*")]


class Representation(Enum):
    """What a resource response carries."""

    OBJECT = "object"
    TABLE = "table"
    PARTIAL_METADATA = "partial-metadata"


@dataclass(frozen=True)
class Negotiated:
    """The outcome of negotiating a resource response."""

    representation: Representation
    #: the version of ``meta.k8s.io`` of a Table or PartialObjectMetadata
    meta_version: str = "v1"
    #: the media type of the body: JSON or YAML
    media_type: str = JSON


def negotiate_resource(accept: str | None, *, is_list: bool) -> Negotiated | None:
    """The representation to answer a get/list/watch with, or ``None`` (406).

    ``is_list`` tells a list (``PartialObjectMetadataList``) from a single
    object (``PartialObjectMetadata``).
    """
    for media in parse_accept(accept):
        if not (media.matches(JSON) or media.matches(YAML)):
            continue
        media_type = YAML if media.media_type == YAML else JSON
        as_kind = media.params.get("as")
        if as_kind is None:
            return Negotiated(Representation.OBJECT, media_type=media_type)
        if media.params.get("g") != "meta.k8s.io" or media_type != JSON:
            continue
        version = media.params.get("v", "")
        if version not in ("v1", "v1beta1"):
            continue
        if as_kind == "Table":
            return Negotiated(Representation.TABLE, version)
        wanted = "PartialObjectMetadataList" if is_list else "PartialObjectMetadata"
        if as_kind == wanted:
            return Negotiated(Representation.PARTIAL_METADATA, version)
    return None


#: aggregated discovery versions this server speaks, newest first
AGGREGATED_DISCOVERY_VERSIONS = ("v2", "v2beta1")


def negotiate_discovery(accept: str | None) -> str | None:
    """For ``/api`` and ``/apis``: the ``apidiscovery.k8s.io`` version to answer
    (``"v2"`` / ``"v2beta1"``), ``""`` for the legacy document, ``None`` for 406."""
    for media in parse_accept(accept):
        if not media.matches(JSON):
            continue
        if "as" not in media.params:
            return ""
        if (
            media.params.get("as") == "APIGroupDiscoveryList"
            and media.params.get("g") == "apidiscovery.k8s.io"
            and media.params.get("v") in AGGREGATED_DISCOVERY_VERSIONS
        ):
            return media.params["v"]
    return None


def aggregated_content_type(version: str) -> str:
    """The ``Content-Type`` of an aggregated discovery document."""
    return f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"


def base_media_type(content_type: str | None) -> str:
    """A ``Content-Type`` without parameters, lower-cased."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def accepts_any(accept: str | None, media_types: Sequence[str]) -> bool:
    """Whether ``accept`` allows one of ``media_types``."""
    return any(r.matches(t) for r in parse_accept(accept) for t in media_types)
