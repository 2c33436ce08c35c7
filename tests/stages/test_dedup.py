"""Near-duplicate removal: the grouping at scale (no media), and `vidal dedup` on a built dataset
with exact copies (end to end) and with planted near-duplicate embeddings (deterministic)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import vidal.dedup as dd
from tests.models import model_config, rows
from vidal.cli import main
from vidal.config import ConfigError
from vidal.io.store import Store
from vidal.run.jobs import build, redecide
from vidal.stages.dedup import DECISIONS, DECISIONS_MARKER, Decision, DedupStage

STAGES = [
    "stages=[probe,keyframes,vl_filter,depth]",
    "vl_filter.batch_size=3",
]


# -- the grouping ------------------------------------------------------------------------------
def planted(n: int, dim: int, pairs: int, seed: int = 0):
    """n random unit vectors; the last `pairs` rows are noisy copies of the first `pairs`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[n - pairs :] = x[:pairs] + 0.05 * rng.standard_normal((pairs, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_grouping_20k_finds_planted_pairs_in_bounded_blocks(index, monkeypatch):
    n, dim, pairs, block, k = 20_000, 64, 300, 2048, 4
    x = planted(n, dim, pairs)
    scores = np.random.default_rng(1).random(n)
    keys = [f"k{i:05d}" for i in range(n)]
    shapes = []
    real_search = dd._search

    def spy(idx, queries, kk):
        cos, ids = real_search(idx, queries, kk)
        shapes.append(cos.shape)
        return cos, ids

    monkeypatch.setattr(dd, "_search", spy)
    params = DedupStage(threshold=0.95, neighbours=k, index=index, block=block, nprobe=8)
    streamed = []

    def blocks():  # streamed in uneven chunks, as embedding files come
        streamed.append(0)
        for i in range(0, n, 777):
            yield x[i : i + 777]

    g = dd.group_vectors(blocks, n, scores, keys, params)
    assert g.index == index and len(streamed) == 2  # two passes over the stream
    # no N x N (nor block x N) matrix: every search returns block x (k + 1) at most
    assert shapes and all(r <= block and c == k + 1 for r, c in shapes)
    assert sum(r for r, _ in shapes) == n
    member = dict(zip(g.members.tolist(), g.group.tolist(), strict=True))
    kept = dict(zip(g.members.tolist(), g.kept.tolist(), strict=True))
    found = sum(
        i in member and (n - pairs + i) in member and member[i] == member[n - pairs + i]
        for i in range(pairs)
    )
    assert found / pairs >= (1.0 if index == "flat" else 0.95)
    assert len(g.members) <= 2 * pairs + 10  # random vectors at dim 64 are not duplicates
    for i in range(pairs):
        j = n - pairs + i
        if i in kept:
            best = i if (scores[i], keys[j]) > (scores[j], keys[i]) else j
            assert kept[i] == kept[j] == best


def test_grouping_is_transitive_and_ties_break_by_key():
    base = np.eye(4, 8, dtype=np.float32)
    x = np.stack([base[0], base[0] + 0.2 * base[1], base[0] + 0.4 * base[1], base[2], base[2]])
    x[1:3] /= np.linalg.norm(x[1:3], axis=1, keepdims=True)
    keys = ["e", "d", "c", "b", "a"]
    scores = np.array([0.1, 0.3, 0.2, 0.5, 0.5])
    params = DedupStage(threshold=0.97, neighbours=2, index="flat")
    g = dd.group_vectors(lambda: iter([x]), 5, scores, keys, params)
    got = {keys[m]: (int(gr), keys[k]) for m, gr, k in zip(g.members, g.group, g.kept, strict=True)}
    # e~d (0.98), d~c (0.98), e !~ c (0.93): one group by transitivity; kept d (best score)
    assert got == {"e": (1, "d"), "d": (1, "d"), "c": (1, "d"), "b": (0, "a"), "a": (0, "a")}


def test_stage_apply_records_and_drops():
    from vidal.sample import Sample

    stage = DedupStage(threshold=0.9)
    dup, rep, alone = (Sample(k, 0, "x") for k in ("b", "a", "c"))
    stage.apply(dup, Decision(3, "a", 1))
    stage.apply(rep, Decision(3, "a", 1))
    stage.apply(alone, None)
    assert dup.dropped == "duplicate_of:a" and dup.dropped_by == "dedup"
    assert dup.fields["dedup"] == {"group": 3, "kept": "a", "neighbours": 1, "threshold": 0.9}
    assert rep.ok and rep.fields["dedup"]["kept"] == "a" and "dedup" not in alone.fields
    stage.apply(dup, None)  # no longer a duplicate: undone
    assert dup.ok and "dedup" not in dup.fields
    assert DedupStage(threshold=2).check() and DedupStage(index="hnsw").check()


# -- a built dataset with duplicates ------------------------------------------------------------
@pytest.fixture(scope="module")
def dup_dataset(tmp_path_factory, clip_bank):
    """The clip bank plus: an exact copy of synth-000 under another name (same title), and a
    copy of synth-001 with another title (same video, different VL score)."""
    base = tmp_path_factory.mktemp("dedup")
    source = base / "source"
    shutil.copytree(clip_bank, source)
    shutil.copy(source / "synth-000.mp4", source / "copy-000.mp4")
    shutil.copy(source / "synth-000.json", source / "copy-000.json")
    shutil.copy(source / "synth-001.mp4", source / "retitled-001.mp4")
    meta = json.loads((source / "synth-001.json").read_text())
    meta["title"] = "an entirely different title for the very same clip"
    (source / "retitled-001.json").write_text(json.dumps(meta))
    out = base / "out"
    assert build(model_config(*STAGES), str(source), str(out), quiet=True).failure is None
    return source, out


@pytest.fixture
def copy(dup_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dup_dataset[1], out)
    return dup_dataset[0], out


def shard_rows(out) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "shards").glob("vidal-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            found[row["key"]] = row
    return found


WITH_DEDUP = ["stages=[probe,keyframes,vl_filter,dedup,depth]", "vl_filter.batch_size=3"]


def decision(out) -> dict:
    return Store(str(out)).read_json(DECISIONS_MARKER)


def test_exact_copies_are_grouped_best_score_kept_and_the_build_repacks(copy):
    source, out = copy
    # tiny random CLIP puts distinct clips within cos 0.9998 of each other: copies are at 1
    before = shard_rows(out)
    depth_before = named(rows(out, "depth", *STAGES))
    outcome = redecide(model_config(*STAGES), str(out), "dedup", quiet=True, threshold=0.99995)
    assert outcome.failure is None
    made = decision(out)
    assert made["index"] == "flat" and made["groups"] == 2 and made["duplicates"] == 2

    strict = [*WITH_DEDUP, "dedup.threshold=0.99995"]
    vl = named(rows(out, "dedup", *strict))
    score = {k: s.fields["vl_filter"]["score"] for k, s in vl.items()}
    pairs = [("synth-000", "copy-000"), ("synth-001", "retitled-001")]
    for a, b in pairs:
        kept = min((a, b), key=lambda k: (-score[k], vl[k].key))
        other = b if kept == a else a
        assert vl[a].fields["dedup"]["group"] == vl[b].fields["dedup"]["group"]
        assert vl[kept].ok and vl[kept].fields["dedup"]["kept"] == vl[kept].key
        assert vl[other].dropped == f"duplicate_of:{vl[kept].key}"
        assert vl[other].dropped_by == "dedup"
    singles = set(vl) - {k for p in pairs for k in p}
    assert singles and all("dedup" not in vl[k].fields and vl[k].ok for k in singles)
    depth = named(rows(out, "depth", *strict))  # later stages agree with the decision
    assert {k for k, s in depth.items() if s.dropped_by == "dedup"} == {
        k for k, s in vl.items() if s.dropped_by == "dedup"
    }
    for k in singles:  # the clips whose decision did not change kept their depth as it was
        assert depth[k].fields["depth"] == depth_before[k].fields["depth"]

    store = Store(str(out))
    table = store.read_table(DECISIONS).to_pylist()
    assert {r["key"] for r in table} == {vl[k].key for p in pairs for k in p}

    # the shards were repacked: every sample still accounted for, duplicates dropped with reason
    after = shard_rows(out)
    assert set(after) == set(before)
    dropped = {k: r for k, r in after.items() if r["status"] == "dropped"}
    assert len(dropped) == 2
    assert all("duplicate_of:" in json.dumps(r) for r in dropped.values())

    # a rerun reuses the decisions (no index built) and changes nothing
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("work/*/*.parquet")}

    def no_index(*a, **k):
        raise AssertionError("decisions must be reused")

    dd_group = dd.group_vectors
    dd.group_vectors = no_index
    try:
        again = build(model_config(*strict), str(source), str(out), quiet=True)
    finally:
        dd.group_vectors = dd_group
    assert again.failure is None
    assert decision(out) == made
    assert {p: p.stat().st_mtime_ns for p in out.glob("work/*/*.parquet")} == stamp


def named(samples: dict) -> dict:
    """{clip name: sample}: keys carry a hash suffix (synth-000-59cecd5ada)."""
    return {key.rsplit("-", 1)[0]: s for key, s in samples.items()}


def plant_embeddings(out) -> None:
    """Rewrite every stored video embedding deterministically: distinct clips get unrelated
    random vectors, copies their original's, and synth-003 synth-002's plus noise (cos ~0.99):
    a re-encode's closeness, which tiny random CLIP weights cannot show (they put every clip
    within cos 0.998 of every other)."""
    store = Store(str(out))
    rng = np.random.default_rng(0)
    base = {f"synth-{i:03d}": rng.standard_normal(64) for i in range(6)}
    base["copy-000"], base["retitled-001"] = base["synth-000"], base["synth-001"]
    base["synth-003"] = base["synth-002"] + 0.1 * rng.standard_normal(64)
    for path in out.glob("work/vl_filter/*/emb-*.npz"):
        rel = str(path.relative_to(out))
        data = dict(np.load(io.BytesIO(store.read_bytes(rel))))
        video = np.stack([base[str(k).rsplit("-", 1)[0]] for k in data["keys"]])
        data["video"] = (video / np.linalg.norm(video, axis=1, keepdims=True)).astype(np.float16)
        buf = io.BytesIO()
        np.savez(buf, **data)
        store.write_bytes(rel, buf.getvalue())


def test_near_duplicates_by_threshold_and_a_changed_threshold_recomputes(copy, capsys):
    _, out = copy
    plant_embeddings(out)
    loose = ["dedup.threshold=0.98", *STAGES]
    assert main(["dedup", "--out", str(out), "--pipeline", "demo", *_base(), *loose]) == 0
    assert "3 groups" in capsys.readouterr().out
    first = decision(out)["fingerprint"]
    vl = named(rows(out, "dedup", *WITH_DEDUP, "dedup.threshold=0.98"))
    assert vl["synth-002"].fields["dedup"]["group"] == vl["synth-003"].fields["dedup"]["group"]
    assert len({k for k, s in vl.items() if s.dropped_by == "dedup"}) == 3
    depth = named(rows(out, "depth", *WITH_DEDUP, "dedup.threshold=0.98"))
    newly = next(k for k in ("synth-002", "synth-003") if depth[k].dropped_by == "dedup")
    assert "depth" not in depth[newly].fields

    # stricter: the near pair (cos ~0.99) splits, the exact copies stay grouped; the clip kept
    # now is computed by the later stages in the same run
    strict = [*WITH_DEDUP, "dedup.threshold=0.999"]
    assert build(model_config(*strict), None, str(out), quiet=True).failure is None
    assert decision(out)["groups"] == 2 and decision(out)["fingerprint"] != first
    vl = named(rows(out, "dedup", *strict))
    assert vl["synth-002"].ok and vl["synth-003"].ok
    assert "dedup" not in vl["synth-002"].fields and "dedup" not in vl["synth-003"].fields
    depth = named(rows(out, "depth", *strict))
    assert depth[newly].ok and "file" in depth[newly].fields["depth"]


def _base() -> list[str]:
    from tests.models import MODEL_STAGES

    return list(MODEL_STAGES)


def test_refusals(copy, tmp_path):
    _, out = copy
    with pytest.raises(ConfigError, match="dedup.threshold"):
        redecide(model_config(*STAGES), str(out), "dedup", threshold=3)
    with pytest.raises(ConfigError, match="no vidal build"):
        redecide(model_config(*STAGES), str(tmp_path / "nothing"), "dedup", threshold=0.9)
    no_vl = model_config("stages=[probe,keyframes,depth]")
    with pytest.raises(ConfigError, match="no vl_filter stage"):
        redecide(no_vl, str(out), "dedup", threshold=0.9)


def test_the_stage_applies_decisions_made_by_the_driver(copy):
    """The driver decides once from the stored rows; workers only read the decisions."""
    from vidal.stages.base import StageContext

    _, out = copy
    config = model_config(*STAGES, "dedup.threshold=0.99995")
    stage = config.dedup.setup_decision(StageContext(out=str(out)))
    fingerprint = stage.decide("vl_filter", [0, 1])
    assert fingerprint == decision(out)["fingerprint"]
    worker = model_config(*STAGES, "dedup.threshold=0.99995").dedup
    worker.setup(StageContext(out=str(out)))
    samples = list(rows(out, "vl_filter", *STAGES).values())  # untouched by the decision
    done = named({s.key: s for s in worker.process_batch(samples)})
    dropped = {k for k, s in done.items() if s.dropped_by == "dedup"}
    assert len(dropped) == 2 and dropped <= {"synth-000", "copy-000", "synth-001", "retitled-001"}
    assert all(s.lineage.get("dedup") for k, s in done.items() if "dedup" in s.fields)
    assert sum("dedup" in s.fields for s in done.values()) == 4
