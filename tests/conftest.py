"""Shared fixtures. Media is generated at test time (ffmpeg lavfi); nothing is committed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vidal.config import load_config
from vidal.media.synth import make_clip_set

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def clip_bank(tmp_path_factory) -> Path:
    """Six small captioned clips (3 with audio, 3 without) made once per test session."""
    folder = tmp_path_factory.mktemp("clip_bank")
    make_clip_set(folder, 6, seed=1, duration=(1.5, 2.5), size=(160, 120))
    return folder


@pytest.fixture
def good_source(clip_bank, tmp_path) -> Path:
    """A fresh copy of the clip bank (with sidecars) that a test may add bad files to."""
    folder = tmp_path / "source"
    shutil.copytree(clip_bank, folder)
    return folder


@pytest.fixture
def local_config():
    """Config factory for builds that run in-process (fast, no Ray)."""

    def make(*overrides: str, pipeline: str = "demo"):
        return load_config(pipeline, ["runner.kind=local", "runner.progress=false", *overrides])

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    os.environ["VIDAL_KEEP_RAY"] = "1"  # builds must not shut the shared Ray down
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
    yield ray
    ray.shutdown()
    os.environ.pop("VIDAL_KEEP_RAY", None)


@pytest.fixture
def stage_registry():
    """Stages a test registers (vidal.stages.registry) are gone after it, with their modules."""
    import sys

    from vidal.stages import STAGES

    before, modules = dict(STAGES), set(sys.modules)
    yield STAGES
    STAGES.clear()
    STAGES.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith("vidal_toy"):
            del sys.modules[name]


@pytest.fixture
def src4(clip_bank, tmp_path) -> Path:
    """Four clips of the bank (two with audio) with their sidecars."""
    import shutil

    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(4):
        for ext in ("mp4", "json"):
            shutil.copy(clip_bank / f"synth-{i:03d}.{ext}", folder / f"synth-{i:03d}.{ext}")
    return folder
