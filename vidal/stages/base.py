"""The stage contract: a dataclass whose fields are its parameters, `setup()` once per worker,
`process_batch(batch) -> batch`. A stage never imports Ray; runners decide where it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import ClassVar

from vidal.media.ffmpeg import MediaError, ffmpeg_version
from vidal.sample import Sample

log = logging.getLogger(__name__)

# How a stage runs, not what it computes: changing these never invalidates stored results.
RESOURCE_FIELDS = ("num_cpus", "num_gpus", "batch_size", "concurrency", "resources")


@dataclass
class StageContext:
    """What a running stage needs to know about the build it is part of."""

    out: str  # output root (local path or fsspec URL)


@dataclass
class Stage:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when a code change alters a stage's outputs
    uses_model: ClassVar[bool] = False  # model stages run as actor pools (setup once per actor)

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 8
    concurrency: int | None = None
    # custom Ray resources a worker must offer (e.g. {vidal_model: 1}): where the stage may run
    resources: dict[str, float] = field(default_factory=dict)

    def setup(self, ctx: StageContext) -> None:
        """Load models, open stores. Called once per worker before the first batch."""
        from vidal.run.store import Store

        self.ctx = ctx
        self.store = Store(ctx.out)

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        """Process every sample that is still ok; a sample that fails records why and goes on."""
        for sample in batch:
            if sample.ok:
                self.run_guarded(sample)
        return batch

    def process(self, sample: Sample) -> None:
        raise NotImplementedError

    def run_guarded(self, sample: Sample) -> None:
        try:
            self.process(sample)
        except MediaError as exc:
            sample.fail(self.name, exc.reason, exc.detail)
        except Exception as exc:  # one bad sample must never stop the shard
            log.debug("stage %s failed on %s\n%s", self.name, sample.key, traceback.format_exc())
            sample.fail(self.name, "exception", f"{type(exc).__name__}: {exc}")
        else:
            sample.lineage[self.name] = self.lineage()

    def params(self) -> dict:
        """The parameters that decide this stage's outputs (resources excluded)."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k not in RESOURCE_FIELDS}

    def config_hash(self) -> str:
        blob = json.dumps(
            {"stage": self.name, "version": self.version, **self.params()},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def lineage(self) -> dict:
        return {"version": self.version, "config": self.config_hash()}


def payload_path(stage: str, sample: Sample, suffix: str) -> str:
    """Store-relative path of a stage's payload for a sample: work/<stage>/<shard>/<key><suffix>."""
    return f"work/{stage}/{sample.shard:05d}/{sample.key}{suffix}"


class MediaStage(Stage):
    """A stage that reads the sample's media file (the probe's local copy when there is one)."""

    runs_ffmpeg: ClassVar[bool] = False  # its outputs are made by the ffmpeg binary

    def lineage(self) -> dict:
        # another ffmpeg build can give other bytes: say which one made these
        info = super().lineage()
        return {**info, "ffmpeg": ffmpeg_version()} if self.runs_ffmpeg else info

    def media(self, sample: Sample):
        fetched = sample.fields.get("probe", {}).get("fetched")
        if fetched:
            return self.store.local_copy(fetched)
        return _as_is(sample.source)

    def ffmpeg_timeout(self, sample: Sample) -> float:
        # generous per second of media, so a stuck process is killed but a long clip is not
        return 60.0 + 10.0 * float(sample.fields.get("probe", {}).get("duration") or 0.0)


class _as_is:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        return None
