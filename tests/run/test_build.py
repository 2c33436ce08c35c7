"""Builds with the local runner: shard membership, accounting, resume, recompute rules,
--retry-failed, new inputs, `vidal run <stage>`, and fsspec outputs."""

from __future__ import annotations

import collections
import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from vidal.cli import main
from vidal.io.sources import list_source, shard_of
from vidal.media.synth import make_clip, make_text_as_mp4
from vidal.run.execute import LocalRunner
from vidal.run.jobs import build
from vidal.stages import STAGES

# The build machinery is what these tests are about: the four media stages are enough
# (model stages go through the same code paths and have their own tests).
STAGE_NAMES = ["probe", "keyframes", "audio", "clip"]
CORE = f"stages=[{','.join(STAGE_NAMES)}]"


# -- helpers ------------------------------------------------------------------------------


def parquet_rows(out: Path) -> dict[int, list[dict]]:
    return {
        int(p.stem.split("-")[1]): pq.read_table(p).to_pylist()
        for p in sorted((out / "shards").glob("vidal-*.parquet"))
    }


def parquet_keys(out: Path) -> dict[int, list[str]]:
    return {s: sorted(r["key"] for r in rows) for s, rows in parquet_rows(out).items()}


def tar_keys_from_bytes(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})


def tar_keys(out: Path) -> dict[int, list[str]]:
    return {
        int(p.stem.split("-")[1]): tar_keys_from_bytes(p.read_bytes())
        for p in sorted((out / "shards").glob("vidal-*.tar"))
    }


def markers(out: Path) -> dict[tuple[str, int], dict]:
    found = {}
    for stage in STAGE_NAMES:
        for p in sorted((out / "work" / stage).glob("*.done.json")):
            found[(stage, int(p.name.split(".")[0]))] = json.loads(p.read_text())
    return found


def mtimes(out: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob(pattern))}


def stats(out: Path) -> dict[int, dict]:
    return {
        int(p.name.split(".")[0].split("-")[1]): json.loads(p.read_text())
        for p in sorted((out / "shards").glob("vidal-*.stats.json"))
    }


@pytest.fixture
def calls(monkeypatch):
    """Counts each stage's `process` calls, per stage and per sample key."""
    counter: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, cls in STAGES.items():
        original = cls.process

        def counted(self, sample, _original=original, _name=name):
            counter[_name][sample.key] += 1
            return _original(self, sample)

        monkeypatch.setattr(cls, "process", counted)
    return counter


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch):
    """Durability is not what these tests check (test_store and test_kill_resume do): skip
    fsync so builds are quick. Temp file + rename still happens."""
    monkeypatch.setattr("vidal.io.store._fsync_file", lambda path: None)
    monkeypatch.setattr("vidal.io.store._fsync_dir", lambda path: None)


@pytest.fixture
def src(src4) -> Path:
    return src4


@pytest.fixture
def config(local_config):
    """local_config with the pipeline's stages pinned to STAGE_NAMES."""
    return lambda *overrides: local_config(CORE, *overrides)


def _build(config, src, out, **kw):
    outcome = build(config, str(src), str(out), quiet=True, **kw)
    assert outcome.failure is None, outcome.failure
    return outcome


# -- membership and accounting ------------------------------------------------------------


def test_membership_is_deterministic_across_outputs(src, tmp_path, config):
    a, b = tmp_path / "a", tmp_path / "b"
    _build(config("shards=3"), src, a)
    _build(config("shards=3"), src, b)
    keys_a, keys_b = parquet_keys(a), parquet_keys(b)
    assert sorted(keys_a) == [0, 1, 2]
    assert keys_a == keys_b
    assert tar_keys(a) == tar_keys(b)
    for shard, keys in keys_a.items():
        assert all(shard_of(k, 3) == shard for k in keys)
    # the tar bytes are the same too: fixed mtime and owner, sorted members
    for shard in range(3):
        name = f"shards/vidal-{shard:05d}.tar"
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_a_pass_hands_the_largest_shards_to_the_runner_first(src, tmp_path, config):
    """A shard is one task: the small ones go last, to fill the cores while the large finish."""
    handed: list[list[int]] = []

    class Recording(LocalRunner):
        def stream(self, plan, ctx, items, progress=None):
            handed.append([item["shard"] for item in items])
            return super().stream(plan, ctx, items, progress)

    _build(config("shards=3", "stages=[probe]"), src, tmp_path / "out", runner=Recording())
    sizes = {s: len(keys) for s, keys in parquet_keys(tmp_path / "out").items()}
    assert len(set(sizes.values())) > 1, "the source should give shards of different sizes"
    assert handed == [sorted(sizes, key=lambda s: (-sizes[s], s))]


