"""`vidal refilter`: re-decide the VL filter's keep/drop from the stored scores.

Nothing is recomputed: no model loads, the embeddings stay as they are. Two rules:
  --threshold X        keep a clip when its score >= X;
  --top-fraction F     keep the best ceil(F * n) of the n scored clips of each search term
                       (`meta.extra.term`; clips without one form one group), which needs
                       every score of the dataset, hence this command and not the stage.

How a later `vidal build` picks the decisions up: stage markers fingerprint configs, not rows,
so refilter rewrites rows itself and keeps each marker's fingerprint (the stages stay fresh):
  - the vl_filter rows of every sample whose decision changed;
  - the rows of every stage after vl_filter, for those samples only: a newly dropped sample
    becomes exactly what a fresh run leaves there (later stages pass dropped samples on
    untouched); a newly kept one, which later stages never processed, is marked failed at
    the first of them with `refilter_pending`, so `vidal build --retry-failed` runs just those
    samples through the later stages.
The last stage's rows change exactly in the shards whose decisions changed, so the next
`vidal build` repacks exactly those shards (a shard is repacked when its rows' digest
changes). Rows are written later stages first and vl_filter last, so a refilter killed midway
and rerun with the same rule ends in the same state. Its decisions hold until the vl_filter
stage itself is recomputed (its config changes), which applies the config's threshold again.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

from vidal.config import Config, ConfigError
from vidal.io.keys import is_safe_key
from vidal.run.build import Builder
from vidal.sample import Sample

STAGE = "vl_filter"
PENDING = "refilter_pending"


@dataclass
class Rule:
    threshold: float | None = None
    top_fraction: float | None = None

    def check(self) -> None:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ConfigError("refilter needs exactly one of --threshold and --top-fraction")
        if self.threshold is not None and not -1 <= self.threshold <= 1:
            raise ConfigError(f"--threshold is a cosine in [-1, 1], got {self.threshold}")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ConfigError(f"--top-fraction must be in (0, 1], got {self.top_fraction}")

    def describe(self) -> dict:
        if self.threshold is not None:
            return {"threshold": self.threshold}
        return {"top_fraction": self.top_fraction}


@dataclass
class Scored:
    shard: int
    key: str
    term: str | None
    score: float


@dataclass
class Outcome:
    scored: int = 0
    kept: int = 0
    newly_dropped: int = 0
    newly_kept: int = 0
    shards_changed: int = 0


def refilter(config: Config, out: str, rule: Rule) -> Outcome:
    """Re-decide every scored sample of the dataset at `out` with `rule`; see the module doc."""
    rule.check()
    if STAGE not in config.stages:
        raise ConfigError(f"the pipeline has no {STAGE} stage ({', '.join(config.stages)})")
    builder = Builder(config, None, out, runner=None)
    shards = _scored_shards(builder, config)
    scored = [item for shard in shards for item in _scores(builder, shard)]
    verdicts = decide(scored, rule)
    later = config.stages[config.stages.index(STAGE) + 1 :]
    outcome = Outcome(scored=len(scored), kept=sum(v is None for v in verdicts.values()))
    for shard in shards:
        updated, changed = _apply(builder, shard, later, verdicts, rule)
        outcome.shards_changed += updated
        outcome.newly_dropped += sum(new for new in changed.values())
        outcome.newly_kept += sum(not new for new in changed.values())
    builder.store.write_json(
        f"work/{STAGE}/refilter.json",
        {**rule.describe(), **outcome.__dict__, "finished": time.time()},
    )
    return outcome


def _scored_shards(builder: Builder, config: Config) -> list[int]:
    """Shards whose vl_filter rows exist, refusing rows made with another vl_filter config."""
    if builder.store.read_json("work/plan.json") is None:
        raise ConfigError(f"{builder.store.url} holds no vidal build (no work/plan.json)")
    builder.planned_fingerprints()  # reads the shard count of the dataset at `out`
    found = []
    for shard in range(builder.shard_count):
        marker = builder.marker(STAGE, shard)
        if not marker:
            continue
        if marker.get("config") != config.vl_filter.config_hash():
            raise ConfigError(
                f"shard {shard}'s {STAGE} rows were made with another {STAGE} config than "
                "this pipeline's: pass the --pipeline and overrides the build used"
            )
        found.append(shard)
    if not found:
        raise ConfigError(f"{builder.store.url} has no {STAGE} results: run vidal build first")
    return found


def _scores(builder: Builder, shard: int) -> list[Scored]:
    items = []
    for key, record in builder.read_rows(STAGE, shard).items():
        if not is_safe_key(key):  # rows read back are untrusted: such a key is left as it is
            continue
        sample = Sample.from_json(record)
        result = sample.fields.get(STAGE)
        if result and "score" in result and not sample.errors:
            term = (sample.meta.get("extra") or {}).get("term")
            items.append(Scored(shard, key, term, float(result["score"])))
    return items


def decide(scored: list[Scored], rule: Rule) -> dict[str, str | None]:
    """key -> None (keep) or the drop reason."""
    if rule.threshold is not None:
        t = rule.threshold
        return {s.key: None if s.score >= t else f"vl_score<{t}" for s in scored}
    groups = collections.defaultdict(list)
    for s in scored:
        groups[s.term].append(s)
    verdicts = {}
    for members in groups.values():
        members.sort(key=lambda s: (-s.score, s.key))  # ties broken by key: deterministic
        n_keep = math.ceil(rule.top_fraction * len(members) - 1e-9)
        reason = f"vl_top{rule.top_fraction:g}: below its term's cutoff "
        reason += f"{members[n_keep - 1].score:.4f}"
        for rank, s in enumerate(members):
            verdicts[s.key] = None if rank < n_keep else reason
    return verdicts


def _apply(builder, shard, later, verdicts, rule) -> tuple[bool, dict[str, bool]]:
    """Rewrite one shard's rows; returns (rows changed?, {key: newly dropped?} for the
    samples whose status changed)."""
    rows = builder.read_rows(STAGE, shard)
    updates, status_changed = {}, {}
    for key, record in rows.items():
        if key not in verdicts:
            continue
        sample = Sample.from_json(record)
        reason = verdicts[key]
        if sample.dropped == reason:
            continue
        was_kept = sample.dropped is None
        sample.dropped, sample.dropped_by = (reason, STAGE) if reason else (None, None)
        updates[key] = sample
        if was_kept != (reason is None):
            status_changed[key] = reason is not None
    if not updates:
        return False, {}
    for name in later:
        _rewrite_later(builder, name, shard, updates, later[0])
    _write(builder, STAGE, shard, {**rows, **{k: s.to_json() for k, s in updates.items()}}, rule)
    return True, status_changed


def _rewrite_later(builder, name: str, shard: int, updates: dict, first_later: str) -> None:
    if not builder.marker(name, shard):
        return  # never ran here: the next build runs it from the vl_filter rows
    rows = builder.read_rows(name, shard)
    for key, sample in updates.items():
        if sample.dropped is not None:
            rows[key] = sample.to_json()
        elif key in rows and Sample.from_json(rows[key]).dropped_by == STAGE:
            pending = Sample.from_json(sample.to_json())
            pending.fail(first_later, PENDING, "kept by refilter: vidal build --retry-failed")
            rows[key] = pending.to_json()
    _write(builder, name, shard, rows, None)


def _write(builder, name: str, shard: int, records: dict, rule: Rule | None) -> None:
    """Rows with the old marker (so the stage stays fresh), its digest brought up to date."""
    marker = dict(builder.marker(name, shard) or {})
    marker.pop("digest", None)
    marker.pop("samples", None)
    if rule is not None:
        marker["refilter"] = rule.describe()
    builder.write_rows(name, shard, records, marker)


def run_refilter(config: Config, out: str, threshold, top_fraction, quiet=False) -> int:
    """The CLI's `vidal refilter`: decide, then say what the next build will do."""
    outcome = refilter(config, out, Rule(threshold, top_fraction))
    if not quiet:
        print(
            f"refilter: {outcome.scored} scored clips, {outcome.kept} kept; "
            f"{outcome.newly_dropped} newly dropped, {outcome.newly_kept} newly kept, "
            f"in {outcome.shards_changed} shards"
        )
        hint = " --retry-failed (computes the later stages for newly kept clips)"
        print(f"next: vidal build --out {out} ...{hint if outcome.newly_kept else ''}")
    return 0
