"""Whether and how an exec, attach or port-forward session is kept: its
:class:`~karpor.upstream.sessiontap.SessionTap`, made when the request is
forwarded.

A session on a cluster ``sessionRecording`` names is recorded
(:class:`~karpor.upstream.recordings.Recordings`) unless its stream is
binary: port-forward, and ``kubectl cp`` (an exec of ``tar`` in kubectl's
exact shapes, :func:`~karpor.kube.execsession.is_copy_command`).  When its
recording cannot be created the session is refused with a ``503``
``Status`` that says the recording directory is not writable (or full),
never its path.  Without an audit log and without a recording nothing is
kept (no tap: the splice does nothing more than copy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from karpor.auth.identity import Identity
from karpor.config.model import Cluster
from karpor.kube.execsession import is_copy_command, session_request
from karpor.kube.status import ApiError
from karpor.upstream.recordings import RecordingRefused
from karpor.upstream.sessiontap import SessionTap

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayFactory, GatewayProtocol

#: why a session has no recording
NOT_RECORDED_CLUSTER = "the cluster is not recorded"
NOT_RECORDED_PORT_FORWARD = "port-forward: a binary stream"
NOT_RECORDED_COPY = "kubectl cp (tar): a binary stream"


def session_tap(
    factory: GatewayFactory,
    cluster: Cluster,
    target: bytes,
    identity: Identity,
    front: GatewayProtocol,
) -> SessionTap | None:
    """The tap of the session ``target`` opens on ``cluster`` (``None``:
    not a session, or nothing to keep); raises the ``503`` of a recording
    that cannot be written."""
    request = session_request(target)
    if request is None:
        return None
    recordings = factory.recordings
    recording = None
    not_recorded = ""
    if recordings is None or not recordings.records(cluster):
        not_recorded = NOT_RECORDED_CLUSTER
    elif not request.terminal:
        not_recorded = NOT_RECORDED_PORT_FORWARD
    elif request.subresource == "exec" and is_copy_command(request.command):
        not_recorded = NOT_RECORDED_COPY
    else:
        try:
            recording = recordings.open(cluster.name, request, front.audit_id(), identity.user)
        except RecordingRefused as exc:
            raise ApiError(
                503,
                f"sessions on cluster {cluster.name} are recorded, and {exc.reason}: "
                "the session was refused",
                "ServiceUnavailable",
            ) from None
    if recording is None and factory.audit is None:
        return None
    tap = SessionTap(request, recording, not_recorded)
    audit = front.audit
    if audit is not None:
        audit.session = tap
    return tap
