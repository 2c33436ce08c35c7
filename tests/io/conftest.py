"""A dataset with every modality LanguageBind reads, built once for the export tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from vidal.config import load_config
from vidal.run.jobs import build

TINY_MODELS = [
    "depth.model=tiny:glpn",
    "depth.inference_size=64",
    "infrared.model=tiny:munit",
    "infrared.inference_size=64",
    "audio_caption.tagger=tiny:ast",
    "audio_caption.llm.model=tiny:llama",
    "audio_caption.llm.decoding.max_new_tokens=8",
]


@pytest.fixture(scope="session")
def lb_dataset(clip_bank, tmp_path_factory) -> Path:
    """The clip bank (3 clips with audio, 3 without) built with depth (tiny GLPN), infrared
    (tiny MUNIT), audio, audio captions (tiny AST + tiny Llama) and clips into 2 shards."""
    out = tmp_path_factory.mktemp("lb") / "dataset"
    stages = "stages=[probe,keyframes,depth,infrared,audio,audio_caption,clip]"
    overrides = ["runner.kind=local", "runner.progress=false", "shards=2", stages, *TINY_MODELS]
    outcome = build(load_config("demo", overrides), str(clip_bank), str(out), quiet=True)
    assert outcome.exit_code == 0
    return out


def shard_members(dataset: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((dataset / "shards").glob("vidal-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> str:
    """A tar holding `samples` ({key: {ext: bytes}}) under any member names, hostile ones too."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)
