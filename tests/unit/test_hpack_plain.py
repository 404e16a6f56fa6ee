"""The tunnel's cheap HPACK encoder and frame ``repr`` (karpor.net.hpackplain, .framerepr)."""

from __future__ import annotations

import binascii

import h2.config
import h2.connection
import h2.events
import hyperframe.frame
import pytest
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hypothesis import given
from hypothesis import strategies as st

from karpor.net import framerepr
from karpor.net.hpackplain import (
    PlainDecoder,
    PlainEncoder,
    decode_plain,
    encode_plain,
    use_plain_hpack,
)

_names = st.one_of(
    st.sampled_from([b":method", b":path", b":status", b"accept", b"user-agent", b"audit-id"]),
    st.binary(min_size=1, max_size=300),
)
_headers = st.lists(
    st.tuples(
        _names, st.one_of(st.sampled_from([b"GET", b"200", b"https"]), st.binary(max_size=5000))
    ),
    max_size=20,
)


def _decoder() -> Decoder:
    decoder = Decoder()
    decoder.max_header_list_size = 10**7
    return decoder


@given(_headers)
def test_any_header_list_decodes_back_as_it_was(headers: list[tuple[bytes, bytes]]) -> None:
    assert _decoder().decode(encode_plain(headers), raw=True) == headers


def test_the_dynamic_table_is_never_used_and_static_entries_are_one_byte() -> None:
    decoder = _decoder()
    headers = [(b":method", b"GET"), (b":status", b"200"), (b"accept", b"x"), (b"x-a", b"b")]
    for _ in range(3):
        block = encode_plain(headers)
        assert decoder.decode(block, raw=True) == headers
    assert len(decoder.header_table.dynamic_entries) == 0
    assert encode_plain([(b":method", b"GET")]) == b"\x82"


def test_a_table_size_change_is_signalled_first() -> None:
    encoder = PlainEncoder()
    encoder.header_table_size = 256
    decoder = _decoder()
    headers = [(b"a", b"b")]
    assert decoder.decode(encoder.encode(headers), raw=True) == headers
    assert decoder.header_table_size == 256
    assert encoder.encode(headers) == encode_plain(headers)  # once only


def test_an_h2_connection_with_it_talks_to_a_stock_one() -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    use_plain_hpack(client)
    use_plain_hpack(server)
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    request = [
        (b":method", b"GET"),
        (b":path", b"/api"),
        (b":scheme", b"https"),
        (b":authority", b"c"),
    ]
    request += [(b"audit-id", b"1234")]
    client.send_headers(1, request, end_stream=True)
    events = server.receive_data(client.data_to_send())
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert received[0].headers == request


def _hyperframe_repr(data: bytes | None) -> str:
    """hyperframe's own ``_raw_data_repr`` (6.1)."""
    if not data:
        return "None"
    r = binascii.hexlify(data).decode("ascii")
    if len(r) > 20:
        r = r[:20] + "..."
    return "<hex:" + r + ">"


def test_frame_repr_is_the_same_without_encoding_the_whole_payload() -> None:
    for data in (None, b"", b"a", b"a" * 10, b"a" * 11, bytes(range(256)) * 300):
        assert framerepr.raw_data_repr(data) == _hyperframe_repr(data)
    framerepr.install()
    frame = hyperframe.frame.DataFrame(1, b"z" * 65536)
    assert "<hex:7a7a7a7a7a7a7a7a7a7a...>" in repr(frame)


@given(_headers)
def test_the_plain_decoder_reads_plain_blocks_as_hpack_does(
    headers: list[tuple[bytes, bytes]],
) -> None:
    block = encode_plain(headers)
    assert decode_plain(block, 10**7) == _decoder().decode(block, raw=True) == headers


@given(_headers)
def test_anything_else_goes_to_hpack(headers: list[tuple[bytes, bytes]]) -> None:
    """Huffman strings, indexing, table size updates: hpack's full decoder,
    from the start of the block (the fast path changed nothing)."""
    stock = Encoder()
    stock.header_table_size = 1024  # a size update first
    decoder = PlainDecoder(10**7)
    for _ in range(2):  # the second time from the dynamic table
        assert [tuple(h) for h in decoder.decode(stock.encode(headers), raw=True)] == headers


@pytest.mark.parametrize(
    "block", [b"\x00\x05ab", b"\x80", b"\xff\xff\xff\xff\xff\xff\x7f", b"\x00"]
)
def test_a_broken_block_fails_as_in_hpack(block: bytes) -> None:
    with pytest.raises(HPACKError):
        PlainDecoder(10**7).decode(block, raw=True)


def test_the_header_list_bound_holds_on_the_fast_path() -> None:
    headers = [(b"x-big", b"v" * 4000)] * 3
    decoder = PlainDecoder(8000)
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(encode_plain(headers), raw=True)
    assert decoder.decode(encode_plain(headers[:1]), raw=True) == headers[:1]
