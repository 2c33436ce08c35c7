"""The `vidal terms` and `vidal crawl` jobs: terms -> search -> text filter -> download.

The search and download stages run on the configured runner (local or Ray) like every other
stage; this module plans their work and writes the crawl's outputs. The candidates live in a
sharded store (`vidal.run.crawl_shards`: `work/candidates/<shard>.parquet`, a candidate's
shard is `shard_of(key, N)`), so the driver holds O(shards) state:

  OUT/candidates.parquet   every candidate, kept or not: status, reason, metadata, the term(s)
                           that found it, and the candidate's Sample record (redacted)
  OUT/crawl.parquet        one row per downloaded clip: `vidal build --source` takes it as it is
                           (`path` relative to OUT, title, hashtags, extra columns)
  OUT/raw/KEY.EXT          the media
  OUT/crawl.json           counts by status and reason, bytes, seconds
  OUT/work/crawl/search.parquet   one row per searched term (resume of the search step)

Resume: a rerun skips terms already searched and shards already crawled (their marker matches
the text filters); inside a shard it skips candidates already downloaded (whose file is still
there) and candidates that failed; `--retry-failed` reruns the shards holding retryable
failures (rate_limited, network) and retries only those. Text filters are re-applied to every
candidate not yet downloaded, so a changed filter takes effect on the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from vidal.config import Config, ConfigError
from vidal.crawl import taxonomy, terms
from vidal.crawl.download import check_options, direct_allowed
from vidal.crawl.filters import TextFilter, apply_filter
from vidal.crawl.search import FIELDS, candidate_key
from vidal.io.store import Store
from vidal.net import redact, redact_text, redact_values
from vidal.run.execute import ready_stage
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.download import RAW_DIR
from vidal.text import parse_hashtags

MANIFEST = "crawl.parquet"
CANDIDATES = "candidates.parquet"
SEARCHES = "work/crawl/search.parquet"
INGESTED = "work/crawl/ingested.json"  # the URL list whose rows are all in the shards
OLD_STATE = "work/crawl/candidates.parquet"  # a pre-sharding crawl's state, moved on resume
SUMMARY = "crawl.json"
FILTER = "filter"
DOWNLOAD = "download"


class CrawlOffline(Exception):
    """The search host cannot be reached: the crawl stops before it starts."""


@dataclass
class CrawlOutcome:
    out: str
    counts: dict
    failure: str | None = None  # one sentence when the crawl failed as a whole

    @property
    def exit_code(self) -> int:
        return 1 if self.failure else 0


# -- network check ---------------------------------------------------------------------------


def check_network(url: str, timeout: float) -> None:
    """Resolve and connect to the search host within `timeout`, or raise CrawlOffline."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addr = _resolve(host, port, timeout)
        with socket.create_connection(addr[:2], timeout=timeout):
            pass
    except (OSError, TimeoutError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CrawlOffline(
            f"crawl needs the network, but {host}:{port} cannot be reached ({why}); run it "
            "where the internet is reachable, or pass --urls FILE to download a list of URLs"
        ) from exc


def _resolve(host: str, port: int, timeout: float) -> tuple:
    """getaddrinfo with a timeout (it has none of its own): in a daemon thread."""
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4])
        except OSError as exc:
            result.append(exc)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        raise TimeoutError(f"name lookup took more than {timeout:g}s")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


# -- terms -----------------------------------------------------------------------------------


def run_terms(config: Config, out_path: str) -> int:
    provenance: dict = {}
    rows = terms.build_terms(config.crawl.terms, provenance)
    terms.write_terms(rows, out_path, provenance)
    counts = Counter(r["kind"] for r in rows) + Counter(r["pos"] for r in rows)
    print(
        f"wrote {len(rows)} terms to {out_path} ({', '.join(f'{v} {k}' for k, v in counts.items())}"
        f"; sources: {', '.join(provenance)})"
    )
    return 0


# -- candidates ------------------------------------------------------------------------------


def term_sample(term: str) -> Sample:
    digest = hashlib.sha1(term.encode("utf-8")).hexdigest()[:12]
    return Sample(key=f"term-{digest}", shard=0, source="", meta={"term": term})


