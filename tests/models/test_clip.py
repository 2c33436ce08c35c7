"""The CLIP wrapper: batched embeddings, the model's own preprocessing, the score maths."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch

from vidal.models.clip import ClipEmbedder
from vidal.models.resolve import autocast
from vidal.stages.vl_filter import scores_from

RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def clip():
    return ClipEmbedder.load("tiny:clip")


def count_calls(module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_frames_of_clips_of_any_size_embed_in_one_forward(clip):
    clips = [
        RNG.integers(0, 256, (8, 120, 160, 3), dtype=np.uint8),
        RNG.integers(0, 256, (1, 256, 144, 3), dtype=np.uint8),  # portrait, one frame
        np.zeros((8, 64, 96, 3), np.uint8),  # all black
    ]
    calls = count_calls(clip.model.vision_model)
    emb = clip.embed_frames(clips)
    assert len(calls) == 1
    assert emb.shape == (17, clip.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    alone = clip.embed_frames([clips[1]])
    np.testing.assert_allclose(alone, emb[8:9], atol=1e-5)  # batching changes nothing


def test_texts_embed_in_one_forward_cut_at_the_context_length(clip):
    calls = count_calls(clip.model.text_model)
    texts = ["a red circle moving from left to right #red", "", "word " * 500]
    emb = clip.embed_texts(texts)
    assert len(calls) == 1 and emb.shape == (3, clip.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(clip.embed_texts(texts[:1])[0], emb[0], atol=1e-5)


def test_frames_are_prepared_like_the_models_image_processor(clip):
    frames = RNG.integers(0, 256, (1, 90, 160, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames[:, ::6, ::8], 6, axis=1), 8, axis=2)  # smooth blocks
    ours = clip._pixels(frames).numpy()
    theirs = clip.processor(images=list(frames), return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert np.abs(ours - theirs).mean() < 0.1  # resampling differs a little, nothing more


def test_video_score_is_the_cosine_of_the_mean_frame_with_the_text():
    text = np.eye(4, dtype=np.float32)[:2]
    frames = np.stack([text[0], text[0], text[1], text[0], text[1]])  # clip 1: 2 frames, 2: 3
    scores = scores_from(frames, [2, 3], text)
    # clip 2: mean of (e1, e0, e1) made unit is (e0 + 2 e1) / sqrt(5); its text is e1
    np.testing.assert_allclose(scores.score, [1.0, 2 / np.sqrt(5)], atol=1e-6)
    np.testing.assert_allclose(scores.frames[1], [1, 0, 1])
    np.testing.assert_allclose(np.linalg.norm(scores.video, axis=1), 1, atol=1e-6)


def test_autocast_is_off_on_cpu_and_checks_the_precision():
    assert isinstance(autocast("cpu", "bf16"), contextlib.nullcontext)
    with warnings.catch_warnings():  # no CUDA here: torch warns that it would disable it
        warnings.simplefilter("ignore")
        assert isinstance(autocast("cuda", "bf16"), torch.autocast)
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "int8")
