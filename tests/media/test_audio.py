"""Tests of vidal.media.audio: the dataset's audio is 16 kHz mono FLAC, as long as the clip,
and still the sound that was in it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from vidal.media import synth
from vidal.media.audio import extract_audio, read_audio_info
from vidal.media.ffmpeg import MediaError, run_ffmpeg

TONE_HZ = 660


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio_media")
    paths = {
        "tone": folder / "tone.mp4",
        "silent": folder / "silent.mp4",
        "stereo": folder / "stereo.mkv",
    }
    synth.make_clip(
        paths["tone"], duration=2.0, width=64, height=48, fps=10, audio=True, tone_hz=TONE_HZ
    )
    synth.make_clip(paths["silent"], duration=1.0, width=64, height=48, fps=10, audio=False)
    # 48 kHz stereo: one ear 440 Hz, the other 1000 Hz, 1.5 s, beside a video track
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=1.5"),
            *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1.5"),
            *("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=1.5"),
            *("-filter_complex", "[1:a][2:a]join=inputs=2:channel_layout=stereo[a]"),
            *("-map", "0:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast"),
            *("-c:a", "flac", "-t", "1.5", str(paths["stereo"])),
        ]
    )
    return paths


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[np.argmax(spectrum)])


def test_extract_audio_is_16k_mono_flac(media, tmp_path):
    dst = tmp_path / "out.flac"
    info = extract_audio(media["tone"], dst)
    on_disk = soundfile.info(str(dst))
    assert on_disk.format == "FLAC"
    assert on_disk.samplerate == 16000 == info.sample_rate
    assert on_disk.channels == 1
    assert on_disk.frames == info.num_samples
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_extracted_audio_is_the_clips_sound(media, tmp_path):
    dst = tmp_path / "out.flac"
    extract_audio(media["tone"], dst)
    samples, rate = soundfile.read(str(dst))
    assert samples.ndim == 1
    assert np.sqrt(np.mean(samples**2)) > 0.05  # not silence
    assert _peak_hz(samples, rate) == pytest.approx(TONE_HZ, abs=5)


@pytest.mark.parametrize("rate", [8000, 22050])
def test_extract_audio_other_sample_rate(media, tmp_path, rate):
    info = extract_audio(media["tone"], tmp_path / "out.flac", sample_rate=rate)
    assert info.sample_rate == rate
    assert soundfile.info(str(tmp_path / "out.flac")).samplerate == rate
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_stereo_becomes_mono_with_both_channels(media, tmp_path):
    dst = tmp_path / "out.flac"
    info = extract_audio(media["stereo"], dst)
    samples, rate = soundfile.read(str(dst))
    assert samples.ndim == 1 and rate == 16000
    assert info.duration == pytest.approx(1.5, abs=0.05)
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    level = {hz: spectrum[np.abs(freqs - hz) < 5].max() for hz in (440, 1000)}
    noise = np.median(spectrum)
    assert level[440] > 50 * noise and level[1000] > 50 * noise  # a downmix, not one channel


def test_max_duration_is_honoured(media, tmp_path):
    info = extract_audio(media["tone"], tmp_path / "out.flac", max_duration=0.75)
    assert info.duration == pytest.approx(0.75, abs=0.03)


def test_no_audio_raises_and_leaves_no_file(media, tmp_path):
    dst = tmp_path / "out.flac"
    with pytest.raises(MediaError) as info:
        extract_audio(media["silent"], dst)
    assert info.value.reason
    assert not dst.exists()


def test_not_media_raises(tmp_path):
    src = synth.make_text_as_mp4(tmp_path / "text.mp4")
    with pytest.raises(MediaError):
        extract_audio(src, tmp_path / "out.flac")
    assert not (tmp_path / "out.flac").exists()


def test_read_audio_info_of_garbage_is_a_media_error(tmp_path):
    path = tmp_path / "fake.flac"
    path.write_bytes(b"fLaC but not really" * 10)
    with pytest.raises(MediaError) as info:
        read_audio_info(path)
    assert info.value.reason == "audio_unreadable"


def test_read_audio_info_of_an_empty_track(tmp_path):
    path = tmp_path / "empty.flac"
    with soundfile.SoundFile(str(path), "w", samplerate=16000, channels=1, format="FLAC"):
        pass
    with pytest.raises(MediaError) as info:
        read_audio_info(path)
    assert info.value.reason in {"audio_empty", "audio_unreadable"}


def test_an_audio_track_without_samples_is_audio_empty(tmp_path):
    """A video whose audio stream holds no samples: the FLAC written for it has a zero (that
    is: unknown) sample count, which must read as an empty track, not as 2**63 samples."""
    silence = tmp_path / "none.flac"
    run_ffmpeg(["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-frames:a", "0", str(silence)])
    src = tmp_path / "empty_track.mkv"
    run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=1", "-i", str(silence)),
            *("-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast"),
            *("-c:a", "flac", str(src)),
        ]
    )
    with pytest.raises(MediaError) as info:
        extract_audio(src, tmp_path / "out.flac")
    assert info.value.reason == "audio_empty"
