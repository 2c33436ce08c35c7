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
    assert (cfg.num_frames, cfg.image_size, cfg.flip) == (8, 224, 0.5)
    assert (cfg.audio_sample_rate, cfg.audio_bins, cfg.audio_frames) == (16000, 126, 1036)
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


def test_video_is_flipped_horizontally_half_the_time_in_training(tmp_path):
    square = clip_bytes(tmp_path, 48, 48)  # square: the crop is the whole frame, no randomness
    plain = preprocess.video_tensor(square, 8, 32, False, random.Random(0))
    flipped = 0
    for seed in range(20):
        tensor = preprocess.video_tensor(square, 8, 32, True, random.Random(seed), flip=0.5)
        if torch.equal(tensor, plain.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(tensor, plain)
    assert 4 <= flipped <= 16  # every frame of a clip flipped together, about half the clips
    assert torch.equal(preprocess.video_tensor(square, 8, 32, False, random.Random(1), 1.0), plain)


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


def kaldi_fbank(wave: np.ndarray, rate: int = 16000, bins: int = 126) -> np.ndarray:
    """The formula of torchaudio.compliance.kaldi.fbank as LanguageBind calls it, in float64:
    25 ms frames every 10 ms (snip edges), DC offset removed per frame, pre-emphasis 0.97,
    a symmetric Hann window, 512-point power spectrum, Kaldi's triangular mel bank on the HTK
    mel scale 1127 ln(1 + f / 700) from 20 Hz to Nyquist, log with a float32-epsilon floor."""
    size, shift, nfft = rate * 25 // 1000, rate * 10 // 1000, 512
    count = 1 + (len(wave) - size) // shift
    frames = np.stack([wave[i * shift : i * shift + size] for i in range(count)]).astype(float)
    frames -= frames.mean(axis=1, keepdims=True)
    frames -= 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))
    power = np.abs(np.fft.rfft(frames * window, n=nfft)) ** 2

    def mel(f):
        return 1127 * np.log(1 + np.asarray(f) / 700)

    low, delta = mel(20), (mel(rate / 2) - mel(20)) / (bins + 1)
    left = low + np.arange(bins)[:, None] * delta
    fft_mel = mel(np.arange(nfft // 2) * rate / nfft)[None]
    up, down = (fft_mel - left) / delta, (left + 2 * delta - fft_mel) / delta
    bank = np.pad(np.maximum(0, np.minimum(up, down)), ((0, 0), (0, 1)))  # Nyquist: weight 0
    return np.log(np.maximum(power @ bank.T, np.finfo(np.float32).eps))


def languagebind_audio(wave: np.ndarray, frames: int = 1036, starts=None) -> np.ndarray:
    """data/process_audio.py on a 16 kHz waveform: mean removed, fbank, repeated (short) or
    three chunks (long), (3, bins, frames), (x - mean) / (2 std)."""
    feats = kaldi_fbank(wave - wave.mean())
    if len(feats) <= frames:
        chunk = np.tile(feats, (frames // len(feats) + 1, 1))[:frames]
        stacked = np.stack([chunk] * 3)
    else:
        stacked = np.stack([feats[s : s + frames] for s in starts])
    return (stacked.transpose(0, 2, 1) - AUDIO_MEAN) / (2 * AUDIO_STD)


def test_fbank_is_kaldis_formula_with_126_htk_mel_bins():
    wave = chirp(1.0) + np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.01
    feats = preprocess.fbank(wave)
    reference = kaldi_fbank(wave)
    assert feats.shape == reference.shape == (1 + (16000 - 400) // 160, 126)
    assert np.abs(feats - reference).max() < 1e-3


def test_fbank_level_matches_audioset_statistics():
    """LanguageBind's AudioSet mean / std (-4.27, 4.57) are statistics of Kaldi fbanks of
    waveforms in [-1, 1] (torchaudio.load): -20 dBFS white noise must land near that mean,
    not 20.8 (= ln 32768^2) above it as int16-scaled samples would."""
    noise = np.random.default_rng(0).standard_normal(4 * 16000).astype(np.float32) * 0.1
    feats = preprocess.fbank(noise)
    assert abs(feats.mean() - AUDIO_MEAN) < AUDIO_STD, feats.mean()
    assert abs(preprocess.audio_tensor(flac(noise), 256).mean().item()) < 0.5


def test_short_audio_is_languagebinds_3_x_126_x_1036_input():
    data = flac(chirp(0.5))
    tensor = preprocess.audio_tensor(data)
    assert tensor.shape == (3, 126, 1036)
    expected = languagebind_audio(decoded(data).astype(float))
    assert np.abs(tensor.numpy() - expected).max() < 1e-3
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[0], tensor[2])


def test_long_audio_is_three_chunks_one_random_start_in_each_third():
    data = flac(chirp(3.0))
    wave = decoded(data).astype(float)
    total = len(kaldi_fbank(wave))  # 298 frames; 199 possible starts of 100 frames
    thirds = [range(0, 67), range(67, 133), range(133, 199)]
    assert total - 100 + 1 == 199
    evaluated = preprocess.audio_tensor(data, target_frames=100)  # no rng: each third's first
    expected = languagebind_audio(wave, 100, [0, 67, 133])
    assert np.abs(evaluated.numpy() - expected).max() < 1e-3
    full = languagebind_audio(wave, total, [0])  # every frame, to find the chunks in
    seen = set()
    for seed in range(6):
        tensor = preprocess.audio_tensor(data, target_frames=100, rng=random.Random(seed))
        for channel, third in enumerate(thirds):
            start = next(
                s
                for s in third
                if np.abs(tensor[channel].numpy() - full[0][:, s : s + 100]).max() < 1e-3
            )
            seen.add((channel, start))
    assert len(seen) > 3  # the starts vary with the draw


def test_audio_is_resampled_to_16_khz():
    """ESC-50 is 44.1 kHz: resampled, a tone gives the features of the same tone at 16 kHz."""
    t44, t16 = np.arange(44100) / 44100, np.arange(16000) / 16000
    tone44 = (0.3 * np.sin(2 * np.pi * 440 * t44)).astype(np.float32)
    tone16 = 0.3 * np.sin(2 * np.pi * 440 * t16)
    resampled = preprocess.resample(torch.from_numpy(tone44)[None], 44100, 16000)[0].numpy()
    assert resampled.shape == (16000,)
    assert np.abs(resampled[100:-100] - tone16[100:-100]).max() < 2e-3
    high = preprocess.audio_tensor(flac(tone44, 44100))
    low = preprocess.audio_tensor(flac(tone16.astype(np.float32), 16000))
    band = slice(0, 30)  # the low mel bins, where the tone puts its energy
    assert torch.allclose(high[:, band], low[:, band], atol=0.01)
    not_resampled = languagebind_audio(decoded(flac(tone44, 44100)).astype(float))
    assert np.abs(not_resampled[:, band] - high[:, band].numpy()).max() > 0.1


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
    out = Preprocess(cfg, True, ShardList(["x"], 0, False, False))(sample)
    k = "abcd".index(out["text"])
    assert torch.allclose(unnormalize(out["input"]), torch.full((3, 4, 4), 30 * k / 255), atol=1e-5)


@pytest.mark.parametrize("text_view", ["mix", "raw", "keyframe_captions"])
def test_held_out_texts_are_the_fixed_eval_view_whatever_training_draws(text_view):
    """Evaluation never draws: every sample gives its video caption (raw without one)."""
    cfg = DataConfig(modality="depth", text_view=text_view, image_size=8)
    shards = ShardList(["x"], 0, False, False)
    with_caption = depth_sample("a", "raw a", video_caption="a video caption", enhanced="polished")
    without = depth_sample("b", "raw b", keyframe_captions=KEYFRAMES)
    several = depth_sample("c", "raw c", video_caption=["first caption", "second caption"])
    outs = [Preprocess(cfg, False, shards)(dict(s)) for s in (with_caption, without, several)]
    assert [o["captions"] for o in outs] == [
        ["a video caption"],
        ["raw b"],
        ["first caption", "second caption"],  # several captions of one video: all of them
    ]
    assert [o["text"] for o in outs] == ["a video caption", "raw b", "first caption"]
    raw = Preprocess(
        DataConfig(modality="depth", eval_text_view="raw", image_size=8), False, shards
    )
    assert raw(dict(with_caption))["captions"] == ["raw a"]
