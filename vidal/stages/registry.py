"""The build stages, by name: each stage file registers its class with `@register`.

`vidal.stages` imports the built-in stage modules, then every module named by an entry point
in the `vidal.stages` group (a third-party package adds a stage with
`[project.entry-points."vidal.stages"] mystage = "mypackage.mystage"`). The registry's order
is the order of registration, so the parquet schema and KEY.json built from it are the same
on every machine with the same packages.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from vidal.stages.outputs import CORE_COLUMNS, CORE_JSON, CORE_MEMBERS, Member, Outputs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vidal.stages"
STAGES: dict[str, type] = {}  # name -> Stage subclass, in registration order


def register(cls: type) -> type:
    """Class decorator: make a stage known to configs, pipelines, the packer and the report."""
    name = getattr(cls, "name", "")
    if not name or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}: a stage needs a `name` that is an identifier")
    old = STAGES.get(name)
    if old is not None and _where(old) != _where(cls):
        raise ValueError(f"stage {name!r} is registered twice: {_where(old)} and {_where(cls)}")
    _check_unique(name, cls)
    STAGES[name] = cls  # the same class again (a module reloaded): the newer one
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_unique(name: str, cls: type) -> None:
    """Two stages must not write the same tar member, parquet column or KEY.json key."""
    mine = _claims(name, cls)
    others = {claim for other, c in STAGES.items() if other != name for claim in _claims(other, c)}
    if mine & others:
        raise ValueError(f"stage {name!r} declares {sorted(mine & others)[0]}, already declared")
    core = {f"member {ext}" for ext in CORE_MEMBERS} | {f"column {c}" for c in CORE_COLUMNS}
    reserved = mine & (core | {f"KEY.json key {k}" for k in CORE_JSON})
    if reserved:
        raise ValueError(f"stage {name!r} declares {sorted(reserved)[0]}, which the packer writes")


def _claims(name: str, cls: type) -> set[str]:
    outputs = cls.outputs
    claims = {f"member {m.ext}" for m in outputs.members}
    claims |= {f"column {c.name}" for c in outputs.columns}
    claims |= {f"column {m.size_column}" for m in outputs.members if m.size_column}
    if outputs.public:
        claims.add(f"KEY.json key {outputs.json_key(name)}")
    return claims


def declared() -> list[tuple[str, Outputs]]:
    """(stage name, its declarations) for every registered stage, in the registry's order."""
    return [(name, cls.outputs) for name, cls in STAGES.items()]


def modalities() -> dict[str, tuple[str, Member]]:
    """{modality: (stage, tar member)}, e.g. "depth": ("depth", Member("depth.png", ...))."""
    return {m.modality or name: (name, m) for name, outputs in declared() for m in outputs.members}


def load_plugins() -> list[str]:
    """Import every module of the `vidal.stages` entry point group; returns their names.
    A plugin that fails to import is logged and left out, not fatal to every command."""
    loaded = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:
            log.warning("stage plugin %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        loaded.append(ep.name)
    return loaded
