"""Frame index rules (LanguageBind's loader vs. its generation code) and full-size copies."""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidal.media import synth
from vidal.media.ffmpeg import MediaError
from vidal.media.frames import frame_indices, languagebind_gen_indices, sample_keyframes


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("indices") / "moving.mp4"
    synth.make_clip(path, duration=3.1, width=320, height=240, fps=10, audio=False)
    return path


def _all_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_generation_code_indices_are_i_times_n_div_8():
    assert languagebind_gen_indices(100, 8) == [0, 12, 24, 36, 48, 60, 72, 84]
    assert frame_indices(100, 8, "linspace") == [0, 14, 28, 42, 56, 70, 84, 99]
    assert languagebind_gen_indices(5, 8) == [0] * 8  # n // 8 == 0: the released code's result
    with pytest.raises(MediaError):
        languagebind_gen_indices(0, 8)
    with pytest.raises(ValueError, match="rule"):
        frame_indices(100, 8, "uniform")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_sampled_frames_are_the_rules_frames(clip, backend):
    truth = _all_frames(clip)
    n = len(truth)
    kf = sample_keyframes(clip, 8, backend=backend, rule="languagebind_gen")
    assert kf.indices == [i * (n // 8) for i in range(8)]
    for index, frame in zip(kf.indices, kf.frames, strict=True):
        assert np.abs(frame.astype(int) - truth[index]).mean() < 1.0
    assert sample_keyframes(clip, 8, backend=backend).indices == frame_indices(n, 8)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_full_size_copy_comes_from_the_same_frames(clip, backend):
    kf = sample_keyframes(clip, 8, short_side=60, backend=backend, extra_short_sides=(0, 120))
    assert kf.frames.shape == (8, 60, 80, 3)
    assert kf.extra[0].shape == (8, 240, 320, 3)  # 0: the source's size
    assert kf.extra[120].shape == (8, 120, 160, 3)
    truth = _all_frames(clip)
    for index, frame in zip(kf.indices, kf.extra[0], strict=True):
        assert np.abs(frame.astype(int) - truth[index]).mean() < 1.0
