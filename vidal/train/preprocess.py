"""Per-modality preprocessing, following LanguageBind's processors.

video: 8 frames, short side to `size` + crop (random in training, centre in eval), CLIP norm.
depth: uint16 mm -> metres, clipped to 0.01..10, /10, replicated to 3 channels, CLIP norm.
infrared: 8-bit grayscale as RGB, CLIP norm.
audio: 16 kHz -> 128-bin fbank with Kaldi framing (25 ms Hanning window, 10 ms shift,
pre-emphasis, DC removal) and a Slaney mel bank; repeated when short, three
chunks (front, middle, back) stacked as channels when long; AudioSet mean/std.
"""

from __future__ import annotations

import io
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


def video_tensor(mp4: bytes, frames: int, size: int, train: bool, rng: random.Random):
    """(frames, 3, size, size) from an encoded clip, at LanguageBind's frame indices. Every
    frame is decoded (the clips are short and small) but only the picked ones are converted."""
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
    return clip_normalize(resize_crop(tensor / 255.0, size, train, rng))


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


def fbank(waveform: np.ndarray, sample_rate: int = 16000, bins: int = 128) -> np.ndarray:
    """Kaldi-style log-mel filterbank, (frames, bins)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"  # LanguageBind's window
    opts.mel_opts.num_bins = bins
    # Kaldi's own mel bank leaves low bins empty at 128 bins / 512-point FFT and refuses them;
    # the librosa (Slaney) bank fills every bin. Framing stays Kaldi's.
    opts.mel_opts.is_librosa = True
    computer = knf.OnlineFbank(opts)
    # samples in [-1, 1], as torchaudio.load gives LanguageBind: the AudioSet mean / std
    # below are statistics of that scale (int16-scaled samples sit ln(32768^2) higher)
    computer.accept_waveform(sample_rate, waveform.astype(np.float32).tolist())
    computer.input_finished()
    frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.asarray(frames, dtype=np.float32).reshape(-1, bins)


def audio_tensor(flac: bytes, target_frames: int = 1024, bins: int = 128) -> torch.Tensor:
    """(3, target_frames, bins): short audio repeated to length in all three channels; long
    audio as front / middle / back chunks, one per channel; AudioSet-normalised."""
    import soundfile

    waveform, rate = soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    feats = torch.from_numpy(fbank(waveform.mean(axis=1), rate, bins))
    if feats.shape[0] == 0:
        raise ValueError("the audio is shorter than one 25 ms window")
    if feats.shape[0] <= target_frames:
        reps = -(-target_frames // feats.shape[0])
        chunk = feats.repeat(reps, 1)[:target_frames]
        stacked = torch.stack([chunk] * 3)
    else:
        starts = [0, (feats.shape[0] - target_frames) // 2, feats.shape[0] - target_frames]
        stacked = torch.stack([feats[s : s + target_frames] for s in starts])
    return (stacked - AUDIO_MEAN) / (AUDIO_STD * 2)
