"""LanguageBind's reading logic, re-implemented from the facts of its code (PKU-YuanGroup/
LanguageBind @ 7070c53: data/base_datasets.py, data/process_*.py, data/new_loadvat.py; the
older layout @ 148c444), with no network and no cv2. Not its code: the paths, units and
transforms it applies, so an export that loads here loads there.

  annotations  json.load(train_data) -> {id: {folder, raw, mplug, polish_mplug, sound_mplug,
               ofa: [8]}}; `mix` draws one of those keys by weight; `raw` is split on '#'
  video        mp4: ROOT/FOLDER_resize256_skip15/ID.mp4, 8 frames at linspace(0, n-1, 8)
               (decord); imgs: ROOT/FOLDER_resize256_skip15/ID_resize256_folder/{0..7}.jpg
  depth        ROOT/FOLDER/ID_depth_f8glpn_folder/{k}.png, cv2.IMREAD_UNCHANGED (here: PIL +
               numpy, which keep uint16), / 1000 (mm -> m), clipped to [0.01, max_depth]
  thermal      ROOT/FOLDER/ID_thermal_folder/{k}.jpg, PIL, normalised per RGB channel
  audio        ROOT/FOLDER_ffmpeg_mp3/ID.mp3 at 16 kHz (the older reader; 7070c53 has none)
"""

from __future__ import annotations

import json
import random
from os.path import join as opj

import numpy as np
from PIL import Image

TEXT_TYPES = ("raw", "mplug", "polish_mplug", "sound_mplug", "ofa")
MIX_WEIGHTS = {"raw": 0.2, "mplug": 0.2, "polish_mplug": 0.2, "sound_mplug": 0.2, "ofa": 0.2}
THERMAL_MEAN, THERMAL_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.2757771)


def load_annotations(path: str) -> dict:
    with open(path) as train_data:
        return json.load(train_data)


def clean_raw(raw: str) -> str:
    parts = [p.strip() for p in raw.split("#")]
    return " ".join(p for p in parts if p)


def get_text(entry: dict, text_type: str, rng: random.Random) -> str:
    if text_type == "mix":
        names = list(MIX_WEIGHTS)
        text_type = rng.choices(names, weights=[MIX_WEIGHTS[n] for n in names])[0]
    if text_type == "ofa":
        return entry["ofa"][rng.randrange(8)]
    text = entry[text_type]
    return clean_raw(text) if text_type == "raw" else text


def video_path(root: str, folder: str, vid: str, upstream: str = "7070c53") -> str:
    if upstream == "148c444":
        return opj(root, folder, f"{vid}.mp4")
    return opj(root, f"{folder}_resize256_skip15", f"{vid}.mp4")


def load_video_mp4(path: str) -> np.ndarray:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    indices = np.linspace(0, len(reader) - 1, 8, dtype=int)
    return reader.get_batch(indices).asnumpy()


def load_video_imgs(root: str, folder: str, vid: str) -> np.ndarray:
    frames_dir = opj(root, f"{folder}_resize256_skip15", f"{vid}_resize256_folder")
    frames = [np.asarray(Image.open(opj(frames_dir, f"{k}.jpg")).convert("RGB")) for k in range(8)]
    for frame in frames:
        assert min(frame.shape[:2]) == 256, frame.shape  # resize256
    return np.stack(frames)


def load_depth(root: str, folder: str, vid: str, k: int, max_depth: float = 10.0) -> np.ndarray:
    depth_folder = opj(root, folder, f"{vid}_depth_f8glpn_folder")
    raw = np.asarray(Image.open(opj(depth_folder, f"{k}.png")))  # IMREAD_UNCHANGED: uint16
    assert raw.dtype == np.uint16 and raw.ndim == 2, (raw.dtype, raw.shape)
    return np.clip(raw.astype(np.float32) / 1000.0, 0.01, max_depth)


def load_thermal(root: str, folder: str, vid: str, k: int) -> np.ndarray:
    thermal_folder = opj(root, folder, f"{vid}_thermal_folder")
    image = Image.open(opj(thermal_folder, f"{k}.jpg"))
    x = np.asarray(image, dtype=np.float32) / 255.0  # ToTensor
    assert x.ndim == 3 and x.shape[2] == 3, x.shape  # Normalize with 3 means needs RGB
    return (x - np.array(THERMAL_MEAN)) / np.array(THERMAL_STD)


def load_audio(root: str, folder: str, vid: str) -> np.ndarray:
    import av

    with av.open(opj(root, f"{folder}_ffmpeg_mp3", f"{vid}.mp3")) as container:
        stream = container.streams.audio[0]
        assert container.format.name == "mp3" and stream.rate == 16000, stream.rate
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