def test_every_input_has_exactly_one_row_and_counts_add_up(src, tmp_path, config):
    make_text_as_mp4(src / "not-a-video.mp4")
    (src / "empty.mp4").write_bytes(b"")
    make_clip(src / "long.mp4", duration=3.0, width=64, height=48, audio=False)
    out = tmp_path / "out"
    _build(config("shards=4", "probe.max_duration=2.8"), src, out)

    inputs = {s.key for s in list_source(str(src))}
    rows = parquet_rows(out)
    assert sorted(rows) == [0, 1, 2, 3]
    seen = collections.Counter(r["key"] for shard_rows in rows.values() for r in shard_rows)
    assert set(seen) == inputs
    assert all(n == 1 for n in seen.values()), seen

    by_key = {r["key"]: r for shard_rows in rows.values() for r in shard_rows}
    status = {Path(r["source"]).name: r["status"] for r in by_key.values()}
    assert status["not-a-video.mp4"] == "failed"
    assert status["empty.mp4"] == "failed"
    assert status["long.mp4"] == "dropped"
    assert sum(s == "ok" for s in status.values()) == len(list(src.glob("synth-*.mp4")))

    tars = tar_keys(out)
    shard_stats = stats(out)
    for shard, shard_rows in rows.items():
        kept = sorted(r["key"] for r in shard_rows if r["status"] == "ok")
        assert tars[shard] == kept
        counts = collections.Counter(r["status"] for r in shard_rows)
        st = shard_stats[shard]
        assert st["samples_in"] == len(shard_rows)
        assert (st["kept"], st["dropped"], st["failed"]) == (
            counts["ok"],
            counts["dropped"],
            counts["failed"],
        )
        assert st["tar_bytes"] == (out / f"shards/vidal-{shard:05d}.tar").stat().st_size
        assert sum(st["errors"].values()) == counts["failed"]

    dataset = json.loads((out / "dataset.json").read_text())
    totals = dataset["totals"]
    for field in ("samples_in", "kept", "dropped", "failed", "sample_bytes", "tar_bytes"):
        assert totals[field] == sum(s[field] for s in shard_stats.values()), field
    assert totals["samples_in"] == len(inputs)
    assert totals["shards"] == 4
    assert sorted(dataset["shard_files"]) == [f"shards/vidal-{i:05d}.tar" for i in range(4)]
    errors = collections.Counter()
    for s in shard_stats.values():
        errors.update(s["errors"])
    assert totals["errors"] == dict(errors)


def test_tar_members_of_a_sample_are_adjacent(src, tmp_path, config):
    out = tmp_path / "out"
    _build(config("shards=2"), src, out)
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            order = [m.name.split(".", 1)[0] for m in tar.getmembers()]
        runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
        assert len(runs) == len(set(runs)), order


def test_shard_parquets_share_one_schema_and_read_as_one_table(src, tmp_path, config):
    """The per-shard accounting is one table split in files: every shard's parquet has the
    same columns and types (also an empty shard, also a shard without any error), so
    `pq.read_table(files)` / pyarrow datasets / Ray read them together."""
    for video in sorted(src.glob("*.mp4"))[2:]:
        video.unlink()
    make_text_as_mp4(src / "not-a-video.mp4")
    out = tmp_path / "out"
    _build(config("shards=6"), src, out)
    files = sorted(str(p) for p in (out / "shards").glob("vidal-*.parquet"))
    assert len(files) == 6
    rows = parquet_rows(out)
    assert any(not r for r in rows.values()), "expected an empty shard"
    schemas = {f: pq.read_schema(f) for f in files}
    first = schemas[files[0]]
    differ = {
        Path(f).name: sorted(
            f"{n}: {schema.field(n).type if n in schema.names else '-'}"
            f" vs {first.field(n).type if n in first.names else '-'}"
            for n in set(schema.names) | set(first.names)
            if n not in schema.names
            or n not in first.names
            or schema.field(n).type != first.field(n).type
        )
        for f, schema in schemas.items()
    }
    assert not any(differ.values()), differ
    table = pq.read_table(files)
    assert table.num_rows == 3
    assert {"key", "status", "error"} <= set(table.column_names)
    assert sorted(table.column("status").to_pylist()) == ["failed", "ok", "ok"]


# -- resume and recompute -----------------------------------------------------------------


