"""The paper's keyframe captions: OFA's prompt " what does the image describe?", 480x480
frames, 5 beams, no_repeat_ngram_size 3 — applied by a local BLIP-class captioner (the prompt
as its text prefix) and sent to a VLM server, and recorded in each sample's lineage."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.models.test_openai_http import ScriptedServer
from vidal.models.generate import Decoding
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.captions import CaptionsStage, Generator

OFA_DECODING = Decoding(max_new_tokens=4, num_beams=5, no_repeat_ngram_size=3)
N = 2  # frames: a tiny BLIP at 480x480 with 5 beams is slow on a CPU


def _sample(tmp_path) -> Sample:
    """A sample whose keyframes (N tiled 40x30 frames) are in the store."""
    from vidal.io.store import Store
    from vidal.stages.keyframes import tile

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (N, 30, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(tile(frames)).save(buf, format="PNG")
    Store(str(tmp_path)).write_bytes("work/keyframes/00000/k.png", buf.getvalue())
    sample = Sample("k", 0, "x", meta={"title": "a red circle", "hashtags": []})
    sample.fields["keyframes"] = {"file": "work/keyframes/00000/k.png", "count": N}
    return sample


def _stage(keyframe: Generator) -> CaptionsStage:
    return CaptionsStage(keyframe=keyframe, video_caption=False)


def test_local_captioner_takes_the_prompt_size_and_decoding(tmp_path):
    spec = Generator(
        model="tiny:blip",
        prompt="keyframe_caption_ofa.txt",
        decoding=OFA_DECODING,
        image_size=480,
    )
    stage = _stage(spec)
    stage.setup(StageContext(str(tmp_path)))
    model = stage.ready["keyframe_captions"].net.model
    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    model.generate = spy
    sample = stage.process_batch([_sample(tmp_path)])[0]
    assert sample.ok, sample.errors
    assert tuple(seen["pixel_values"].shape) == (N, 3, 480, 480)
    assert seen["num_beams"] == 5 and seen["no_repeat_ngram_size"] == 3
    tokenizer = stage.ready["keyframe_captions"].net.tokenizer
    prefix = tokenizer("what does the image describe?", add_special_tokens=False)["input_ids"]
    assert seen["input_ids"][0, 1:].tolist() == prefix  # [bos] + the paper's prompt
    view = sample.lineage["captions"]["views"]["keyframe_captions"]
    assert view["prompt"] == "keyframe_caption_ofa.txt"
    assert view["prompt_text"] == "what does the image describe?"
    assert view["image_size"] == 480
    assert view["decoding"]["num_beams"] == 5 and view["decoding"]["no_repeat_ngram_size"] == 3
    assert "decoding_not_sent" not in view


def test_vlm_server_gets_480_frames_and_the_gap_is_recorded(tmp_path):
    server = ScriptedServer(lambda body: "a red circle on black")
    try:
        spec = Generator(
            backend="openai",
            model="vlm",
            base_url=server.url,
            prompt="keyframe_caption_ofa.txt",
            decoding=OFA_DECODING,
            image_size=480,
        )
        stage = _stage(spec)
        stage.setup(StageContext(str(tmp_path)))
        sample = stage.process_batch([_sample(tmp_path)])[0]
    finally:
        server.close()
    assert sample.ok, sample.errors
    assert sample.fields["captions"]["views"]["keyframe_captions"] == ["a red circle on black"] * N
    content = server.bodies[0]["messages"][0]["content"]
    assert next(p["text"] for p in content if p["type"] == "text") == (
        "what does the image describe?"
    )
    url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (480, 480)
    view = sample.lineage["captions"]["views"]["keyframe_captions"]
    assert view["decoding_not_sent"] == ["num_beams", "no_repeat_ngram_size"]
    assert view["image_size"] == 480
