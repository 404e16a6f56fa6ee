"""The simulator's HTTP API: a ``twisted.web`` resource that answers like kube-apiserver.

:class:`ApiServer` holds what a simulated cluster serves (store, catalog,
authenticator, clocks) and answers one request at a time:

1. authenticate (client certificate or bearer token, else 401), then apply
   the ``Impersonate-*`` headers;
2. non-resource paths: ``/version``, ``/healthz``, ``/livez``, ``/readyz``,
   discovery (``/api``, ``/apis``, legacy and aggregated), ``/openapi/v3``;
3. resource paths, parsed into a :class:`~karpor.kube.requestinfo.RequestInfo`:
   get, list, watch (streamed), create, update, patch, delete,
   deletecollection, the ``status`` and ``scale`` (deployments, replica sets)
   subresources, ``pods/log`` (streamed with ``follow``), ``selfsubjectreviews``,
   ``selfsubjectaccessreviews`` and ``selfsubjectrulesreviews``
   (:class:`~karpor.sim.auth.Authorizer`, which also authorizes every request);
   ``pods/exec``, ``pods/attach`` and ``pods/portforward`` (GET for
   WebSocket, POST for SPDY) go, once the pod is found, to the cluster's
   :class:`~karpor.sim.streaming.StreamServer`, which upgrades the connection.

:class:`SimulatorSite` serves HTTP/2 (ALPN ``h2``, :mod:`karpor.sim.http2`)
and HTTP/1.1 alike; upgrades need HTTP/1.1 (an exec request over HTTP/2 gets
a 400 ``Status`` saying so).

Long-running responses (watches, ``logs -f``, upgraded streams) are not cut by
twisted.web's idle timeout: ``HTTPChannel`` suspends it while a request is
being answered, and :func:`~karpor.sim.streaming.StreamServer.handle` cancels
it for good on the connections it takes over.

Every response carries kube's ``Audit-Id`` (the request's own when it
sent one, as kube-apiserver keeps it; else a fresh UUID) and
``Cache-Control: no-cache, private`` headers; with ``access_log`` each
request is logged with its ``audit-ID`` as kube's httplog does; errors
are ``Status`` objects with kube's codes, reasons and messages.
Responses to get/list/watch honour ``Accept`` (``Table``,
``PartialObjectMetadata``, JSON or YAML); objects and lists of the kinds
:mod:`karpor.sim.protobuf` encodes go in protobuf to a client that prefers it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml
from OpenSSL import crypto
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import provider

from karpor.auth.identity import Identity
from karpor.kube import negotiate
from karpor.kube.negotiate import JSON, YAML, Negotiated, Representation
from karpor.kube.requestinfo import RequestInfo, RequestInfoError, parse_query, parse_request_info
from karpor.kube.reviews import (
    ACCESS,
    AUTHORIZATION_GROUP,
    ReviewKind,
    access_review,
    parse_access_review,
    parse_rules_review,
    rules_review,
)
from karpor.kube.selectors import label_selector_from_object
from karpor.kube.status import ApiError
from karpor.sim import discovery, events, openapi, protobuf
from karpor.sim import patch as patches
from karpor.sim.auth import Authenticator, Authorizer, impersonate, self_subject_review
from karpor.sim.channels import Kind
from karpor.sim.headlimit import LimitedHTTPChannel
from karpor.sim.http2 import NegotiatingChannel
from karpor.sim.logs import DEFAULT_INTERVAL, LogFollower, LogOptions, render_lines, resolve
from karpor.sim.resources import CATALOG, Catalog, ResourceType
from karpor.sim.store import FieldError, Store, invalid
from karpor.sim.streaming import StreamServer
from karpor.sim.tables import to_table
from karpor.sim.watch import DEFAULT_BOOKMARK_INTERVAL, WatchParams, WatchStream

NOT_FOUND_MESSAGE = "the server could not find the requested resource"
METHOD_NOT_ALLOWED_MESSAGE = "the server does not allow this method on the requested resource"
#: subresources served through upgraded connections (by the StreamServer)
UPGRADE_SUBRESOURCES: dict[str, Kind] = {
    "exec": "exec",
    "attach": "attach",
    "portforward": "portforward",
}
_HEALTH_PATHS = ("/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class ServerVersion:
    """What ``/version`` answers."""

    git_version: str = "v1.31.0"
    git_commit: str = "9ee5ed7e9bb0b7d8d26cd6b7f7a4c0d0b1c9a1c2"
    build_date: str = "2024-08-13T07:28:49Z"
    go_version: str = "go1.22.5"
    platform: str = "linux/amd64"

    def document(self) -> dict[str, str]:
        """The ``version.Info`` object."""
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.git_version,
            "gitCommit": self.git_commit,
            "gitTreeState": "clean",
            "buildDate": self.build_date,
            "goVersion": self.go_version,
            "compiler": "gc",
            "platform": self.platform,
        }


def encode_json(obj: Any) -> bytes:
    """Compact JSON with a trailing newline, as kube's encoder writes it."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@dataclass