def test_rerun_of_a_finished_build_does_no_work(src, tmp_path, config, calls):
    out = tmp_path / "out"
    _build(config("shards=3"), src, out)
    n = len(list(src.glob("*.mp4")))
    assert sum(calls["probe"].values()) == n
    before_markers, before_tars = markers(out), mtimes(out, "shards/*")
    before_payloads = mtimes(out, "work/*/*/*")
    calls.clear()

    outcome = _build(config("shards=3"), src, out)
    assert not any(sum(c.values()) for c in calls.values()), dict(calls)
    assert markers(out) == before_markers
    assert mtimes(out, "shards/*") == before_tars
    assert mtimes(out, "work/*/*/*") == before_payloads
    assert outcome.total["kept"] == n


STEPS = [
    ("clip.crf=30", ["clip"]),
    ("audio.sample_rate=8000", ["audio", "clip"]),
    ("keyframes.jpeg_quality=80", ["keyframes", "audio", "clip"]),
    ("probe.min_side=8", ["probe", "keyframes", "audio", "clip"]),
    # resources: how a stage runs, not what it computes
    ("clip.batch_size=1", []),
    ("keyframes.batch_size=3", []),
    ("probe.num_cpus=2", []),
    ("audio.concurrency=2", []),
    ("clip.num_gpus=1", []),
]


def test_changed_parameter_recomputes_that_stage_and_later_ones_only(src, tmp_path, config, calls):
    """One override at a time (cumulative): a parameter recomputes its stage for every sample,
    and the stages after it for the samples whose input changed (nothing else); a resource
    field recomputes nothing. At the end the shards equal a fresh build's with the same config."""
    out = tmp_path / "out"
    overrides = ["shards=3"]
    _build(config(*overrides), src, out)
    n = len(list(src.glob("*.mp4")))
    for override, recomputed in STEPS:
        before, before_stats = markers(out), stats(out)
        before_tars = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
        before_shard_files = mtimes(out, "shards/*")
        calls.clear()
        overrides.append(override)
        _build(config(*overrides), src, out)

        after = markers(out)
        assert set(after) == set(before)
        for (stage, shard), marker in after.items():
            if stage in recomputed:
                assert marker["fingerprint"] != before[(stage, shard)]["fingerprint"]
                assert marker["finished"] > before[(stage, shard)]["finished"]
            else:
                assert marker == before[(stage, shard)], (override, stage, shard)
        for stage in STAGE_NAMES:
            done = sum(calls[stage].values())
            if recomputed and stage == recomputed[0]:
                assert done == n, (override, stage, dict(calls))
            else:  # later stages: the samples whose input changed (clips without audio do
                # not change when the audio sample rate does), at most once each
                assert done <= (n if stage in recomputed else 0), (override, stage, dict(calls))
                assert all(c == 1 for c in calls[stage].values())
        after_stats = stats(out)
        if recomputed:
            for shard, st in after_stats.items():
                if st["samples_in"]:
                    assert st["fingerprint"] != before_stats[shard]["fingerprint"], shard
        else:
            assert mtimes(out, "shards/*") == before_shard_files, override
        if override == "clip.crf=30":  # a new encode: every non-empty tar changed
            after_tars = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
            changed = [k for k in after_tars if after_tars[k] != before_tars[k]]
            assert len(changed) == sum(1 for st in after_stats.values() if st["kept"])
    fresh = tmp_path / "fresh"
    _build(config(*overrides), src, fresh)
    for tar in (fresh / "shards").glob("*.tar"):
        assert (out / "shards" / tar.name).read_bytes() == tar.read_bytes(), tar.name


