"""Sending HTTP/2 DATA within the flow-control windows (sans-IO, on ``h2``).

Shared by the gateway's upstream streams (:mod:`karpor.upstream.h2`)
and the simulator's HTTP/2 server (:mod:`karpor.sim.http2`).
"""

from __future__ import annotations

import h2.connection
import h2.exceptions


def send_within_window(conn: h2.connection.H2Connection, stream_id: int, data: bytes) -> int:
    """Queue as much of ``data`` on ``stream_id`` as the send windows allow,
    in frames no larger than the peer accepts; how much was queued.

    A stream that is gone (a protocol error) counts as having taken all of
    it: the rest is dropped.  The caller flushes ``conn.data_to_send()``.
    """
    try:
        room = min(conn.local_flow_control_window(stream_id), len(data))
        sent = 0
        size = conn.max_outbound_frame_size
        while sent < room:
            piece = data[sent : sent + min(size, room - sent)]
            conn.send_data(stream_id, piece)
            sent += len(piece)
    except h2.exceptions.ProtocolError:
        return len(data)
    return sent
