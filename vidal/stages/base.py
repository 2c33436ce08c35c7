"""The stage contract: a dataclass whose fields are its parameters, `setup()` once per worker,
`process_batch(batch) -> batch`. A stage never imports Ray; runners decide where it runs.

A stage is one file: decorate the class with `@register` (vidal.stages.registry) and it gets a
config section named after it, pipelines may list it, `check()` validates its parameters when
a config loads, and what it declares in `outputs` (vidal.stages.outputs) is packed into the
tar, the shard parquet and KEY.json, and shown by the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from vidal.io.store import Store
from vidal.media.ffmpeg import MediaError, ffmpeg_version
from vidal.sample import Sample
from vidal.stages.outputs import Outputs

log = logging.getLogger(__name__)

# How a stage runs, not what it computes: changing these never invalidates stored results.
RESOURCE_FIELDS = ("num_cpus", "num_gpus", "batch_size", "concurrency", "resources")


@dataclass
class StageContext:
    """What a running stage needs to know about the build it is part of."""

    out: str  # output root (local path or fsspec URL)
    allow_private_addresses: bool = False  # source.allow_private_addresses (vidal.net)


@dataclass
class Stage:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when a code change alters a stage's outputs
    uses_model: ClassVar[bool] = False  # model stages run as actor pools (setup once per actor)
    # failure reasons that are the environment's fault, not the sample's: they are never
    # stored as results; their (stage, shard) stays unfinished and a plain rerun redoes it
    environmental_reasons: ClassVar[frozenset[str]] = frozenset(
        {"ffmpeg_missing", "model_unavailable", "model_load_failed", "out_of_memory"}
    )
    outputs: ClassVar[Outputs] = Outputs()  # what it adds to the sample, what it reads
    # check() on every config load; False: only when the pipeline runs the stage (e.g. it
    # reads prompt files that only need to exist when it is used)
    check_always: ClassVar[bool] = True

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 8
    concurrency: int | None = None
    # custom Ray resources a worker must offer (e.g. {vidal_model: 1}): where the stage may run
    resources: dict[str, float] = field(default_factory=dict)

    def check(self) -> str | None:
        """A problem with the parameters (config validation), without loading anything."""
        return None

    def setup(self, ctx: StageContext) -> None:
        """Load models, open stores. Called once per worker before the first batch."""
        self.ctx = ctx
        self.store = Store(ctx.out)

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        """Process every sample that is still ok; a sample that fails records why and goes on."""
        self._batch_lineage = self.lineage()  # hashing the config per sample costs ~0.3 ms
        try:
            for sample in batch:
                if sample.ok:
                    self.run_guarded(sample)
        finally:
            self._batch_lineage = None
        return batch

    def process(self, sample: Sample) -> None:
        raise NotImplementedError

    def environmental(self, message: str) -> bool:
        """Is this error message (`reason: detail`) the environment's fault?"""
        return message.split(":", 1)[0] in self.environmental_reasons

    def run_guarded(self, sample: Sample) -> None:
        try:
            self.process(sample)
        except MediaError as exc:
            sample.fail(self.name, exc.reason, exc.detail)
        except Exception as exc:  # one bad sample must never stop the shard
            log.debug("stage %s failed on %s\n%s", self.name, sample.key, traceback.format_exc())
            sample.fail(self.name, exception_reason(exc), f"{type(exc).__name__}: {exc}")
        else:
            lineage = getattr(self, "_batch_lineage", None) or self.lineage()
            sample.lineage[self.name] = dict(lineage)

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


def exception_reason(exc: BaseException) -> str:
    """`out_of_memory` for host or accelerator OOM (torch's is a RuntimeError), else
    `exception`."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "out_of_memory"
    return "exception"


def record_model_load(store, stage: str, info: dict) -> None:
    """One small file per model load (work/<stage>/loads/): which worker loaded which model,
    where and how fast; a model loads once per actor for a whole build."""
    worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store.write_json(f"work/{stage}/loads/{worker}.json", {**info, "node": _ray_node_id()})


def _ray_node_id() -> str | None:
    """The Ray node this worker runs on (None outside Ray); Ray is never imported here."""
    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    except Exception:  # an old or partial Ray: the record is still useful without it
        return None


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
