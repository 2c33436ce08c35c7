"""`vidal import languagebind`: a small JSON in the shape of LanguageBind's VIDAL-10M release,
made here, becomes a manifest that `vidal crawl --urls` and `vidal build` take as they are; the
released texts end up as the built samples' text views and back in a LanguageBind export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidal.cli import main
from vidal.config import load_config
from vidal.crawl.filters import TextFilter
from vidal.io.keys import is_safe_key
from vidal.io.sources import list_source
from vidal.run.crawl import DOWNLOAD, _table, build_row, candidates_from_urls, refilter
from vidal.run.jobs import build

# YouTube ids may start with '-' or '_'; keys may not
IDS = ["-dQw4w9WgXc", "_a1B2c3D4e5", "Zx9Yw8Vu7Ts", "abcDEF12345", "q-_Q-_q-_Q0", "M0m1M2m3M4m"]


def released_entry(k: int) -> dict:
    return {
        "folder": f"coarse_re_{k % 2}",
        "raw": f"a clip about topic {k} #topic{k} #fun",
        "mplug": f"a video showing topic {k}",
        "polish_mplug": f"In the video, topic {k} is shown clearly.",
        "sound_mplug": f"In the video, topic {k} plays with music in the background.",
        "ofa": [f"frame {j} of topic {k}" for j in range(8)],
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    entries = {vid: released_entry(k) for k, vid in enumerate(IDS)}
    entries["../../etc/passwd"] = released_entry(99)  # not a YouTube id: skipped
    entries["Aaaaaaaaaaa"] = ["not", "an", "object"]  # skipped
    path = tmp_path_factory.mktemp("release") / "id2title_folder_raw_ofa_mplug_gpt_sound.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def manifest(release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("import") / "vidal10m.parquet"
    args = ["import", "languagebind", "--annotations", str(release), "--out", str(out)]
    assert main(args) == 0
    return out


def test_one_row_per_released_id_with_url_key_and_views(manifest):
    rows = pq.read_table(manifest).to_pylist()
    assert [r["youtube_id"] for r in rows] == IDS
    for k, row in enumerate(rows):
        vid, entry = IDS[k], released_entry(k)
        assert row["id"] == f"yt_{vid}" and is_safe_key(row["id"])
        assert row["url"] == f"https://www.youtube.com/watch?v={vid}"
        assert row["title"] == entry["raw"] and row["languagebind_folder"] == entry["folder"]
        assert row["text_provenance"] == "languagebind-release"
        assert row["text_views"] == {
            "raw": entry["raw"],
            "video_caption": entry["mplug"],
            "enhanced": entry["polish_mplug"],
            "audio_caption": entry["sound_mplug"],
            "keyframe_captions": entry["ofa"],
        }
    assert not list(manifest.parent.glob(".*"))


def test_import_counts_skipped_entries(release, tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["import", "languagebind", "--annotations", str(release), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 6
    assert report["skipped_bad_id"] == 1 and report["skipped_not_an_object"] == 1


def test_a_file_that_is_not_the_release_exits_with_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"abcDEF12345": {"raw": "x"}, oops')
    out = tmp_path / "m.parquet"
    assert main(["import", "languagebind", "--annotations", str(bad), "--out", str(out)]) == 2
    assert "not LanguageBind's annotation JSON" in capsys.readouterr().err
    bad.write_text('["abcDEF12345"]')
    assert main(["import", "languagebind", "--annotations", str(bad), "--out", str(out)]) == 2
    assert "nothing to import" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_crawl_urls_and_build_take_the_manifest_as_it_is(manifest):
    candidates = candidates_from_urls(str(manifest), allow_local=False)
    assert [c.source for c in candidates] == [f"https://www.youtube.com/watch?v={v}" for v in IDS]
    for sample in candidates:
        assert is_safe_key(sample.key)
        assert sample.meta["extra"]["text_provenance"] == "languagebind-release"
    samples = list(list_source(str(manifest)))  # `vidal build --source MANIFEST`
    assert len(samples) == 6 and all(s.ok for s in samples)
    assert [s.meta["extra"]["youtube_id"] for s in samples] == IDS


def test_released_texts_survive_crawl_build_and_languagebind_export(manifest, clip_bank, tmp_path):
    """The crawl's manifest rows for the imported URLs (the downloads simulated with local
    clips), built, then exported: LanguageBind gets the released texts back."""
    crawl_out = tmp_path / "crawl-out"
    (crawl_out / "raw").mkdir(parents=True)
    clips = sorted(clip_bank.glob("*.mp4"))
    rows = []
    for sample, clip in zip(candidates_from_urls(str(manifest), False), clips, strict=True):
        refilter(sample, TextFilter())
        assert not sample.dropped
        shutil.copy(clip, crawl_out / "raw" / f"{sample.key}.mp4")
        sample.fields[DOWNLOAD] = {"path": f"raw/{sample.key}.mp4"}
        rows.append(build_row(sample))
    pq.write_table(_table(rows), crawl_out / "crawl.parquet")
    config = load_config(
        "demo", ["runner.kind=local", "runner.progress=false", "shards=1", "stages=[probe,clip]"]
    )
    out = tmp_path / "dataset"
    assert build(config, str(crawl_out / "crawl.parquet"), str(out), quiet=True).exit_code == 0
    dest = tmp_path / "lb"
    args = ["export", "languagebind", "--dataset", str(out), "--to", str(dest)]
    assert main([*args, "--upstream", "148c444", "--ids", "youtube"]) == 0
    annotations = json.loads((dest / "annotations.json").read_text())
    assert len(annotations) == 6
    safe = [v for v in IDS if v[0] not in "-_"]  # the others keep their sample keys
    assert set(safe) < set(annotations) and len(set(annotations) - set(safe)) == 2
    assert json.loads((dest / "export.json").read_text())["ids_kept_sample_key"] == 2
    assert all((dest / "vidal" / f"{v}.mp4").is_file() for v in safe)
    by_mplug = {entry["mplug"]: entry for entry in annotations.values()}
    for k in range(6):
        released = released_entry(k)
        entry = by_mplug[released["mplug"]]
        for field in ("raw", "polish_mplug", "sound_mplug", "ofa"):
            assert entry[field] == released[field]
