"""Per-modality training recipes: pipelines/train/<modality>.yaml, merged over a pipeline's
`train:` section when that section says `recipe: languagebind` (or names another folder of
<modality>.yaml files). Order: the pipeline's train section, then the modality's recipe, then
command-line overrides, so `vidal train --modality audio` trains with audio's settings and
`train.lr=...` still wins."""

from __future__ import annotations

import json
from pathlib import Path

from vidal.config import PIPELINES_DIR, ConfigError, load_config
from vidal.train.config import TrainConfig

RECIPES = {"languagebind": PIPELINES_DIR / "train"}


def recipe_path(recipe: str, modality: str) -> Path:
    folder = RECIPES.get(recipe, Path(recipe))
    path = folder / f"{modality}.yaml"
    if not path.is_file():
        raise ConfigError(f"train.recipe {recipe!r} has no {modality} recipe (looked for {path})")
    return path


def as_overrides(tree: dict, prefix: str = "train") -> list[str]:
    """A nested mapping as `train.a.b=value` overrides (values in YAML flow syntax)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += as_overrides(value, f"{prefix}.{key}")
        else:
            out.append(f"{prefix}.{key}={json.dumps(value)}")
    return out


def recipe_overrides(recipe: str, modality: str) -> list[str]:
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.load(recipe_path(recipe, modality)))
    return as_overrides(tree or {})


def train_config(pipeline: str, overrides: list[str]) -> TrainConfig:
    """The train section of `pipeline` with its recipe for the chosen modality and then the
    overrides applied."""
    first = load_config(pipeline, overrides).train
    if not first.recipe:
        return first
    recipe = recipe_overrides(first.recipe, first.data.modality)
    return load_config(pipeline, [*recipe, *overrides]).train
