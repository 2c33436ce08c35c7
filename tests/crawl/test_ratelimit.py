"""The rate limiter: reservations spaced by the rate, bursts, and Retry-After pauses."""

from __future__ import annotations

import threading

import pytest

from vidal.crawl.download import DownloadOptions, backoff, pick_proxy
from vidal.crawl.ratelimit import Buckets, LocalLimiter, connect


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_reservations_are_spaced_by_the_rate_after_the_burst():
    clock = Clock()
    buckets = Buckets({}, default_rate=2.0, burst=3, clock=clock)
    waits = [buckets.reserve("youtube") for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5])
    clock.now += 10  # idle time refills the burst, but not beyond it
    assert [buckets.reserve("youtube") for _ in range(4)] == pytest.approx([0, 0, 0, 0.5])


def test_platforms_have_their_own_buckets_and_rates():
    buckets = Buckets({"tiktok": 1.0}, default_rate=10.0, clock=Clock())
    assert [buckets.reserve("tiktok") for _ in range(2)] == pytest.approx([0, 1.0])
    assert [buckets.reserve("youtube") for _ in range(2)] == pytest.approx([0, 0.1])


def test_a_pause_holds_everyone_back_until_it_ends():
    clock = Clock()
    buckets = Buckets({}, default_rate=0, clock=clock)  # 0 = no rate limit
    assert buckets.reserve("youtube") == 0
    buckets.pause("youtube", 30)
    assert buckets.reserve("youtube") == pytest.approx(30)
    assert buckets.reserve("tiktok") == 0
    clock.now += 31
    assert buckets.reserve("youtube") == 0


def test_local_limiter_is_shared_by_threads_and_by_name():
    limiter = LocalLimiter({}, default_rate=100.0, burst=1)
    limiter.buckets.clock = Clock()  # frozen time: the waits show the booked slots exactly
    waits: list[float] = []
    threads = [
        threading.Thread(target=lambda: waits.append(limiter.reserve("p"))) for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 slots booked 10 ms apart, whatever the thread order: no two share a slot
    assert sorted(waits) == pytest.approx([i * 0.01 for i in range(20)])
    assert connect("local:a", {}, 1.0, 1) is connect("local:a", {}, 1.0, 1)
    assert connect("local:a", {}, 1.0, 1) is not connect("local:b", {}, 1.0, 1)
    with pytest.raises(ValueError, match="unknown rate limiter"):
        connect("redis:x", {}, 1.0, 1)


def test_backoff_grows_with_jitter_and_honours_retry_after():
    opts = DownloadOptions(backoff_base=1.0, backoff_max=8.0, max_retry_after=60.0)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 8.0)):
        assert base / 2 <= backoff(attempt, opts, None) <= base
    assert backoff(1, opts, retry_after=30.0) == 30.0
    assert backoff(1, opts, retry_after=3600.0) == 60.0  # a hostile Retry-After is capped


def test_proxies_rotate_on_retries():
    proxies = ["http://a:1", "http://b:1", "http://c:1"]
    picked = [pick_proxy(proxies, "key", attempt) for attempt in (1, 2, 3)]
    assert sorted(picked) == proxies
    assert pick_proxy([], "key", 1) is None
