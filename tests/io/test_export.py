"""`vidal export languagebind`, checked by LanguageBind's reading logic (re-implemented in
tests/io/languagebind_reader.py from its code's facts) over an export of a built dataset with
every modality: every sample loads in every modality it has."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from tests.io import languagebind_reader as lb_reader
from tests.io.conftest import shard_members, write_shard
from vidal.cli import main
from vidal.io.export import export_languagebind
from vidal.io.languagebind import ExportError


@pytest.fixture(scope="module")
def exported(lb_dataset, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "languagebind"
    assert main(["export", "languagebind", "--dataset", str(lb_dataset), "--to", str(dest)]) == 0
    return dest


def test_every_sample_loads_in_every_modality_it_has(lb_dataset, exported):
    samples = shard_members(lb_dataset)
    root, rng = str(exported), random.Random(0)
    annotations = lb_reader.load_annotations(f"{root}/annotations.json")
    assert sorted(annotations) == sorted(samples) and len(samples) == 6
    for vid, entry in annotations.items():
        for text_type in (*lb_reader.TEXT_TYPES, "mix"):
            assert lb_reader.get_text(entry, text_type, rng)
        video = lb_reader.load_video_mp4(lb_reader.video_path(root, entry["folder"], vid))
        assert video.shape[0] == 8 and video.shape[3] == 3
        frames = lb_reader.load_video_imgs(root, entry["folder"], vid)
        assert frames.shape[0] == 8
    with_modality = {
        "depth": {k for k, s in samples.items() if "depth.png" in s},
        "thermal": {k for k, s in samples.items() if "ir.png" in s},
        "audio": {k for k, s in samples.items() if "flac" in s},
    }
    assert [len(v) for v in with_modality.values()] == [6, 6, 3]
    for modality, expected in with_modality.items():
        listed = lb_reader.load_annotations(f"{root}/annotations_{modality}.json")
        assert set(listed) == expected  # a sample without it is never listed
        assert all(listed[vid] == annotations[vid] for vid in listed)
    for vid in with_modality["depth"]:
        _check_depth(root, vid, samples[vid])
    for vid in with_modality["thermal"]:
        for k in range(8):
            assert lb_reader.load_thermal(root, "vidal", vid, k).shape[2] == 3
    for vid in with_modality["audio"]:
        waveform = lb_reader.load_audio(root, "vidal", vid)
        flac_seconds = soundfile.info(io.BytesIO(samples[vid]["flac"])).duration
        assert abs(len(waveform) / 16000 - flac_seconds) < 0.1
    assert not list(exported.rglob(".*"))  # no temp files left behind


def _check_depth(root: str, vid: str, members: dict[str, bytes]) -> None:
    tiles = np.asarray(Image.open(io.BytesIO(members["depth.png"])))
    width = json.loads(members["json"])["frames"]["width"]
    for k in range(8):
        metres = lb_reader.load_depth(root, "vidal", vid, k)
        expected = tiles[:, k * width : (k + 1) * width].astype(np.float32) / 1000.0
        assert np.allclose(metres, np.clip(expected, 0.01, 10.0))


def test_sound_mplug_is_the_audio_caption(lb_dataset, exported):
    samples = shard_members(lb_dataset)
    annotations = json.loads((exported / "annotations.json").read_text())
    report = json.loads((exported / "export.json").read_text())
    for vid, entry in annotations.items():
        text = json.loads(samples[vid]["json"])["text"]
        if "flac" in samples[vid]:
            assert entry["sound_mplug"] == text["audio_caption"] != text["raw"]
        else:  # no audio, no audio caption: filled with raw and counted
            assert "audio_caption" not in text and entry["sound_mplug"] == entry["raw"]
    # the build ran no caption stage: every other view is raw, counted per view
    filled = {"mplug": 6, "polish_mplug": 6, "sound_mplug": 3, "ofa": 6}
    assert report["views_filled_with_raw"] == filled
    for entry in annotations.values():
        assert entry["mplug"] == entry["raw"] and entry["ofa"] == [entry["raw"]] * 8
        assert entry["polish_mplug"].startswith("In the video, ")
    assert report["upstream"] == "7070c53" and report["samples"] == 6 and report["audio"] == 3


def test_upstream_148c444_keeps_the_old_video_path(lb_dataset, tmp_path):
    dest = tmp_path / "old"
    args = ["export", "languagebind", "--dataset", str(lb_dataset), "--to", str(dest)]
    assert main([*args, "--upstream", "148c444", "--folder", "part1"]) == 0
    annotations = lb_reader.load_annotations(str(dest / "annotations.json"))
    for vid, entry in annotations.items():
        assert entry["folder"] == "part1"
        path = lb_reader.video_path(str(dest), "part1", vid, upstream="148c444")
        assert lb_reader.load_video_mp4(path).shape[0] == 8
    assert not (dest / "part1_resize256_skip15").exists()


def ir_and_text_sample() -> dict[str, bytes]:
    """A sample as the infrared and caption stages would pack it (no clip decode needed
    with --upstream 148c444)."""
    frames = {"count": 8, "width": 6, "height": 4}
    text = {
        "raw": "raw title #tag",
        "video_caption": "an mplug caption",
        "enhanced": "A polished caption",
        "audio_caption": "a sound caption",
        "keyframe_captions": [f"ofa caption {k}" for k in range(8)],
    }
    tiles = np.concatenate([np.full((4, 6), 30 * k, dtype=np.uint8) for k in range(8)], axis=1)
    png = io.BytesIO()
    Image.fromarray(tiles).save(png, format="PNG")
    meta = {"title": "raw title", "text": text, "frames": frames}
    return {"json": json.dumps(meta).encode(), "mp4": b"not decoded", "ir.png": png.getvalue()}


def test_thermal_frames_and_caption_views(tmp_path):
    shard = write_shard(tmp_path / "vidal-00000.tar", {"ir-key": ir_and_text_sample()})
    report = export_languagebind([shard], tmp_path / "lb", folder="part1", upstream="148c444")
    assert report["thermal"] == 1 and report["samples"] == 1
    filled = report["views_filled_with_raw"]
    assert filled == {"mplug": 0, "polish_mplug": 0, "sound_mplug": 0, "ofa": 0}
    entry = json.loads((tmp_path / "lb" / "annotations_thermal.json").read_text())["ir-key"]
    assert entry == {
        "folder": "part1",
        "raw": "raw title #tag",
        "mplug": "an mplug caption",
        "polish_mplug": "In the video, a polished caption",  # the prefix LanguageBind expects
        "sound_mplug": "a sound caption",
        "ofa": [f"ofa caption {k}" for k in range(8)],
    }
    for k in range(8):
        image = Image.open(tmp_path / "lb" / "part1" / "ir-key_thermal_folder" / f"{k}.jpg")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (6, 4)
        assert np.abs(np.asarray(image).astype(int) - 30 * k).max() <= 2


def relative_depth_sample() -> dict[str, bytes]:
    tiles = np.concatenate([np.full((4, 6), v, dtype=np.uint16) for v in [0, 65535] * 4], axis=1)
    png = io.BytesIO()
    Image.fromarray(tiles).save(png, format="PNG")
    depth = {"relative": True, "encoding": "inverse_depth_minmax", "model": "tiny:dpt"}
    meta = {"title": "t", "text": {"raw": "t"}, "frames": {"count": 8}, "depth": depth}
    return {"json": json.dumps(meta).encode(), "mp4": b"x", "depth.png": png.getvalue()}


def test_relative_depth_is_refused_with_one_sentence_unless_converted(tmp_path, capsys):
    (tmp_path / "data" / "shards").mkdir(parents=True)
    shard = write_shard(tmp_path / "data/shards/vidal-00000.tar", {"rel": relative_depth_sample()})
    with pytest.raises(ExportError, match="LanguageBind reads metric millimetres") as caught:
        export_languagebind([shard], tmp_path / "refused", upstream="148c444")
    assert "\n" not in str(caught.value) and "tiny:dpt" in str(caught.value)
    args = ["export", "languagebind-wds", "--dataset", str(tmp_path / "data")]
    assert main([*args, "--to", str(tmp_path / "refused")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one sentence
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    dest = tmp_path / "converted"
    report = export_languagebind([shard], dest, upstream="148c444", relative_depth="0.5,10")
    assert report["depth"] == 1 and report["relative_depth_near_far_m"] == [0.5, 10.0]
    far = np.asarray(Image.open(dest / "vidal" / "rel_depth_f8glpn_folder" / "0.png"))
    near = np.asarray(Image.open(dest / "vidal" / "rel_depth_f8glpn_folder" / "1.png"))
    assert far.dtype == np.uint16 and (far == 10000).all() and (near == 500).all()


def test_unsafe_keys_are_per_sample_errors_and_nothing_leaves_dest(tmp_path):
    good = ir_and_text_sample()
    samples = {"ok-key": good, "-rf": good, "../../escaped": good, "sub/dir": good}
    shard = write_shard(tmp_path / "vidal-00000.tar", samples)
    dest = tmp_path / "deep" / "lb"
    report = export_languagebind([shard], dest, upstream="148c444")
    assert report["samples"] == 1 and report["failed"] == 3
    assert report["errors_by_reason"] == {"video: unsafe_key": 3}
    annotations = json.loads((dest / "annotations.json").read_text())
    assert list(annotations) == ["ok-key"]
    outside = [p for p in tmp_path.rglob("*") if dest not in p.parents and p != dest]
    assert sorted(p.name for p in outside) == ["deep", "vidal-00000.tar"]


def test_a_bad_folder_name_or_no_shards_exits_2(lb_dataset, tmp_path, capsys):
    base = ["export", "languagebind", "--to", str(tmp_path / "x")]
    assert main([*base, "--dataset", str(tmp_path)]) == 2
    assert "no shards" in capsys.readouterr().err
    assert main([*base, "--dataset", str(lb_dataset), "--folder", "../up"]) == 2
    assert "not a safe name" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
