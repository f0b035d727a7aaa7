"""The bounded maps behind the token, allow and revocation caches."""

from __future__ import annotations

import pytest

from authz.lru import LRU, ExpiringLRU


def test_the_least_recently_used_entry_goes_first():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c"), len(cache)) == (1, 3, 2)


def test_putting_an_existing_key_refreshes_it_without_growing():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), len(cache)) == (10, None, 2)


def test_falsy_values_are_values():
    cache: LRU[str, object] = LRU(4)
    cache.put("no", False)
    cache.put("zero", 0.0)
    assert cache.get("no") is False and cache.get("zero") == 0.0


def test_pop_and_clear_forget_and_a_missing_key_is_fine():
    cache: LRU[str, int] = LRU(4)
    cache.put("a", 1)
    cache.pop("a")
    cache.pop("never")
    cache.put("b", 2)
    cache.clear()
    assert (cache.get("a"), cache.get("b"), len(cache)) == (None, None, 0)


def test_a_size_below_one_is_refused():
    with pytest.raises(ValueError, match="maxsize"):
        LRU(0)


def test_entries_expire_ttl_seconds_after_they_were_put():
    now = [100.0]
    cache: ExpiringLRU[str, bool] = ExpiringLRU(8, ttl=60, timer=lambda: now[0])
    cache.put("a", False)
    now[0] = 159.9
    assert cache.get("a") is False  # reading does not extend the lifetime
    now[0] = 160.0
    assert cache.get("a") is None
    assert len(cache) == 0  # an expired entry is dropped when it is read


def test_expiring_entries_are_also_bounded_by_recency():
    cache: ExpiringLRU[str, int] = ExpiringLRU(1, ttl=60)
    cache.put("a", 1)
    cache.put("b", 2)
    assert (cache.get("a"), cache.get("b")) == (None, 2)
    cache.pop("b")
    assert cache.get("b") is None
