"""The Freesound crawl's two stages, shaped like the video crawl's `search` and `download` (same
names, fields and error format, so the crawl job keeps one state and one set of outputs):

- `FreesoundSearchStage`: one term in; its sounds searched (pages followed), the paper's filters
  applied, the rest ranked by sentence-transformers similarity of the term with title + tags +
  description; the best `per_term` go into `fields["search"]["candidates"]`, and the counts of
  filtered sounds by reason into `fields["search"]["filtered"]`.
- `FreesoundDownloadStage`: one candidate in; its audio (preview or original) downloaded with
  the rate limit and retries, checked to decode in full as audio, stored under `raw/`.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from vidal.crawl import freesound, ratelimit, taxonomy
from vidal.crawl.freesound import FreesoundOptions, HTTPFailure
from vidal.crawl.taxonomy import Failure
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

RAW_DIR = "raw"


class _Retrying:
    """Retries with exponential backoff and jitter for rate_limited / network failures; a
    Retry-After pauses the platform for every worker."""

    def with_retries(self, call):
        failure, attempt = None, 0
        for attempt in range(1, max(1, self.attempts) + 1):
            try:
                return call(), None, attempt
            except HTTPFailure as exc:
                failure = exc.failure
            if failure.retry_after is not None:
                self.limiter.pause(freesound.PLATFORM, min(failure.retry_after, 900.0))
            if not failure.retryable or attempt >= self.attempts:
                break
            delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
            time.sleep(max(delay * random.uniform(0.5, 1.0), 0.0))
        return None, failure, attempt

    def wait(self) -> None:
        time.sleep(max(0.0, self.limiter.reserve(freesound.PLATFORM)))


@dataclass
class FreesoundSearchStage(Stage, FreesoundOptions, _Retrying):
    name: ClassVar[str] = "search"

    rate_limiter: str = "local"  # set by the crawl job: "ray:<actor>" on a Ray runner
    num_cpus: float = 0.5
    batch_size: int = 4

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        self.limiter = ratelimit.connect(self.rate_limiter, {}, self.rate_per_s, 1)
        self.secret = freesound.token(self)

    def process(self, sample: Sample) -> None:
        term = sample.meta["term"]
        found, failure, tries = self.with_retries(
            lambda: freesound.search_pages(term, self, self.secret, self.wait)
        )
        kept, filtered = self.select(term, found or [])
        sample.fields["search"] = {
            "candidates": kept,
            "attempts": tries,
            "results": len(found or []),
            "filtered": dict(filtered.most_common()),
        }
        if failure:
            sample.fail(self.name, failure.reason, failure.message)

    def select(self, term: str, sounds: list[dict]) -> tuple[list[dict], Counter]:
        """The paper's filters, then the best `per_term` by similarity to the term."""
        from vidal.models import text_embed

        filtered: Counter = Counter()
        passing = []
        for sound in {str(s["id"]): s for s in sounds}.values():
            reason = freesound.filter_reason(sound, self)
            if reason is None and not freesound.audio_url(sound, self):
                reason = "no_audio_url"
            if reason:
                filtered[reason.split(":", 1)[0]] += 1
            else:
                passing.append(sound)
        texts = [freesound.ranking_text(s) for s in passing]
        scores = text_embed.similarity(term, texts, self.text_model)
        ranked = sorted(zip(scores.tolist(), passing, strict=True), key=lambda p: -p[0])
        kept = []
        for score, sound in ranked:
            if score < self.min_similarity:
                filtered["low_similarity"] += 1
            elif len(kept) < self.per_term:
                kept.append(freesound.candidate(sound, term, score, self))
        return kept, filtered


@dataclass
class FreesoundDownloadStage(Stage, FreesoundOptions, _Retrying):
    name: ClassVar[str] = "download"

    rate_limiter: str = "local"
    num_cpus: float = 0.5
    batch_size: int = 8

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        self.limiter = ratelimit.connect(self.rate_limiter, {}, self.rate_per_s, 1)
        self.secret = freesound.token(self)
        self.bearer = os.environ.get(self.oauth_token_env, "").strip() or None

    def process(self, sample: Sample) -> None:
        cand = sample.meta.get("candidate", {})
        url = sample.source
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            sample.fail(self.name, taxonomy.OTHER, f"refused URL {url[:80]!r}")
            return
        workdir = tempfile.mkdtemp(prefix="vidal-freesound-")
        try:
            got, failure, tries = self.with_retries(lambda: self._fetch(url, cand, workdir))
            sample.fields[self.name] = {"attempts": tries}
            if failure:
                sample.fail(self.name, failure.reason, failure.message)
                return
            local, size, info = got
            rel = f"{RAW_DIR}/{sample.key}{_suffix(url)}"
            with self.store.staging(rel) as tmp:
                shutil.move(local, tmp)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        sample.fields[self.name].update(path=rel, bytes=size, ext=_suffix(url), probe=info)

    def _fetch(self, url: str, cand: dict, workdir: str) -> tuple[str, int, dict]:
        """One attempt: download within the size cap, then check the audio decodes in full."""
        self.wait()
        original = self.audio == "original"
        secret, auth = (self.bearer, "Bearer") if original else (self.secret, "Token")
        local = os.path.join(workdir, "audio" + _suffix(url))
        with freesound.request(url, self, secret, auth) as response, open(local, "wb") as out:
            expected = response.headers.get("Content-Length")
            size = _copy_capped(response, out, self.max_bytes)
        if expected is not None and size != int(expected):
            raise HTTPFailure(
                Failure(taxonomy.NETWORK, f"truncated: {size} of {expected} bytes arrived")
            )
        return local, size, _check_audio(local, cand.get("duration"))


def _copy_capped(response, out, cap: int) -> int:
    import http.client

    size = 0
    try:
        while chunk := response.read(1 << 16):
            size += len(chunk)
            if size > cap:
                raise HTTPFailure(Failure(taxonomy.TOO_LARGE, f"more than {cap} bytes"))
            out.write(chunk)
    except (OSError, http.client.HTTPException) as exc:
        raise HTTPFailure(Failure(taxonomy.NETWORK, f"truncated: {exc}")) from exc
    return size


def _check_audio(path: str, expected: float | None) -> dict:
    """Decode every audio frame (PyAV); a file that is not audio, or whose audio stops well short
    of the duration the API gave (a cut transfer), fails the attempt."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise HTTPFailure(Failure(taxonomy.NOT_AUDIO, "the file holds no audio stream"))
            stream = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(stream))
            rate = stream.codec_context.sample_rate or 1
    except av.error.FFmpegError as exc:
        raise HTTPFailure(Failure(taxonomy.NOT_AUDIO, f"does not decode: {exc}")) from exc
    seconds = samples / rate
    if expected and seconds < 0.9 * float(expected) - 0.1:
        raise HTTPFailure(
            Failure(taxonomy.NETWORK, f"truncated: {seconds:.2f}s of {float(expected):.2f}s")
        )
    return {"duration": round(seconds, 4), "has_audio": True, "has_video": False}


def _suffix(url: str) -> str:
    ext = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lower()
    return ext if ext in (".mp3", ".ogg", ".wav", ".flac", ".aiff", ".aif", ".m4a") else ".mp3"
