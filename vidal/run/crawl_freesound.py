"""`vidal crawl --source freesound`: terms -> Freesound search (filters, ranking) -> audio
downloads, with the video crawl's state, resume and outputs (`vidal/run/crawl.py`):
OUT/crawl.parquet lists the downloaded sounds (`path` = raw/KEY.mp3, title, tags as hashtags,
description, and the Freesound figures as extra columns), a manifest `vidal build --source`
takes as it is (audio-only samples: `probe.audio_only: true`).
"""

from __future__ import annotations

from collections import Counter

from vidal.config import Config, ConfigError
from vidal.crawl import freesound
from vidal.run.crawl import (
    SUMMARY,
    Crawl,
    CrawlOffline,
    CrawlOutcome,
    Progress,
    _stop,
    _term_list,
    check_network,
    whole_failure,
)
from vidal.sample import Sample
from vidal.stages.freesound import FreesoundDownloadStage, FreesoundSearchStage


class FreesoundCrawl(Crawl):
    """The video crawl's state and outputs, with the Freesound search and download stages."""

    def __init__(self, config: Config, out: str, runner, progress: Progress):
        super().__init__(config, out, runner, progress)
        opts = vars(config.crawl.freesound)
        self.search_stage = FreesoundSearchStage(**opts)
        self.download_stage = FreesoundDownloadStage(**opts)

    def use_ray_limiters(self) -> None:
        """One limiter actor for the API host: searches and downloads share its rate."""
        from vidal.crawl.ratelimit import start_ray_limiter

        spec, actor = start_ray_limiter({}, self.search_stage.rate_per_s, 1)
        self.search_stage.rate_limiter = self.download_stage.rate_limiter = spec
        self.actors.append(actor)


class WithFigures:
    """The crawl's inbox, with each candidate's Freesound figures put where they go into
    KEY.json (`extra`) before it joins its shard."""

    def __init__(self, inbox):
        self.inbox = inbox

    def add(self, found) -> None:
        self.inbox.add(map(_with_figures, found))

    def __getattr__(self, name):
        return getattr(self.inbox, name)


def _with_figures(sample: Sample) -> Sample:
    cand = sample.meta["candidate"]
    sample.meta["extra"] = {
        "freesound_id": cand.get("id"),
        "freesound_url": cand.get("page_url"),
        **{f"freesound_{k}": v for k, v in (cand.get("freesound") or {}).items()},
    }
    return sample


def search_failure(term_samples: list[Sample]) -> str | None:
    """One sentence when every search failed, for the same reason (a bad token: 401)."""
    errors = [s.errors.get("search") for s in term_samples]
    if not errors or not all(errors):
        return None
    reasons = Counter(e.split(":", 1)[0] for e in errors)
    if len(reasons) != 1:
        return None
    return f"all {len(errors)} Freesound searches failed: {errors[0]}"


def run_freesound_crawl(
    config: Config,
    out: str,
    terms_file: str | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    max_terms: int | None = None,
    runner=None,
) -> CrawlOutcome:
    from vidal.run.ray_runner import make_runner

    opts = config.crawl.freesound
    problem = opts.check()
    if problem:
        raise ConfigError(problem)
    freesound.token(opts)  # before anything starts: a missing token is one sentence
    progress = Progress(quiet=quiet or not config.runner.progress)
    crawl = FreesoundCrawl(config, out, None, progress)
    term_list = _term_list(config, terms_file, max_terms)
    todo = crawl.unsearched(term_list, retry_failed)
    if todo:
        check_network(opts.api_url, 5.0)
    crawl.runner = runner = runner or make_runner(config.runner)
    try:
        if getattr(runner, "ray", None) is not None:
            crawl.use_ray_limiters()
        inbox = crawl.inbox(lambda: len(term_list) * opts.per_term)
        crawl.search(todo, WithFigures(inbox))
        crawl.download(retry_failed)
        counts = crawl.publish()
    finally:
        _stop(crawl.actors)
        runner.shutdown()
    searched = list(crawl._searched().values())
    counts["filtered_at_search"] = dict(
        sum((Counter(s.fields.get("search", {}).get("filtered", {})) for s in searched), Counter())
    )
    crawl.store.write_json(SUMMARY, counts)
    failure = search_failure(searched) or whole_failure(counts)
    return CrawlOutcome(crawl.store.url, counts, failure)


def dispatch(config: Config, args) -> int:
    import sys

    try:
        outcome = run_freesound_crawl(
            config, args.out, args.terms, args.retry_failed, args.quiet, args.max_terms
        )
    except (CrawlOffline, PermissionError) as exc:
        print(f"vidal: {exc}", file=sys.stderr)
        return 1
    if outcome.failure:
        print(f"vidal: crawl failed: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code