def candidate_sample(cand: dict, extra: dict | None = None) -> Sample:
    """A candidate as a Sample: key = sanitised platform+id, the fields under meta."""
    key = candidate_key(cand["platform"] or "unknown", cand["id"] or cand["url"] or "")
    meta = {"candidate": cand, "terms": [cand["term"]] if cand.get("term") else []}
    if extra:
        meta["extra"] = extra
    return Sample(key=key, shard=0, source=cand.get("url") or "", meta=meta)


def candidates_of(term: Sample):
    """The candidate samples a searched term found (duplicates meet in their shard)."""
    for cand in term.fields.get("search", {}).get("candidates", []):
        yield candidate_sample(cand)


def iter_url_rows(path: str, batch_rows: int = 65_536):
    """Rows of a csv/parquet/jsonl URL list (a `url` column; other columns are kept), read a
    batch at a time: a list of 10^7 URLs is never in memory whole."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        reader = pyarrow.parquet.ParquetFile(p)
        names, batches = reader.schema_arrow.names, reader.iter_batches(batch_rows)
    else:
        opened = pyarrow.csv.open_csv(p) if suffix == ".csv" else pyarrow.json.open_json(p)
        names, batches = opened.schema.names, opened
    if "url" not in names:
        raise ValueError(f"{path} needs a 'url' column; it has {', '.join(names)}")
    for batch in batches:
        yield from batch.to_pylist()


def count_url_rows(path: str) -> int:
    """Rows of a URL list without reading them: parquet metadata, or lines of text."""
    import pyarrow.parquet

    if Path(path).suffix.lower() == ".parquet":
        return pyarrow.parquet.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def read_url_list(path: str) -> list[dict]:
    return list(iter_url_rows(path))


def candidates_from_urls(path: str, allow_local: bool) -> list[Sample]:
    """The list's candidates, de-duplicated by key (small lists; the crawl streams them)."""
    found: dict[str, Sample] = {}
    for sample in iter_url_candidates(path, allow_local):
        found.setdefault(sample.key, sample)
    return list(found.values())


def iter_url_candidates(path: str, allow_local: bool):
    """One candidate per row; the platform is "url" and the id the URL (or the row's id).
    Columns named like candidate fields (title, duration, license, ...) fill them; the others
    are kept as extra columns."""
    base = Path(path).resolve().parent
    for row in iter_url_rows(path):
        url = _local_url(str(row.get("url") or "").strip(), base, allow_local)
        cand = dict.fromkeys(FIELDS)
        cand.update({k: v for k, v in row.items() if k in cand and v is not None})
        cand.update(id=str(row.get("id") or url), platform="url", url=url, term=None)
        cand.update(title=str(row.get("title") or row.get("caption") or ""), tags=[])
        cand.update(hashtags=parse_hashtags(row.get("hashtags")))
        extra = {k: v for k, v in row.items() if k not in cand and k != "caption"}
        yield candidate_sample(cand, extra)


def _local_url(url: str, base: Path, allow_local: bool) -> str:
    """With --allow-local, a plain path becomes a file:// URL (relative to the list's folder)."""
    if not allow_local or "://" in url or not url:
        return url
    return (base / url).resolve().as_uri()


# -- filters and selection -------------------------------------------------------------------


def refilter(sample: Sample, rule: TextFilter) -> None:
    """Apply the text filters to a candidate that is not downloaded yet (again on a rerun)."""
    cand = sample.meta["candidate"]
    result = apply_filter(
        rule, cand.get("title") or "", cand.get("hashtags") or [], cand.get("duration")
    )
    sample.meta.update(title=result.title, hashtags=result.hashtags)
    sample.meta["description"] = cand.get("description")
    dropped = result.dropped
    if dropped and _bare_url(cand) and not dropped.startswith("too_long"):
        dropped = None  # a URL-list row without a title: its title comes with the download
    sample.dropped, sample.dropped_by = (dropped, FILTER) if dropped else (None, None)


def _bare_url(cand: dict) -> bool:
    return cand.get("platform") == "url" and not cand.get("title")


