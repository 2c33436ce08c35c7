"""Sources: folders of videos with sidecars, and manifests (parquet, csv, jsonl)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidal.io.sources import SourceError, list_source, make_key
from vidal.run.jobs import build

TAR_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def _by_name(samples) -> dict:
    return {Path(s.source).name: s for s in samples}


def _assert_tar_safe(keys) -> None:
    keys = list(keys)
    assert len(set(keys)) == len(keys), keys
    for key in keys:
        assert TAR_SAFE.match(key), key
        assert "." not in key and "/" not in key and "\\" not in key


# -- folders ------------------------------------------------------------------------------


def test_folder_sidecars_give_title_and_hashtags(good_source):
    samples = list(list_source(str(good_source)))
    assert len(samples) == len(list(good_source.glob("*.mp4")))
    for sample in samples:
        video = Path(sample.source)
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sample.meta["title"] == sidecar["title"]
        assert sample.meta["hashtags"] == sidecar["hashtags"]
        assert sample.meta["extra"]["shape"] == sidecar["shape"]  # other keys kept as extra
        assert sample.ok
        assert sample.shard == -1
        assert video.is_absolute() and video.is_file()
    _assert_tar_safe(s.key for s in samples)


def test_txt_sidecar_gives_title_and_its_hashtags(clip_bank, tmp_path):
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "surfing.mp4")
    (tmp_path / "surfing.txt").write_text("Big wave\nsurfing at dawn #surf #Ocean\n")
    (sample,) = list_source(str(tmp_path))
    assert sample.meta["title"] == "Big wave surfing at dawn #surf #Ocean"
    assert sample.meta["hashtags"] == ["#surf", "#Ocean"]


def test_no_sidecar_title_comes_from_the_file_name(clip_bank, tmp_path):
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "a_dog_on_a_skateboard.mp4")
    (sample,) = list_source(str(tmp_path))
    assert sample.meta["title"] == "a dog on a skateboard"
    assert sample.meta["hashtags"] == []


def test_bad_json_sidecar_is_a_sample_error_not_a_source_error(clip_bank, tmp_path):
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "a.mp4")
    shutil.copy(clip_bank / "synth-001.mp4", tmp_path / "b.mp4")
    (tmp_path / "a.json").write_text("[1, 2, 3]")
    (tmp_path / "b.json").write_text("{not json")
    samples = _by_name(list_source(str(tmp_path)))
    assert set(samples) == {"a.mp4", "b.mp4"}
    for sample in samples.values():
        assert not sample.ok
        assert sample.errors["source"].startswith("bad_sidecar")


def test_nested_folders_and_non_videos(clip_bank, tmp_path):
    src = tmp_path / "src"
    for sub in ("a", "b", "a/deeper"):
        (src / sub).mkdir(parents=True)
        shutil.copy(clip_bank / "synth-001.mp4", src / sub / "clip.mp4")
    shutil.copy(clip_bank / "synth-002.mp4", src / "UPPER.MP4")
    shutil.copy(clip_bank / "synth-003.mp4", src / "movie.MoV")
    (src / "README.md").write_text("not a video")
    (src / "thumb.jpg").write_bytes(b"\xff\xd8\xff")
    (src / "a" / "notes.txt").write_text("a caption with no video")
    (src / "captions.json").write_text("{}")
    (src / "folder.mp4").mkdir()  # a folder with a video's name is not a video
    samples = list(list_source(str(src)))
    rels = sorted(Path(s.source).relative_to(src.resolve()).as_posix() for s in samples)
    assert rels == ["UPPER.MP4", "a/clip.mp4", "a/deeper/clip.mp4", "b/clip.mp4", "movie.MoV"]
    _assert_tar_safe(s.key for s in samples)


def test_awkward_file_names_give_tar_safe_keys(clip_bank, tmp_path):
    names = ["my.clip v2.mp4", "émoji 🎬 ünïcode.mp4", "..hidden.mp4", "a;rm -rf.mp4", "x" * 200]
    for name in names:
        target = name if name.endswith(".mp4") else name + ".mp4"
        shutil.copy(clip_bank / "synth-000.mp4", tmp_path / target)
    samples = list(list_source(str(tmp_path)))
    assert len(samples) == len(names)
    _assert_tar_safe(s.key for s in samples)
    assert all(len(s.key) <= 64 for s in samples)


def test_keys_are_stable_across_listings(good_source):
    first = [s.key for s in list_source(str(good_source))]
    second = [s.key for s in list_source(str(good_source))]
    assert first == second


def test_make_key_differs_by_uri_and_is_deterministic():
    assert make_key("clip", "/a/clip.mp4") == make_key("clip", "/a/clip.mp4")
    assert make_key("clip", "/a/clip.mp4") != make_key("clip", "/b/clip.mp4")
    _assert_tar_safe([make_key("../../etc/x", "u"), make_key("", "u"), make_key("a.b/c", "u")])


def test_missing_source_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(list_source(str(tmp_path / "nope")))


def test_unknown_file_type_is_a_source_error(tmp_path):
    odd = tmp_path / "list.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(SourceError, match="list.xlsx"):
        list(list_source(str(odd)))


# -- manifests ----------------------------------------------------------------------------


ROWS = [
    {
        "path": "videos/one.mp4",
        "title": "a red circle",
        "hashtags": ["red", "#circle"],
        "license": "cc-by",
        "views": 12,
    },
    {
        "path": "videos/two.mp4",
        "title": "a blue square",
        "hashtags": ["#blue", "#square"],
        "license": "cc0",
        "views": 7,
    },
]


def _manifest(folder: Path, fmt: str, rows: list[dict]) -> Path:
    path = folder / f"manifest.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        cols = list(rows[0])
        lines = [",".join(cols)]
        for r in rows:
            values = [" ".join(v) if isinstance(v, list) else str(v) for v in r.values()]
            lines.append(",".join(values))
        path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_manifest_formats(fmt, clip_bank, tmp_path, monkeypatch):
    (tmp_path / "videos").mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "videos" / "one.mp4")
    shutil.copy(clip_bank / "synth-001.mp4", tmp_path / "videos" / "two.mp4")
    rows = [dict(r) for r in ROWS]
    if fmt == "csv":  # csv has no lists: hashtags as a "#a #b" string
        for r in rows:
            r["hashtags"] = " ".join(t if t.startswith("#") else f"#{t}" for t in r["hashtags"])
    manifest = _manifest(tmp_path, fmt, rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths resolve against the manifest, not the cwd
    samples = list(list_source(str(manifest)))
    assert len(samples) == 2
    for sample, row in zip(samples, ROWS, strict=True):
        assert sample.source == str((tmp_path / row["path"]).resolve())
        assert Path(sample.source).is_file()
        assert sample.meta["title"] == row["title"]
        expected_tags = [t if t.startswith("#") else f"#{t}" for t in row["hashtags"]]
        assert sample.meta["hashtags"] == expected_tags
        assert sample.meta["extra"]["license"] == row["license"]
        assert int(sample.meta["extra"]["views"]) == row["views"]
        assert "path" not in sample.meta["extra"] and "title" not in sample.meta["extra"]
        assert sample.ok
    _assert_tar_safe(s.key for s in samples)


def test_manifest_hashtags_as_string(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": "https://example.com/v.mp4", "hashtags": "#a #b"}))
    (sample,) = list_source(str(manifest))
    assert sample.meta["hashtags"] == ["#a", "#b"]
    assert sample.source == "https://example.com/v.mp4"


def test_manifest_with_url_column(tmp_path):
    rows = [{"url": "https://example.com/a.mp4", "title": "t1"}, {"url": "s3://b/c.mp4"}]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    samples = list(list_source(str(manifest)))
    assert [s.source for s in samples] == [r["url"] for r in rows]
    assert all(s.ok for s in samples)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_manifest_without_url_or_path_is_a_source_error(fmt, tmp_path):
    manifest = _manifest(tmp_path, fmt, [{"title": "hello", "hashtags": "#x"}])
    with pytest.raises(SourceError) as exc:
        list(list_source(str(manifest)))
    message = str(exc.value)
    assert "url" in message and "path" in message and str(manifest) in message


def test_unreadable_manifest_is_a_source_error(tmp_path):
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"this is not parquet")
    with pytest.raises(SourceError, match="m.parquet"):
        list(list_source(str(manifest)))


@pytest.mark.parametrize(
    "uri",
    ["file:///etc/passwd", "javascript:alert(1)", "data:video/mp4;base64,AAAA", "ftp://h/x.mp4"],
)
def test_refused_schemes_become_failed_samples(uri, tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"url": uri, "title": "bad"}, {"url": "https://example.com/ok.mp4", "title": "ok"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad, ok = list_source(str(manifest))
    assert bad.errors["source"].startswith("bad_url")
    assert ok.ok


def test_row_without_a_uri_is_a_failed_sample(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"url": None, "path": "", "title": "x"}) + "\n")
    (sample,) = list_source(str(manifest))
    assert sample.errors["source"].startswith("bad_url")
    _assert_tar_safe([sample.key])


def test_identical_stems_in_different_folders_get_distinct_keys(clip_bank, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(clip_bank / "synth-000.mp4", tmp_path / sub / "clip.mp4")
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": "a/clip.mp4"}, {"path": "b/clip.mp4"}, {"path": "a/clip.mp4", "id": "x"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = list(list_source(str(manifest)))
    _assert_tar_safe(s.key for s in samples)


def test_every_manifest_row_is_an_input_sample(clip_bank, tmp_path, local_config):
    """A manifest that lists the same video twice (crawls do) has two input rows: both are
    accounted for (the second may be dropped as a duplicate, with a reason), neither is
    silently merged into the other."""
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "a.mp4")
    shutil.copy(clip_bank / "synth-001.mp4", tmp_path / "b.mp4")
    rows = [{"path": "a.mp4", "title": "first"}, {"path": "a.mp4", "title": "again"}]
    rows.append({"path": "b.mp4", "title": "other"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    config = local_config("shards=1", "stages=[probe]")
    build(config, str(manifest), str(out), quiet=True)
    table = pq.read_table(out / "shards" / "vidal-00000.parquet").to_pylist()
    assert sorted(r["title"] for r in table) == ["again", "first", "other"]
    assert len({r["key"] for r in table}) == 3


def _tar_members(path: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        return [m.name for m in tar.getmembers()]


def test_hostile_ids_stay_inside_the_output(clip_bank, tmp_path, local_config):
    """Ids that try to escape the output folder become safe keys; every file the build writes
    lies under the output folder."""
    videos = tmp_path / "in"
    videos.mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", videos / "a.mp4")
    shutil.copy(clip_bank / "synth-001.mp4", videos / "b.mp4")
    rows = [
        {"path": "in/a.mp4", "id": "../../etc/x", "title": "one", "license": "../../l"},
        {"path": "in/b.mp4", "id": "/abs/olute\x00.mp4", "title": "two"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = list(list_source(str(manifest)))
    _assert_tar_safe(s.key for s in samples)

    out = tmp_path / "deep" / "out"
    before = {p for p in tmp_path.rglob("*")}
    config = local_config("shards=2", "stages=[probe,keyframes,audio,clip]")
    outcome = build(config, str(manifest), str(out), quiet=True)
    assert outcome.failure is None
    assert outcome.total["kept"] == 2
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(out in p.parents or p == out or p in out.parents for p in created)
    assert not (tmp_path / "etc").exists() and not Path("/abs").exists()
    members = [m for tar in sorted(out.glob("shards/*.tar")) for m in _tar_members(tar)]
    assert all("/" not in m and ".." not in m.split(".")[0] for m in members)
    keys = {m.split(".", 1)[0] for m in members}
    assert keys == {s.key for s in samples}
    # the manifest's extra columns reach KEY.json
    metas = {}
    for tar in out.glob("shards/*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    metas[meta["title"]] = meta
    assert metas["one"]["extra"] == {"license": "../../l"}
    assert not any(os.path.isabs(k) for k in keys)
