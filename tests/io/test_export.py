"""`vidal export languagebind`: a built dataset in LanguageBind's own training layout, checked
by building every path the way LanguageBind's VAT_dataset does (data/base_datasets.py):

    opj(data_root, folder, f'{id}.mp4')                                   video
    opj(data_root, folder, f'{id}_depth_f8glpn_folder'), f'{k}.png'       depth, k in 0..7
    opj(data_root, folder, f'{id}_thermal_folder'), f'{k}.jpg'            thermal, k in 0..7
    opj(data_root, folder + '_ffmpeg_mp3', f'{id}.mp3')                   audio
    annotations[id][text_type], annotations[id]['ofa'][k]                 text
"""

from __future__ import annotations

import io
import json
import tarfile
from os.path import join as opj
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from vidal.cli import main
from vidal.config import load_config
from vidal.io.export import export_languagebind
from vidal.run.jobs import build

TEXT_TYPES = ["raw", "mplug", "polish_mplug", "sound_mplug"]  # + 'ofa', a list of 8


@pytest.fixture(scope="module")
def dataset(clip_bank, tmp_path_factory) -> Path:
    """The clip bank (3 clips with audio, 3 without) built with keyframes, depth (tiny GLPN),
    audio and clips into 2 shards."""
    out = tmp_path_factory.mktemp("export") / "dataset"
    stages = "stages=[probe,keyframes,depth,audio,clip]"
    overrides = ["runner.kind=local", "runner.progress=false", "shards=2", stages]
    config = load_config("demo", [*overrides, "depth.model=tiny:glpn", "depth.inference_size=64"])
    assert build(config, str(clip_bank), str(out), quiet=True).exit_code == 0
    return out


def shard_members(dataset: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((dataset / "shards").glob("vidal-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def exported(dataset, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "languagebind"
    assert main(["export", "languagebind", "--dataset", str(dataset), "--to", str(dest)]) == 0
    return dest


def test_annotations_keyed_by_id_with_every_text_type(dataset, exported):
    samples = shard_members(dataset)
    annotations = json.loads((exported / "annotations.json").read_text())
    assert sorted(annotations) == sorted(samples) and len(samples) == 6
    for key, entry in annotations.items():
        meta = json.loads(samples[key]["json"])
        assert entry["folder"] == "vidal"
        assert entry["raw"] == meta["text"]["raw"]
        for text_type in TEXT_TYPES:  # LanguageBind: self.id2title_folder_caps[id][text_type]
            assert isinstance(entry[text_type], str) and entry[text_type]
        assert len(entry["ofa"]) == 8 and all(isinstance(t, str) for t in entry["ofa"])


def test_every_path_languagebind_builds_exists(dataset, exported):
    samples = shard_members(dataset)
    annotations = json.loads((exported / "annotations.json").read_text())
    data_root = str(exported)
    with_audio = 0
    for id, entry in annotations.items():  # noqa: A001 (LanguageBind's name)
        folder = entry["folder"]
        video_path = opj(data_root, folder, f"{id}.mp4")
        with av.open(video_path) as container:
            assert container.streams.video and next(container.decode(video=0)).width > 0
        assert Path(video_path).read_bytes() == samples[id]["mp4"]

        depth_folder = opj(data_root, folder, f"{id}_depth_f8glpn_folder")
        tiles = np.asarray(Image.open(io.BytesIO(samples[id]["depth.png"])))
        meta = json.loads(samples[id]["json"])
        width = meta["frames"]["width"]
        assert tiles.dtype == np.uint16 and tiles.shape[1] == 8 * width
        for random_id in range(8):
            frame = Image.open(opj(depth_folder, f"{random_id}.png"))
            values = np.asarray(frame)
            assert values.dtype == np.uint16  # millimetres, as cv2.IMREAD_UNCHANGED reads them
            expected = tiles[:, random_id * width : (random_id + 1) * width]
            assert np.array_equal(values, expected)
        assert sorted(p.name for p in Path(depth_folder).iterdir()) == [
            f"{k}.png" for k in range(8)
        ]

        audio_path = opj(data_root, folder + "_ffmpeg_mp3", f"{id}.mp3")
        if "flac" in samples[id]:
            with_audio += 1
            flac_seconds = soundfile.info(io.BytesIO(samples[id]["flac"])).duration
            with av.open(audio_path) as container:
                stream = container.streams.audio[0]
                assert container.format.name == "mp3" and stream.codec_context.name.startswith(
                    "mp3"
                )
                decoded = sum(f.samples for f in container.decode(audio=0)) / stream.rate
            assert abs(decoded - flac_seconds) < 0.1
        else:
            assert not Path(audio_path).exists()
    assert with_audio == 3
    assert not list(exported.rglob(".*"))  # no temp files left behind


def ir_and_text_sample(key: str) -> dict[str, bytes]:
    """A sample as an infrared stage and caption stages would pack it."""
    frames = {"count": 8, "width": 6, "height": 4}
    text = {
        "raw": "raw title #tag",
        "video_caption": "an mplug caption",
        "enhanced": "a polished caption",
        "audio_caption": "a sound caption",
        "keyframe_captions": [f"ofa caption {k}" for k in range(8)],
    }
    tiles = np.concatenate([np.full((4, 6), 30 * k, dtype=np.uint8) for k in range(8)], axis=1)
    png = io.BytesIO()
    Image.fromarray(tiles).save(png, format="PNG")
    meta = {"title": "raw title", "text": text, "frames": frames}
    return {"json": json.dumps(meta).encode(), "mp4": b"not decoded here", "ir.png": png.getvalue()}


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_thermal_frames_and_caption_views(tmp_path):
    shard = write_shard(tmp_path / "vidal-00000.tar", {"ir-key": ir_and_text_sample("ir-key")})
    report = export_languagebind([shard], tmp_path / "lb", folder="part1")
    assert report["thermal"] == 1 and report["samples"] == 1
    filled = report["views_filled_with_raw"]
    assert filled == {"mplug": 0, "polish_mplug": 0, "sound_mplug": 0, "ofa": 0}
    entry = json.loads((tmp_path / "lb" / "annotations.json").read_text())["ir-key"]
    assert entry == {
        "folder": "part1",
        "raw": "raw title #tag",
        "mplug": "an mplug caption",
        "polish_mplug": "a polished caption",
        "sound_mplug": "a sound caption",
        "ofa": [f"ofa caption {k}" for k in range(8)],
    }
    thermal_folder = opj(str(tmp_path / "lb"), entry["folder"], "ir-key_thermal_folder")
    for random_id in range(8):  # LanguageBind: Image.open -> ToTensor -> 3-channel Normalize
        image = Image.open(opj(thermal_folder, f"{random_id}.jpg"))
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (6, 4)
        values = np.asarray(image).astype(int)
        assert np.abs(values - 30 * random_id).max() <= 2


def test_missing_views_are_filled_with_raw_and_counted(dataset, exported, capsys):
    annotations = json.loads((exported / "annotations.json").read_text())
    for entry in annotations.values():  # the demo build has titles only
        assert entry["mplug"] == entry["polish_mplug"] == entry["sound_mplug"] == entry["raw"]
        assert entry["ofa"] == [entry["raw"]] * 8


def test_export_of_a_folder_without_shards_exits_2(tmp_path, capsys):
    assert (
        main(["export", "languagebind", "--dataset", str(tmp_path), "--to", str(tmp_path / "x")])
        == 2
    )
    assert "no shards" in capsys.readouterr().err