def test_retry_failed_reruns_only_failed_samples(src, tmp_path, config, calls):
    victim = src / "synth-001.mp4"
    good_bytes = victim.read_bytes()
    victim.write_bytes(b"\x00garbage, not a video" * 100)
    out = tmp_path / "out"
    cfg = config("shards=3")
    _build(cfg, src, out)
    rows = {r["key"]: r for rs in parquet_rows(out).values() for r in rs}
    (victim_key,) = [k for k, r in rows.items() if r["source"] == str(victim.resolve())]
    assert rows[victim_key]["status"] == "failed"
    assert rows[victim_key]["error_reason"].startswith("probe")
    victim_shard = shard_of(victim_key, 3)
    assert victim_key not in tar_keys(out)[victim_shard]

    victim.write_bytes(good_bytes)  # the transient problem goes away
    payloads, shard_files = mtimes(out, "work/*/*/*"), mtimes(out, "shards/*")
    before = markers(out)
    calls.clear()
    _build(cfg, src, out)  # a plain rerun does not retry failures
    assert not any(sum(c.values()) for c in calls.values())
    statuses = {r["key"]: r["status"] for r in parquet_rows(out)[victim_shard]}
    assert statuses[victim_key] == "failed"
    assert mtimes(out, "work/*/*/*") == payloads

    outcome = _build(cfg, src, out, retry_failed=True)
    for stage in STAGE_NAMES:
        assert dict(calls[stage]) == {victim_key: 1}, (stage, dict(calls[stage]))
    rows = {r["key"]: r for rs in parquet_rows(out).values() for r in rs}
    assert rows[victim_key]["status"] == "ok"
    assert all(r["status"] == "ok" for r in rows.values())
    assert outcome.total["kept"] == len(rows)
    assert victim_key in tar_keys(out)[victim_shard]
    # nobody else's work files were rewritten
    after_payloads = mtimes(out, "work/*/*/*")
    for path, mtime in payloads.items():
        assert after_payloads[path] == mtime, path
    new_payloads = set(after_payloads) - set(payloads)
    assert new_payloads and all(victim_key in p for p in new_payloads)
    # other shards were not repacked; their stage markers are untouched
    after_shard_files = mtimes(out, "shards/*")
    for path, mtime in shard_files.items():
        if f"vidal-{victim_shard:05d}." not in path:
            assert after_shard_files[path] == mtime, path
    for (stage, shard), marker in markers(out).items():
        if shard != victim_shard:
            assert marker == before[(stage, shard)]
        else:
            assert marker["fingerprint"] == before[(stage, shard)]["fingerprint"]


def test_retry_failed_starts_at_the_stage_that_failed(src, tmp_path, config, calls, monkeypatch):
    from vidal.stages.clip import ClipStage

    out = tmp_path / "out"
    cfg = config("shards=2")
    counted = ClipStage.process
    broken = {"on": True}
    victim = {}

    def flaky(self, sample):
        if broken["on"] and sample.source.endswith("synth-002.mp4"):
            victim["key"] = sample.key
            raise OSError("transient: disk hiccup")
        return counted(self, sample)

    monkeypatch.setattr(ClipStage, "process", flaky)
    _build(cfg, src, out)
    rows = {r["key"]: r for rs in parquet_rows(out).values() for r in rs}
    assert rows[victim["key"]]["status"] == "failed"
    assert rows[victim["key"]]["error_reason"] == "clip: exception"
    broken["on"] = False
    calls.clear()
    _build(cfg, src, out, retry_failed=True)
    assert sum(calls["probe"].values()) == 0
    assert sum(calls["keyframes"].values()) == 0
    assert sum(calls["audio"].values()) == 0
    assert dict(calls["clip"]) == {victim["key"]: 1}
    rows = {r["key"]: r for rs in parquet_rows(out).values() for r in rs}
    assert rows[victim["key"]]["status"] == "ok"


def test_new_video_in_the_source_is_processed(src, clip_bank, tmp_path, config):
    out = tmp_path / "out"
    cfg = config("shards=3")
    _build(cfg, src, out)
    before, before_keys = markers(out), parquet_keys(out)
    before_shards = mtimes(out, "shards/*")

    shutil.copy(clip_bank / "synth-003.mp4", src / "newcomer.mp4")
    (src / "newcomer.txt").write_text("a brand new clip #new")
    outcome = _build(cfg, src, out)
    (new,) = [s for s in list_source(str(src)) if s.source.endswith("newcomer.mp4")]
    new_shard = shard_of(new.key, 3)
    keys = parquet_keys(out)
    holders = [s for s, ks in keys.items() if new.key in ks]
    assert holders == [new_shard]
    assert keys[new_shard] == sorted([*before_keys[new_shard], new.key])
    assert new.key in tar_keys(out)[new_shard]
    assert outcome.total["samples_in"] == sum(len(k) for k in before_keys.values()) + 1
    assert outcome.total["kept"] == outcome.total["samples_in"]
    after_shards = mtimes(out, "shards/*")
    for (stage, shard), marker in markers(out).items():
        if shard != new_shard:
            assert marker == before[(stage, shard)]
    for path, mtime in before_shards.items():
        if f"vidal-{new_shard:05d}." not in path:
            assert after_shards[path] == mtime


def test_removed_video_leaves_the_shards(src, tmp_path, config):
    out = tmp_path / "out"
    cfg = config("shards=2")
    _build(cfg, src, out)
    (gone,) = [s for s in list_source(str(src)) if s.source.endswith("synth-002.mp4")]
    assert any(gone.key in keys for keys in tar_keys(out).values())
    before = markers(out)
    (src / "synth-002.mp4").unlink()
    outcome = _build(cfg, src, out)
    assert not any(gone.key in keys for keys in parquet_keys(out).values())
    assert not any(gone.key in keys for keys in tar_keys(out).values())
    assert outcome.total["samples_in"] == len(list(src.glob("*.mp4")))
    other = 1 - shard_of(gone.key, 2)
    for stage in STAGE_NAMES:  # the other shard was left alone
        assert markers(out)[(stage, other)] == before[(stage, other)]


