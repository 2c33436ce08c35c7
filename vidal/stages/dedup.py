"""dedup: near-duplicate removal over the VL filter's stored video embeddings.

Clips whose unit video embeddings have cosine >= `threshold` are one group (the transitive
closure of the k-NN edges above the threshold); the member with the best `vl_filter.score`
(ties: the smallest key) is kept, the others are dropped with `duplicate_of:<kept key>`.

The decision needs the whole dataset's embeddings, so it is not made batch by batch: it is
computed once, dataset-wide, by `vidal.dedup` (see there for the index, memory and scaling),
and written to `work/dedup/groups.parquet`. This class holds the parameters (the `dedup:`
section of a pipeline) and the one per-sample rule, `apply`, used wherever a decision lands
on a sample. Only members of a group of two or more get `fields["dedup"]`; a clip with no
duplicate is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidal.sample import Sample
from vidal.stages.base import Stage
from vidal.stages.outputs import Funnel, Outputs, Public
from vidal.stages.registry import register

DECISIONS = "work/dedup/groups.parquet"
DECISIONS_MARKER = "work/dedup/groups.json"


@dataclass
class Decision:
    group: int
    kept: str
    neighbours: int  # neighbours found at or above the threshold (k-NN, so at most k)


@register
@dataclass
class DedupStage(Stage):
    name: ClassVar[str] = "dedup"
    outputs: ClassVar[Outputs] = Outputs(
        public=Public(),
        reads={"vl_filter": ("embeddings", "score")},
        funnel=Funnel("deduplicated", drops=("dup",)),
    )

    threshold: float = 0.95  # cosine of the unit video embeddings at or above which clips match
    neighbours: int = 16  # k of the k-NN query: edges per clip considered (a group can be larger)
    index: str = "auto"  # flat (exact, blocked) | ivf (approximate, IVF + fp16) | auto: by size
    flat_max: int = 200_000  # auto: flat up to this many clips, ivf above
    nprobe: int = 32  # ivf: inverted lists probed per query (recall vs speed)
    block: int = 4096  # rows per add/query block: bounds the k-NN result matrices
    batch_size: int = 256

    def check(self) -> str | None:
        if not -1 <= self.threshold <= 1:
            return f"dedup.threshold is a cosine in [-1, 1], got {self.threshold}"
        if self.neighbours < 1:
            return f"dedup.neighbours must be >= 1, got {self.neighbours}"
        if self.index not in ("auto", "flat", "ivf"):
            return f"dedup.index is auto, flat or ivf, got {self.index!r}"
        if self.block < 1 or self.nprobe < 1:
            return "dedup.block and dedup.nprobe must be >= 1"
        return None

    def apply(self, sample: Sample, decision: Decision | None) -> None:
        """Put a decision on a sample (None: not a member of any group)."""
        if decision is None:
            sample.fields.pop(self.name, None)
            if sample.dropped_by == self.name:
                sample.dropped, sample.dropped_by = None, None
            return
        sample.fields[self.name] = {
            "group": decision.group,
            "kept": decision.kept,
            "neighbours": decision.neighbours,
            "threshold": self.threshold,
        }
        if decision.kept != sample.key:
            sample.drop(self.name, f"duplicate_of:{decision.kept}")
        elif sample.dropped_by == self.name:
            sample.dropped, sample.dropped_by = None, None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self._cache: dict[int, dict[str, Decision]] = {}  # shard -> its decisions

    def prepare(self, builder, shards: list[int]) -> str:
        """Dataset-level step, run by the driver once every shard's vl_filter rows are done
        (before any worker runs this stage); returns the decisions' fingerprint."""
        from vidal.dedup import prepare

        return prepare(builder, self, shards)

    def process(self, sample: Sample) -> None:
        # Needs the decisions made, dataset-wide, before the stage runs (`vidal.dedup.prepare`,
        # by the driver); each worker reads them per shard on first use.
        self.apply(sample, self._decisions(sample.shard).get(sample.key))

    def _decisions(self, shard: int) -> dict[str, Decision]:
        if shard not in self._cache:
            from vidal.dedup import read_decisions

            self._cache[shard] = read_decisions(self.store, self, shards={shard})
        return self._cache[shard]
