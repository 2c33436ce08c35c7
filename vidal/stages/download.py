"""The download stage: each candidate sample's video fetched with yt-dlp into `<out>/raw/`.

Parameters are `vidal.crawl.download.DownloadOptions` (format, caps, retries, rate limits,
cookies, proxies, ...) plus how many downloads one worker runs at once. A candidate that cannot
be downloaded records `errors["download"] = "<taxonomy reason>: <message>"`; one that is
downloaded gets `fields["download"]` (store path, bytes, attempts, probe) and its metadata
completed from yt-dlp's full info dict.

On a local store a direct link's body is streamed straight to a temp name in `raw/`, and a
yt-dlp download is moved there from its temp folder; the batch's files are then made durable
together (`commit`: fsynced in parallel, renamed, the folder fsynced once) before the batch
returns, so before the caller records it. Until then a file is a temp file (a killed crawl's
are swept by the next run), never a finished-looking one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from vidal import net
from vidal.crawl import ratelimit, search
from vidal.crawl.download import DownloadOptions, download
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

RAW_DIR = "raw"
STAGED = "staged"  # a downloaded file's temp path until the batch commits it (never recorded)


@dataclass
class DownloadStage(Stage, DownloadOptions):
    name: ClassVar[str] = "download"

    threads: int = 4  # concurrent downloads per worker (I/O bound)
    tmp_dir: str | None = None  # where attempts write before the store; None: system temp
    rate_limiter: str = "local"  # set by the crawl job: "ray:<actor>" on a Ray runner
    num_cpus: float = 0.5
    batch_size: int = 8

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        rates = dict(self.platform_rates)
        self.limiter = ratelimit.connect(self.rate_limiter, rates, self.rate_per_s, self.burst)
        self.workdir = self.tmp_dir or tempfile.gettempdir()
        self.policy = net.UrlPolicy(allow_private=ctx.allow_private_addresses)
        os.makedirs(self.workdir, exist_ok=True)
        # the lineage every download records, hashed once (its config does not change after
        # setup: `ready_stage` keys a set-up stage by it); ~0.7 ms a sample otherwise
        self._batch_lineage = self.lineage()

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        """The batch's downloads (on the stage's threads), then their files made durable and
        visible together, before the caller records the batch as done."""
        todo = [s for s in batch if s.ok]
        try:
            if len(todo) <= 1 or self.threads <= 1:
                for sample in todo:
                    self.run_guarded(sample)
            else:
                list(self.pool().map(self.run_guarded, todo))
        finally:
            self.commit(todo)
        return batch

    def pool(self) -> ThreadPoolExecutor:
        """Threads that live as long as the stage, so each keeps its warm yt-dlp session."""
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vidal-download")
        return self._pool

    def process(self, sample: Sample) -> None:
        cand = sample.meta.get("candidate", {})
        staged = self.store.local_temp(f"{RAW_DIR}/{sample.key}") if self.store.is_local else None
        got, failure, tries = download(
            sample.source,
            cand.get("platform") or "",
            self,
            self.limiter,
            self.workdir,
            seed=sample.key,
            policy=self.policy,
            media_path=staged,
        )
        sample.fields[self.name] = {"attempts": tries}
        if failure:
            sample.fail(self.name, failure.reason, failure.message)
            return
        rel = f"{RAW_DIR}/{sample.key}{got.ext}"
        if got.local_path != staged:  # yt-dlp's file, or any file for a remote store
            self.stage_file(got.local_path, rel, staged)
        if staged:  # from here on the batch's commit lands the file, or removes it
            sample.fields[self.name][STAGED] = staged
        sample.fields[self.name].update(path=rel, bytes=got.bytes, ext=got.ext, probe=got.probe)
        sample.meta["candidate"] = search.fill(cand, {**got.info, **_measured(got.probe)})

    def stage_file(self, local_path: str, rel: str, staged: str | None) -> None:
        """A file from an attempt's temp folder to `staged` (committed with the batch), or,
        for a remote store, uploaded to `rel` at once."""
        try:
            if staged:
                shutil.move(local_path, staged)
            else:
                with self.store.staging(rel) as tmp:
                    shutil.move(local_path, tmp)
        finally:
            shutil.rmtree(os.path.dirname(local_path), ignore_errors=True)

    def commit(self, samples: list[Sample]) -> None:
        """Each downloaded file of the batch becomes `raw/KEY.EXT`, durably (fsynced, renamed,
        the folder fsynced once: `Store.commit_local`); until then it is a temp file that no
        record points to and the next run sweeps. A file that cannot land fails its sample."""
        mine = [s for s in samples if STAGED in s.fields.get(self.name, {})]
        staged = [(s, s.fields[self.name].pop(STAGED)) for s in mine]
        for sample, tmp in staged:
            if sample.errors:  # failed after its file was written: the file goes
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        landing = [(s, tmp) for s, tmp in staged if not s.errors]
        moves = [(tmp, s.fields[self.name]["path"]) for s, tmp in landing]
        parallel = self.pool().map if len(moves) > 1 and self.threads > 1 else map
        errors = self.store.commit_local(moves, parallel) if moves else []
        for (sample, _), error in zip(landing, errors, strict=True):
            if error is not None:
                sample.fail(self.name, "exception", f"{type(error).__name__}: {error}")


def _measured(probe: dict | None) -> dict:
    """What the file itself says, for the fields the site did not give."""
    if not probe:
        return {}
    keys = ("duration", "width", "height", "fps")
    return {k: probe[k] for k in keys if probe.get(k)}
