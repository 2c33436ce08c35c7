"""The one typed config tree: dataclasses, loaded from pipelines/*.yaml, overridden on the CLI.

Stage sections are the stage dataclasses themselves, so a stage's parameters are declared in
exactly one place. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidal.crawl.filters import TextFilter
from vidal.crawl.terms import TermsConfig
from vidal.resources import PIPELINES_DIR
from vidal.stages import STAGES, Stage
from vidal.stages.audio import AudioStage
from vidal.stages.captions import CaptionsStage
from vidal.stages.clip import ClipStage
from vidal.stages.dedup import DedupStage
from vidal.stages.depth import DepthStage
from vidal.stages.download import DownloadStage
from vidal.stages.enhance import EnhanceStage
from vidal.stages.infrared import InfraredStage
from vidal.stages.keyframes import KeyframesStage
from vidal.stages.probe import ProbeStage
from vidal.stages.search import SearchStage
from vidal.stages.vl_filter import VLFilterStage
from vidal.train.config import TrainConfig


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what is wrong."""


@dataclass
class RunnerConfig:
    kind: str = "ray"  # ray | local
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or ray://host:port
    num_cpus: int | None = None  # CPUs for a local Ray; None = all
    object_store_mb: int | None = None
    wave_samples: int = 2048  # samples in flight per wave: bounds driver memory
    progress: bool = True


@dataclass
class SourceConfig:
    max_title_chars: int = 1000
    allow_local_in_manifest: bool = True


@dataclass
class PackConfig:
    caption_view: str = "raw"  # the text view written as KEY.txt
    version: str = "1"


@dataclass
class CrawlConfig:
    """`vidal terms` and `vidal crawl`: terms -> search -> text filter -> download."""

    terms: TermsConfig = field(default_factory=TermsConfig)
    search: SearchStage = field(default_factory=SearchStage)
    filter: TextFilter = field(default_factory=TextFilter)
    download: DownloadStage = field(default_factory=DownloadStage)
    wave: int = 256  # candidates per download wave; the manifests are rewritten after each


@dataclass
class Config:
    name: str = "vidal"
    stages: list[str] = field(default_factory=lambda: ["probe", "keyframes", "audio", "clip"])
    shards: int = 8
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    probe: ProbeStage = field(default_factory=ProbeStage)
    keyframes: KeyframesStage = field(default_factory=KeyframesStage)
    audio: AudioStage = field(default_factory=AudioStage)
    clip: ClipStage = field(default_factory=ClipStage)
    vl_filter: VLFilterStage = field(default_factory=VLFilterStage)
    depth: DepthStage = field(default_factory=DepthStage)
    dedup: DedupStage = field(default_factory=DedupStage)
    infrared: InfraredStage = field(default_factory=InfraredStage)
    captions: CaptionsStage = field(default_factory=CaptionsStage)
    enhance: EnhanceStage = field(default_factory=EnhanceStage)
    pack: PackConfig = field(default_factory=PackConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def stage(self, name: str) -> Stage:
        return getattr(self, name)

    def pipeline(self) -> list[Stage]:
        return [self.stage(name) for name in self.stages]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline by file path, or by name from pipelines/ (`demo` -> pipelines/demo.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return PIPELINES_DIR / f"{name_or_path}.yaml"


def load_config(pipeline: str | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the pipeline YAML, then `key=value` overrides; validated and typed."""
    layers = [OmegaConf.structured(Config)]
    if pipeline:
        path = pipeline_path(pipeline)
        if not path.is_file():
            raise ConfigError(f"pipeline {pipeline!r} not found (looked for {path})")
        layers.append(OmegaConf.load(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad[0]!r}")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        config: Config = OmegaConf.to_object(OmegaConf.merge(*layers))
    except OmegaConfBaseException as exc:
        raise ConfigError(str(exc).splitlines()[0] + _where(exc)) from exc
    _validate(config)
    return config


def _where(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    return f" (key: {key})" if key else ""


def _validate(config: Config) -> None:
    unknown = [s for s in config.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; known stages: {', '.join(STAGES)}")
    if config.shards < 1:
        raise ConfigError(f"shards must be at least 1, got {config.shards}")
    if config.runner.kind not in ("ray", "local"):
        raise ConfigError(f"runner.kind must be 'ray' or 'local', got {config.runner.kind!r}")
    if config.keyframes.mode not in ("exact", "snap"):
        raise ConfigError(
            f"keyframes.mode must be 'exact' or 'snap', got {config.keyframes.mode!r}"
        )
    # model references and model settings
    for stage in (config.vl_filter, config.depth, config.infrared):
        problem = stage.check()
        if problem:
            raise ConfigError(problem)
    for stage in (config.captions, config.enhance):  # prompts are files: check those in use
        problem = stage.check() if stage.name in config.stages else None
        if problem:
            raise ConfigError(problem)
