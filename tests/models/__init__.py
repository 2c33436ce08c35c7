"""Helpers shared by the model and model-stage tests.

`model_dataset` builds, once per test session, the clip bank through probe -> keyframes ->
vl_filter -> depth with tiny models (local runner, 2 shards), with a search term in every
sidecar; tests that change a dataset copy it first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vidal.config import load_config

MODEL_STAGES = [
    "runner.kind=local",
    "runner.progress=false",
    "stages=[probe,keyframes,vl_filter,depth]",
    "shards=2",
    "vl_filter.model=tiny:clip",
    "vl_filter.batch_size=4",
    "depth.model=tiny:glpn",
    "depth.inference_size=64",
]

_BUILT: dict[str, Path] = {}


def model_config(*overrides: str):
    return load_config("demo", [*MODEL_STAGES, *overrides])


def source_with_terms(clip_bank: Path, folder: Path) -> Path:
    """A copy of the clip bank whose sidecars carry a search term: the clip's shape."""
    shutil.copytree(clip_bank, folder)
    for sidecar in folder.glob("*.json"):
        meta = json.loads(sidecar.read_text())
        meta["term"] = meta["shape"]
        sidecar.write_text(json.dumps(meta))
    return folder


def model_dataset(tmp_path_factory, clip_bank: Path) -> tuple[Path, Path]:
    """(source, out) of the session's model-stage build (built on first use)."""
    if "out" not in _BUILT:
        from vidal.run.jobs import build

        base = tmp_path_factory.mktemp("model_dataset")
        source = source_with_terms(clip_bank, base / "source")
        outcome = build(model_config(), str(source), str(base / "out"), quiet=True)
        assert outcome.failure is None, outcome.failure
        _BUILT.update(source=source, out=base / "out")
    return _BUILT["source"], _BUILT["out"]


def rows(out: Path, stage: str, *overrides: str) -> dict:
    """{key: Sample} of a stage's rows over every shard."""
    from vidal.run.build import Builder
    from vidal.sample import Sample

    builder = Builder(model_config(*overrides), None, str(out), runner=None)
    builder.planned_fingerprints()
    found = {}
    for shard in range(builder.shard_count):
        if builder.marker(stage, shard):
            for key, record in builder.read_rows(stage, shard).items():
                found[key] = Sample.from_json(record)
    return found
