"""The download stage: each candidate sample's video fetched with yt-dlp into `<out>/raw/`.

Parameters are `vidal.crawl.download.DownloadOptions` (format, caps, retries, rate limits,
cookies, proxies, ...) plus how many downloads one worker runs at once. A candidate that cannot
be downloaded records `errors["download"] = "<taxonomy reason>: <message>"`; one that is
downloaded gets `fields["download"]` (store path, bytes, attempts, probe) and its metadata
completed from yt-dlp's full info dict.
"""

from __future__ import annotations

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

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        todo = [s for s in batch if s.ok]
        if len(todo) <= 1 or self.threads <= 1:
            for sample in todo:
                self.run_guarded(sample)
            return batch
        list(self.pool().map(self.run_guarded, todo))
        return batch

    def pool(self) -> ThreadPoolExecutor:
        """Threads that live as long as the stage, so each keeps its warm yt-dlp session."""
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vidal-download")
        return self._pool

    def process(self, sample: Sample) -> None:
        cand = sample.meta.get("candidate", {})
        got, failure, tries = download(
            sample.source,
            cand.get("platform") or "",
            self,
            self.limiter,
            self.workdir,
            seed=sample.key,
            policy=self.policy,
        )
        sample.fields[self.name] = {"attempts": tries}
        if failure:
            sample.fail(self.name, failure.reason, failure.message)
            return
        try:
            rel = f"{RAW_DIR}/{sample.key}{got.ext}"
            with self.store.staging(rel) as tmp:
                shutil.move(got.local_path, tmp)
        finally:
            shutil.rmtree(os.path.dirname(got.local_path), ignore_errors=True)
        sample.fields[self.name].update(path=rel, bytes=got.bytes, ext=got.ext, probe=got.probe)
        sample.meta["candidate"] = search.fill(cand, {**got.info, **_measured(got.probe)})


def _measured(probe: dict | None) -> dict:
    """What the file itself says, for the fields the site did not give."""
    if not probe:
        return {}
    keys = ("duration", "width", "height", "fps")
    return {k: probe[k] for k in keys if probe.get(k)}
