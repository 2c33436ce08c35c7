"""refilter: re-decide the VL filter's keep/drop from the stored scores, with no model.

Two rules (at most one):
  threshold: X      keep a clip when its score >= X;
  top_fraction: F   keep the best ceil(F * n) of the n scored clips of each search term
                    (`meta.extra.term`; clips without one form one group), ties broken by key.
Neither: the VL filter's own decision stands (the stage passes samples on).

top_fraction needs every score of the dataset, so this is a dataset-level stage: the driver
computes each term's cutoff (a score, plus the keys kept among clips tied at it) between two
streaming passes, from the vl_filter rows, holding 8 bytes per scored clip; workers apply the
cutoffs per sample. A changed rule is a changed parameter (`vidal refilter` or
`refilter.top_fraction=...`): later stages recompute only the clips whose decision changed.
"""

from __future__ import annotations

import array
import collections
import hashlib
import json
import math
from dataclasses import dataclass
from typing import ClassVar

from vidal.sample import Sample
from vidal.stages.decision import DatasetStage
from vidal.stages.outputs import Funnel, Outputs
from vidal.stages.registry import register

VL = "vl_filter"
CUTOFFS = "cutoffs.json"


@register
@dataclass
class RefilterStage(DatasetStage):
    name: ClassVar[str] = "refilter"
    decision_input: ClassVar[str] = VL
    outputs: ClassVar[Outputs] = Outputs(
        reads={VL: ("score",)},
        funnel=Funnel("VL-filtered", drops=("vl",)),
    )

    threshold: float | None = None
    top_fraction: float | None = None
    batch_size: int = 256

    def check(self) -> str | None:
        if self.threshold is not None and self.top_fraction is not None:
            return "refilter takes one rule: threshold or top_fraction, not both"
        if self.threshold is not None and not -1 <= self.threshold <= 1:
            return f"refilter.threshold is a cosine in [-1, 1], got {self.threshold}"
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            return f"refilter.top_fraction must be in (0, 1], got {self.top_fraction}"
        return None

    def rule(self) -> dict:
        if self.threshold is not None:
            return {"threshold": self.threshold}
        if self.top_fraction is not None:
            return {"top_fraction": self.top_fraction}
        return {}

    # -- the driver's decision ------------------------------------------------------------------
    def decide(self, input_stage: str, shards: list[int]) -> str:
        cutoffs = self._cutoffs(input_stage, shards) if self.top_fraction is not None else {}
        blob = json.dumps({"rule": self.rule(), "cutoffs": cutoffs}, sort_keys=True)
        self.store.write_bytes(self.decision_path(CUTOFFS), blob.encode())
        self._cutoff_table = cutoffs
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _cutoffs(self, input_stage: str, shards: list[int]) -> dict:
        scores: dict[str, array.array] = collections.defaultdict(lambda: array.array("d"))
        for sample in self.samples(input_stage, shards):
            if (score := _score(sample)) is not None:
                scores[_term(sample)].append(score)
        cutoffs = {}
        for term, values in scores.items():
            ranked = sorted(values, reverse=True)
            keep = math.ceil(self.top_fraction * len(ranked) - 1e-9)
            cut = ranked[keep - 1]
            cutoffs[term] = {"score": cut, "ties": keep - sum(v > cut for v in ranked), "keys": []}
        for sample in self.samples(input_stage, shards):  # keys tied at a cutoff: rare
            cut = cutoffs.get(_term(sample)) if _score(sample) is not None else None
            if cut and _score(sample) == cut["score"]:
                cut["keys"].append(sample.key)
        for cut in cutoffs.values():
            cut["keys"] = sorted(cut["keys"])[: cut.pop("ties")]
        return cutoffs

    # -- the workers' rule ----------------------------------------------------------------------
    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        for sample in batch:  # a clip the VL filter dropped may be kept now
            if not sample.errors and sample.dropped_by in (None, VL):
                self.run_guarded(sample)
        return batch

    def process(self, sample: Sample) -> None:
        score = _score(sample)
        if score is None or not self.rule():
            return
        reason = self.verdict(sample, score)
        sample.dropped, sample.dropped_by = (reason, self.name) if reason else (None, None)

    def verdict(self, sample: Sample, score: float) -> str | None:
        """None (keep) or the drop reason."""
        if self.threshold is not None:
            return None if score >= self.threshold else f"vl_score<{self.threshold}"
        cut = self._cutoffs_read().get(_term(sample))
        if (
            cut is None
            or score > cut["score"]
            or (score == cut["score"] and sample.key in cut["keys"])
        ):
            return None
        return f"vl_top{self.top_fraction:g}: below its term's cutoff {cut['score']:.4f}"

    def _cutoffs_read(self) -> dict:
        if getattr(self, "_cutoff_table", None) is None:
            blob = json.loads(self.store.read_bytes(self.decision_path(CUTOFFS)))
            self._cutoff_table = blob["cutoffs"]
        return self._cutoff_table


def _score(sample: Sample) -> float | None:
    result = sample.fields.get(VL) or {}
    if "score" not in result or sample.errors:
        return None
    return float(result["score"])


def _term(sample: Sample) -> str:
    term = (sample.meta.get("extra") or {}).get("term")
    return "" if term is None else str(term)
