"""The request pipeline: what happens to one request read on a front
connection, top to bottom.

:meth:`RequestPipeline.handle` routes the request by host or path
(:func:`karpor.http.route.route_request`); a cluster request is authenticated
(401), authorized by the policy (403), refused at once when its cluster's
last health probe failed (the factory's ``health_gate``: 503) or its pool
cannot serve (``pool.error``), refused over the limits (the factory's
``limiter``: 429, :mod:`karpor.front.limits`; what the request holds is
released with its record when it ends), then forwarded as one
:class:`~karpor.upstream.request.UpstreamRequest` (an upgrade request over
a dedicated connection, :class:`~karpor.upstream.splice.UpgradeForwarder`);
a request to the gateway's own API is authenticated (not on the public
paths), its body read (up to ``max_api_body``: 413) and handed to the
:class:`~karpor.gatewayapi.request.ApiHandler` with a
:class:`~karpor.front.responder.Responder`.  A ``POST`` of a review the
caller asks about itself on a cluster (``kubectl auth whoami``, ``auth
can-i``) is read the same way and answered by the gateway
(:mod:`karpor.front.reviews`).  Whatever refuses the request is answered
as a ``Status`` on the front connection.

The request's front (:class:`~karpor.front.front.Front`) is an HTTP/1.1
connection (:class:`~karpor.front.protocol.GatewayProtocol`) or an HTTP/2
stream (:class:`~karpor.front.h2protocol.H2Request`): the pipeline is the
same for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

from karpor.auth.access import Authorized, Forbidden, request_attributes
from karpor.auth.identity import Identity
from karpor.auth.impersonation import impersonation_headers
from karpor.config.model import Cluster
from karpor.front.fanout import FANOUT_CLUSTER, JSON_ACCEPT, TABLE_ACCEPT, Asked, Fanout
from karpor.front.fanwatch import FanWatch
from karpor.front.record import FanoutRecord
from karpor.front.reviews import ClusterReviews
from karpor.front.sessions import session_tap
from karpor.front.tunnel import accept_tunnel, refuse_agent
from karpor.gatewayapi.clusters import wants_table
from karpor.gatewayapi.request import ApiHandler, ApiRequest
from karpor.http.connection import RequestHead
from karpor.http.headers import Header, RequestHeaders, split_request
from karpor.http.route import ApiRoute, ClusterRoute, FanoutRoute, Route, route_request
from karpor.kube.fanout import (
    COMPOSITE_PREFIX,
    cluster_target,
    decode_continue,
    decode_versions,
)
from karpor.kube.fanwatch import watch_timeout
from karpor.kube.namespacing import namespaced_target, narrowable
from karpor.kube.requestinfo import (
    RequestInfo,
    RequestInfoError,
    parse_query,
    parse_request_info,
)
from karpor.kube.reviews import REVIEW_PREFIXES, review_kind
from karpor.kube.selectors import parse_label_selector
from karpor.kube.status import ApiError
from karpor.metrics.labels import stream_kind
from karpor.upstream.forward import Forwarder
from karpor.upstream.h2 import is_long_running
from karpor.upstream.pool import ClusterPool
from karpor.upstream.request import CHUNKED, LENGTH, NO_BODY, UpstreamRequest
from karpor.upstream.sessiontap import SessionTap
from karpor.upstream.splice import UpgradeForwarder

if TYPE_CHECKING:
    from karpor.front.front import Front
    from karpor.front.limits import Admission, Limiter
    from karpor.front.protocol import GatewayFactory, GatewayProtocol

log = Logger()

#: the most namespaces of one cluster a fan-out LIST asks one by one (a
#: caller whose policy names more gets the first, and a warning)
MAX_NAMESPACE_PARTS = 32


class RequestPipeline:
    """authenticate → authorize → gate → forward, or the own API (see the
    module docstring); one per :class:`~karpor.front.protocol.GatewayFactory`,
    whose collaborators (clusters, access, health gate, pools, API, metrics)
    it uses."""

    def __init__(self, factory: GatewayFactory) -> None:
        self._factory = factory

    def _authenticate(self, front: Front, head: RequestHead) -> Identity:
        """The caller of the request; raises the 401 (and the 403 of an
        agent identity: :func:`~karpor.front.tunnel.refuse_agent`)."""
        identity = self._factory.access.authenticate(front.peer(), head.headers)
        if front.audit is not None:
            front.audit.identity = identity
        refuse_agent(identity)
        return identity

    def handle(self, front: Front, head: RequestHead) -> None:
        """Answer the request ``head`` read on ``front`` (its audit begun):
        forward it to its cluster or hand it to the own API, or answer the
        ``Status`` that refuses it (an agent's tunnel request is accepted
        by :func:`~karpor.front.tunnel.accept_tunnel`)."""
        try:
            if head.upgrade:
                tunnels = self._factory.pools.tunnels
                if tunnels is not None and accept_tunnel(
                    self._factory, tunnels, front.upgradable(), head
                ):
                    return
            target = route_request(
                head.target, head.headers, front.server_route, self._factory.host_routing
            )
            if self._factory.metrics is not None:
                self._note_route(front, target, head)
            if isinstance(target, ClusterRoute):
                self._proxy(front, target, head)
            elif isinstance(target, FanoutRoute):
                self._fanout(front, target, head)
            else:
                self._api(front, target, head)
        except ApiError as e:
            front.send_error(e)
        except Exception:
            log.failure("request dispatch failed (Audit-Id {auditID})", auditID=front.audit_id())
            front.send_error(ApiError(500, "internal error"))

    def _note_route(self, front: Front, target: Route, head: RequestHead) -> None:
        """For the metrics: the target the verb is read from, and a
        long-running request counted in flight (until the request is done)."""
        audit = front.audit
        metrics = self._factory.metrics
        assert audit is not None and metrics is not None
        if not isinstance(target, ApiRoute):
            audit.target = target.target
        kind = stream_kind(audit.target, head.upgrade)
        if kind is not None:
            audit.kind = kind
            metrics.stream_started(kind)

    def _proxy(self, front: Front, target: ClusterRoute, head: RequestHead) -> None:
        factory = self._factory
        identity = self._authenticate(front, head)
        audit = front.audit
        if audit is not None:
            audit.cluster = target.name
        cluster = factory.clusters().get(target.name)
        if (
            cluster is not None
            and head.method == b"POST"
            and target.target.startswith(REVIEW_PREFIXES)
            and self._review(front, target, head, identity, cluster)
        ):
            return
        try:
            if cluster is None:  # 404, or the 403 of a cluster the caller may not reach
                raise factory.access.unknown_cluster(
                    identity, target.name, head.method, target.target, head.headers
                )
            front.cluster_name = cluster.name
            authorized = factory.access.authorize(
                identity, cluster, head.method, target.target, head.headers
            )
        except Forbidden as denied:
            if audit is not None:
                audit.authorized = Authorized(denied.attrs, None)
            raise
        if audit is not None:
            audit.authorized = authorized
        gate = factory.health_gate
        if gate is not None:
            unhealthy = gate(cluster)
            if unhealthy is not None:
                raise unhealthy
        pool = factory.pools.get(cluster)
        if pool.error is not None:
            raise pool.error
        limiter = factory.limiter
        if limiter is not None:
            self._admit(front, limiter, identity, cluster.name, target.target, head.upgrade)
        request = split_request(head.headers, factory.drop, factory.drop_prefixes)
        identity_headers = impersonation_headers(authorized.upstream)
        if head.upgrade:
            upgradable = front.upgradable()
            self._proxy_upgrade(
                upgradable, target, head, pool, request, identity_headers, (cluster, identity)
            )
            return
        body = CHUNKED if request.chunked else LENGTH if request.content_length else NO_BODY
        audit = front.audit
        forwarder = Forwarder(
            front,
            UpstreamRequest(
                head.method,
                target.target,
                request.forward,
                body,
                identity_headers,
                front.client_address,
                audit.audit_id if audit is not None else b"",
            ),
            head_timeout=pool.head_timeout(head.method, target.target),
        )
        front.forwarder = forwarder
        if body:
            front.on_body = forwarder.body
            front.on_end = forwarder.body_end
        pool.submit(forwarder)

    @staticmethod
    def _admit(
        front: Front,
        limiter: Limiter,
        identity: Identity,
        cluster: str | None,
        target: bytes,
        upgrade: bool,
    ) -> Admission:
        """Admit the request by the limits (raises the ``429``); what it
        holds is released when it ends (with its record)."""
        audit = front.audit
        kind = audit.kind if audit is not None else None
        long_running = kind is not None or upgrade or is_long_running(target)
        admission = limiter.admit(identity, cluster, long_running)
        if audit is not None:
            audit.admission = admission
        else:  # no record to end it: nothing is held past this request's answer
            admission.release()
        return admission

    def _fanout(self, front: Front, target: FanoutRoute, head: RequestHead) -> None:
        """A read across many clusters (:mod:`karpor.front.fanout`): the
        clusters the caller may reach (and the selector picks), each
        authorized for the request; nothing is sent for any other verb."""
        factory = self._factory
        identity = self._authenticate(front, head)
        audit = front.audit
        if audit is not None:
            audit.cluster = FANOUT_CLUSTER
        try:
            selector = parse_label_selector(target.selector)
        except ValueError as exc:
            raise ApiError(400, f"invalid cluster selector: {exc}", "BadRequest") from None
        access = factory.access
        clusters = [
            cluster
            for _, cluster in sorted(factory.clusters().items())
            if selector.matches(cluster.labels) and access.reaches(identity, cluster)
        ]
        path, _, query = target.target.partition(b"?")
        try:
            info = parse_request_info(
                head.method.decode("latin-1"), path.decode("latin-1"), query.decode("latin-1")
            )
        except RequestInfoError as exc:
            raise ApiError(400, str(exc), "BadRequest") from None
        if head.method != b"GET" or head.upgrade or info.verb not in ("get", "list", "watch"):
            names = ", ".join(c.name for c in clusters) or "none"
            raise ApiError(
                405,
                f"a request to many clusters may only read (get, list, watch); nothing was "
                f"sent to the clusters it would have reached: {names}",
                "MethodNotAllowed",
            )
        options = parse_query(query.decode("latin-1"))
        watching = info.verb == "watch"
        continues = versions = None
        if options.get("continue", [""])[0]:
            continues = decode_continue(options["continue"][0])  # 400 when not ours
            # the rest are done (NAME/NS: one namespace of a cluster, still paging)
            pending = {key.partition("/")[0] for key in continues}
            clusters = [c for c in clusters if c.name in pending]
        if options.get("resourceVersion", [""])[0].startswith(COMPOSITE_PREFIX):
            versions = decode_versions(options["resourceVersion"][0])
        accept = next((v for n, v in head.headers if n.lower() == b"accept"), b"")
        # a Table when asked for one (lists); plain JSON otherwise (the merge reads
        # JSON: never protobuf, and discovery in its unaggregated form)
        table = info.is_resource_request and wants_table(accept.decode("latin-1"))
        headers = [
            (n, v)
            for n, v in split_request(head.headers, factory.drop, factory.drop_prefixes).forward
            if n.lower() != b"accept"
        ]
        headers.append((b"Accept", TABLE_ACCEPT if table else JSON_ACCEPT))
        asked: list[Asked] = []
        failed: list[tuple[str, str]] = []
        limiter = factory.limiter
        admission = (
            self._admit(front, limiter, identity, None, target.target, False)
            if limiter is not None
            else None
        )
        counted = (identity, admission)
        for cluster in clusters:
            try:
                authorized = access.authorize(
                    identity, cluster, head.method, target.target, head.headers
                )
            except Forbidden as denied:
                refusal = f"forbidden: {denied.message}"
                if info.verb == "list" and narrowable(info):
                    self._namespace_parts(
                        front, identity, cluster, head, target.target, info, refusal,
                        (continues, versions), headers, (asked, failed), admission,
                    )  # fmt: skip
                else:
                    failed.append((cluster.name, refusal))
                continue
            if continues is not None and cluster.name not in continues:
                continue  # its namespaces paged one by one (never whole)
            self._ask(
                front,
                asked,
                failed,
                cluster,
                authorized,
                cluster_target(target.target, cluster.name, continues, versions),
                headers,
                counted=counted,
            )
        observer = (
            FanoutRecord(audit, factory.audit, factory.metrics, front.client_address)
            if factory.audit is not None or factory.metrics is not None
            else None
        )
        if watching:
            front.forwarder = watch = FanWatch(
                front,
                asked,
                failed,
                versions=versions or {},
                table=table,
                timeout=watch_timeout(options),
                clock=factory.clock(),
                observer=observer,
            )
            watch.start()
            return
        fanout = Fanout(
            front,
            asked,
            failed,
            listing=info.verb == "list",
            table=table,
            discovery=not info.is_resource_request,
            observer=observer,
        )
        front.forwarder = fanout
        fanout.start()

    def _namespace_parts(
        self,
        front: Front,
        identity: Identity,
        cluster: Cluster,
        head: RequestHead,
        whole: bytes,
        info: RequestInfo,
        refusal: str,
        paging: tuple[dict[str, str] | None, dict[str, str] | None],
        headers: list[Header],
        out: tuple[list[Asked], list[tuple[str, str]]],
        admission: Admission | None = None,
    ) -> None:
        """A LIST across all namespaces the caller may not make on
        ``cluster`` (``refusal``: why): its parts, one per namespace the
        policy names for the caller there (at most
        :data:`MAX_NAMESPACE_PARTS`); namespaces named by a pattern cannot
        be listed so (a warning).  ``paging``: the client's composite
        continue token and resourceVersion, decoded."""
        asked, failed = out
        continues, versions = paging
        access = self._factory.access
        names, patterns = access.granted_namespaces(identity, cluster, info.verb)
        if not names and not patterns:
            failed.append((cluster.name, refusal))
            return
        if patterns:
            failed.append(
                (
                    cluster.name,
                    f"the namespaces matching {', '.join(patterns)} are left out: "
                    "a pattern cannot be listed across namespaces (list them one at a time)",
                )
            )
        if len(names) > MAX_NAMESPACE_PARTS:
            failed.append(
                (
                    cluster.name,
                    f"only the first {MAX_NAMESPACE_PARTS} of the {len(names)} namespaces "
                    "the access policy names were asked",
                )
            )
        for namespace in names[:MAX_NAMESPACE_PARTS]:
            key = f"{cluster.name}/{namespace}"
            if continues is not None and key not in continues:
                continue  # that namespace's list is complete
            narrowed = namespaced_target(whole, info, namespace)
            try:
                authorized = access.authorize(
                    identity, cluster, head.method, narrowed, head.headers
                )
            except Forbidden:
                continue  # the policy changed under us: that namespace is left out
            one = {cluster.name: continues[key]} if continues is not None else None
            narrowed = cluster_target(narrowed, cluster.name, one, versions)
            if not self._ask(
                front, asked, failed, cluster, authorized, narrowed, headers, key, refusal,
                counted=(identity, admission),
            ):  # fmt: skip
                return  # unhealthy: said once

    def _ask(
        self,
        front: Front,
        asked: list[Asked],
        failed: list[tuple[str, str]],
        cluster: Cluster,
        authorized: Authorized,
        upstream_target: bytes,
        headers: list[Header],
        key: str = "",
        refusal: str = "",
        counted: tuple[Identity, Admission | None] | None = None,
    ) -> bool:
        """Add ``cluster`` (asked ``upstream_target``) to the fan-out's
        ``asked``, or to ``failed`` when it cannot serve now (``False``):
        unhealthy, or over its in-flight limit (``counted``: the caller and
        the fan-out's admission, which holds one place on the cluster per
        request asked)."""
        factory = self._factory
        gate = factory.health_gate
        audit = front.audit
        unhealthy = gate(cluster) if gate is not None else None
        pool = factory.pools.get(cluster)
        problem = unhealthy or pool.error
        if problem is not None:
            failed.append((cluster.name, problem.message))
            return False
        limiter = factory.limiter
        if counted is not None and counted[1] is not None and limiter is not None:
            try:
                limiter.admit_cluster(counted[1], counted[0], cluster.name)
            except ApiError as refused:
                failed.append((cluster.name, refused.message))
                return False
        asked.append(
            Asked(
                cluster.name,
                pool,
                UpstreamRequest(
                    b"GET",
                    upstream_target,
                    headers,
                    NO_BODY,
                    impersonation_headers(authorized.upstream),
                    front.client_address,
                    audit.audit_id if audit is not None else b"",
                ),
                # a watch's head comes at once: the limit of a list's (the
                # path without ?watch=true)
                pool.head_timeout(b"GET", upstream_target.partition(b"?")[0]),
                key,
                authorized,
                refusal,
            )
        )
        return True

    def _proxy_upgrade(
        self,
        front: GatewayProtocol,
        target: ClusterRoute,
        head: RequestHead,
        pool: ClusterPool,
        request: RequestHeaders,
        identity_headers: Sequence[Header],
        session: tuple[Cluster, Identity] | None = None,
    ) -> None:
        """Send an upgrade request (over a dedicated connection); an exec,
        attach or port-forward gets its :class:`SessionTap` (recorded on a
        recorded cluster: :func:`~karpor.front.sessions.session_tap`)."""
        if request.upgrade is None:
            front.conn.failed = True
            raise ApiError(400, "invalid Upgrade header")
        if request.chunked or request.content_length:
            # the body would be read as tunnel bytes: nothing sane can follow
            front.conn.failed = True
            raise ApiError(400, "an upgrade request cannot carry a body")
        tap: SessionTap | None = None
        if session is not None:
            tap = session_tap(self._factory, session[0], target.target, session[1], front)
        audit = front.audit
        forwarder = UpgradeForwarder(
            front,
            UpstreamRequest(
                head.method,
                target.target,
                request.forward,
                NO_BODY,
                identity_headers,
                front.client_address,
                audit.audit_id if audit is not None else b"",
                request.upgrade,
            ),
            clock=pool.reactor,
            tap=tap,
        )
        front.forwarder = forwarder
        pool.submit(forwarder)

    def _review(
        self,
        front: Front,
        target: ClusterRoute,
        head: RequestHead,
        identity: Identity,
        cluster: Cluster,
    ) -> bool:
        """A review the caller asks about itself (``kubectl auth whoami``,
        ``auth can-i``): read its body and answer it
        (:mod:`karpor.front.reviews`); ``False`` when it is not one the
        gateway answers for this caller (then authorized as any request)."""
        path, _, query = target.target.partition(b"?")
        kind = review_kind(path.decode("latin-1"))
        if kind is None:
            return False
        reviewer = self._factory.access.reviewer(identity, cluster, head.headers)
        if reviewer is None:
            return False
        front.cluster_name = cluster.name
        audit = front.audit
        if audit is not None:
            audit.authorized = Authorized(
                request_attributes(head.method, target.target),
                reviewer.upstream,
                reviewer.exchange,
            )
        handler = ClusterReviews(
            self._factory,
            cluster,
            kind,
            reviewer,
            target.target,
            front.client_address,
            audit.audit_id if audit is not None else b"",
        )
        self._read_body(
            front, head, path.decode("latin-1"), query.decode("latin-1"), identity, handler
        )
        return True

    def _api(self, front: Front, target: ApiRoute, head: RequestHead) -> None:
        identity: Identity | None
        if target.public:
            access = self._factory.access
            identity = access.try_authenticate(front.peer(), head.headers)
            if front.audit is not None:
                front.audit.identity = identity
        else:
            identity = self._authenticate(front, head)
        self._read_body(front, head, target.path, target.query, identity, self._factory.api)

    def _read_body(
        self,
        front: Front,
        head: RequestHead,
        path: str,
        query: str,
        identity: Identity | None,
        handler: ApiHandler,
    ) -> None:
        """Read the body (bounded by ``max_api_body``), then hand the request to ``handler``."""
        call = _ApiCall(self._factory, front, path, query, head, identity, handler)
        front.on_body = call.data
        front.on_end = call.end
        if any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in head.headers):
            front.relay_interim(100, b"Continue", [])


class _ApiCall:
    """A request to the own API whose body is being read."""

    __slots__ = (
        "_body",
        "_factory",
        "_front",
        "_handler",
        "_head",
        "_identity",
        "_path",
        "_query",
        "_size",
    )

    def __init__(
        self,
        factory: GatewayFactory,
        front: Front,
        path: str,
        query: str,
        head: RequestHead,
        identity: Identity | None,
        handler: ApiHandler,
    ) -> None:
        self._factory = factory
        self._front = front
        self._path = path
        self._query = query
        self._handler = handler
        self._head = head
        self._identity = identity
        self._body: list[bytes] = []
        self._size = 0

    def data(self, data: bytes) -> None:
        """A piece of the body (past the factory's ``max_api_body``: 413)."""
        self._size += len(data)
        if self._size > self._factory.max_api_body:
            front = self._front
            front.on_body = None
            front.on_end = None
            self._body = []
            front.send_error(ApiError(413, "the request body is too large"))
            return
        self._body.append(data)

    def end(self) -> None:
        """The request is complete: hand it to the API."""
        front, head = self._front, self._head
        body = b"".join(self._body)
        self._body = []
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in head.headers}
        headers["audit-id"] = front.audit_id()  # the request's, for the API's log lines
        request = ApiRequest(
            method=head.method.decode("ascii"),
            path=self._path,
            query=self._query,
            headers=headers,
            identity=self._identity,
            body=body,
        )
        responder = front.api_responder(head)
        try:
            self._handler.handle(request, responder)
        except ApiError as e:
            if not responder.started:
                front.send_error(e)
            else:
                front.abort()
        except Exception:
            log.failure(
                "the API handler failed on {method} {path} (Audit-Id {auditID})",
                method=request.method,
                path=request.path,
                auditID=front.audit_id(),
            )
            if not responder.started:
                front.send_error(ApiError(500, "internal error"))
            else:
                front.abort()
