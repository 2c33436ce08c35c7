"""The VL filter stage, refilter, lineage, missing models, and both model stages on Ray."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile

import numpy as np
import pytest

from tests.models import MODEL_STAGES, model_config, model_dataset, rows
from vidal.cli import main
from vidal.io.store import Store
from vidal.models.clip import ClipEmbedder
from vidal.models.depth import DepthEstimator
from vidal.models.resolve import ModelNotFoundError
from vidal.run.jobs import build, redecide
from vidal.stages.vl_filter import Scores, VLFilterStage, load_embeddings


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_bank):
    return model_dataset(tmp_path_factory, clip_bank)


@pytest.fixture
def copy(dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dataset[1], out)
    return out


def tar_keys(out) -> set[str]:
    keys = set()
    for path in (out / "shards").glob("vidal-*.tar"):
        with tarfile.open(path) as tar:
            keys |= {m.name.split(".", 1)[0] for m in tar.getmembers()}
    return keys


def files_digest(out, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.glob(pattern))
    }


def markers(out) -> dict:
    """Each stage marker's fingerprint and finish time: both change when a stage reruns."""
    found = {}
    for path in out.glob("work/*/*.done.json"):
        marker = json.loads(path.read_text())
        found[str(path)] = (marker.get("fingerprint"), marker.get("finished"))
    return found


def test_every_sample_is_scored_and_its_embeddings_stored(dataset):
    _, out = dataset
    samples = list(rows(out, "vl_filter").values())
    assert len(samples) == 6
    for sample in samples:
        result = sample.fields["vl_filter"]
        assert len(result["frame_scores"]) == 8
        assert result["score_max"] == max(result["frame_scores"])
        assert -1 <= result["score"] <= 1
    keys, video, text = load_embeddings(Store(str(out)), samples)
    assert keys == [s.key for s in samples] and video.dtype == text.dtype == np.float16
    video, text = video.astype(np.float32), text.astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(video, axis=1), 1, atol=2e-3)
    scores = [s.fields["vl_filter"]["score"] for s in samples]
    np.testing.assert_allclose((video * text).sum(axis=1), scores, atol=3e-3)
    # one file per (batch, shard): 2 shards, batches of 4 -> at most 4 files, not 6
    assert len(list(out.glob("work/vl_filter/0000?/emb-*.npz"))) <= 4


def test_lineage_records_model_and_revision_on_every_sample(dataset):
    _, out = dataset
    revisions = {
        "vl_filter": ("tiny:clip", ClipEmbedder.load("tiny:clip").revision),
        "depth": ("tiny:glpn", DepthEstimator.load("tiny:glpn").revision),
    }
    for sample in rows(out, "depth").values():
        for stage, (model, revision) in revisions.items():
            assert sample.lineage[stage]["model"] == model
            assert sample.lineage[stage]["revision"] == revision
            assert sample.fields[stage]["revision"] == revision
    for path in (out / "shards").glob("vidal-*.tar"):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    lineage = json.loads(tar.extractfile(member).read())["lineage"]
                    assert lineage["depth"]["revision"] == revisions["depth"][1]


def test_models_load_once_per_worker(dataset):
    _, out = dataset
    for stage in ("vl_filter", "depth"):  # 6 samples in batches of 4 (vl) and 8 (depth)
        (load,) = [json.loads(p.read_text()) for p in (out / "work" / stage / "loads").iterdir()]
        assert load["device"] == "cpu" and load["model"].startswith("tiny:")


def forced_scores(self, clips, texts):
    """Score 0.9 for clips whose text says 'circle', 0.1 for the others."""
    n, dim = len(texts), 4
    unit = np.eye(dim, dtype=np.float32)[np.arange(n) % dim]
    score = np.array([0.9 if "circle" in t else 0.1 for t in texts])
    return Scores(
        unit, unit, score, [np.full(len(c), s) for c, s in zip(clips, score, strict=True)]
    )