# -- one stage alone ----------------------------------------------------------------------


def test_vidal_run_keyframes_runs_probe_and_keyframes_only(src, tmp_path):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--local", "--quiet", "--pipeline", "demo", "--shards", "3"]
    # the override right after the stage name: see test_cli for overrides after the options
    assert main(["run", "keyframes", CORE, "--source", str(src), *argv]) == 0
    n = len(list(src.glob("*.mp4")))
    for stage in ("probe", "keyframes"):
        done = sorted((out / "work" / stage).glob("*.done.json"))
        assert len(done) == 3
        assert sum(json.loads(p.read_text())["samples"] for p in done) == n
    assert len(list((out / "work" / "keyframes").glob("*/*.jpg"))) == n
    assert not (out / "work" / "audio").exists()
    assert not (out / "work" / "clip").exists()
    assert not (out / "shards").exists()
    assert not (out / "dataset.json").exists()

    first = markers(out)
    # the build that follows reuses them and adds the rest (no --source: the plan is kept)
    assert main(["build", "--source", str(src), *argv, CORE]) == 0
    after = markers(out)
    for key, marker in first.items():
        assert after[key] == marker
    assert {stage for stage, _ in after} == set(STAGE_NAMES)
    assert sum(len(k) for k in tar_keys(out).values()) == n


def test_vidal_run_without_source_uses_the_existing_plan(src, tmp_path):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--local", "--quiet", "--pipeline", "demo", "--shards", "2"]
    assert main(["run", "probe", CORE, "--source", str(src), *argv]) == 0
    assert main(["run", "keyframes", CORE, *argv]) == 0
    done = sorted((out / "work" / "keyframes").glob("*.done.json"))
    assert len(done) == 2
    n = len(list(src.glob("*.mp4")))
    assert sum(json.loads(p.read_text())["samples"] for p in done) == n


# -- fsspec outputs -----------------------------------------------------------------------


def _fs_tar_keys(url: str) -> dict[int, list[str]]:
    fs, root = fsspec.core.url_to_fs(url)
    found = {}
    for path in sorted(fs.glob(root.rstrip("/") + "/shards/vidal-*.tar")):
        shard = int(path.rsplit("-", 1)[1].split(".")[0])
        found[shard] = tar_keys_from_bytes(fs.cat_file(path))
    return found


def _fs_parquet_keys(url: str) -> dict[int, list[str]]:
    fs, root = fsspec.core.url_to_fs(url)
    found = {}
    for path in sorted(fs.glob(root.rstrip("/") + "/shards/vidal-*.parquet")):
        shard = int(path.rsplit("-", 1)[1].split(".")[0])
        table = pq.read_table(io.BytesIO(fs.cat_file(path)))
        found[shard] = sorted(r["key"] for r in table.to_pylist())
    return found


def test_fsspec_outputs_give_the_same_shards(src, tmp_path, config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = tmp_path / "plain"
    _build(config("shards=3"), src, plain)
    expected_tars, expected_rows = tar_keys(plain), parquet_keys(plain)
    assert sum(map(len, expected_tars.values())) > 0

    file_url = "file://" + str(tmp_path / "as-url")
    _build(config("shards=3"), src, file_url)
    assert tar_keys(tmp_path / "as-url") == expected_tars
    assert parquet_keys(tmp_path / "as-url") == expected_rows

    mem_url = f"memory://vidal-{uuid.uuid4().hex[:8]}/out"
    try:
        outcome = _build(config("shards=3"), src, mem_url)
        assert _fs_tar_keys(mem_url) == expected_tars
        assert _fs_parquet_keys(mem_url) == expected_rows
        fs, root = fsspec.core.url_to_fs(mem_url)
        assert fs.exists(root + "/dataset.json")
        assert outcome.total["kept"] == sum(map(len, expected_tars.values()))
        # a rerun against the memory store resumes (nothing recomputed)
        stamps = {p: fs.cat_file(p) for p in fs.glob(root + "/work/*/*.done.json")}
        _build(config("shards=3"), src, mem_url)
        assert {p: fs.cat_file(p) for p in fs.glob(root + "/work/*/*.done.json")} == stamps
    finally:
        fsspec.filesystem("memory").rm(mem_url.split("://")[1].split("/")[0], recursive=True)
    # nothing leaked onto the local disk under a "memory:" folder
    assert not any("memory" in p.name for p in tmp_path.iterdir())
