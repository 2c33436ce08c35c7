"""Dataset-level stages: a per-sample rule that needs a decision over the whole dataset first
(dedup's groups, refilter's per-term cutoffs).

The build ends a streaming pass at such a stage; the driver calls `decide(input_stage, shards)`
once every shard has passed the stage before it; the decision goes to the stage's decision
files (`work/<stage>/...`) and its fingerprint joins the fingerprint chain from this stage on,
so a changed parameter (or changed inputs) recomputes exactly what it changes. Workers then
apply the decision per sample in `process`, reading it per shard on first use.
"""

from __future__ import annotations

from typing import ClassVar

from vidal.run import rows as rows_io
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext


class DatasetStage(Stage):
    """A stage whose decision the driver makes between two streaming passes."""

    decision_input: ClassVar[str] = ""  # the stage whose stored rows the decision reads

    def setup_decision(self, ctx: StageContext) -> DatasetStage:
        """Ready the stage for `decide` on the driver (no models: decisions read rows)."""
        Stage.setup(self, ctx)
        return self

    def decide(self, input_stage: str, shards: list[int]) -> str:
        """Make (or reuse) the decision from `input_stage`'s rows; returns its fingerprint."""
        raise NotImplementedError

    def samples(self, stage: str, shards: list[int]):
        """The stored samples of `stage` over `shards`, one shard in memory at a time."""
        return rows_io.iter_samples(self.store, stage, shards)

    def decision_path(self, name: str) -> str:
        return rows_io.decision_path(self.name, name)

    def process(self, sample: Sample) -> None:
        raise NotImplementedError
