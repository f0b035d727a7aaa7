"""Envoy's ext_authz header mutations, header rules, and GCRA buckets, as pure functions."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from google.protobuf import wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from gateway.policies.buckets import LocalBuckets
from gateway.policies.ext_authz import apply_mutations
from gateway.policies.headers import rewrite_request

Option = base_pb2.HeaderValueOption


def option(key: str, value: str, action: int | None = None, append: bool | None = None) -> Option:
    made = Option(header=base_pb2.HeaderValue(key=key, value=value))
    if action is not None:
        made.append_action = action
    if append is not None:
        made.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    return made


BASE = [(b"x-a", b"1"), (b"host", b"edge"), (b"x-b", b"2")]


def test_each_append_action_as_envoy_applies_it():
    out = apply_mutations(
        BASE,
        [
            option("x-a", "set", Option.OVERWRITE_IF_EXISTS_OR_ADD),
            option("x-b", "more"),  # APPEND_IF_EXISTS_OR_ADD, the proto default: another line
            option("x-b", "absent", Option.ADD_IF_ABSENT),
            option("x-c", "new", Option.ADD_IF_ABSENT),
            option("x-d", "only-if", Option.OVERWRITE_IF_EXISTS),
            option("x-c", "joined", append=True),
            option("x-e", "plain", append=False),
            option("host", "evil", Option.OVERWRITE_IF_EXISTS_OR_ADD),
            option(":path", "/admin", Option.OVERWRITE_IF_EXISTS_OR_ADD),
        ],
        ["x-e", "host", ":path"],
    )
    assert out == [
        (b"host", b"edge"),
        (b"x-b", b"2"),
        (b"x-a", b"set"),
        (b"x-b", b"more"),
        (b"x-c", b"new,joined"),
    ]


names = st.sampled_from([b"x-a", b"x-b", b"x-c", b"authorization", b"x-user-id"])
headers = st.lists(st.tuples(names, st.binary(max_size=5)), max_size=8)


@given(headers=headers)
def test_rules_never_leave_a_removed_header_and_add_exactly_once(
    headers: list[tuple[bytes, bytes]],
):
    out = rewrite_request(
        headers, {b"x-a": b"x-renamed"}, frozenset({b"x-b", b"x-c"}), ((b"x-c", b"v"),)
    )
    assert not any(name in (b"x-a", b"x-b") for name, _ in out)
    assert [v for n, v in out if n == b"x-c"] == [b"v"]
    assert len([n for n, _ in out if n == b"x-renamed"]) == len(
        [n for n, _ in headers if n == b"x-a"]
    )


def test_a_bucket_allows_its_burst_then_one_request_per_interval():
    now = [100.0]
    bucket = LocalBuckets(interval=1.0, tolerance=3.0, clock=lambda: now[0])
    verdicts = [bucket.take("k") for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts[:3]] == [2, 1, 0]
    assert verdicts[3].retry_after == 1.0
    now[0] += 1.0
    assert bucket.take("k").allowed and not bucket.take("k").allowed
    assert bucket.take("other").allowed


@given(times=st.lists(st.floats(0, 10), min_size=1, max_size=60))
def test_a_bucket_never_admits_more_than_burst_plus_elapsed_over_interval(times: list[float]):
    clock = [0.0]
    bucket = LocalBuckets(interval=0.5, tolerance=2.0, clock=lambda: clock[0])
    admitted = 0
    for moment in sorted(times):
        clock[0] = moment
        admitted += bucket.take("k").allowed
    assert admitted <= 4 + sorted(times)[-1] / 0.5 + 1e-9


header_names = st.sampled_from(
    [
        b"x-user-id",
        b"x_user_id",
        b"x-user_id",
        b"x_user-id",
        b"connection",
        b"authorization",
        b"x-other",
        b"x_other",
        b"accept",
        b"te",
    ]
)
connection_values = st.lists(header_names, max_size=3).map(lambda names: b", ".join(names))


@given(
    headers=st.lists(
        st.one_of(
            st.tuples(header_names.filter(lambda n: n != b"connection"), st.binary(max_size=4)),
            st.tuples(st.just(b"connection"), connection_values),
        ),
        max_size=10,
    )
)
async def test_the_outermost_step_leaves_no_identity_and_nothing_connection_names(
    headers: list[tuple[bytes, bytes]],
):
    from gateway.policies.chain import IdentityStrip

    seen: list[list[tuple[bytes, bytes]]] = []

    async def endpoint(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["headers"])

    strip = IdentityStrip(endpoint, names=(b"x-user-id", b"x_user_id"))
    await strip({"type": "http", "headers": list(headers)}, None, None)  # type: ignore[arg-type]
    named = {
        token.strip()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
        if token.strip()
    }
    # Every spelling that folds into x-user-id once '_' reads as '-' (as WSGI and CGI do).
    dropped = {b"connection"} | named
    kept = [
        (n, v) for n, v in headers if n not in dropped and n.replace(b"_", b"-") != b"x-user-id"
    ]
    assert seen[0] == kept


def test_append_true_adds_a_line_on_a_response_as_envoy_does():
    out = apply_mutations([(b"x-a", b"1")], [option("x-a", "2", append=True)], response=True)
    assert out == [(b"x-a", b"1"), (b"x-a", b"2")]
