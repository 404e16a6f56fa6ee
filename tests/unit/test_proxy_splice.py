"""The splice on its own: two StringTransports, recorded reading, a clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.upstream.splice import CLOSE_GRACE, Splice


class Reading:
    """Records what the splice asks of one side's reading."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.paused = False
        self.calls.append("resume")


@implementer(IHalfCloseableDescriptor)
class TCPTransport(StringTransport):
    """A transport that can half-close, as plain TCP can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def readConnectionLost(self, reason: Failure) -> None:
        """Not used: the splice only writes to this transport."""

    def writeConnectionLost(self, reason: Failure) -> None:
        """Not used: the splice only writes to this transport."""


class Pair:
    def __init__(self, client_tcp: bool = False, upstream_tcp: bool = False) -> None:
        self.clock = MemoryReactorClock()
        self.client = TCPTransport() if client_tcp else StringTransport()
        self.upstream = TCPTransport() if upstream_tcp else StringTransport()
        self.client_reading = Reading()
        self.upstream_reading = Reading()
        self.splice = Splice(
            self.client, self.client_reading, self.upstream, self.upstream_reading, self.clock
        )


def test_start_registers_producers_before_writing_early_bytes() -> None:
    p = Pair()
    order: list[str] = []
    write = p.upstream.write

    def recording_write(data: bytes) -> None:
        order.append("producer" if p.upstream.producer is not None else "none")
        write(data)

    p.upstream.write = recording_write  # type: ignore[method-assign]
    p.splice.start(to_upstream=b"early", to_client=b"trailing")
    assert p.upstream.value() == b"early" and p.client.value() == b"trailing"
    assert order == ["producer"]
    assert p.client.producer is not None and p.upstream.producer is not None
    assert p.client.streaming and p.upstream.streaming


@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(min_size=1, max_size=64)),
        max_size=40,
    )
)
def test_bytes_are_copied_exactly_both_ways(pieces: list[tuple[bool, bytes]]) -> None:
    p = Pair()
    p.splice.start()
    for from_client, data in pieces:
        if from_client:
            p.splice.client_data(data)
        else:
            p.splice.upstream_data(data)
    assert p.upstream.value() == b"".join(d for c, d in pieces if c)
    assert p.client.value() == b"".join(d for c, d in pieces if not c)


def test_a_full_transport_pauses_the_other_side() -> None:
    p = Pair()
    p.splice.start()
    assert p.client.producer is not None and p.upstream.producer is not None
    p.client.producer.pauseProducing()
    assert p.upstream_reading.paused and not p.client_reading.paused
    p.client.producer.resumeProducing()
    assert not p.upstream_reading.paused
    p.upstream.producer.pauseProducing()
    assert p.client_reading.paused and not p.upstream_reading.paused
    p.upstream.producer.resumeProducing()
    assert p.client_reading.calls == ["pause", "resume"]


def test_client_half_close_reaches_a_tcp_upstream() -> None:
    p = Pair(upstream_tcp=True)
    p.splice.start()
    p.splice.client_eof()
    assert isinstance(p.upstream, TCPTransport) and p.upstream.write_closed
    assert not p.upstream.disconnecting and not p.client.disconnecting
    # the other direction still flows
    p.splice.upstream_data(b"output after stdin closed")
    assert p.client.value() == b"output after stdin closed"
    # both directions ended: close
    p.splice.upstream_eof()
    assert p.upstream.disconnecting and p.client.disconnecting


def test_upstream_half_close_reaches_a_tcp_client() -> None:
    p = Pair(client_tcp=True)
    p.splice.start()
    p.splice.upstream_eof()
    assert isinstance(p.client, TCPTransport) and p.client.write_closed
    p.splice.client_data(b"still sending")
    assert p.upstream.value() == b"still sending"
    assert not p.client.disconnecting and not p.upstream.disconnecting


def test_half_close_towards_tls_closes_both() -> None:
    p = Pair()
    p.splice.start()
    p.splice.upstream_eof()
    assert p.client.disconnecting and p.upstream.disconnecting


def test_client_lost_closes_upstream_cleanly_then_aborts_after_grace() -> None:
    p = Pair()
    p.splice.start()
    assert p.client.producer is not None
    p.client.producer.pauseProducing()  # the client was slow
    assert p.upstream_reading.paused
    p.splice.client_lost()
    # unregistered (TLS sends close_notify only then), reading resumed (to
    # read the peer's close_notify), then closed after flushing
    assert p.upstream.producer is None
    assert not p.upstream_reading.paused
    assert p.upstream.disconnecting and not p.upstream.disconnected
    # bytes still arriving from the cluster have nowhere to go
    p.splice.upstream_data(b"late")
    assert p.client.value() == b""
    p.clock.advance(CLOSE_GRACE - 1)
    assert not p.upstream.disconnected
    p.clock.advance(1)
    assert p.upstream.disconnected  # aborted


def test_upstream_lost_closes_client_after_its_bytes() -> None:
    p = Pair()
    p.splice.start()
    p.splice.upstream_data(b"last output")
    p.splice.upstream_lost()
    assert p.client.value() == b"last output"
    assert p.client.disconnecting and p.client.producer is None
    p.splice.client_lost()
    assert p.splice.closed
    p.clock.advance(CLOSE_GRACE)
    assert not p.client.disconnected  # closed in time: no abort
    assert p.clock.getDelayedCalls() == []


def test_transport_gone_under_its_producer_counts_as_lost() -> None:
    p = Pair()
    p.splice.start()
    assert p.client.producer is not None
    # Twisted stops the producer of a transport whose connection is lost
    p.client.producer.stopProducing()
    assert p.upstream.disconnecting
    p.splice.client_lost()  # the protocol's own notice follows: no harm
    p.splice.upstream_lost()
    assert p.splice.closed and p.clock.getDelayedCalls() == []


def test_close_is_idempotent() -> None:
    p = Pair()
    p.splice.start()
    p.splice.close()
    p.splice.close()
    assert p.client.disconnecting and p.upstream.disconnecting
    assert len(p.clock.getDelayedCalls()) == 2