def clean_downloaded_text(sample: Sample, rule: TextFilter) -> None:
    """A URL-list clip's title and hashtags from the page yt-dlp read (junk stripped)."""
    cand = sample.meta["candidate"]
    if not sample.meta.get("title") and cand.get("title"):
        result = apply_filter(rule, cand["title"], cand.get("hashtags") or [], None)
        sample.meta.update(title=result.title, hashtags=result.hashtags)


def downloaded(sample: Sample, store: Store) -> bool:
    path = sample.fields.get(DOWNLOAD, {}).get("path")
    return bool(path) and not sample.errors and store.exists(path)


def retryable(sample: Sample) -> bool:
    message = sample.errors.get(DOWNLOAD)
    return bool(message) and message.split(":", 1)[0] in taxonomy.RETRYABLE


def select(state: dict[str, Sample], store: Store, rule: TextFilter, retry_failed: bool):
    """Re-filter what is not downloaded and return the candidates to download now."""
    todo = []
    for sample in state.values():
        if downloaded(sample, store):
            continue
        if sample.errors and not (retry_failed and retryable(sample)):
            continue
        sample.errors.pop(DOWNLOAD, None)
        sample.fields.pop(DOWNLOAD, None)
        refilter(sample, rule)
        if sample.ok:
            todo.append(sample)
    return todo


# -- the job ---------------------------------------------------------------------------------


@dataclass
class Progress:
    quiet: bool = False
    started: float = field(default_factory=time.time)
    bytes: int = 0

    def say(self, text: str) -> None:
        if not self.quiet:
            from rich.console import Console

            Console(stderr=True, highlight=False).print(text)

    def rate(self) -> float:
        return self.bytes / 1e6 / max(1e-6, time.time() - self.started)


