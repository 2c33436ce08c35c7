"""dedup: near-duplicate removal over the VL filter's stored video embeddings.

Clips whose unit video embeddings have cosine >= `threshold` are one group (the transitive
closure of the k-NN edges above the threshold); the member with the best `vl_filter.score`
(ties: the smallest key) is kept, the others are dropped with `duplicate_of:<kept key>`.

The decision needs the whole dataset's embeddings, so it is not made batch by batch: it is a
dataset-level stage (vidal.stages.decision). The driver computes the groups once per build,
between two streaming passes, with `vidal.dedup` (see there for the index, memory and
scaling), into `work/dedup/groups.parquet`; workers apply them per sample. A changed threshold
is a changed parameter: rerun, and only the samples whose decision changed are recomputed in
later stages. Only members of a group of two or more get `fields["dedup"]`; a clip with no
duplicate is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidal.sample import Sample
from vidal.stages.decision import DatasetStage
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
class DedupStage(DatasetStage):
    name: ClassVar[str] = "dedup"
    decision_input: ClassVar[str] = "vl_filter"
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

    def decide(self, input_stage: str, shards: list[int]):
        """The driver's step (every shard's rows before this stage finished): make or reuse
        the groups; returns their fingerprint."""
        from vidal.dedup import candidates, decide

        found = candidates(self.samples(input_stage, shards), self.name)
        outcome = decide(self.store, self, found, (DECISIONS, DECISIONS_MARKER))
        self.outcome = outcome
        return outcome.fingerprint

    def process(self, sample: Sample) -> None:
        self.apply(sample, self._decisions(sample.shard).get(sample.key))

    def run_guarded(self, sample: Sample) -> None:
        super().run_guarded(sample)
        if self.name not in sample.fields:  # lineage only where a decision landed
            sample.lineage.pop(self.name, None)

    def _decisions(self, shard: int) -> dict[str, Decision]:
        if shard not in self._cache:
            self._cache[shard] = read_decisions(self.store, shards={shard})
        return self._cache[shard]


def read_decisions(store, shards: set[int] | None = None) -> dict[str, Decision]:
    """{key: Decision} from the decisions file, for some shards or all."""
    if not store.exists(DECISIONS):
        raise FileNotFoundError(f"{store.url} has no {DECISIONS}: the dedup stage decides first")
    table = store.read_table(DECISIONS)
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    return {
        key: Decision(group, kept, n)
        for key, shard, group, kept, n in zip(
            cols["key"], cols["shard"], cols["group"], cols["kept"], cols["neighbours"], strict=True
        )
        if shards is None or shard in shards
    }
