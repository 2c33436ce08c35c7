"""The default runner on one machine (`runner.kind=auto`): each pass where it runs best.

A pass whose stages to run are CPU stages only (probe, keyframes, audio, clip), planning and
packing run in the processes runner's pool: no Ray daemons, object store or scheduler, so the
cores go to ffmpeg (measured on media builds: 0.94x the single-pass ffmpeg limit's wall rate
and 0.97x its CPU on 60 clips, 0.985x its CPU on 200, against ~0.8x on Ray). A pass with model
stages runs on a Ray started for it: model stages as actor pools beside CPU stages on every
core, which one pool of identical workers cannot give. The pool's workers are let go before a
Ray pass (idle, they would hold their memory through it) and start again for the next CPU
pass. The crawl's waves and downloads stay in the build's own process (`ray` is None), as on
the processes runner.
"""

from __future__ import annotations

import logging

from vidal.config import RunnerConfig
from vidal.run.process_runner import ProcessRunner
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)


class AutoRunner:
    def __init__(self, config: RunnerConfig):
        self.config = config
        self.processes = ProcessRunner(config)
        self.ray = None  # the crawl's waves and rate limiters stay in this process
        self._ray_runner = None

    def stream(self, plan, ctx: StageContext, items: list[dict], progress=None) -> dict:
        if not any(stage.uses_model for stage in plan.stages_to_run()):
            return self.processes.stream(plan, ctx, items, progress)
        self.processes.release()
        return self._on_ray().stream(plan, ctx, items, progress)

    def map_shards(self, fn, items: list, progress=None) -> list:
        return self.processes.map_shards(fn, items, progress)

    def map_samples(self, stage: Stage, ctx: StageContext, samples: list) -> list:
        return self.processes.map_samples(stage, ctx, samples)

    def _on_ray(self):
        if self._ray_runner is None:
            from vidal.run.ray_runner import RayRunner

            log.info("a pass with model stages: starting Ray on this machine")
            self._ray_runner = RayRunner(self.config)
        return self._ray_runner

    def shutdown(self) -> None:
        try:
            self.processes.shutdown()
        finally:
            if self._ray_runner is not None:
                self._ray_runner.shutdown()
