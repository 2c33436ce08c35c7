"""The paper's recipe (pipelines/vidal10m.yaml) is the paper's, every setting traced to its
source; vidal's improvements live in pipelines/vidal10m-plus.yaml."""

from __future__ import annotations

import re

from vidal.config import PIPELINES_DIR, load_config
from vidal.crawl.filters import TextFilter

RESOURCES = {"batch_size", "num_gpus", "num_cpus", "concurrency", "resources", "name"}


def test_every_setting_of_the_paper_pipeline_says_where_it_comes_from():
    text = (PIPELINES_DIR / "vidal10m.yaml").read_text()
    recipe = text[: text.index("\ntrain:")]  # the trainer's section is the trainer's
    untraced, parent_comment, previous = [], {}, ""
    for line in recipe.splitlines():
        match = re.match(r"^(\s*)([a-z_]+):(.*)$", line)
        above, previous = previous.strip().startswith("#"), line
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        parent_comment = {i: c for i, c in parent_comment.items() if i < indent}
        commented = "#" in rest or above or any(parent_comment.values())
        parent_comment[indent] = "#" in rest
        if rest.split("#")[0].strip() and key not in RESOURCES and not commented:
            untraced.append(line.strip())
    assert not untraced, untraced


def test_the_paper_pipeline_is_the_papers_recipe():
    c = load_config("vidal10m")
    assert "dedup" not in c.stages and c.vl_filter.threshold is None
    assert (c.keyframes.num_frames, c.keyframes.indices) == (8, "languagebind_gen")
    assert c.keyframes.full_frames and c.keyframes.full_short_side == 0
    assert (c.depth.model, c.depth.frames, c.depth.input_hw) == (
        "vinvino02/glpn-nyu",
        "full",
        [448, 796],
    )
    assert c.depth.precision == "fp32" and c.depth.output_short_side == 256
    ir = c.infrared
    assert (ir.frames, ir.input_hw, ir.style, ir.normalize, ir.channels) == (
        "full",
        [400, 640],
        "per_frame",
        "minmax",
        3,
    )
    kf = c.captions.keyframe
    assert kf.prompt_text() == "what does the image describe?" and kf.image_size == 480
    assert (kf.decoding.num_beams, kf.decoding.no_repeat_ngram_size) == (5, 3)
    assert c.enhance.llm.model == "gpt-3.5-turbo"  # ChatGPT
    assert c.probe.max_duration == 20 and c.probe.audio_only
    assert TextFilter().stopwords() == TextFilter(**vars(c.crawl.filter)).stopwords()


def test_the_plus_pipeline_holds_vidals_improvements():
    c = load_config("vidal10m-plus")
    assert "dedup" in c.stages and c.vl_filter.threshold is not None
    assert c.captions.video.model.startswith("Qwen/") and c.enhance.llm.model.startswith("Qwen/")
    assert "prank" in c.crawl.filter.stopwords() and "viral" in c.crawl.filter.stopwords()
    assert c.keyframes.indices == "linspace" and c.keyframes.full_short_side == 480
    paper = (PIPELINES_DIR / "vidal10m.yaml").read_text()
    plus = (PIPELINES_DIR / "vidal10m-plus.yaml").read_text()
    assert plus[plus.index("\ntrain:") :] == paper[paper.index("\ntrain:") :]