class Crawl:
    def __init__(self, config: Config, out: str, runner, progress: Progress):
        self.config, self.runner, self.progress = config, runner, progress
        self.store = Store(out)
        private = config.source.allow_private_addresses  # the URL policy's switch (vidal.net)
        self.ctx = StageContext(out=self.store.url, allow_private_addresses=private)
        self.search_stage = dataclasses.replace(config.crawl.search)
        self.download_stage = dataclasses.replace(config.crawl.download)
        self.shards = 0  # fixed by `inbox()`: the first run's count
        self.actors: list = []

    def use_ray_limiters(self) -> None:
        """On Ray, the rate limits live in named actors that every task shares."""
        from vidal.crawl.ratelimit import start_ray_limiter

        s, d = self.search_stage, self.download_stage
        s.rate_limiter, actor = start_ray_limiter({}, s.rate_per_s, 1)
        self.actors.append(actor)
        d.rate_limiter, actor = start_ray_limiter(dict(d.platform_rates), d.rate_per_s, d.burst)
        self.actors.append(actor)

    def inbox(self, expected):
        """Where new candidates go (by shard); moves a pre-sharding crawl's state there.
        `expected()`: how many candidates the first run expects (sizes the shard count)."""
        from vidal.run import crawl_shards  # it builds on this module's candidate functions

        wanted = self.config.crawl.shards
        self.shards = crawl_shards.num_shards(self.store, wanted, expected)
        inbox = crawl_shards.Inbox(self.store, self.shards)
        if self.store.exists(OLD_STATE):
            records = self.store.read_table(OLD_STATE).column("record").to_pylist()
            inbox.add(map(Sample.from_json, records))
            inbox.flush()
            self.store.remove(OLD_STATE)
        return inbox

    def run_stage(self, stage, samples: list[Sample]) -> list[Sample]:
        return self.runner.map_samples(stage, self.ctx, samples) if samples else []

    # search ------------------------------------------------------------------------------
    def unsearched(self, term_list: list[str], retry_failed: bool) -> list[Sample]:
        """Terms with no search result yet (and, with --retry-failed, retryable failures)."""
        done = self._searched()
        todo = []
        for term in term_list:
            sample = term_sample(term)
            before = done.get(sample.key)
            if before is None or (retry_failed and _retryable_search(before)):
                todo.append(sample)
        return todo

    def search(self, todo: list[Sample], inbox) -> None:
        """Run the search stage over `todo` in waves; each wave's candidates go to the inbox
        before its terms are recorded as searched (a killed crawl searches them again)."""
        done = self._searched()
        wave = max(1, self.config.crawl.wave)
        for start in range(0, len(todo), wave):
            for term in self.run_stage(self.search_stage, todo[start : start + wave]):
                inbox.add(candidates_of(term))
                done[term.key] = _without_candidates(term)
            inbox.flush()
            self._save_searches(done)
            self.progress.say(f"searched {min(start + wave, len(todo))}/{len(todo)} new terms")

    def _searched(self) -> dict[str, Sample]:
        if not self.store.exists(SEARCHES):
            return {}
        table = self.store.read_table(SEARCHES)
        return {s.key: s for s in map(Sample.from_json, table.column("record").to_pylist())}

    def _save_searches(self, done: dict[str, Sample]) -> None:
        keys = sorted(done)
        table = pa.table(
            {
                "key": keys,
                "term": [done[k].meta["term"] for k in keys],
                "error": [done[k].first_error for k in keys],
                "candidates": [_found(done[k]) for k in keys],
                "record": [done[k].to_json() for k in keys],
            }
        )
        self.store.write_table(SEARCHES, table)

    # URL lists ---------------------------------------------------------------------------
    def ingest_urls(self, urls_file: str, allow_local: bool, inbox) -> None:
        """The list's rows into the inbox, streamed; skipped when this very list (same path,
        size and time) was ingested completely before."""
        stat = Path(urls_file).stat()
        listed = {"list": str(Path(urls_file).resolve()), "size": stat.st_size}
        listed.update(mtime_ns=stat.st_mtime_ns, allow_local=allow_local)
        if self.store.read_json(INGESTED) == listed:
            return
        inbox.add(iter_url_candidates(urls_file, allow_local))
        inbox.flush()
        # the note vouches for the inbox's part files (written without fsync, up to one per
        # shard and flush): they reach the disk first, or a power loss could keep the note and
        # lose rows no later run would read again. (A lost note only has the list read again,
        # its rows merging into the candidates they already are.)
        self.store.sync()
        self.store.write_json(INGESTED, listed)
        self.progress.say(f"{inbox.added} URL rows read from {urls_file}")

    # downloads and outputs ----------------------------------------------------------------
    def download(self, retry_failed: bool) -> None:
        """Every shard with work runs as one task; done shards are skipped."""
        from vidal.run import crawl_shards

        shard_job = crawl_shards.ShardJob(
            self.download_stage,
            self.config.crawl.filter,
            self.ctx,
            retry_failed,
            self.config.crawl.wave,
        )
        fingerprint = shard_job.fingerprint
        if self.store.is_local:  # a killed run's downloads that were never committed
            self.store.sweep_temp(RAW_DIR)
        todo = crawl_shards.shards_to_run(self.store, self.shards, fingerprint, retry_failed)
        self.progress.say(f"{len(todo)} of {self.shards} shards to crawl")
        items = [(self.store.url, shard, shard_job) for shard in todo]
        finished = [0]

        every = max(1, len(todo) // 20)  # about twenty lines, however many shards

        def tick(n: int) -> None:
            finished[0] += n
            if finished[0] % every == 0 or finished[0] == len(todo):
                self.progress.say(f"shards {finished[0]}/{len(todo)} done")

        for marker in self._map_shards(crawl_shards.crawl_shard, items, tick):
            self.progress.bytes += marker.get("bytes_now") or 0

    def _map_shards(self, fn, items: list, tick) -> list:
        """Shard tasks on the runner; in-process, a few at once, so that small shards still
        keep the download stage's threads busy (one process is one worker: the stage's
        thread pool bounds the downloads whatever the number of shards in flight)."""
        if getattr(self.runner, "ray", None) is not None or len(items) <= 1:
            return self.runner.map_shards(fn, items, tick)
        from concurrent.futures import ThreadPoolExecutor

        stage = ready_stage(self.download_stage, self.ctx)  # set up once, before the threads
        stage.pool()  # share it: one thread pool of downloads for the whole process
        with ThreadPoolExecutor(max(1, self.download_stage.threads)) as pool:
            futures = [pool.submit(fn, *item) for item in items]
            results = []
            for future in futures:
                results.append(future.result())
                tick(1)
        return results

    def publish(self) -> dict:
        """crawl.parquet, candidates.parquet and crawl.json from the shards, one at a time."""
        from vidal.run import crawl_shards

        store, shards = self.store, self.shards
        crawl_shards.publish(store, shards, "manifest", MANIFEST, _empty_manifest())
        crawl_shards.publish(store, shards, "candidates", CANDIDATES, _empty_candidates())
        counts = crawl_shards.total_counts(store, shards)
        store.write_json(SUMMARY, counts)
        self.progress.say(self._done_line(counts))
        return counts

    def _done_line(self, counts: dict) -> str:
        dropped = ", ".join(f"{k} {v}" for k, v in counts["filtered_by_reason"].items())
        failed = ", ".join(f"{k} {v}" for k, v in counts["failed_by_reason"].items())
        return (
            f"{counts['candidates']} candidates; filtered out {counts['filtered']} "
            f"({dropped or 'none'}); {counts['downloaded']} downloaded; failed by reason: "
            f"{failed or 'none'}; {self.progress.bytes / 1e6:.1f} MB this run at "
            f"{self.progress.rate():.2f} MB/s"
        )


def _without_candidates(term: Sample) -> Sample:
    """A searched term as recorded: its candidates are in the shards, only their count here."""
    found = term.fields.get("search", {})
    if "candidates" in found:
        term.fields["search"] = {**found, "found": len(found["candidates"]), "candidates": []}
    return term


def _found(term: Sample) -> int:
    found = term.fields.get("search", {})
    return found.get("found", len(found.get("candidates", [])))


def _retryable_search(sample: Sample) -> bool:
    message = sample.errors.get("search") or ""
    return message.split(":", 1)[0] in taxonomy.RETRYABLE


def _slug(reason: str | None) -> str:
    return (reason or "").split(":", 1)[0]


def summarise(samples) -> dict:
    """Counts for crawl.json and the progress lines."""
    samples = list(samples)
    failed = Counter(_slug(s.errors.get(DOWNLOAD)) for s in samples if s.errors.get(DOWNLOAD))
    dropped = Counter(_slug(s.dropped) for s in samples if s.dropped)
    done = [s for s in samples if s.fields.get(DOWNLOAD, {}).get("path") and not s.errors]
    return {
        "candidates": len(samples),
        "filtered": sum(dropped.values()),
        "filtered_by_reason": dict(dropped.most_common()),
        "downloaded": len(done),
        "failed": sum(failed.values()),
        "failed_by_reason": dict(failed.most_common()),
        "bytes": sum(s.fields[DOWNLOAD].get("bytes") or 0 for s in done),
    }


def status_of(sample: Sample, store: Store) -> str:
    if sample.errors:
        return "failed"
    if sample.dropped:
        return "dropped"
    return "downloaded" if downloaded(sample, store) else "pending"


def candidate_row(sample: Sample, store: Store) -> dict:
    """One row of candidates.parquet: status, reason, the candidate's fields, the record."""
    cand = sample.meta.get("candidate", {})
    dl = sample.fields.get(DOWNLOAD, {})
    error = sample.errors.get(DOWNLOAD)
    row = {
        "key": sample.key,
        "status": status_of(sample, store),
        "reason": _slug(error) if error else _slug(sample.dropped) or None,
        "error": redact_text(error),
        "dropped": sample.dropped,
        "attempts": dl.get("attempts"),
        "path": dl.get("path"),
        "bytes": dl.get("bytes"),
        **{k: cand.get(k) for k in FIELDS if k not in ("tags", "hashtags", "title")},
        "url": redact(cand.get("url")),
        "title": sample.meta.get("title", cand.get("title")),
        "title_raw": cand.get("title"),
        "hashtags": sample.meta.get("hashtags", cand.get("hashtags")) or [],
        "keywords": cand.get("tags") or [],
        "terms": sample.meta.get("terms", []),
        "extra": json.dumps(
            redact_values(sample.meta.get("extra") or {}), ensure_ascii=False, default=str
        ),
        "record": redact_text(sample.to_json()),  # the real one is in STATE
    }
    return row


def build_row(sample: Sample) -> dict:
    """One row of crawl.parquet, in the manifest format `vidal build --source` reads."""
    cand = sample.meta.get("candidate", {})
    dl = sample.fields[DOWNLOAD]
    row = {
        "id": sample.key,
        "path": dl["path"],  # relative to the manifest's folder (the crawl's output)
        "title": sample.meta.get("title") or cand.get("title") or "",
        "hashtags": sample.meta.get("hashtags") or [],
        "description": cand.get("description"),
        "webpage_url": redact(cand.get("url")),
        "platform": cand.get("platform"),
        "video_id": cand.get("id"),
        "title_raw": cand.get("title"),
        "term": cand.get("term"),
        "bytes": dl.get("bytes"),
    }
    for name in ("duration", "width", "height", "fps", "upload_date", "channel", "license"):
        row[name] = cand.get(name)
    for name in ("view_count", "like_count", "language"):
        row[name] = cand.get(name)
    for name, value in redact_values(sample.meta.get("extra") or {}).items():
        row[name if name not in row else f"extra_{name}"] = value
    return row


def _table(rows: list[dict]) -> pa.Table:
    """A table from rows; a column whose values pyarrow cannot unify is written as JSON text."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays = {}
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            arrays[name] = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in values]
            )
    return pa.table(arrays)


_STATE_SCHEMA = pa.schema([("key", pa.string()), ("record", pa.string())])


def _empty_manifest() -> pa.Table:
    return pa.table({"id": pa.array([], pa.string()), "path": pa.array([], pa.string())})


def _empty_candidates() -> pa.Table:
    names = ("key", "status", "reason", "error", "url", "title", "record")
    return pa.table({name: pa.array([], pa.string()) for name in names})


def whole_failure(counts: dict) -> str | None:
    """One sentence when nothing was downloaded and every failure had the same reason."""
    reasons = counts["failed_by_reason"]
    if counts["downloaded"] == 0 and len(reasons) == 1:
        reason = next(iter(reasons))
        return f"all {counts['failed']} downloads failed with {reason}; see {CANDIDATES}"
    return None


def run_crawl(
    config: Config,
    out: str,
    terms_file: str | None = None,
    urls_file: str | None = None,
    retry_failed: bool = False,
    allow_local: bool = False,
    quiet: bool = False,
    max_terms: int | None = None,
    runner=None,
) -> CrawlOutcome:
    """Search (or read the URL list), filter, download; raises CrawlOffline before starting
    anything when there are terms to search and the search host cannot be reached."""
    from vidal.run.ray_runner import make_runner

    progress = Progress(quiet=quiet or not config.runner.progress)
    crawl = Crawl(config, out, None, progress)
    crawl.download_stage.allow_local = crawl.download_stage.allow_local or allow_local
    # a URL list of direct links may never need yt-dlp: its options are checked when it is
    problem = check_options(crawl.download_stage) if _may_need_ytdlp(crawl, urls_file) else None
    if problem:
        raise ConfigError(problem)
    term_list = [] if urls_file else _term_list(config, terms_file, max_terms)
    todo = crawl.unsearched(term_list, retry_failed)
    if todo and crawl.search_stage.check_url:  # before Ray starts: fail in seconds, not minutes
        check_network(crawl.search_stage.check_url, crawl.search_stage.check_timeout)
    crawl.runner = runner = runner or make_runner(config.runner)
    try:
        if getattr(runner, "ray", None) is not None:
            crawl.use_ray_limiters()
        if urls_file:
            inbox = crawl.inbox(lambda: count_url_rows(urls_file))
            crawl.ingest_urls(urls_file, allow_local, inbox)
        else:
            inbox = crawl.inbox(lambda: len(term_list) * crawl.search_stage.per_term)
            crawl.search(todo, inbox)
        crawl.download(retry_failed)
        counts = crawl.publish()
    finally:
        _stop(crawl.actors)
        runner.shutdown()
    progress.say(f"crawl done: {json.dumps(counts)}\nmanifest: {crawl.store.url}/{MANIFEST}")
    return CrawlOutcome(crawl.store.url, counts, whole_failure(counts))


def _may_need_ytdlp(crawl: Crawl, urls_file: str | None) -> bool:
    return not (urls_file and direct_allowed(crawl.download_stage, None))


def _term_list(config: Config, terms_file: str | None, max_terms: int | None) -> list[str]:
    term_list = terms.read_terms(terms_file) if terms_file else _built_terms(config)
    return term_list[:max_terms] if max_terms else term_list


def _built_terms(config: Config) -> list[str]:
    return [row["term"] for row in terms.build_terms(config.crawl.terms)]


def _stop(actors: list) -> None:
    if not actors:
        return
    import ray

    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


# -- CLI -------------------------------------------------------------------------------------


def add_parsers(sub) -> None:
    """The `terms` and `crawl` sub-commands of `vidal`."""
    t = sub.add_parser("terms", help="build the balanced search-term list (the paper's sources)")
    t.add_argument("--out", default="manifests/terms.csv", help="CSV to write")
    t.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a source's published file (youtube8m, msrvtt, coco_captions, coco_instances, ava, "
        "hmdb51, imagenet, howto100m); repeatable",
    )
    t.add_argument("--fetch", action="store_true", help="download sources with a known URL")
    t.add_argument("--size", type=int, help="number of terms (config: crawl.terms.size)")
    t.add_argument("--seed", type=int, help="random seed (config: crawl.terms.seed)")
    t.add_argument("--pipeline", default="crawl", help="pipeline YAML (default: crawl)")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    c = sub.add_parser("crawl", help="search -> text filter -> download, writing a manifest")
    c.add_argument("--out", required=True, help="output folder or fsspec URL")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--terms", help="search terms (.csv with a term column, .txt, .parquet)")
    src.add_argument(
        "--urls", help="skip the search: download these (.csv/.parquet/.jsonl, url column)"
    )
    c.add_argument(
        "--source",
        choices=["video", "freesound"],
        default="video",
        help="video (yt-dlp search) or freesound (audio-text pairs; token in $FREESOUND_API_KEY)",
    )
    c.add_argument("--max-terms", type=int, help="search only the first N terms")
    c.add_argument("--pipeline", default="crawl", help="pipeline YAML (default: crawl)")
    c.add_argument("--ray-address", help="Ray cluster to use: auto or ray://host:port")
    c.add_argument("--local", action="store_true", help="run in this process, without Ray")
    c.add_argument(
        "--retry-failed", action="store_true", help="retry rate_limited/network failures"
    )
    c.add_argument("--allow-local", action="store_true", help="accept local paths in --urls")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.add_argument("overrides", nargs="*", metavar="key=value")


def dispatch(args) -> int:
    import sys

    from vidal.config import load_config

    overrides = list(args.overrides)
    if args.command == "terms":
        overrides += [
            f"crawl.terms.{k}={getattr(args, k)}"
            for k in ("size", "seed")
            if getattr(args, k) is not None
        ]
        for item in args.source:
            name, _, path = item.partition("=")
            if not path:
                raise ConfigError(f"--source takes NAME=PATH, got {item!r}")
            overrides.append(f"crawl.terms.sources.{name}={Path(path).resolve()}")
        if args.fetch:
            overrides.append("crawl.terms.fetch=true")
        return run_terms(load_config(args.pipeline, overrides), args.out)
    if args.ray_address:
        overrides.append(f"runner.ray_address={args.ray_address}")
    if args.local:
        overrides.append("runner.kind=local")
    config = load_config(args.pipeline, overrides)
    if args.source == "freesound":
        if args.urls:
            raise ConfigError("--urls downloads videos; --source freesound searches terms")
        from vidal.run.crawl_freesound import dispatch as freesound_dispatch

        return freesound_dispatch(config, args)
    try:
        outcome = run_crawl(
            config,
            args.out,
            args.terms,
            args.urls,
            args.retry_failed,
            args.allow_local,
            args.quiet,
            args.max_terms,
        )
    except CrawlOffline as exc:
        print(f"vidal: {exc}", file=sys.stderr)
        return 1
    if outcome.failure:
        print(f"vidal: crawl failed: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code
