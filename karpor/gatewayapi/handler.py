"""The gateway's own API: the :class:`~karpor.gatewayapi.request.ApiHandler` the front calls.

Routes every path that is not a cluster proxy path:

* ``/healthz``, ``/livez``, ``/readyz`` (and ``.../ping``): ``ok``;
  ``/version``: :mod:`karpor.gatewayapi.version`.  These answer without
  credentials, as kube's ``system:public-info-viewer`` allows, but for the
  detailed report of ``?verbose`` (worker pids, restarts): 401 without
  credentials, 403 for ``system:anonymous``, as kube-apiserver answers a
  request it does not permit;
* ``/``: the root paths; ``/api``, ``/apis``, ``/apis/cluster.karpor.io``,
  ``/apis/cluster.karpor.io/v1beta1``: discovery (:mod:`karpor.kube.discovery`),
  aggregated when asked for;
* ``/apis/cluster.karpor.io/v1beta1/clusters[/NAME]``: list, get and watch of
  the virtual ``clusters`` resource (:mod:`karpor.gatewayapi.clusters`), as JSON or
  as a Table, with label and field selectors; lists in pages with ``limit``
  and ``continue`` (:mod:`karpor.kube.paging`: a continued list shows the
  clusters as they were at its first page; a bad token is a 400, one older
  than the catalog's history a 410);
* ``/openapi/v2`` (JSON, or protobuf when asked), ``/openapi/v3`` and
  ``/openapi/v3/apis/cluster.karpor.io/v1beta1``
  (:mod:`karpor.gatewayapi.openapi`), for ``kubectl explain clusters``;
* ``/metrics``: the Prometheus metrics of every gateway process
  (:mod:`karpor.metrics.exposition`), for a caller the policy grants
  ``get`` on it (a ``nonResourceURLs`` rule; 403 otherwise);
* ``POST`` of a ``SelfSubjectReview``, ``SelfSubjectAccessReview`` or
  ``SelfSubjectRulesReview`` (``kubectl auth whoami``, ``auth can-i``):
  :mod:`karpor.gatewayapi.reviews`;
* anything else: 404; a method other than GET/HEAD: 405; no identity: 401.

Which clusters a caller sees is decided by ``visible`` (every cluster until
an access policy exists), and whether it sees where each is (``spec.access``)
by ``shows_endpoint``; ``get clusters NAME`` of a cluster the caller may not
see is a 403 whether it exists or not, a 404 only for a caller ``names``
allows to learn that the name is unknown (a list or watch with a
``metadata.name`` field selector shows nothing either way).  A watch
follows the registry through a
:class:`~karpor.gatewayapi.clusters.ClusterCatalog`: :meth:`GatewayApi.refresh`
(called on every request and by whoever learns of a new registry snapshot)
turns a new snapshot into events pushed to every open watch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karpor.auth.agentidentity import is_reserved
from karpor.auth.identity import ANONYMOUS_USER, Identity
from karpor.auth.policy import ALLOW_ALL, Policy
from karpor.config.model import Cluster
from karpor.gatewayapi import openapi, openapiproto, version
from karpor.gatewayapi.clusters import (
    INCLUDE_OBJECT,
    KIND,
    WATCH_CONTENT_TYPE,
    AgentLookup,
    ClusterCatalog,
    Entry,
    Event,
    cluster_list,
    cluster_object,
    cluster_table,
    wants_table,
    watch_event,
)
from karpor.gatewayapi.health import Health
from karpor.gatewayapi.request import ApiRequest, Header, Responder
from karpor.gatewayapi.reviews import own_review
from karpor.kube import discovery, paging
from karpor.kube.clusterstatus import forbidden, not_found
from karpor.kube.requestinfo import parse_query, query_bool
from karpor.kube.reviews import review_kind
from karpor.kube.selectors import (
    FieldSelector,
    LabelSelector,
    check_field_selector,
    parse_field_selector,
    parse_label_selector,
)
from karpor.kube.status import ApiError

#: paths answered without credentials
PUBLIC_PATHS = frozenset(
    {"/healthz", "/livez", "/readyz", "/healthz/ping", "/livez/ping", "/readyz/ping", "/version"}
)
_HEALTH = ("healthz", "livez", "readyz")

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_CACHE = (b"cache-control", b"no-cache, private")

#: how long a watch without ``timeoutSeconds`` stays open (kube's minimum request timeout)
DEFAULT_WATCH_TIMEOUT = 1800.0

_CLUSTERS_PREFIX = ("apis", discovery.GROUP, discovery.VERSION)

#: who may see which cluster: (caller, cluster) -> bool
Visibility = Callable[[Identity, Cluster], bool]
#: whether a caller may learn that no cluster of a name exists: (caller, name) -> bool
Naming = Callable[[Identity, str], bool]
#: whether a caller may use one of the gateway's own paths: (caller, verb,
#: path); raises the 403 ``ApiError``
PathAuthorizer = Callable[[Identity, str, str], None]
#: the metrics for a scraper's ``Accept`` header: (content type, body)
MetricsRenderer = Callable[[str], tuple[bytes, bytes]]

#: where the metrics are served
METRICS_PATH = "/metrics"


def everyone(identity: Identity, cluster: Cluster) -> bool:
    """The visibility without an access policy: every caller sees every cluster."""
    return True


def every_name(identity: Identity, name: str) -> bool:
    """The naming without an access policy: every caller may learn which names exist."""
    return True


def authenticated(identity: Identity, verb: str, path: str) -> None:
    """The own paths' authorization without an access policy: any caller
    but ``system:anonymous`` and an agent
    (:func:`karpor.auth.agentidentity.is_reserved`)."""
    if identity.user == ANONYMOUS_USER or is_reserved(identity):
        raise ApiError(
            403, f'forbidden: User "{identity.user}" cannot {verb} path "{path}"', "Forbidden"
        )


_log = Logger()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _segments(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


#: ``/openapi/v2`` as protobuf, built once
_V2_PROTOBUF = openapiproto.document_protobuf(openapi.v2_document())


def _wants_protobuf(accept: str) -> bool:
    """Whether ``Accept`` names the protobuf OpenAPI v2 document (as kubectl's does)."""
    return any(
        m.type == "application" and m.subtype.startswith("com.github.proto-openapi.spec.v2")
        for m in discovery.media_ranges(accept)
    )


def _entry_name(entry: Entry) -> str:
    return entry.cluster.name


def _method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource")


def _path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource")


class _Query:
    """The list options of a request to ``clusters``."""

    def __init__(self, query: str) -> None:
        params = parse_query(query)

        def first(key: str) -> str:
            values = params.get(key)
            return values[0] if values else ""

        self.watch = query_bool(params.get("watch"))
        self.resource_version = first("resourceVersion")
        self.limit = paging.parse_limit(first("limit"))
        continue_value = first("continue")
        self.continue_from = paging.decode_continue(continue_value) if continue_value else None
        self.send_initial_events = query_bool(params.get("sendInitialEvents"))
        self.labels: LabelSelector = parse_label_selector(first("labelSelector"))
        self.fields: FieldSelector = parse_field_selector(first("fieldSelector"))
        check_field_selector(self.fields, discovery.GROUP, KIND)
        self.include_object = first("includeObject") or "Metadata"
        if self.include_object not in INCLUDE_OBJECT:
            raise ApiError(
                400, f"includeObject: unsupported value {self.include_object!r}", "BadRequest"
            )
        timeout = first("timeoutSeconds")
        try:
            self.timeout = float(int(timeout)) if timeout else None
        except ValueError:
            raise ApiError(
                400, f'timeoutSeconds: invalid value "{timeout}"', "BadRequest"
            ) from None

    @property
    def start(self) -> str:
        """The name a continued list starts after ("" for a first page)."""
        return self.continue_from.start if self.continue_from is not None else ""

    @property
    def unfiltered(self) -> bool:
        """Whether no label or field selector narrows the list."""
        return self.labels.empty and self.fields.empty

    def matches(self, entry: Entry) -> bool:
        """Whether the selectors admit ``entry``."""
        fields = {"metadata.name": entry.cluster.name, "metadata.namespace": ""}
        return self.labels.matches(entry.cluster.labels) and self.fields.matches(fields)


class GatewayApi:
    """The gateway's own API (an :class:`~karpor.gatewayapi.request.ApiHandler`)."""

    def __init__(
        self,
        clusters: Callable[[], Mapping[str, Cluster]],
        reactor: IReactorTime,
        visible: Visibility = everyone,
        now: Callable[[], float] = time.time,
        watch_timeout: float = DEFAULT_WATCH_TIMEOUT,
        health: Health | None = None,
        metrics: MetricsRenderer | None = None,
        authorize_path: PathAuthorizer = authenticated,
        names: Naming = every_name,
        shows_endpoint: Visibility = everyone,
        policy: Callable[[], Policy] = lambda: ALLOW_ALL,
        agents: AgentLookup | None = None,
    ) -> None:
        #: the access policy now (the reviews a caller asks about itself)
        self._policy = policy
        self._clusters = clusters
        #: what the clusters Table shows of tunnelled clusters' agents
        self.agents = agents
        self._names = names
        self._shows_endpoint = shows_endpoint
        #: renders ``/metrics`` (``None``: not served, 404)
        self.metrics = metrics
        self._authorize_path = authorize_path
        self.health = health if health is not None else Health(loaded=True)
        self._reactor = reactor
        self._visible = visible
        self._now = now
        self._watch_timeout = watch_timeout
        # resourceVersions are wall-clock microseconds (see karpor.gatewayapi.clusters)
        self.catalog = ClusterCatalog(now=now, floor=lambda: int(now() * 1_000_000))
        self.refresh()

    def refresh(self) -> None:
        """Take the registry's current snapshot (a no-op when it is unchanged);
        changes are pushed to every open watch."""
        self.catalog.update(self._clusters())

    def handle(self, request: ApiRequest, responder: Responder) -> None:
        """Answer ``request``; errors become ``Status`` responses."""
        try:
            self._handle(request, responder)
        except ApiError as error:
            headers = [(b"content-type", _JSON), *error.headers]
            responder.respond(error.code, headers, error.body() + b"\n")
        except Exception:
            _log.failure(
                "own API request {method} {path} failed (Audit-Id {auditID})",
                method=request.method,
                path=request.path,
                auditID=request.headers.get("audit-id", ""),
            )
            internal = ApiError(500, "Internal error occurred: see the gateway's log")
            responder.respond(500, [(b"content-type", _JSON)], internal.body() + b"\n")

    def _handle(self, request: ApiRequest, responder: Responder) -> None:
        path = "/" + request.path.strip("/") if request.path.strip("/") else "/"
        parts = _segments(request.path)
        if request.identity is None and path not in PUBLIC_PATHS:
            raise ApiError(401, "Unauthorized")
        if request.method == "POST" and request.identity is not None:
            kind = review_kind(path)
            if kind is not None:  # kubectl auth whoami / can-i --context karpor
                doc = own_review(kind, request.body, request.identity, self._policy())
                responder.respond(201, [(b"content-type", _JSON)], _dumps(doc))
                return
        if request.method not in ("GET", "HEAD"):
            raise _method_not_allowed()
        if parts and parts[0] in _HEALTH and (len(parts) == 1 or parts[1:] == ["ping"]):
            self._health(request, responder, parts[0])
            return
        if parts == ["version"]:
            responder.respond(200, [(b"content-type", _JSON)], version.version_bytes())
            return
        identity = request.identity
        assert identity is not None
        if parts == ["metrics"] and self.metrics is not None:
            self._authorize_path(identity, request.method.lower(), METRICS_PATH)
            content_type, body = self.metrics(request.headers.get("accept", ""))
            responder.respond(200, [(b"content-type", content_type), _NO_CACHE], body)
            return
        if not parts:
            self._json(responder, {"paths": self._root_paths()})
            return
        if parts[0] == "openapi":
            self._openapi(request, responder, parts[1:])
            return
        if parts[0] == "api" and len(parts) == 1:
            self._discovery(request, responder, core=True)
            return
        if parts[0] == "apis":
            self._apis(request, responder, parts[1:], identity)
            return
        raise _path_not_found()

    # --- plain documents ---------------------------------------------------

    def _json(self, responder: Responder, obj: Any, headers: Sequence[Header] = ()) -> None:
        responder.respond(200, [(b"content-type", _JSON), *headers], _dumps(obj))

    def _health(self, request: ApiRequest, responder: Responder, check: str) -> None:
        verbose = "verbose" in parse_query(request.query)
        if verbose:
            # the detailed report (pids, restarts) is for authenticated callers
            if request.identity is None:
                raise ApiError(401, "Unauthorized")
            authenticated(request.identity, request.method.lower(), f"/{check}")
        code, body = self.health.report(check, verbose)
        responder.respond(code, [(b"content-type", _TEXT), _NOSNIFF], body)

    def _root_paths(self) -> list[str]:
        paths = [
            "/api",
            "/apis",
            f"/apis/{discovery.GROUP}",
            f"/apis/{discovery.GROUP_VERSION}",
            "/healthz",
            "/healthz/ping",
            "/livez",
            "/livez/ping",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/",
            "/readyz",
            "/readyz/ping",
            "/version",
        ]
        if self.metrics is not None:
            paths.insert(paths.index("/readyz"), METRICS_PATH)
        return paths

    def _openapi(self, request: ApiRequest, responder: Responder, parts: list[str]) -> None:
        """``/openapi/v2`` (JSON, or protobuf when asked), ``/openapi/v3`` and
        the group/version's v3 document (:mod:`karpor.gatewayapi.openapi`)."""
        if parts == ["v2"]:
            if _wants_protobuf(request.headers.get("accept", "")):
                body = _V2_PROTOBUF
                content_type = openapiproto.OPENAPI_V2_PROTOBUF_CONTENT_TYPE.encode()
                responder.respond(200, [(b"content-type", content_type), _NO_CACHE], body)
                return
            responder.respond(200, [(b"content-type", _JSON), _NO_CACHE], openapi.V2_BODY)
            return
        if parts == ["v3"]:
            self._json(responder, openapi.v3_root(), [_NO_CACHE])
            return
        if "/".join(parts[1:]) == openapi.V3_KEY and parts[0] == "v3":
            responder.respond(200, [(b"content-type", _JSON), _NO_CACHE], openapi.V3_BODY)
            return
        raise _path_not_found()

    def _discovery(self, request: ApiRequest, responder: Responder, core: bool) -> None:
        negotiated = discovery.negotiate(request.headers.get("accept", ""))
        if negotiated is None:
            raise ApiError(406, "only the following media types are accepted: application/json")
        vary = (b"vary", b"Accept")
        if negotiated == "legacy":
            doc = discovery.api_versions() if core else discovery.api_group_list()
            self._json(responder, doc, [vary, _NO_CACHE])
            return
        doc = (
            discovery.aggregated_core(negotiated) if core else discovery.aggregated_apis(negotiated)
        )
        content_type = discovery.aggregated_content_type(negotiated).encode()
        responder.respond(200, [(b"content-type", content_type), vary, _NO_CACHE], _dumps(doc))

    def _apis(
        self, request: ApiRequest, responder: Responder, parts: list[str], identity: Identity
    ) -> None:
        if not parts:
            self._discovery(request, responder, core=False)
            return
        if parts[0] != discovery.GROUP:
            raise _path_not_found()
        if len(parts) == 1:
            self._json(responder, discovery.api_group())
            return
        if parts[1] != discovery.VERSION:
            raise _path_not_found()
        rest = parts[2:]
        if not rest:
            self._json(responder, discovery.api_resource_list())
            return
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        if not rest or rest[0] != "clusters" or len(rest) > 2:
            raise _path_not_found()
        name = rest[1] if len(rest) == 2 else None
        self._clusters_request(request, responder, identity, name, watch_path)

    # --- the clusters resource ---------------------------------------------

    def _visible_entries(self, identity: Identity, query: _Query) -> list[Entry]:
        return [
            entry
            for entry in self.catalog.entries()
            if self._visible(identity, entry.cluster) and query.matches(entry)
        ]

    def _clusters_request(
        self,
        request: ApiRequest,
        responder: Responder,
        identity: Identity,
        name: str | None,
        watch_path: bool,
    ) -> None:
        self.refresh()
        query = _Query(request.query)
        table = wants_table(request.headers.get("accept", ""))
        if watch_path or query.watch:
            if name is not None:
                query.fields = FieldSelector(
                    (
                        *query.fields.requirements,
                        *parse_field_selector(f"metadata.name={name}").requirements,
                    )
                )
            self._watch(responder, identity, query, table)
            return
        where = self._where(identity)
        if name is not None:
            entry = self.catalog.get(name)
            if entry is None or not self._visible(identity, entry.cluster):
                # 404 only to whoever may learn that the name is unknown
                if entry is None and self._names(identity, name):
                    raise not_found(name)
                raise forbidden(name, identity.user)
            if table:
                doc = cluster_table(
                    [entry],
                    None,
                    self._now(),
                    include_object=query.include_object,
                    where=where,
                    agents=self.agents,
                )
            else:
                doc = cluster_object(entry, where(entry))
            self._json(responder, doc)
            return
        rv, entries = self._listed(identity, query)
        found = paging.page(entries, _entry_name, query.limit, query.start, rv)
        # kube counts what remains only without selectors; so does the gateway
        remaining = found.remaining if query.unfiltered else None
        token = found.continue_token
        if table:
            doc = cluster_table(
                found.items,
                rv,
                self._now(),
                include_object=query.include_object,
                where=where,
                continue_token=token,
                remaining=remaining,
                agents=self.agents,
            )
        else:
            doc = cluster_list(found.items, rv, where, continue_token=token, remaining=remaining)
        self._json(responder, doc)

    def _listed(self, identity: Identity, query: _Query) -> tuple[int, list[Entry]]:
        """The list's resourceVersion and the entries it shows: now, or, for
        a continued list, as they were when its first page was served (a 410
        when the history no longer reaches back that far)."""
        token = query.continue_from
        if token is None or token.resource_version == paging.CURRENT:
            return self.catalog.list_version(), self._visible_entries(identity, query)
        state = self.catalog.state_at(token.resource_version)
        if state is None:
            raise paging.expired(token.start)
        rv = token.resource_version
        entries = [state[name] for name in sorted(state)]
        return rv, [e for e in entries if self._visible(identity, e.cluster) and query.matches(e)]

    def _where(self, identity: Identity) -> Callable[[Entry], bool]:
        """Whether ``identity`` may see where an entry's cluster is (``spec.access``)."""
        return lambda entry: self._shows_endpoint(identity, entry.cluster)

    def _watch(self, responder: Responder, identity: Identity, query: _Query, table: bool) -> None:
        rv_text = query.resource_version
        backlog: list[Event] | None
        known: dict[str, Entry] | None = {}
        if rv_text in ("", "0") or query.send_initial_events:
            backlog = [Event("ADDED", e) for e in self.catalog.entries()]
        else:
            try:
                rv = int(rv_text)
            except ValueError:
                raise ApiError(
                    400, f'resourceVersion: Invalid value: "{rv_text}"', "BadRequest"
                ) from None
            backlog = self.catalog.since(rv)
            known = self.catalog.state_at(rv)

        def admit(entry: Entry) -> bool:
            return self._visible(identity, entry.cluster) and query.matches(entry)

        timeout = query.timeout if query.timeout is not None else self._watch_timeout
        stream = ClusterWatch(
            responder,
            reactor=self._reactor,
            admit=admit,
            table=table,
            include_object=query.include_object,
            now=self._now,
            where=self._where(identity),
            agents=self.agents,
        )
        shown = {name for name, entry in (known or {}).items() if admit(entry)}
        stream.open(self.catalog, backlog, timeout, query.send_initial_events, shown)


class ClusterWatch:
    """One open watch of ``clusters``: writes events as they happen.

    Tracks which objects the caller has been shown, so an object that stops
    matching the selectors (or the caller's visibility) is reported DELETED
    and one that starts matching ADDED, as kube's watch cache does.
    """

    def __init__(
        self,
        responder: Responder,
        reactor: IReactorTime,
        admit: Callable[[Entry], bool],
        table: bool,
        include_object: str,
        now: Callable[[], float],
        where: Callable[[Entry], bool] = lambda entry: True,
        agents: AgentLookup | None = None,
    ) -> None:
        self._responder = responder
        self._where = where
        self._agents = agents
        self._reactor = reactor
        self._admit = admit
        self._table = table
        self._include_object = include_object
        self._now = now
        self._shown: set[str] = set()
        self._headers_sent = False
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: IDelayedCall | None = None
        self._closed = False

    def open(
        self,
        catalog: ClusterCatalog,
        backlog: list[Event] | None,
        timeout: float,
        initial_events_end: bool,
        shown: set[str] | None = None,
    ) -> None:
        """Start the stream: the backlog (``None``: too old, a 410 ERROR event
        and the end), then live events until ``timeout`` or the client leaves.
        ``shown``: the names the client already knows (from the list it resumes)."""
        self._shown = set(shown or ())
        self._responder.start(200, [(b"content-type", WATCH_CONTENT_TYPE.encode())])
        if backlog is None:
            gone = ApiError(
                410, "too old resource version: the gateway keeps a short history", "Expired"
            )
            self._responder.write(watch_event("ERROR", gone.status()))
            self._close()
            return
        for event in backlog:
            self._send(event)
        if initial_events_end:
            bookmark = {
                "kind": KIND,
                "apiVersion": discovery.GROUP_VERSION,
                "metadata": {
                    "resourceVersion": str(catalog.resource_version),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            }
            self._responder.write(watch_event("BOOKMARK", bookmark))
        self._responder.on_close(self._client_gone)
        self._unsubscribe = catalog.subscribe(self._send)
        if timeout > 0:
            self._timer = self._reactor.callLater(timeout, self._close)

    def _send(self, event: Event) -> None:
        if self._closed:
            return
        name = event.entry.cluster.name
        was = name in self._shown
        now = event.type != "DELETED" and self._admit(event.entry)
        if now:
            kind = "MODIFIED" if was else "ADDED"
            self._shown.add(name)
        elif was:
            kind = "DELETED"
            self._shown.discard(name)
        else:
            return
        self._responder.write(watch_event(kind, self._render(event.entry)))

    def _render(self, entry: Entry) -> dict[str, Any]:
        if not self._table:
            return cluster_object(entry, self._where(entry))
        table = cluster_table(
            [entry],
            entry.resource_version,
            self._now(),
            headers=not self._headers_sent,
            include_object=self._include_object,
            where=self._where,
            agents=self._agents,
        )
        self._headers_sent = True
        return table

    def _stop(self) -> None:
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _close(self) -> None:
        if self._closed:
            return
        self._stop()
        self._responder.finish()

    def _client_gone(self) -> None:
        self._stop()
