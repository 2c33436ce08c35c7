"""The local generative wrappers with tiny models: shapes, one generate call per batch,
determinism, batch invariance (left padding), decoding settings, and loading from a local
folder as a hub download is loaded."""

from __future__ import annotations

import numpy as np
import pytest

from vidal.models.captioner import ImageCaptioner, VideoCaptioner
from vidal.models.generate import Decoding, check_model
from vidal.models.llm import TextGenerator
from vidal.models.speech import SpeechRecognizer

D = Decoding(max_new_tokens=5)


def clips(*shapes):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def counted(model):
    calls = []
    original = model.generate
    model.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    return calls


@pytest.fixture(scope="module")
def video():
    return VideoCaptioner.load("tiny:qwen2_vl", "bf16", frame_short_side=56)


def test_image_captioner_one_call_for_every_frame_of_every_clip():
    net = ImageCaptioner.load("tiny:blip")
    calls = counted(net.model)
    out = net.caption(clips((8, 60, 80, 3), (3, 90, 50, 3)), "a picture of", D)
    assert calls == [1] and [len(c) for c in out] == [8, 3]
    assert all(isinstance(t, str) for c in out for t in c)
    assert net.revision == ImageCaptioner.load("tiny:blip").revision  # deterministic weights
    assert net.caption([], "x", D) == []


def test_video_captioner_batches_mixed_sizes_and_is_batch_invariant(video):
    calls = counted(video.model)
    batch = clips((8, 120, 160, 3), (7, 160, 120, 3), (8, 120, 160, 3))
    prompts = ["a red circle #red", "a much longer prompt about a blue square #blue", "x"]
    out = video.caption(batch, prompts, D)
    assert calls == [1] and len(out) == 3
    assert video.caption(batch[1:2], prompts[1:2], D) == out[1:2]
    assert video.caption(batch, prompts, D) == out  # greedy: deterministic
    assert video.frame_size(120, 160) == (56, 84)  # multiples of patch x merge (28)


def test_text_generator_left_pads_one_call():
    net = TextGenerator.load("tiny:llama")
    calls = counted(net.model)
    prompts = ["rewrite: a dog", "rewrite this much longer caption about a cat on a mat"]
    out = net.generate(prompts, D)
    assert calls == [1] and len(out) == 2
    assert net.generate(prompts[:1], D) == out[:1]


def test_decoding_settings():
    greedy = Decoding(max_new_tokens=9).hf_kwargs()
    assert greedy["do_sample"] is False and "temperature" not in greedy
    sampled = Decoding(temperature=0.7, top_p=0.9)
    assert sampled.hf_kwargs()["do_sample"] and sampled.openai_kwargs()["seed"] == 0
    assert Decoding().openai_kwargs() == {"max_tokens": 48, "temperature": 0.0, "top_p": 1.0}
    assert Decoding(max_new_tokens=0).check() and Decoding(top_p=0).check()


def test_model_references():
    assert check_model("tiny:qwen2_vl") is None and check_model("Qwen/Qwen2-VL-2B-Instruct") is None
    assert "unknown tiny model" in check_model("tiny:gpt5")
    assert "unknown tiny model" in check_model("tiny:llama", ("blip",))


def test_local_folders_load_and_caption_like_the_tiny_models(tmp_path, video):
    batch = clips((8, 120, 160, 3))
    image = ImageCaptioner.load("tiny:blip")
    for net, name in ((image, "blip"), (video, "qwen2_vl")):
        folder = tmp_path / name
        net.model.save_pretrained(folder)
        net.tokenizer.save_pretrained(folder)
        net.processor.save_pretrained(folder)
    llm = TextGenerator.load("tiny:llama")
    llm.model.save_pretrained(tmp_path / "llama")
    llm.tokenizer.save_pretrained(tmp_path / "llama")
    again = ImageCaptioner.load(str(tmp_path / "blip"))
    assert again.caption(batch, "a picture of", D) == image.caption(batch, "a picture of", D)
    assert again.revision.startswith("sha256:") and again.ref == str(tmp_path / "blip")
    loaded = VideoCaptioner.load(str(tmp_path / "qwen2_vl"), frame_short_side=56)
    assert loaded.caption(batch, ["a clip"], D) == video.caption(batch, ["a clip"], D)
    text = TextGenerator.load(str(tmp_path / "llama"))
    assert text.generate(["a dog"], D) == llm.generate(["a dog"], D)
    speech = SpeechRecognizer.load("tiny:whisper")
    for part in (speech.model, speech.extractor, speech.tokenizer):
        part.save_pretrained(tmp_path / "whisper")
    wave = [np.sin(np.linspace(0, 400, 16_000)).astype(np.float32)]
    heard = SpeechRecognizer.load(str(tmp_path / "whisper")).transcribe(wave, D)
    assert heard == speech.transcribe(wave, D) and heard[0]