class _Call:
    """One request, parsed."""

    request: Request
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]
    identity: Identity | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[-1] if values else None

    def param(self, name: str) -> str:
        values = self.query.get(name)
        return values[0] if values else ""

    def body(self) -> bytes:
        content = getattr(self.request, "content", None)
        if content is None:
            return b""
        content.seek(0)
        data: bytes = content.read()
        return data


class ApiServer:
    """The request handler of one simulated cluster.

    ``streams`` serves ``pods/exec``, ``pods/attach`` and ``pods/portforward``;
    without one (``None``, the default for embedders that need no processes)
    those answer a 400 ``Status``.
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        authenticator: Authenticator,
        reactor: IReactorTime,
        *,
        catalog: Catalog = CATALOG,
        version: ServerVersion | None = None,
        server_address: str = "127.0.0.1:6443",
        log_interval: float = DEFAULT_INTERVAL,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        streams: StreamServer | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.store = store
        #: what users may do (everything without a policy)
        self.authorizer = authorizer or Authorizer()
        self.streams = streams
        self.authenticator = authenticator
        self.reactor = reactor
        self.catalog = catalog
        self.version = version or ServerVersion()
        self.server_address = server_address
        self.log_interval = log_interval
        self.bookmark_interval = bookmark_interval
        #: resources served from another's objects (events.k8s.io/v1 events)
        self._views = events.views(catalog)
        self._flow_schema_uid = str(uuid.uuid4())
        self._priority_level_uid = str(uuid.uuid4())
        self._aggregated = {
            (legacy, v): discovery.aggregated_discovery(catalog, legacy=legacy, version=v)
            for legacy in (True, False)
            for v in negotiate.AGGREGATED_DISCOVERY_VERSIONS
        }

    # -- entry point -------------------------------------------------------

    def handle(self, request: Request) -> bytes | int:
        """Answer ``request``: the body, or ``NOT_DONE_YET`` for a stream."""
        raw_path, _, raw_query = request.uri.decode("latin-1").partition("?")
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers[name.decode("latin-1").lower()] = [v.decode("latin-1") for v in values]
        call = _Call(
            request=request,
            method=request.method.decode("latin-1").upper(),
            path=raw_path,
            query=parse_query(raw_query),
            headers=headers,
        )
        request.responseHeaders.removeHeader(b"server")
        received = request.getHeader(b"audit-id")
        request.setHeader(b"audit-id", received or str(uuid.uuid4()).encode())
        request.setHeader(b"cache-control", b"no-cache, private")
        try:
            identity = self.authenticator.authenticate(
                call.header("authorization"), _peer_certificate(request)
            )
            if identity is None:
                raise ApiError(401, "Unauthorized")
            call.identity = impersonate(identity, headers)
            self.authorizer.check(identity, call.identity, call.method, raw_path, raw_query)
            request.setHeader(b"x-kubernetes-pf-flowschema-uid", self._flow_schema_uid.encode())
            request.setHeader(
                b"x-kubernetes-pf-prioritylevel-uid", self._priority_level_uid.encode()
            )
            return self._route(call)
        except ApiError as err:
            return self._error(request, err)
        except Exception:
            self.log.failure(
                "simulator: {method} {path} failed", method=call.method, path=call.path
            )
            return self._error(
                request, ApiError(500, "Internal error occurred: unexpected server error")
            )

    # -- responses ---------------------------------------------------------

    def _respond(self, request: Request, code: int, obj: Any, media_type: str = JSON) -> bytes:
        request.setResponseCode(code)
        if media_type == YAML:
            request.setHeader(b"content-type", b"application/yaml")
            return yaml.safe_dump(obj, sort_keys=False).encode()
        request.setHeader(b"content-type", b"application/json")
        return encode_json(obj)

    def _respond_object(self, call: _Call, code: int, obj: Any, media_type: str = JSON) -> bytes:
        """An object or list: in protobuf when the client prefers it and its
        kind has an encoding (:mod:`karpor.sim.protobuf`), else as ``media_type``."""
        if (
            media_type == JSON
            and protobuf.encodable(obj)
            and protobuf.wants_protobuf(call.header("accept"))
        ):
            call.request.setResponseCode(code)
            call.request.setHeader(b"content-type", protobuf.PROTOBUF.encode())
            return protobuf.encode_object(obj)
        return self._respond(call.request, code, obj, media_type)

    def _error(self, request: Request, err: ApiError) -> bytes:
        return self._respond(request, err.code, err.status())

    def _text(self, request: Request, text: bytes) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return text

    # -- routing -----------------------------------------------------------

    def _route(self, call: _Call) -> bytes | int:
        try:
            info = parse_request_info(call.method, call.path, call.query)
        except RequestInfoError:
            raise ApiError(404, NOT_FOUND_MESSAGE) from None
        if not info.is_resource_request:
            return self._non_resource(call, info.path)
        return self._resource(call, info)

    def _non_resource(self, call: _Call, path: str) -> bytes:
        request = call.request
        path = path.rstrip("/") or "/"
        if call.method not in ("GET", "HEAD"):
            if path in ("/api", "/apis", "/version") or path.startswith(("/api/", "/apis/")):
                raise ApiError(405, METHOD_NOT_ALLOWED_MESSAGE)
            raise ApiError(404, NOT_FOUND_MESSAGE)
        if path == "/version":
            return self._respond(request, 200, self.version.document())
        if path in _HEALTH_PATHS or path.startswith(tuple(p + "/" for p in _HEALTH_PATHS)):
            return self._text(request, b"ok")
        if path in ("/api", "/apis"):
            return self._discovery_root(call, legacy=path == "/api")
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return self._document(request, discovery.api_resource_list(self.catalog, "", parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            return self._document(request, discovery.api_group_document(self.catalog, parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            doc = discovery.api_resource_list(self.catalog, parts[1], parts[2])
            return self._document(request, doc)
        if path == "/openapi/v2":
            return self._openapi_v2(call)
        if path == "/openapi/v3":
            return self._respond(
                request, 200, openapi.root_document(self.catalog, self.version.git_version)
            )
        if parts[:2] == ["openapi", "v3"] and len(parts) in (4, 5):
            group, version = ("", parts[3]) if parts[2] == "api" else (parts[3], parts[-1])
            if (parts[2] == "api" and len(parts) == 4) or (parts[2] == "apis" and len(parts) == 5):
                doc = openapi.group_version_document(
                    self.catalog, group, version, self.version.git_version
                )
                return self._document(request, doc)
        raise ApiError(404, NOT_FOUND_MESSAGE)

    def _openapi_v2(self, call: _Call) -> bytes:
        accept = call.header("accept")
        git_version = self.version.git_version
        if negotiate.accepts_any(accept, [openapi.OPENAPI_V2_PROTOBUF]) and not (
            negotiate.parse_accept(accept)[0].matches(JSON)
        ):
            call.request.setResponseCode(200)
            # kube answers the protobuf document as octet-stream: Go's mime parser
            # rejects the "@" of the media type kubectl asks for
            call.request.setHeader(b"content-type", b"application/octet-stream")
            return openapi.v2_document_protobuf(git_version)
        if negotiate.accepts_any(accept, [JSON]):
            return self._respond(call.request, 200, openapi.v2_document(git_version))
        raise ApiError(406, negotiate.NOT_ACCEPTABLE_MESSAGE)

    def _document(self, request: Request, doc: dict[str, Any] | None) -> bytes:
        if doc is None:
            raise ApiError(404, NOT_FOUND_MESSAGE)
        return self._respond(request, 200, doc)

    def _discovery_root(self, call: _Call, *, legacy: bool) -> bytes:
        request = call.request
        chosen = negotiate.negotiate_discovery(call.header("accept"))
        if chosen is None:
            raise ApiError(406, negotiate.NOT_ACCEPTABLE_MESSAGE)
        request.setHeader(b"vary", b"Accept")
        if not chosen:
            doc = (
                discovery.api_versions(self.catalog, self.server_address)
                if legacy
                else discovery.api_group_list(self.catalog)
            )
            return self._respond(request, 200, doc)
        document = self._aggregated[(legacy, chosen)]
        tag = discovery.etag(document)
        request.setHeader(b"etag", tag.encode())
        request.setHeader(b"content-type", negotiate.aggregated_content_type(chosen).encode())
        if call.header("if-none-match") == tag:
            request.setResponseCode(304)
            return b""
        request.setResponseCode(200)
        return encode_json(document)

    # -- resources ---------------------------------------------------------

    def _resource(self, call: _Call, info: RequestInfo) -> bytes | int:
        rt = self.catalog.lookup(info.api_group, info.api_version, info.resource)
        if rt is None:
            raise ApiError(404, NOT_FOUND_MESSAGE)
        # the name in the path (list/watch may carry one from the field selector)
        path_name = info.parts[1] if len(info.parts) > 1 else ""
        if rt.namespaced:
            namespace = info.namespace
        else:
            if info.namespace and info.resource != "namespaces":
                raise ApiError(404, NOT_FOUND_MESSAGE)
            namespace = ""
        if info.subresource:
            return self._subresource(call, info, rt, namespace, path_name)
        if len(info.parts) > 2:
            raise ApiError(404, NOT_FOUND_MESSAGE)
        verb = info.verb
        if verb not in rt.verbs:
            raise ApiError(405, METHOD_NOT_ALLOWED_MESSAGE)
        if rt.namespaced and not namespace and verb not in ("list", "watch"):
            raise ApiError(404, NOT_FOUND_MESSAGE)
        if not rt.stored:
            return self._unstored(call, rt, verb)
        dry_run = self._dry_run(call)
        view = self._views.get(rt)
        if view is not None and verb in ("create", "update", "patch", "delete"):
            return self._view_write(call, rt, view, verb, namespace, path_name, dry_run)
        if verb == "get":
            return self._get(call, rt, namespace, path_name)
        if verb == "list":
            return self._list(call, rt, namespace)
        if verb == "watch":
            return self._watch(call, rt, namespace, path_name)
        if verb == "create":
            obj = self._object_body(call, rt, namespace)
            created = self.store.create(rt, namespace, obj, dry_run=dry_run)
            return self._respond_object(call, 201, created)
        if verb == "update":
            obj = self._object_body(call, rt, namespace, path_name)
            updated = self.store.update(rt, namespace, path_name, obj, dry_run=dry_run)
            return self._respond_object(call, 200, updated)
        if verb == "patch":
            patched = self.store.patch(
                rt, namespace, path_name, self._patch_type(call), call.body(), dry_run=dry_run
            )
            return self._respond_object(call, 200, patched)
        if verb == "delete":
            deleted = self.store.delete(rt, namespace, path_name, dry_run=dry_run)
            return self._respond_object(call, 200, deleted)
        if verb == "deletecollection":
            removed = self.store.delete_collection(
                self._stored(rt),
                namespace or None,
                label_selector=call.param("labelSelector"),
                field_selector=call.param("fieldSelector"),
            )
            return self._respond(call.request, 200, self._shown_list(rt, removed))
        raise ApiError(405, METHOD_NOT_ALLOWED_MESSAGE)

    # -- views: a resource served from another's objects -----------------------

    def _stored(self, rt: ResourceType) -> ResourceType:
        """The resource whose objects ``rt`` serves (itself but for views)."""
        view = self._views.get(rt)
        return rt if view is None else view.stored

    def _shown(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        view = self._views.get(rt)
        return obj if view is None else view.show(obj)

    def _shown_list(self, rt: ResourceType, result: dict[str, Any]) -> dict[str, Any]:
        view = self._views.get(rt)
        if view is None:
            return result
        items = []
        for item in result.get("items", []):
            shown = view.show(item)
            shown.pop("kind", None)
            shown.pop("apiVersion", None)
            items.append(shown)
        return {**result, "kind": rt.list_kind, "apiVersion": rt.group_version, "items": items}

    def _view_write(
        self,
        call: _Call,
        rt: ResourceType,
        view: events.View,
        verb: str,
        namespace: str,
        name: str,
        dry_run: bool,
    ) -> bytes:
        """create/update/patch/delete through a view: converted to and from the stored form."""
        stored = view.stored
        if verb == "delete":
            deleted = self.store.delete(stored, namespace, name, dry_run=dry_run)
            return self._respond(call.request, 200, view.show(deleted))
        if verb == "patch":
            current = view.show(self.store.get(stored, namespace, name))
            wanted = patches.apply(self._patch_type(call), current, call.body())
        else:
            wanted = self._object_body(call, rt, namespace, name)
        obj = view.store_form(wanted)
        if verb == "create":
            created = self.store.create(stored, namespace, obj, dry_run=dry_run)
            return self._respond(call.request, 201, view.show(created))
        updated = self.store.update(stored, namespace, name, obj, dry_run=dry_run)
        return self._respond(call.request, 200, view.show(updated))

    def _dry_run(self, call: _Call) -> bool:
        values = call.query.get("dryRun", [])
        for value in values:
            if value != "All":
                raise ApiError(
                    400,
                    f'Invalid dryRun value: "{value}", allowed values are: "All"',
                )
        if values:
            return True
        if call.method == "DELETE":
            options = self._json_or_none(call.body())
            if isinstance(options, dict) and options.get("dryRun"):
                return True
        return False

    def _negotiated(self, call: _Call, *, is_list: bool) -> Negotiated:
        chosen = negotiate.negotiate_resource(call.header("accept"), is_list=is_list)
        if chosen is None and protobuf.wants_protobuf(call.header("accept")):
            # protobuf only: objects of other kinds go as JSON, which client-go
            # decodes by the response's Content-Type
            chosen = Negotiated(Representation.OBJECT)
        if chosen is None:
            raise ApiError(406, negotiate.NOT_ACCEPTABLE_MESSAGE)
        return chosen

    def _include_object(self, call: _Call) -> str:
        value = call.param("includeObject") or "Metadata"
        if value not in ("None", "Metadata", "Object"):
            raise ApiError(400, f'Unsupported value: "{value}"')
        return value

    def _render_one(
        self, call: _Call, rt: ResourceType, obj: dict[str, Any], chosen: Negotiated
    ) -> dict[str, Any]:
        if chosen.representation is Representation.TABLE:
            rv = obj.get("metadata", {}).get("resourceVersion", "")
            table = to_table(
                rt,
                [obj],
                resource_version=rv,
                include_object=self._include_object(call),
                now=self.reactor.seconds(),
            )
            table["apiVersion"] = f"meta.k8s.io/{chosen.meta_version}"
            return table
        if chosen.representation is Representation.PARTIAL_METADATA:
            return {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{chosen.meta_version}",
                "metadata": obj.get("metadata", {}),
            }
        return obj

    def _get(self, call: _Call, rt: ResourceType, namespace: str, name: str) -> bytes:
        chosen = self._negotiated(call, is_list=False)
        obj = self._shown(rt, self.store.get(self._stored(rt), namespace, name))
        return self._respond_object(
            call, 200, self._render_one(call, rt, obj, chosen), chosen.media_type
        )

    def _list(self, call: _Call, rt: ResourceType, namespace: str) -> bytes:
        chosen = self._negotiated(call, is_list=True)
        limit_text = call.param("limit")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise ApiError(
                400, f'strconv.ParseInt: parsing "{limit_text}": invalid syntax'
            ) from None
        result = self.store.list(
            self._stored(rt),
            namespace or None,
            label_selector=call.param("labelSelector"),
            field_selector=call.param("fieldSelector"),
            limit=max(limit, 0),
            continue_token=call.param("continue"),
        )
        result = self._shown_list(rt, result)
        meta = result.get("metadata", {})
        out: dict[str, Any] = result
        if chosen.representation is Representation.TABLE:
            out = to_table(
                rt,
                result.get("items", []),
                resource_version=meta.get("resourceVersion", ""),
                continue_token=meta.get("continue", ""),
                remaining=meta.get("remainingItemCount"),
                include_object=self._include_object(call),
                now=self.reactor.seconds(),
            )
            out["apiVersion"] = f"meta.k8s.io/{chosen.meta_version}"
        elif chosen.representation is Representation.PARTIAL_METADATA:
            out = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": f"meta.k8s.io/{chosen.meta_version}",
                "metadata": meta,
                "items": [
                    {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": f"meta.k8s.io/{chosen.meta_version}",
                        "metadata": item.get("metadata", {}),
                    }
                    for item in result.get("items", [])
                ],
            }
        return self._respond_object(call, 200, out, chosen.media_type)

    def _watch(self, call: _Call, rt: ResourceType, namespace: str, name: str) -> int:
        chosen = self._negotiated(call, is_list=True)
        params = WatchParams.from_query(call.query, name)
        transform = None
        view = self._views.get(rt)
        if chosen.representation is not Representation.OBJECT or view is not None:

            def transform(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
                return self._render_one(call, rt, self._shown(rt, obj), chosen)

        request = call.request
        stream = WatchStream(
            self.store,
            self._stored(rt),
            namespace,
            params,
            self.reactor,
            write=lambda data: _write(request, data),
            finish=lambda: _finish(request),
            transform=transform,
            bookmark_interval=self.bookmark_interval,
        )
        first = stream.start()
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        request.write(b"".join(first))
        if stream.ended:
            _finish(request)
            return NOT_DONE_YET
        request.notifyFinish().addBoth(_stop_on_close, stream)
        return NOT_DONE_YET

    def _object_body(
        self, call: _Call, rt: ResourceType, namespace: str, name: str = ""
    ) -> dict[str, Any]:
        body = call.body()
        content_type = negotiate.base_media_type(call.header("content-type"))
        if content_type == protobuf.PROTOBUF:
            obj = protobuf.decode_object(body)
            return self._check_object(obj, rt, namespace, name)
        try:
            if content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
                obj = yaml.safe_load(body)
            else:
                obj = json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"couldn't get version/kind; json parse error: {exc}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "Object 'Kind' is missing in the request body")
        return self._check_object(obj, rt, namespace, name)

    def _check_object(
        self, obj: dict[str, Any], rt: ResourceType, namespace: str, name: str
    ) -> dict[str, Any]:
        kind = obj.get("kind")
        if kind and kind != rt.kind:
            raise ApiError(
                400,
                f"the object provided is unrecognized (must be of type {rt.kind}): "
                f"kind {kind!r} does not match",
            )
        api_version = obj.get("apiVersion")
        if api_version and api_version != rt.group_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.group_version})",
            )
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise ApiError(400, "metadata must be an object")
        if rt.namespaced:
            if metadata.get("namespace") and metadata["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            metadata["namespace"] = namespace
        if name and metadata.get("name") and metadata["name"] != name:
            raise ApiError(
                400,
                f"the name of the object ({metadata['name']}) does not match the name on "
                f"the URL ({name})",
            )
        if name:
            metadata.setdefault("name", name)
        return obj

    def _patch_type(self, call: _Call) -> str:
        content_type = negotiate.base_media_type(call.header("content-type"))
        if content_type not in patches.PATCH_TYPES:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(patches.PATCH_TYPES)}",
            )
        return content_type

    @staticmethod
    def _json_or_none(body: bytes) -> Any:
        try:
            return json.loads(body) if body else None
        except ValueError:
            return None

    def _unstored(self, call: _Call, rt: ResourceType, verb: str) -> bytes:
        if rt.plural == "selfsubjectreviews" and verb == "create":
            assert call.identity is not None
            review = self_subject_review(rt.version, call.identity)
            return self._respond(call.request, 201, review)
        if rt.group == AUTHORIZATION_GROUP and verb == "create":
            assert call.identity is not None
            kind = ReviewKind(rt.kind, rt.group, rt.version)
            if rt.kind == ACCESS:
                query = parse_access_review(call.body(), kind)
                allowed, reason = self.authorizer.access_review(call.identity, query)
                answer = access_review(kind, query, allowed, reason)
            else:
                namespace = parse_rules_review(call.body(), kind)
                rules = self.authorizer.rules_review(call.identity, namespace)
                answer = rules_review(kind, namespace, rules)
            return self._respond(call.request, 201, answer)
        raise ApiError(405, METHOD_NOT_ALLOWED_MESSAGE)

    # -- subresources ------------------------------------------------------

    def _subresource(
        self, call: _Call, info: RequestInfo, rt: ResourceType, namespace: str, name: str
    ) -> bytes | int:
        sub = rt.subresource(info.subresource)
        if sub is None or not name or (rt.namespaced and not namespace):
            raise ApiError(404, NOT_FOUND_MESSAGE)
        if info.verb not in sub.verbs:
            raise ApiError(405, METHOD_NOT_ALLOWED_MESSAGE)
        stream_kind = UPGRADE_SUBRESOURCES.get(info.subresource)
        if stream_kind is not None:
            pod = self.store.get(rt, namespace, name)
            if call.request.clientproto == b"HTTP/2":
                raise ApiError(
                    400,
                    f"{rt.plural}/{info.subresource} needs an HTTP/1.1 connection: SPDY and "
                    "WebSocket upgrades are not possible over HTTP/2 (offer ALPN http/1.1 only)",
                )
            if self.streams is None:
                raise ApiError(
                    400,
                    f"{rt.plural}/{info.subresource} is not served by this simulated cluster: "
                    "it has no stream server",
                )
            return self.streams.handle(call.request, stream_kind, pod)
        if info.subresource == "log":
            return self._log(call, rt, namespace, name)
        if info.subresource == "status":
            return self._status(call, info.verb, rt, namespace, name)
        if info.subresource == "scale" and rt.group == "apps":
            return self._scale(call, info.verb, rt, namespace, name)
        raise ApiError(404, NOT_FOUND_MESSAGE)

    def _scale(self, call: _Call, verb: str, rt: ResourceType, namespace: str, name: str) -> bytes:
        """``deployments/scale``, ``replicasets/scale``: an ``autoscaling/v1`` ``Scale``
        over ``spec.replicas``."""
        current = self.store.get(rt, namespace, name)
        if verb == "get":
            return self._respond(call.request, 200, scale_of(current))
        if verb == "update":
            body = self._json_or_none(call.body())
            if not isinstance(body, dict):
                raise ApiError(400, "Object 'Kind' is missing in the request body")
            if body.get("kind") not in (None, "Scale"):
                raise ApiError(
                    400,
                    "the object provided is unrecognized (must be of type Scale): "
                    f"kind {body.get('kind')!r} does not match",
                )
            wanted = body
        else:
            wanted = patches.apply(self._patch_type(call), scale_of(current), call.body())
        spec = wanted.get("spec") if isinstance(wanted.get("spec"), dict) else {}
        replicas = (spec or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise ApiError(400, f"unable to decode the Scale: spec.replicas: {replicas!r}")
        if replicas < 0:
            raise invalid(
                _SCALE_TYPE,
                name,
                [
                    FieldError(
                        "spec.replicas",
                        "FieldValueInvalid",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                    )
                ],
            )
        wanted_meta = wanted.get("metadata") if isinstance(wanted.get("metadata"), dict) else {}
        updated = dict(current)
        updated["metadata"] = {
            **current["metadata"],
            "resourceVersion": (wanted_meta or {}).get("resourceVersion") or "",
        }
        updated["spec"] = {**current.get("spec", {}), "replicas": replicas}
        result = self.store.update(rt, namespace, name, updated, dry_run=self._dry_run(call))
        return self._respond(call.request, 200, scale_of(result))

    def _status(self, call: _Call, verb: str, rt: ResourceType, namespace: str, name: str) -> bytes:
        if verb == "get":
            return self._respond(call.request, 200, self.store.get(rt, namespace, name))
        if verb == "update":
            obj = self._object_body(call, rt, namespace, name)
            status = obj.get("status") or {}
        else:
            current = self.store.get(rt, namespace, name)
            status = patches.apply(self._patch_type(call), current, call.body()).get("status") or {}
        if self._dry_run(call):
            current = self.store.get(rt, namespace, name)
            return self._respond(call.request, 200, {**current, "status": status})
        return self._respond(
            call.request, 200, self.store.update_status(rt, namespace, name, status)
        )

    def _log(self, call: _Call, rt: ResourceType, namespace: str, name: str) -> bytes | int:
        options = LogOptions.from_query(call.query)
        pod = self.store.get(rt, namespace, name)
        log = resolve(pod, options, self.log_interval)
        request = call.request
        now = self.reactor.seconds()
        if not options.follow:
            return self._text_plain(request, render_lines(log, options, now))
        uid = pod.get("metadata", {}).get("uid")

        def alive() -> bool:
            try:
                current = self.store.get(rt, namespace, name)
            except ApiError:
                return False
            return bool(current.get("metadata", {}).get("uid") == uid)

        follower = LogFollower(
            log,
            options,
            self.reactor,
            write=lambda data: _write(request, data),
            finish=lambda: _finish(request),
            alive=alive,
        )
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain")
        request.write(b"")
        request.notifyFinish().addBoth(_stop_on_close, follower)
        follower.start()
        return NOT_DONE_YET

    def _text_plain(self, request: Request, data: bytes) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain")
        return data


#: how ``Scale`` objects are named in errors (``Scale.autoscaling "web" is invalid``)
_SCALE_TYPE = ResourceType("autoscaling", "v1", "scale", "scale", "Scale", True)


def scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The ``autoscaling/v1`` ``Scale`` of a Deployment, as kube's scale subresource answers."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    scale_meta = {
        k: meta[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in meta
    }
    scale_spec = {"replicas": spec["replicas"]} if spec.get("replicas") else {}
    scale_status: dict[str, Any] = {"replicas": int(status.get("replicas") or 0)}
    try:
        selector = str(label_selector_from_object(spec.get("selector")))
    except ValueError:
        selector = ""
    if selector:
        scale_status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": scale_spec,
        "status": scale_status,
    }


def _peer_certificate(request: Request) -> crypto.X509 | None:
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None) or getattr(channel, "peer_transport", None)
    get_peer = getattr(transport, "getPeerCertificate", None)
    if get_peer is None:
        return None
    try:
        cert = get_peer()
    except Exception:
        return None
    return cert if isinstance(cert, crypto.X509) else None


def _open(request: Request) -> bool:
    return not request.finished and not getattr(request, "_disconnected", False)


def _write(request: Request, data: bytes) -> None:
    if _open(request):
        request.write(data)


def _finish(request: Request) -> None:
    if _open(request):
        request.finish()


def _stop_on_close(result: Failure | None, stream: WatchStream | LogFollower) -> None:
    stream.stop()


class SimulatorResource(Resource):
    """The whole API as one leaf resource: every path goes to :class:`ApiServer`."""

    isLeaf = True

    def __init__(self, api: ApiServer) -> None:
        super().__init__()
        self.api = api

    def render(self, request: Request) -> bytes | int:
        """Answer any method on any path."""
        return self.api.handle(request)


@provider(IAccessLogFormatter)
def access_line(timestamp: str, request: Any) -> str:
    """Twisted's combined access-log line, then the response's ``audit-ID``."""
    audit_id = request.responseHeaders.getRawHeaders(b"audit-id", [b"-"])[0]
    return f'{combinedLogFormatter(timestamp, request)} audit-ID="{audit_id.decode("latin-1")}"'


class SimulatorSite(Site):
    """A ``Site`` serving :class:`SimulatorResource`, quiet unless ``access_log``.

    HTTP/1.1 connections read request heads up to Go's limit (1 MiB,
    :mod:`karpor.sim.headlimit`).
    """

    protocol = LimitedHTTPChannel  # type: ignore[assignment]

    def __init__(
        self, api: ApiServer, *, access_log: bool = False, reactor: IReactorTime | None = None
    ) -> None:
        super().__init__(SimulatorResource(api), reactor=reactor, logFormatter=access_line)
        self.displayTracebacks = False
        self._access_log = access_log

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN, preferred first (Twisted asks the wrapped factory)."""
        return [b"h2", b"http/1.1"]

    def buildProtocol(self, addr: IAddress | None) -> Protocol:  # type: ignore[override]
        """HTTP/2 or HTTP/1.1, as the connection's ALPN says."""
        channel = NegotiatingChannel(self, addr)
        channel.factory = self
        return channel

    def log(self, request: HTTPRequest) -> None:
        """Write an access log line only when asked to."""
        if self._access_log:
            super().log(request)
