"""Client address resolution through trusted proxies, and the IP rules judged on it."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from gateway.policies.client_ip import ClientAddress
from gateway.policies.ip_restriction import verdict

TRUSTED = ("10.0.0.0/8", "fd00::/8")
trusted_v4 = st.integers(0, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address((10 << 24) + n)))
public_v4 = st.integers(1, 2**24 - 1).map(lambda n: str(ipaddress.IPv4Address((198 << 24) + n)))
junk = st.text(alphabet="abcxyz0123456789:.[] ", max_size=20)


@given(peer=public_v4, hops=st.lists(st.one_of(trusted_v4, public_v4, junk), max_size=6))
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(peer: str, hops: list[str]):
    forwarded = [", ".join(hops).encode()]
    assert ClientAddress(TRUSTED).resolve(peer, forwarded) == peer


@given(
    spoofed=st.lists(st.one_of(trusted_v4, public_v4, junk), max_size=4),
    client=public_v4,
    proxies=st.lists(trusted_v4, max_size=3),
    peer=trusted_v4,
)
def test_the_rightmost_untrusted_hop_is_the_client(
    spoofed: list[str], client: str, proxies: list[str], peer: str
):
    """Whatever the client prepended, the hop our proxies appended wins."""
    values = [", ".join([*spoofed, client]).encode()]
    if proxies:
        values.append(", ".join(proxies).encode())
    assert ClientAddress(TRUSTED).resolve(peer, values) == client


@given(proxies=st.lists(trusted_v4, min_size=1, max_size=4), peer=trusted_v4)
def test_only_trusted_hops_resolve_to_the_first_one(proxies: list[str], peer: str):
    assert ClientAddress(TRUSTED).resolve(peer, [", ".join(proxies).encode()]) == proxies[0]


def test_no_trusted_proxies_means_the_peer_always():
    assert ClientAddress(()).resolve("10.1.1.1", [b"1.2.3.4"]) == "10.1.1.1"


def test_ports_brackets_and_mapped_addresses_are_understood():
    resolver = ClientAddress(TRUSTED)
    assert resolver.resolve("::ffff:10.0.0.1", [b"203.0.113.7:4711"]) == "203.0.113.7:4711"
    allow = (ipaddress.ip_network("203.0.113.0/24"),)
    assert verdict("203.0.113.7:4711", allow, ()) is None
    assert verdict("[2001:db8::1]:80", allow, ()) == "ip_not_allowed"


@given(address=st.one_of(public_v4, trusted_v4, junk))
def test_deny_wins_and_an_allow_list_refuses_everything_else(address: str):
    allow = (ipaddress.ip_network("10.0.0.0/8"),)
    deny = (ipaddress.ip_network("10.6.0.0/16"),)
    result = verdict(address, allow, deny)
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        assert result == "ip_not_allowed"
        return
    if parsed in deny[0]:
        assert result == "ip_denied"
    elif parsed in allow[0]:
        assert result is None
    else:
        assert result == "ip_not_allowed"
