"""Per-modality preprocessing, following LanguageBind's processors.

video: 8 frames, short side to `size` + crop (random in training, centre in eval), CLIP norm.
depth: uint16 mm -> metres, clipped to 0.01..10, /10, replicated to 3 channels, CLIP norm.
infrared: 8-bit grayscale as RGB, CLIP norm.
video: a random horizontal flip (p 0.5) of the whole clip in training.
audio: resampled to 16 kHz, Kaldi fbank (25 ms Hanning window, 10 ms shift, dither 0, 126
Kaldi/HTK mel bins), 1036 frames repeated when short, three chunks (a random start within each
third) stacked as channels when long, AudioSet mean/std; (3, 126, 1036).
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
AUDIO_MEAN, AUDIO_STD = -4.2677393, 4.5689974  # AudioSet fbank statistics (LanguageBind's)


def resize_crop(images: torch.Tensor, size: int, train: bool, rng: random.Random) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size): short side to `size`, then one crop for all N
    (the same crop for every frame of a clip keeps them aligned)."""
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    images = F.interpolate(
        images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
    )
    top = rng.randint(0, new_h - size) if train else (new_h - size) // 2
    left = rng.randint(0, new_w - size) if train else (new_w - size) // 2
    return images[..., top : top + size, left : left + size]


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - CLIP_MEAN) / CLIP_STD


def untile(image: np.ndarray, count: int) -> np.ndarray:
    """(H, count*W, ...) -> (count, H, W, ...): vidal stores per-frame modalities side by side."""
    return np.stack(np.split(image, count, axis=1))


def video_tensor(
    mp4: bytes, frames: int, size: int, train: bool, rng: random.Random, flip: float = 0.0
):
    """(frames, 3, size, size) from an encoded clip, at LanguageBind's frame indices, flipped
    horizontally (every frame) with probability `flip` in training. Every frame is decoded
    (the clips are short and small) but only the picked ones are converted."""
    from vidal.media.container import open_media

    # a shard's mp4 is untrusted bytes: opened as a vetted container, never as a playlist
    with open_media(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        total = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
        if not stream.frames:
            container.seek(0)
        picks = np.linspace(0, max(total, 1) - 1, frames, dtype=int).tolist()
        wanted, decoded = set(picks), {}
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                decoded[index] = frame.to_ndarray(format="rgb24")
            if index >= picks[-1]:
                break
    if not decoded:
        raise ValueError("the clip decodes to no frames")
    last = decoded[max(decoded)]  # a clip shorter than its header says: repeat its last frame
    array = np.stack([decoded.get(i, last) for i in picks])
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2).float()
    tensor = resize_crop(tensor / 255.0, size, train, rng)
    if train and flip and rng.random() < flip:
        tensor = tensor.flip(-1)
    return clip_normalize(tensor)


def _pick_frame(count: int, train: bool, rng: random.Random, frame: int | None) -> int:
    if frame is not None and 0 <= frame < count:
        return frame
    return rng.randrange(count) if train else count // 2


def depth_tensor(
    png: np.ndarray,
    count: int,
    size: int,
    train: bool,
    rng: random.Random,
    frame: int | None = None,
):
    """(3, size, size) from a tiled uint16-millimetre depth PNG (one frame per sample)."""
    frame = untile(np.asarray(png), count)[_pick_frame(count, train, rng, frame)].astype(np.float32)
    metres = np.clip(frame / 1000.0, 0.01, 10.0) / 10.0
    image = torch.from_numpy(metres)[None, None].expand(1, 3, *metres.shape)
    return clip_normalize(resize_crop(image.contiguous(), size, train, rng)[0])


def infrared_tensor(
    png: np.ndarray,
    count: int,
    size: int,
    train: bool,
    rng: random.Random,
    frame: int | None = None,
):
    """(3, size, size) from a tiled 8-bit infrared PNG, treated as RGB."""
    frame = untile(np.asarray(png), count)[_pick_frame(count, train, rng, frame)].astype(np.float32)
    if frame.ndim == 3:
        frame = frame.mean(axis=-1)
    image = torch.from_numpy(frame / 255.0)[None, None].expand(1, 3, *frame.shape)
    return clip_normalize(resize_crop(image.contiguous(), size, train, rng)[0])