def test_threshold_keeps_and_drops_by_score_and_stores_every_score(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(VLFilterStage, "score", forced_scores)
    config = model_config("stages=[probe,keyframes,vl_filter]", "vl_filter.threshold=0.5")
    outcome = build(config, str(dataset[0]), str(tmp_path / "out"), quiet=True)
    samples = rows(tmp_path / "out", "vl_filter").values()
    circles = {s.key for s in samples if "circle" in s.meta["title"]}
    assert 0 < len(circles) < 6
    for sample in samples:
        assert sample.fields["vl_filter"]["score"] in (0.9, 0.1)  # dropped ones too
        if sample.key in circles:
            assert sample.ok
        else:
            assert (sample.dropped, sample.dropped_by) == ("vl_score<0.5", "vl_filter")
    assert tar_keys(tmp_path / "out") == circles
    assert outcome.total["drops"] == {"vl_score<0.5": 6 - len(circles)}


def test_refilter_redecides_without_recomputing_and_build_repacks(copy, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("refilter must not load a model")

    monkeypatch.setattr(ClipEmbedder, "load", no_model)
    monkeypatch.setattr(DepthEstimator, "load", no_model)
    before = rows(copy, "vl_filter")
    embeddings, vl_markers = (
        files_digest(copy, "work/vl_filter/*/emb-*.npz"),
        vl_marker_stamps(copy),
    )
    depth_files = files_digest(copy, "work/depth/*/*.png")
    scores = sorted(s.fields["vl_filter"]["score"] for s in before.values())
    threshold = scores[3]  # keeps the top 3
    outcome = redecide(model_config(), str(copy), "refilter", quiet=True, threshold=threshold)
    assert outcome.failure is None and outcome.total["kept"] == 3
    config = [
        "stages=[probe,keyframes,vl_filter,refilter,depth]",
        f"refilter.threshold={threshold}",
    ]
    after = rows(copy, "depth", *config)
    kept = {k for k, s in before.items() if s.fields["vl_filter"]["score"] >= threshold}
    assert {k for k, s in after.items() if s.ok} == kept
    assert {s.dropped for k, s in after.items() if k not in kept} == {f"vl_score<{threshold}"}
    assert all(after[k].lineage["refilter"] for k in kept)  # provenance of the decision
    assert files_digest(copy, "work/vl_filter/*/emb-*.npz") == embeddings
    assert files_digest(copy, "work/depth/*/*.png") == depth_files  # reused, not recomputed
    assert vl_marker_stamps(copy) == vl_markers  # the VL filter did not rerun
    assert all(s.fields["vl_filter"] == before[k].fields["vl_filter"] for k, s in after.items())
    assert tar_keys(copy) == kept

    stamps = markers(copy)
    build(model_config(*config), None, str(copy), quiet=True)  # the same decision: no work
    assert markers(copy) == stamps


def vl_marker_stamps(out) -> dict:
    return {k: v for k, v in markers(out).items() if "/vl_filter/" in k}


def test_refilter_top_fraction_per_term_computes_newly_kept_in_the_same_run(copy):
    before = rows(copy, "vl_filter")
    redecide(model_config(), str(copy), "refilter", quiet=True, threshold=1.0)  # drop all
    assert tar_keys(copy) == set()
    redecide(model_config(), str(copy), "refilter", quiet=True, top_fraction=0.5)
    by_term = {}
    for key, sample in before.items():
        by_term.setdefault(sample.meta["extra"]["term"], []).append(key)
    expected = set()
    for keys in by_term.values():
        keys.sort(key=lambda k: (-before[k].fields["vl_filter"]["score"], k))
        expected |= set(keys[: math.ceil(len(keys) / 2)])
    config = ["stages=[probe,keyframes,vl_filter,refilter,depth]", "refilter.top_fraction=0.5"]
    done = rows(copy, "depth", *config)
    assert {k for k, s in done.items() if s.ok} == expected
    assert all("file" in done[k].fields["depth"] for k in expected)
    assert all(s.dropped.startswith("vl_top0.5") for k, s in done.items() if k not in expected)
    assert tar_keys(copy) == expected


def test_refilter_cli_and_its_refusals(copy, capsys):
    argv = ["refilter", "--out", str(copy), "--pipeline", "demo"]
    assert main([*argv, "--top-fraction", "1", *MODEL_STAGES]) == 0
    printed = capsys.readouterr().out
    assert "refilter: rule {'top_fraction': 1.0}" in printed
    assert "refilter.top_fraction=1.0" in printed  # how to keep the decision
    assert main([*argv, "--threshold", "3", *MODEL_STAGES]) == 2
    assert "refilter.threshold is a cosine in [-1, 1]" in capsys.readouterr().err
    nothing = ["refilter", "--out", str(copy.parent / "nothing"), "--pipeline", "demo"]
    assert main([*nothing, "--threshold", "0.2", *MODEL_STAGES]) == 2
    assert "holds no vidal build" in capsys.readouterr().err


def test_a_model_that_is_not_available_is_not_a_result(tmp_path, monkeypatch, capsys, dataset):
    """A model that cannot load is the environment's fault: nothing is stored as a result,
    the build fails with the cause in one sentence, and a plain rerun (model back) redoes it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "out"
    missing = model_config("stages=[probe,keyframes,vl_filter]", "vl_filter.model=acme/missing")
    outcome = build(missing, str(dataset[0]), str(out))
    assert "vl_filter: model_unavailable" in outcome.failure
    assert "'acme/missing' is not in the Hugging Face cache" in outcome.failure
    assert "rerun the same command" in outcome.failure
    assert not list(out.glob("work/vl_filter/*.done.json"))  # no failure stored as a result
    assert list(out.glob("work/keyframes/*.done.json"))  # the stages before it are kept
    assert "Traceback" not in capsys.readouterr().err

    real_load = ClipEmbedder.load
    gone = {"on": True}

    def flaky(*args, **kwargs):  # the same config; the model is missing, then comes back
        if gone["on"]:
            raise ModelNotFoundError("tiny:clip is not reachable right now")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(ClipEmbedder, "load", flaky)
    config = model_config("stages=[probe,keyframes,vl_filter]")
    assert "model_unavailable" in build(config, str(dataset[0]), str(out), quiet=True).failure
    gone["on"] = False
    again = build(config, str(dataset[0]), str(out), quiet=True)
    assert again.failure is None and again.total["kept"] == 6
    assert all("score" in s.fields["vl_filter"] for s in rows(out, "vl_filter").values())


def test_both_model_stages_run_as_ray_actor_pools(ray_cluster, copy):
    """On a copy of the built dataset, changed model-stage settings rerun just those two
    stages, on Ray: 3 batches each, through one actor each, which loads its model once."""
    for stage in ("vl_filter", "depth"):
        shutil.rmtree(copy / "work" / stage / "loads")
    config = model_config(
        "runner.kind=ray",
        "vl_filter.batch_size=2",
        "depth.batch_size=2",
        "vl_filter.num_cpus=0.5",  # two actors must leave a CPU for Ray's own tasks
        "depth.num_cpus=0.5",
        "vl_filter.threshold=-1",
        "depth.output_short_side=90",
    )
    outcome = build(config, None, str(copy), quiet=True)
    assert outcome.failure is None and outcome.total["kept"] == 6
    for stage in ("vl_filter", "depth"):
        assert len(list((copy / "work" / stage / "loads").iterdir())) == 1
    for sample in rows(copy, "depth").values():
        assert "score" in sample.fields["vl_filter"]
        assert (sample.fields["depth"]["height"], sample.fields["depth"]["width"]) == (90, 120)
