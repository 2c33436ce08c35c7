"""Per-modality recipes: `vidal train --modality X` trains with LanguageBind's settings for X,
every value traced to the LanguageBind file it comes from; overrides still win; a pipeline
without `recipe:` keeps its own settings."""

from __future__ import annotations

import re

import pytest

from vidal.config import PIPELINES_DIR
from vidal.train.recipes import as_overrides, train_config

# from LanguageBind's scripts/*_language/train.sh (issue 16): lr, warmup, epochs, global batch
SETTINGS = {
    "video": (1e-4, 2000, 16, 640),
    "audio": (1e-3, 2000, 16, 1024),
    "depth": (5e-4, 200, 1, 1024),
    "infrared": (1e-4, 200, 1, 1024),
}
LORA = {"video": 16, "audio": 16, "depth": 2, "infrared": 2}
PATCH_DROPOUT = {"video": 0.3, "audio": 0.1, "depth": 0.5, "infrared": 0.5}
SOURCE = re.compile(
    r"#.*(scripts/\w+_language/train\.sh|training/\w+\.py|data/\w+\.py|model/\w+\.py)"
)


@pytest.mark.parametrize("modality", list(SETTINGS))
def test_modality_picks_its_languagebind_recipe(modality):
    cfg = train_config("vidal10m", [f"train.data.modality={modality}"])
    assert (cfg.lr, cfg.warmup_steps, cfg.epochs, cfg.global_batch_size) == SETTINGS[modality]
    assert (cfg.betas, cfg.eps, cfg.weight_decay) == ([0.9, 0.98], 1e-6, 0.2)
    assert cfg.encoder.lora_rank == LORA[modality] and cfg.encoder.lora_alpha == 16
    assert cfg.encoder.lora_dropout == 0.0
    assert cfg.encoder.patch_dropout == PATCH_DROPOUT[modality]
    assert cfg.text_model == "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"  # from the pipeline
    assert cfg.data.text_view == "mix" and cfg.data.modality == modality


def test_the_default_modality_gets_videos_recipe_not_depths():
    cfg = train_config("vidal10m", [])
    assert cfg.data.modality == "video" and (cfg.lr, cfg.warmup_steps) == (1e-4, 2000)
    assert cfg.data.flip == 0.5 and cfg.data.num_frames == 8


def test_audio_recipe_is_the_126_x_1036_front_end():
    data = train_config("vidal10m", ["train.data.modality=audio"]).data
    assert (data.audio_sample_rate, data.audio_bins, data.audio_frames) == (16000, 126, 1036)


def test_command_line_overrides_win_over_the_recipe():
    cfg = train_config("vidal10m", ["train.data.modality=depth", "train.lr=0.01"])
    assert cfg.lr == 0.01 and cfg.warmup_steps == 200


def test_a_pipeline_without_a_recipe_keeps_its_settings():
    cfg = train_config("demo", ["train.data.modality=depth"])
    assert cfg.recipe == "" and cfg.lr == 3e-3 and cfg.encoder.hidden_size == 64


@pytest.mark.parametrize("modality", list(SETTINGS))
def test_every_recipe_value_is_traced_to_a_languagebind_file(modality):
    lines = (PIPELINES_DIR / "train" / f"{modality}.yaml").read_text().splitlines()
    values = [
        line for line in lines if re.match(r"\s*\w+:\s*\S", line) and not line.startswith("#")
    ]
    assert len(values) >= 10
    for line in values:
        # batch_size is vidal's per-process micro-batch, said so in the comment above it
        if line.strip().startswith("batch_size:"):
            continue
        assert SOURCE.search(line), line


def test_overrides_from_a_nested_recipe():
    tree = {"lr": 1e-4, "betas": [0.9, 0.98], "data": {"flip": 0.5, "text_view": "mix"}}
    assert as_overrides(tree) == [
        "train.lr=0.0001",
        "train.betas=[0.9, 0.98]",
        "train.data.flip=0.5",
        'train.data.text_view="mix"',
    ]
