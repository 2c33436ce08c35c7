"""A global, per-platform rate limit shared by every download of a crawl.

The limiter hands out *reservations* (GCRA, a token bucket expressed as a "theoretical arrival
time"): `reserve(platform)` returns how long the caller must wait before its request may go, and
books the slot, so the limiter itself never sleeps or blocks. That makes one instance cheap to
share: in-process (threads of the local runner) or as a named Ray actor that every task of a Ray
crawl calls — the rate is then global to the crawl, not per worker. `pause(platform, seconds)`
honours a server's Retry-After for everyone at once: a 429 seen by one worker holds back all.

Which implementation a crawl uses is the runner's choice (`vidal/run/crawl.py`); this module only
imports Ray inside the Ray-backed functions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable


class Buckets:
    """Reservation-based token buckets, one per platform. Not thread-safe on its own."""

    def __init__(self, rates: dict[str, float], default_rate: float, burst: int = 1, clock=None):
        self.rates, self.default_rate, self.burst = dict(rates), default_rate, max(1, burst)
        self.clock: Callable[[], float] = clock or time.monotonic
        self.tat: dict[str, float] = {}  # theoretical arrival time of the next request
        self.paused_until: dict[str, float] = {}

    def rate(self, platform: str) -> float:
        return self.rates.get(platform, self.default_rate)

    def reserve(self, platform: str) -> float:
        """Seconds to wait before the next request to `platform`; the slot is booked."""
        now = self.clock()
        rate = self.rate(platform)
        start = max(now, self.paused_until.get(platform, 0.0))
        if rate <= 0:  # no limit configured for this platform
            return start - now
        interval = 1.0 / rate
        tat = max(self.tat.get(platform, now), now)
        start = max(start, tat - (self.burst - 1) * interval)
        self.tat[platform] = max(tat, start) + interval
        return start - now

    def pause(self, platform: str, seconds: float) -> None:
        """Nobody sends to `platform` for `seconds` (a Retry-After, for the whole crawl)."""
        until = self.clock() + max(0.0, seconds)
        self.paused_until[platform] = max(self.paused_until.get(platform, 0.0), until)

    def stats(self) -> dict:
        now = self.clock()
        return {p: max(0.0, t - now) for p, t in self.paused_until.items()}


class LocalLimiter:
    """Buckets behind a lock, shared by the threads of one process."""

    def __init__(self, rates: dict[str, float], default_rate: float, burst: int = 1):
        self.buckets = Buckets(rates, default_rate, burst)
        self.lock = threading.Lock()

    def reserve(self, platform: str) -> float:
        with self.lock:
            return self.buckets.reserve(platform)

    def pause(self, platform: str, seconds: float) -> None:
        with self.lock:
            self.buckets.pause(platform, seconds)


class RayLimiter:
    """Client of a named Ray actor holding the Buckets: one rate for the whole cluster."""

    def __init__(self, actor_name: str):
        import ray

        self.ray = ray
        self.actor = ray.get_actor(actor_name)

    def reserve(self, platform: str) -> float:
        return self.ray.get(self.actor.reserve.remote(platform))

    def pause(self, platform: str, seconds: float) -> None:
        self.ray.get(self.actor.pause.remote(platform, seconds))


_LOCAL: dict[str, LocalLimiter] = {}
_LOCAL_LOCK = threading.Lock()


def connect(spec: str, rates: dict[str, float], default_rate: float, burst: int):
    """The limiter named by `spec`: "local[:name]" (one per process and name) or
    "ray:<actor name>" (an actor started by `start_ray_limiter`)."""
    kind, _, name = spec.partition(":")
    if kind == "ray":
        return RayLimiter(name)
    if kind != "local":
        raise ValueError(f"unknown rate limiter {spec!r}: use 'local' or 'ray:<actor name>'")
    with _LOCAL_LOCK:
        key = f"{name}|{sorted(rates.items())}|{default_rate}|{burst}"
        if key not in _LOCAL:
            _LOCAL[key] = LocalLimiter(rates, default_rate, burst)
        return _LOCAL[key]


def start_ray_limiter(rates: dict[str, float], default_rate: float, burst: int):
    """Start the crawl's limiter actor; returns (spec for `connect`, actor handle). The caller
    keeps the handle for the life of the crawl (the actor dies with it)."""
    import ray

    name = f"vidal-ratelimit-{uuid.uuid4().hex[:12]}"
    actor_cls = ray.remote(num_cpus=0, max_concurrency=1)(Buckets)
    handle = actor_cls.options(name=name).remote(dict(rates), default_rate, burst)
    ray.get(handle.stats.remote())  # wait until it is up, so workers can find it by name
    return f"ray:{name}", handle
