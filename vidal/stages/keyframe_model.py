"""The shared shape of the model stages that read the keyframes (vl_filter, depth, ...): the
model loads once per worker in `setup`, and `process_batch` makes one batched model call for
every frame of every ok sample. A model that cannot load fails every sample alike, so the build
ends with one sentence naming it instead of a crashed worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from vidal.models.resolve import PRECISIONS, ModelNotFoundError, check_reference
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext, record_model_load
from vidal.stages.keyframes import load_keyframes, skip_without_video

log = logging.getLogger(__name__)


@dataclass
class KeyframeModelStage(Stage):
    """A stage that runs one model over the keyframes of every ok sample of a batch."""

    uses_model: ClassVar[bool] = True
    model: str = ""
    precision: str = "bf16"

    def check(self) -> str | None:
        """A problem with the parameters (for config validation), without loading anything."""
        problem = check_reference(self.model)
        if problem:
            return f"{self.name}.model: {problem}"
        if self.precision not in PRECISIONS:
            return f"{self.name}.precision must be one of {PRECISIONS}, got {self.precision!r}"
        return None

    def load_model(self):
        raise NotImplementedError

    def infer(self, items: list[tuple[Sample, np.ndarray]]) -> None:
        """Run the model once over all items' frames; leave per-sample results in self.results."""
        raise NotImplementedError

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        self.results: dict = {}
        self.net, self.load_error = None, None
        started = time.time()
        try:
            self.net = self.load_model()
        except ModelNotFoundError as exc:
            self.load_error = ("model_unavailable", str(exc))
        except Exception as exc:  # a broken model fails every sample alike: the build says so
            self.load_error = ("model_load_failed", f"{type(exc).__name__}: {exc}")
        if self.load_error:
            log.error("stage %s: %s", self.name, self.load_error[1])
        else:
            self._record_load(time.time() - started)

    def _record_load(self, seconds: float) -> None:
        record_model_load(
            self.store,
            self.name,
            {
                "model": self.net.ref,
                "revision": self.net.revision,
                "device": self.net.device,
                "precision": self.precision,
                "seconds": round(seconds, 3),
            },
        )

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        self.results.clear()
        todo = [s for s in batch if s.ok]
        if self.load_error:
            for sample in todo:
                sample.fail(self.name, *self.load_error)
            return batch
        items = [(s, f) for s in todo if (f := self._keyframes(s)) is not None]
        if items:
            self.infer(items)
        for sample, _ in items:
            self.run_guarded(sample)
        self.results.clear()
        return batch

    def frame_source(self) -> str:
        """Which stored frames the model reads: `keyframes` (the tiles at the keyframes' short
        side) or `full` (keyframes.full_frames: the same frames at full size)."""
        return getattr(self, "frames", "keyframes")

    def _keyframes(self, sample: Sample) -> np.ndarray | None:
        if skip_without_video(self.name, sample):
            return None  # audio only: nothing to see, and not a failure
        fields = sample.fields.get("keyframes")
        if not fields:
            sample.fail(self.name, "no_keyframes", "the keyframes stage must run before")
            return None
        full = self.frame_source() == "full"
        if full and "full" not in fields:
            sample.fail(self.name, "no_full_frames", "set keyframes.full_frames: true")
            return None
        try:
            return load_keyframes(self.store, fields, full=full)
        except Exception as exc:  # a missing or corrupt keyframe file is this sample's problem
            sample.fail(self.name, "keyframes_unreadable", f"{type(exc).__name__}: {exc}")
            return None

    def lineage(self) -> dict:
        info = {**super().lineage(), "model": self.model}
        net = getattr(self, "net", None)
        if net is not None:
            info["revision"] = net.revision
        return info