def resample(waveform: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """(..., samples) at `rate` -> at `target`: windowed-sinc interpolation with a Hann window,
    6 zero crossings, rolloff 0.99, the algorithm of torchaudio.functional.resample that
    LanguageBind calls (data/process_audio.py)."""
    if rate == target:
        return waveform
    gcd = math.gcd(rate, target)
    orig, new = rate // gcd, target // gcd
    base = min(orig, new) * 0.99
    width = math.ceil(6 * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
    t = t.clamp(-6, 6)
    window = torch.cos(t * math.pi / 6 / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), t.sin() / t)
    kernels = (kernels * window * base / orig).to(waveform.dtype)
    flat = waveform.reshape(-1, waveform.shape[-1])
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernels, stride=orig).transpose(1, 2).reshape(len(flat), -1)
    length = math.ceil(new * flat.shape[-1] / orig)
    return out[..., :length].reshape(*waveform.shape[:-1], length)


def fbank(waveform: np.ndarray, sample_rate: int = 16000, bins: int = 126) -> np.ndarray:
    """Kaldi log-mel filterbank, (frames, bins): 25 ms Hanning windows every 10 ms, dither 0,
    DC removal and pre-emphasis per frame, Kaldi's (HTK-scale) mel bank from 20 Hz to Nyquist,
    no energy term — torchaudio.compliance.kaldi.fbank as LanguageBind calls it."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # 0: the Nyquist frequency (torchaudio's default)
    opts.use_energy = False
    computer = knf.OnlineFbank(opts)
    # samples in [-1, 1], as torchaudio.load gives LanguageBind: the AudioSet mean / std
    # below are statistics of that scale (int16-scaled samples sit ln(32768^2) higher)
    computer.accept_waveform(sample_rate, waveform.astype(np.float32).tolist())
    computer.input_finished()
    frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.asarray(frames, dtype=np.float32).reshape(-1, bins)


def chunk_starts(total: int, target: int, rng: random.Random | None) -> list[int]:
    """Front, middle and back chunk starts of a long fbank: a random start within each third
    of the possible starts (LanguageBind); without `rng` (evaluation) each third's first."""
    thirds = np.array_split(np.arange(total - target + 1), 3)
    thirds = [part if len(part) else np.array([0]) for part in thirds]
    return [int(rng.choice(part.tolist())) if rng else int(part[0]) for part in thirds]


def audio_tensor(
    flac: bytes,
    target_frames: int = 1036,
    bins: int = 126,
    sample_rate: int = 16000,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """(3, bins, target_frames), LanguageBind's audio input: resampled to `sample_rate`, mean
    removed, the first channel's fbank; short audio repeated to length in all three channels,
    long audio as three chunks (front / middle / back thirds, random starts in training);
    AudioSet-normalised (x - mean) / (2 std)."""
    import soundfile

    waveform, rate = soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    audio = resample(torch.from_numpy(waveform.T.copy()), rate, sample_rate)
    audio = audio - audio.mean()
    feats = torch.from_numpy(fbank(audio[0].numpy(), sample_rate, bins))
    if feats.shape[0] == 0:
        raise ValueError("the audio is shorter than one 25 ms window")
    if feats.shape[0] <= target_frames:
        reps = target_frames // feats.shape[0] + 1
        chunk = feats.repeat(reps, 1)[:target_frames]
        stacked = torch.stack([chunk] * 3)
    else:
        starts = chunk_starts(feats.shape[0], target_frames, rng)
        stacked = torch.stack([feats[s : s + target_frames] for s in starts])
    return (stacked.transpose(1, 2) - AUDIO_MEAN) / (AUDIO_STD * 2)
