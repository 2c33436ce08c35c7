"""One file per stage; each registers itself with `@register` (vidal.stages.registry).

Importing this package imports the built-in stage modules, in the order below (the registry's
order: parquet columns and report rows follow it), then the `vidal.stages` entry point group.
The crawl's search and download stages are configured under `crawl:` and not registered.
"""

import importlib

from vidal.stages.base import Stage, StageContext
from vidal.stages.registry import STAGES, load_plugins, register

BUILTIN = (
    "probe",
    "keyframes",
    "audio",
    "clip",
    "vl_filter",
    "refilter",
    "dedup",
    "depth",
    "infrared",
    "captions",
    "enhance",
    "audio_caption",
)

for _module in BUILTIN:
    importlib.import_module(f"vidal.stages.{_module}")
load_plugins()

__all__ = ["STAGES", "Stage", "StageContext", "register"]
