"""Per-modality preprocessing against LanguageBind's processors: shapes, CLIP / AudioSet
normalisation, depth millimetres -> metres, audio repeat / three chunks, random crop in
training and centre crop in eval, keyframe caption k -> depth / infrared frame k."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import soundfile
import torch

from tests.train.conftest import depth_sample, depth_tiles, png_bytes
from vidal.media.synth import make_clip
from vidal.train import preprocess
from vidal.train.config import DataConfig
from vidal.train.data import Preprocess, ShardList, caption
from vidal.train.preprocess import AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD


def unnormalize(tensor: torch.Tensor) -> torch.Tensor:
    return tensor * CLIP_STD + CLIP_MEAN


def clip_bytes(folder, width: int, height: int) -> bytes:
    """A 2 s, 8 fps clip of a white square moving left to right over black."""
    path = folder / f"{width}x{height}.mp4"
    make_clip(path, duration=2.0, width=width, height=height, fps=8, audio=False, colour="white")
    return path.read_bytes()


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory) -> bytes:
    return clip_bytes(tmp_path_factory.mktemp("pre"), 96, 48)


def test_video_is_8_frames_clip_normalised(tmp_path):
    tensor = preprocess.video_tensor(clip_bytes(tmp_path, 64, 64), 8, 32, False, random.Random(0))
    assert tensor.shape == (8, 3, 32, 32)
    pixels = unnormalize(tensor)
    assert pixels.min() > -0.02 and pixels.max() < 1.02
    # the black background, after CLIP normalisation, is -mean/std per channel
    corner = tensor[0, :, 0, 0]
    assert torch.allclose(corner, (-CLIP_MEAN / CLIP_STD).flatten(), atol=0.15)
    # the square moves: the first and last frames differ, consecutive picks are in order
    bright = [(unnormalize(f).mean(0) > 0.5).float().nonzero()[:, 1].float() for f in tensor]
    centre_x = [float(x.mean()) for x in bright]
    assert all(a < b for a, b in zip(centre_x, centre_x[1:], strict=False)), centre_x
    assert centre_x[0] < 6 and centre_x[-1] > 26  # first frame at the start, last at the end


def test_defaults_are_languagebinds_8_frames_at_224(wide_clip):
    cfg = DataConfig()
    assert (cfg.num_frames, cfg.image_size, cfg.audio_frames) == (8, 224, 1024)
    tensor = preprocess.video_tensor(
        wide_clip, cfg.num_frames, cfg.image_size, True, random.Random(0)
    )
    assert tensor.shape == (8, 3, 224, 224)  # 96 x 48 -> short side 224 (448 x 224) -> crop
    depth = preprocess.depth_tensor(
        depth_tiles([1000] * 8), 8, cfg.image_size, True, random.Random(0)
    )
    assert depth.shape == (3, 224, 224)


def test_video_crop_is_random_in_training_and_central_in_eval(wide_clip):
    evals = [preprocess.video_tensor(wide_clip, 8, 32, False, random.Random(s)) for s in range(3)]
    assert all(torch.equal(evals[0], other) for other in evals[1:])
    trains = [preprocess.video_tensor(wide_clip, 8, 32, True, random.Random(s)) for s in range(6)]
    assert len({t.sum().item() for t in trains}) > 1


def test_resize_crop_short_side_then_crop():
    # 40 x 80 image whose value is its column: short side 20 -> 20 x 40, crop 20 x 20
    columns = torch.arange(80, dtype=torch.float32).expand(1, 3, 40, 80).contiguous()
    centre = preprocess.resize_crop(columns, 20, False, random.Random(0))
    assert centre.shape == (1, 3, 20, 20)
    assert abs(centre[0, 0, 0, 0].item() - 20.5) < 1.0  # left edge of columns 20..39 of 40
    lefts = {
        round(preprocess.resize_crop(columns, 20, True, random.Random(s))[0, 0, 0, 0].item())
        for s in range(40)
    }
    assert len(lefts) > 5 and min(lefts) < 5 and max(lefts) > 35  # anywhere along the width
    # every frame of one clip gets the same crop
    frames = torch.stack([columns[0], columns[0] + 1000])
    cropped = preprocess.resize_crop(frames, 20, True, random.Random(3))
    assert torch.allclose(cropped[1] - cropped[0], torch.full_like(cropped[0], 1000.0))


@pytest.mark.parametrize(
    ("millimetres", "metres_over_10"),
    [(2500, 0.25), (0, 0.001), (5, 0.001), (10000, 1.0), (65535, 1.0), (123, 0.0123)],
)
def test_depth_mm_to_metres_clipped_scaled_replicated(millimetres, metres_over_10):
    tiles = depth_tiles([millimetres] * 8, size=(16, 16))
    tensor = preprocess.depth_tensor(tiles, 8, 16, False, random.Random(0))
    assert tensor.shape == (3, 16, 16)
    expected = ((metres_over_10 - CLIP_MEAN) / CLIP_STD).expand(3, 16, 16)
    assert torch.allclose(tensor, expected, atol=1e-5)


def test_depth_frame_k_is_tile_k():
    values = [1000 * (k + 1) for k in range(8)]
    tiles = depth_tiles(values, size=(8, 8))
    for k, value in enumerate(values):
        tensor = preprocess.depth_tensor(tiles, 8, 8, True, random.Random(0), frame=k)
        metres = unnormalize(tensor)[0].mean().item()
        assert abs(metres - value / 10000) < 1e-5
    # eval without a frame: the middle one, every time
    evals = [preprocess.depth_tensor(tiles, 8, 8, False, random.Random(s)) for s in range(5)]
    assert {round(unnormalize(t)[0, 0, 0].item(), 4) for t in evals} == {0.5}


def test_infrared_gray_as_rgb_clip_normalised():
    tiles = np.concatenate([np.full((8, 8), 20 * k, dtype=np.uint8) for k in range(8)], axis=1)
    tensor = preprocess.infrared_tensor(tiles, 8, 8, False, random.Random(0), frame=3)
    assert tensor.shape == (3, 8, 8)
    assert torch.allclose(tensor, ((60 / 255 - CLIP_MEAN) / CLIP_STD).expand(3, 8, 8), atol=1e-5)
    rgb = np.repeat(tiles[..., None], 3, axis=-1)  # an RGB infrared frame reads the same
    assert torch.allclose(preprocess.infrared_tensor(rgb, 8, 8, False, random.Random(0), 3), tensor)


def flac(waveform: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format="FLAC")
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """The waveform as the FLAC holds it (16-bit), which is what preprocessing sees."""
    return soundfile.read(io.BytesIO(data), dtype="float32")[0]


def chirp(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t)).astype(np.float32)


def test_fbank_kaldi_framing_25ms_window_10ms_shift_128_bins():
    feats = preprocess.fbank(chirp(1.0))
    assert feats.shape == (1 + (16000 - 400) // 160, 128)  # 98 frames of 400 samples, hop 160


def test_fbank_level_matches_audioset_statistics():
    """LanguageBind's AudioSet mean / std (-4.27, 4.57) are statistics of Kaldi fbanks of
    waveforms in [-1, 1] (torchaudio.load): -20 dBFS white noise must land near that mean,
    not 20.8 (= ln 32768^2) above it as int16-scaled samples would."""
    noise = np.random.default_rng(0).standard_normal(4 * 16000).astype(np.float32) * 0.1
    feats = preprocess.fbank(noise)
    assert abs(feats.mean() - AUDIO_MEAN) < AUDIO_STD, feats.mean()
    assert abs(preprocess.audio_tensor(flac(noise), 256).mean().item()) < 0.5


def test_short_audio_is_repeated_in_three_equal_channels():
    data = flac(chirp(0.5))
    tensor = preprocess.audio_tensor(data, target_frames=200)
    feats = torch.from_numpy(preprocess.fbank(decoded(data)))
    period = feats.shape[0]  # 48 frames
    assert tensor.shape == (3, 200, 128)
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[0], tensor[2])
    expected = (feats - AUDIO_MEAN) / (2 * AUDIO_STD)
    assert torch.allclose(tensor[0, :period], expected, atol=1e-4)
    assert torch.allclose(tensor[0, period : 2 * period], expected, atol=1e-4)
    assert torch.allclose(tensor[0, 4 * period : 200], expected[: 200 - 4 * period], atol=1e-4)


def test_long_audio_is_front_middle_back_chunks():
    data = flac(chirp(3.0))
    tensor = preprocess.audio_tensor(data, target_frames=100)
    feats = (torch.from_numpy(preprocess.fbank(decoded(data))) - AUDIO_MEAN) / (2 * AUDIO_STD)
    total = feats.shape[0]  # 298
    assert tensor.shape == (3, 100, 128)
    starts = [0, (total - 100) // 2, total - 100]
    for channel, start in enumerate(starts):
        assert torch.allclose(tensor[channel], feats[start : start + 100], atol=1e-4)
    assert not torch.allclose(tensor[0], tensor[1]) and not torch.allclose(tensor[1], tensor[2])


def test_audio_shorter_than_one_window_is_refused():
    with pytest.raises(ValueError, match="shorter than one"):
        preprocess.audio_tensor(flac(np.zeros(100, dtype=np.float32)), target_frames=64)


# --- captions ------------------------------------------------------------------------------

KEYFRAMES = [f"keyframe caption {k}" for k in range(8)]
META = {
    "title": "the title",
    "text": {
        "raw": "the raw text #tag",
        "video_caption": "a video caption",
        "enhanced": "",
        "keyframe_captions": KEYFRAMES,
    },
}


def test_caption_view_is_config_with_raw_fallback():
    rng = random.Random(0)
    assert caption(META, DataConfig(text_view="raw"), rng) == ("the raw text #tag", None)
    assert caption(META, DataConfig(text_view="video_caption"), rng) == ("a video caption", None)
    assert caption(META, DataConfig(text_view="enhanced"), rng) == ("the raw text #tag", None)
    assert caption({"title": "only a title"}, DataConfig(), rng) == ("only a title", None)


def test_keyframe_caption_k_returns_k():
    cfg = DataConfig(text_view="keyframe_captions")
    rng = random.Random(1)
    seen = set()
    for _ in range(50):
        text, k = caption(META, cfg, rng)
        assert text == KEYFRAMES[k]
        seen.add(k)
    assert seen == set(range(8))


def test_mix_draws_the_present_views_by_weight():
    cfg = DataConfig(text_view="mix")
    rng = random.Random(2)
    drawn = [caption(META, cfg, rng)[0] for _ in range(3000)]
    share = {
        "raw": drawn.count("the raw text #tag") / 3000,
        "video": drawn.count("a video caption") / 3000,
        "keyframes": sum(t in KEYFRAMES for t in drawn) / 3000,
    }
    assert sum(share.values()) == 1.0  # never the empty view
    for value in share.values():  # three present views, 0.2 each -> a third each
        assert abs(value - 1 / 3) < 0.05, share


def test_preprocess_pairs_keyframe_caption_k_with_depth_frame_k():
    values = [500 * (k + 1) for k in range(8)]
    sample = depth_sample("key", "raw caption", values, keyframe_captions=KEYFRAMES)
    cfg = DataConfig(modality="depth", text_view="keyframe_captions", image_size=8)
    shards = ShardList(["unused"], 0, shuffle=True, resampled=False)
    for epoch in range(12):
        shards.epoch = epoch
        out = Preprocess(cfg, True, shards)(dict(sample))
        k = KEYFRAMES.index(out["text"])
        assert abs(unnormalize(out["input"])[0].mean().item() - values[k] / 10000) < 1e-5


def test_preprocess_infrared_member_and_frame_count_from_json():
    tiles = np.concatenate([np.full((4, 4), 30 * k, dtype=np.uint8) for k in range(4)], axis=1)
    text = {"raw": "ir", "keyframe_captions": ["a", "b", "c", "d"]}
    meta = {"text": text, "frames": {"count": 4}}
    sample = {"__key__": "k", "json": json.dumps(meta).encode(), "ir.png": png_bytes(tiles)}
    cfg = DataConfig(modality="infrared", text_view="keyframe_captions", image_size=4)
    out = Preprocess(cfg, False, ShardList(["x"], 0, False, False))(sample)
    k = "abcd".index(out["text"])
    assert torch.allclose(unnormalize(out["input"]), torch.full((3, 4, 4), 30 * k / 255), atol=1e-5)
