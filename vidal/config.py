"""The one typed config tree: dataclasses, loaded from pipelines/*.yaml, overridden on the CLI.

Stage sections are the stage dataclasses themselves, one per registered stage and named after
it (`config_class()` adds them from vidal.stages.STAGES), so a stage's parameters are declared
in exactly one place. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidal.crawl.filters import TextFilter
from vidal.crawl.freesound import FreesoundOptions
from vidal.crawl.terms import TermsConfig
from vidal.resources import PIPELINES_DIR
from vidal.stages import STAGES, Stage
from vidal.stages.download import DownloadStage
from vidal.stages.search import SearchStage
from vidal.train.config import TrainConfig


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what is wrong."""


RUNNER_KINDS = ("auto", "ray", "processes", "local")


@dataclass
class RunnerConfig:
    # auto: with ray_address, Ray; else passes with model stages on a Ray started here and the
    # rest in worker processes | ray | processes (one machine, no Ray) | local (this process)
    kind: str = "auto"
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or ray://host:port
    num_cpus: int | None = None  # CPUs of a local Ray, or worker processes; None = all
    object_store_mb: int | None = None
    # niceness of the workers of a Ray started here: 0, the build's own priority; Ray's default,
    # 15, makes the ffmpeg of a build on a shared machine yield its cores to every other process
    worker_niceness: int | None = 0  # None: Ray's default
    progress: bool = True


@dataclass
class SourceConfig:
    max_title_chars: int = 1000
    allow_local_in_manifest: bool = True
    # fetch from private, loopback and link-local addresses too (vidal.net): off by default
    allow_private_addresses: bool = False
    follow_symlinks: bool = False  # follow symlinks that lead out of a source folder
    max_sidecar_bytes: int = 64 * 1024  # NAME.txt is cut there; a larger NAME.json fails


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
    freesound: FreesoundOptions = field(default_factory=FreesoundOptions)  # --source freesound
    wave: int = 256  # search terms per wave; downloads per checkpoint inside a shard
    shards: int = 0  # candidate shards, fixed by the first run; 0: ~10^4 candidates a shard


@dataclass
class Config:
    """The config tree; `config_class()` makes the subclass that adds a section per stage."""

    name: str = "vidal"
    stages: list[str] = field(default_factory=lambda: ["probe", "keyframes", "audio", "clip"])
    shards: int = 8
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def stage(self, name: str) -> Stage:
        return getattr(self, name)

    def pipeline(self) -> list[Stage]:
        from vidal.stages.media_pass import plan_media_pass  # one decode per clip: its rule

        return plan_media_pass([self.stage(name) for name in self.stages])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_class() -> type[Config]:
    """`Config` with a section per registered stage (`probe: ProbeStage`, ...), typed, so
    OmegaConf rejects unknown keys and wrong types in them like anywhere else."""
    return _config_class(tuple(STAGES.items()))


@functools.lru_cache(maxsize=16)
def _config_class(stages: tuple[tuple[str, type[Stage]], ...]) -> type[Config]:
    taken = {f.name for f in dataclasses.fields(Config)}
    clash = [name for name, _ in stages if name in taken]
    if clash:
        raise ConfigError(f"stage {clash[0]!r} has the name of a config section; rename it")
    sections = [(name, cls, field(default_factory=cls)) for name, cls in stages]
    cls = dataclasses.make_dataclass("Config", sections, bases=(Config,))
    cls.__module__ = __name__
    return cls


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline by file path, or by name from pipelines/ (`demo` -> pipelines/demo.yaml)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return PIPELINES_DIR / f"{name_or_path}.yaml"


def load_config(pipeline: str | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the pipeline YAML, then `key=value` overrides; validated and typed."""
    layers = [OmegaConf.structured(config_class())]
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
    if config.runner.kind not in RUNNER_KINDS:
        kinds = ", ".join(f"'{k}'" for k in RUNNER_KINDS)
        raise ConfigError(f"runner.kind must be one of {kinds}, got {config.runner.kind!r}")
    for name, cls in STAGES.items():
        if cls.check_always or name in config.stages:
            problem = config.stage(name).check()
            if problem:
                raise ConfigError(problem)
    _check_reads(config.stages)


def _check_reads(names: list[str]) -> None:
    """Every stage runs after the stages whose fields it reads (`outputs.reads`)."""
    for i, name in enumerate(names):
        for needed in STAGES[name].outputs.reads:
            if needed in STAGES and needed not in names[:i]:
                raise ConfigError(
                    f"stage {name!r} reads the fields of {needed!r}: "
                    f"list {needed} before {name} in stages"
                )
