"""Header filtering as properties (Hypothesis): what crosses the proxy, whatever is sent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.headers import (
    HOP_BY_HOP,
    ForwardedFor,
    request_id,
    strip_request_headers,
    strip_response_headers,
)

NAMES = st.sampled_from(
    [b"x-user-id", b"authorization", b"x-kept", b"accept", b"traceparent", b"x-forwarded-for",
     b"host", b"content-length", b"te", b"upgrade", b"keep-alive", b"x-request-id", b"cookie"]
)  # fmt: skip
VALUES = st.binary(min_size=0, max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=10)
CONNECTION = st.lists(NAMES, max_size=4).map(lambda names: (b"connection", b", ".join(names)))


@settings(max_examples=500, deadline=None)
@given(HEADERS, st.lists(CONNECTION, max_size=2))
def test_request_filter_drops_hop_by_hop_and_connection_named_and_keeps_the_rest(
    headers: list[tuple[bytes, bytes]], connections: list[tuple[bytes, bytes]]
):
    everything = headers + connections
    named = {
        token.strip() for _, value in connections for token in value.split(b",") if token.strip()
    }
    kept = strip_request_headers(everything)
    replaced = {b"host", b"content-length", b"x-forwarded-for", b"x-request-id"}
    assert kept == [
        (n, v)
        for n, v in everything
        if n not in HOP_BY_HOP and n not in named and n not in replaced
    ]


@settings(max_examples=300, deadline=None)
@given(HEADERS, st.lists(CONNECTION, max_size=2), st.integers(min_value=0, max_value=10**9))
def test_response_filter_reports_the_length_and_never_passes_framing(
    headers: list[tuple[bytes, bytes]], connections: list[tuple[bytes, bytes]], length: int
):
    kept, found = strip_response_headers(
        [*headers, *connections, (b"Content-Length", str(length).encode())]
    )
    assert found == length or any(n == b"content-length" for n, _ in headers)
    assert all(n not in HOP_BY_HOP and n != b"content-length" for n, _ in kept)


@settings(max_examples=300, deadline=None)
@given(HEADERS, st.sampled_from(["127.0.0.1", "10.1.2.3", "192.0.2.7"]))
def test_forwarded_for_is_the_peer_unless_the_peer_is_trusted(
    headers: list[tuple[bytes, bytes]], peer: str
):
    builder = ForwardedFor(["10.0.0.0/8"])
    trusted = builder.trusted(peer)
    forwarded = dict(builder.headers(headers, peer, "http", b"edge", trusted=trusted))
    prior = [v for n, v in headers if n == b"x-forwarded-for"]
    if peer.startswith("10.") and prior:
        assert forwarded[b"x-forwarded-for"] == b", ".join([*prior, peer.encode()])
    else:
        assert forwarded[b"x-forwarded-for"] == peer.encode()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_a_request_id_is_always_a_safe_header_value(value: bytes):
    chosen = request_id([(b"x-request-id", value)])
    assert 1 <= len(chosen) <= 128
    assert all(c.isalnum() or c in "._:-" for c in chosen)
