"""The search stage: one sample per search term in, the term's candidates recorded on it.

A stage must pass every sample on, so a term does not turn into its candidates here: the
candidates go into `fields["search"]["candidates"]` and the crawl job (`vidal/run/crawl.py`)
de-duplicates them across terms into candidate samples. A failed search records
`errors["search"] = "<taxonomy reason>: <message>"` on the term.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vidal.crawl import ratelimit, search, taxonomy
from vidal.crawl.ytdlp import base_params
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext


@dataclass
class SearchStage(Stage):
    name: ClassVar[str] = "search"

    # yt-dlp search: {n} results per term, {term} as typed or {term_q} URL-quoted. The default
    # asks YouTube for Shorts; any yt-dlp search prefix or search-page URL works, e.g.
    # "https://www.youtube.com/results?search_query={term_q}&sp=EgQQARgB" (videos < 4 min).
    query: str = "ytsearch{n}:{term} #shorts"
    per_term: int = 20
    full_info: bool = False  # fetch each result's full info dict now (one request per result)
    socket_timeout: float = 20.0
    attempts: int = 3  # tries per term for rate_limited / network failures
    backoff_base: float = 2.0
    rate_per_s: float = 0.5  # searches per second for the whole crawl
    check_url: str | None = "https://www.youtube.com"  # reached before searching; None: no check
    check_timeout: float = 3.0
    ytdlp: dict[str, Any] = field(default_factory=dict)  # cookies, proxy, ... verbatim
    rate_limiter: str = "local"  # set by the crawl job: "ray:<actor>" on a Ray runner
    num_cpus: float = 0.25
    batch_size: int = 4

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        self.limiter = ratelimit.connect(self.rate_limiter, {}, self.rate_per_s, 1)

    def process(self, sample: Sample) -> None:
        term = sample.meta["term"]
        found, failure, tries = self._with_retries(lambda: self._search(term))
        sample.fields["search"] = {"candidates": found or [], "attempts": tries}
        if failure:
            sample.fail(self.name, failure.reason, failure.message)

    def _search(self, term: str) -> list[dict]:
        params = search.search_params(self.per_term, self.socket_timeout, self.ytdlp)
        found = search.search(term, self.query, self.per_term, params)
        if self.full_info:
            found = [self._full(c) for c in found]
        return found

    def _full(self, cand: dict) -> dict:
        """The candidate with its full info dict's fields; kept as it was if that fails."""
        try:
            info = search.extract_info(cand["url"], base_params(self.socket_timeout, self.ytdlp))
        except Exception as exc:  # a video that fails here is retried by the download
            cand["full_info_error"] = str(taxonomy.classify(exc))
            return cand
        return search.merge(cand, search.candidate(info, cand.get("term")))

    def _with_retries(self, call):
        failure = None
        for attempt in range(1, max(1, self.attempts) + 1):
            time.sleep(max(0.0, self.limiter.reserve("search")))
            try:
                return call(), None, attempt
            except Exception as exc:  # every yt-dlp failure becomes a taxonomy entry
                failure = taxonomy.classify(exc)
            if failure.retry_after is not None:
                self.limiter.pause("search", failure.retry_after)
            if not failure.retryable or attempt >= self.attempts:
                break
            delay = self.backoff_base * 2 ** (attempt - 1)
            time.sleep(max(delay * random.uniform(0.5, 1.0), failure.retry_after or 0.0))
        return None, failure, attempt
