"""What the gateway records of each request on a front connection: its
metrics (:class:`~karpor.metrics.gateway.GatewayMetrics`) and, with an
audit log, one :class:`~karpor.auth.audit.AuditRecord`, written when the
request ends (a splice when it closes) from its :class:`RequestRecord`;
the bytes a client connection wrote are counted by a
:class:`CountingTransport`.  A fan-out request also has one audit line per
cluster it asked or refused, and its failed clusters counted
(:class:`FanoutRecord`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import directlyProvides, providedBy

from karpor.auth.access import Authorized
from karpor.auth.audit import AuditRecord, AuditWriter, SessionRecord
from karpor.auth.identity import Identity
from karpor.http.connection import RequestHead
from karpor.kube.execsession import bounded_command
from karpor.metrics.labels import GATEWAY, request_verb
from karpor.upstream.sessiontap import SessionTap

if TYPE_CHECKING:
    from karpor.front.fanout import Asked
    from karpor.front.limits import Admission
    from karpor.metrics.gateway import GatewayMetrics


class CountingTransport:
    """The client transport, counting the bytes written (for the audit log);
    everything else is the transport's own."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._write = transport.write
        self.written = 0
        directlyProvides(self, *providedBy(transport))

    @property
    def wrapped(self) -> Any:
        """The transport counted."""
        return self._transport

    def write(self, data: bytes) -> None:
        """Write ``data``, counted."""
        self.written += len(data)
        self._write(data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        """Write the pieces of ``data``, counted."""
        self.written += sum(len(d) for d in data)
        self._transport.writeSequence(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RequestRecord:
    """What the audit log and the metrics will say of the current request."""

    __slots__ = (
        "admission",
        "audit_id",
        "authorized",
        "cluster",
        "head_at",
        "identity",
        "in_mark",
        "kind",
        "out_mark",
        "reason",
        "session",
        "started",
        "target",
        "ticks",
    )

    def __init__(self, started: float, in_mark: int, out_mark: int, audit_id: bytes) -> None:
        self.started = started
        #: the monotonic clock at the start, and when the response head went
        self.ticks = time.monotonic()
        self.head_at = 0.0
        self.audit_id = audit_id
        #: the target the verb is read from (the cluster's, once routed)
        self.target = b""
        #: the long-running kind (``None``: not long-running)
        self.kind: str | None = None
        self.in_mark = in_mark
        self.out_mark = out_mark
        self.identity: Identity | None = None
        self.cluster = ""
        self.authorized: Authorized | None = None
        self.reason = ""
        #: what the request holds of the limits (released when it ends)
        self.admission: Admission | None = None
        #: an exec, attach or port-forward's tap (its session audit line)
        self.session: SessionTap | None = None


def record_request(
    record: RequestRecord,
    *,
    metrics: GatewayMetrics | None,
    writer: AuditWriter | None,
    head: RequestHead | None,
    cluster: str | None,
    status: int,
    bytes_in: int,
    bytes_out: int,
    source: bytes,
) -> None:
    """Record the metrics of the request ``record`` is about (answered
    ``status``; ``cluster`` ``None``: the gateway's own) and write its
    audit record."""
    authorized = record.authorized
    attrs = authorized.attrs if authorized is not None else None
    if metrics is not None:
        if record.kind is not None:
            metrics.stream_ended(record.kind)
        metrics.request_done(
            cluster or GATEWAY,
            attrs.verb
            if attrs is not None
            else request_verb(head.method if head is not None else b"GET", record.target),
            status,
            (record.head_at or time.monotonic()) - record.ticks,
            bytes_in,
            bytes_out,
        )
    if writer is None:
        return
    identity = record.identity
    writer.write(
        AuditRecord(
            **_caller(record, authorized, source),
            cluster=record.cluster,
            path=head.target.decode("latin-1") if head is not None else "",
            method=head.method.decode("latin-1") if head is not None else "",
            status=status,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            duration=time.time() - record.started,
            reason=record.reason,
        )
    )
    session = record.session
    summary = session.finish() if session is not None else None
    if summary is not None:
        request = summary.request
        writer.write(
            SessionRecord(
                time=summary.started,
                request_id=record.audit_id.decode("ascii"),
                user=identity.user if identity is not None else "",
                groups=identity.groups if identity is not None else (),
                source=source.decode("latin-1"),
                cluster=record.cluster,
                namespace=request.namespace,
                pod=request.pod,
                subresource=request.subresource,
                container=request.container,
                command=bounded_command(request.command),
                tty=request.tty,
                stdin=request.stdin,
                ports=request.ports,
                protocol=summary.protocol,
                exit_code=summary.outcome.exit_code,
                error=summary.outcome.message,
                duration=summary.duration,
                bytes_from_client=summary.bytes_from_client,
                bytes_to_client=summary.bytes_to_client,
                recording=summary.recording,
                not_recorded=summary.not_recorded,
            )
        )


def _caller(record: RequestRecord, authorized: Authorized | None, source: bytes) -> dict[str, Any]:
    """The fields of an audit line about who asked what (the request's and
    a fan-out's per cluster): the caller, the request's attributes as the
    policy saw them, and the identity the cluster was shown."""
    identity = record.identity
    attrs = authorized.attrs if authorized is not None else None
    upstream = authorized.upstream if authorized is not None else None
    return {
        "time": record.started,
        "request_id": record.audit_id.decode("ascii"),
        "user": identity.user if identity is not None else "",
        "groups": identity.groups if identity is not None else (),
        "source": source.decode("latin-1"),
        "verb": attrs.verb if attrs is not None else "",
        "namespace": attrs.namespace if attrs is not None else "",
        "resource": attrs.resource if attrs is not None else "",
        "subresource": attrs.subresource if attrs is not None else "",
        "impersonated_user": upstream.user if upstream is not None else None,
        "impersonated_groups": tuple(g for g in upstream.groups if g != "system:authenticated")
        if upstream is not None
        else (),
        "exchange_rule": authorized.exchange_rule if authorized is not None else "",
        "issued_by": identity.issued_by if identity is not None else None,
    }


class FanoutRecord:
    """A fan-out's :class:`~karpor.front.fanout.FanoutObserver`: one audit
    line per cluster asked or refused (``cluster``: its name; ``path``: what
    it was asked; ``code``: its answer, ``0`` when none; ``reason``: why it
    failed; ``bytesOut``: the bytes it sent; ``fanout: true``), beside the
    request's own line (``cluster: "*"``), and the failed clusters counted
    (``karpor_fanout_cluster_failures_total``)."""

    def __init__(
        self,
        record: RequestRecord | None,
        writer: AuditWriter | None,
        metrics: GatewayMetrics | None,
        source: bytes,
    ) -> None:
        self._record = record
        self._writer = writer
        self._metrics = metrics
        self._source = source

    def cluster_done(
        self,
        name: str,
        asked: Asked | None,
        status: int,
        failure: str,
        reason: str,
        received: int,
        seconds: float,
    ) -> None:
        """Record one cluster of the fan-out (see the class docstring)."""
        if reason and self._metrics is not None:
            self._metrics.fanout_cluster_failed(name, reason)
        record, writer = self._record, self._writer
        if writer is None or record is None:
            return
        authorized = asked.authorized if asked is not None else None
        writer.write(
            AuditRecord(
                **_caller(record, authorized, self._source),
                cluster=name,
                path=asked.request.target.decode("latin-1") if asked is not None else "",
                method="GET",
                status=status,
                bytes_out=received,
                duration=seconds,
                reason=failure,
                extra={"fanout": True},
            )
        )
