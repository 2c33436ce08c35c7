"""The end of a build: dataset.json, the summary table, and the verdict (exit code).

A build where nothing was kept, or where one stage failed every sample that reached it with
the same error (a missing binary, a broken model, a full disk), is a failed build and says
so in one sentence; one bad video among good ones is just a row in the table.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from vidal import __version__
from vidal.media.ffmpeg import ffmpeg_version


@dataclass
class StageAudit:
    reached: collections.Counter = field(default_factory=collections.Counter)
    failed: collections.Counter = field(default_factory=collections.Counter)
    reasons: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))

    def add_marker(self, name: str, audit: dict) -> None:
        """One (stage, shard)'s counts, as its marker records them (vidal.run.rows.Accounts)."""
        self.reached[name] += audit.get("reached", 0)
        for reason, n in (audit.get("failed") or {}).items():
            self.failed[name] += n
            self.reasons[name][reason] += n

    def uniform_failure(self, minimum: int = 2) -> str | None:
        """'stage X failed all N samples with: reason' when one stage failed everything alike."""
        for name, reached in self.reached.items():
            reasons = self.reasons.get(name, {})
            if reached >= minimum and self.failed[name] == reached and len(reasons) == 1:
                (reason,) = reasons
                return f"stage {name} failed all {reached} samples with the same error: {reason}"
        return None


def totals(stats: list[dict]) -> dict:
    out = collections.Counter()
    errors, drops = collections.Counter(), collections.Counter()
    for s in stats:
        out.update({k: s[k] for k in ("samples_in", "kept", "dropped", "failed", "sample_bytes")})
        out["tar_bytes"] += s.get("tar_bytes", 0)
        errors.update(s["errors"])
        drops.update(s["drops"])
    return {
        **out,
        "shards": len(stats),
        "errors": dict(errors.most_common()),
        "drops": dict(drops.most_common()),
    }


def verdict(total: dict, audit: StageAudit) -> str | None:
    """None for a good build, else the one sentence that says why it failed."""
    if total.get("samples_in", 0) == 0:
        return "the source holds no videos: nothing to build"
    uniform = audit.uniform_failure()
    if uniform:
        return uniform
    if total.get("kept", 0) == 0:
        top = next(iter(total["errors"].items()), None) or next(iter(total["drops"].items()), None)
        why = f"; most common: {top[0]} ({top[1]} samples)" if top else ""
        return f"no sample was kept out of {total['samples_in']}{why}"
    return None


def dataset_json(config, total: dict, seconds: float, shard_files: list[str]) -> dict:
    return {
        "name": config.name,
        "vidal": __version__,
        "ffmpeg": ffmpeg_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "totals": total,
        "seconds": round(seconds, 2),
        "shard_files": shard_files,
        "stages": {s.name: s.lineage() for s in config.pipeline()},
        "models": {s.name: s.model for s in config.pipeline() if getattr(s, "model", None)},
        "config": config.to_dict(),
    }


def render_summary(total: dict, seconds: float, out: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="vidal build", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, key in (
        ("samples in", "samples_in"),
        ("kept", "kept"),
        ("dropped", "dropped"),
        ("failed", "failed"),
        ("shards", "shards"),
    ):
        table.add_row(label, str(total.get(key, 0)))
    for reason, n in total.get("drops", {}).items():
        table.add_row(f"  dropped: {reason}", str(n))
    for reason, n in total.get("errors", {}).items():
        table.add_row(f"  failed: {reason}", str(n))
    table.add_row("bytes in shards", f"{total.get('tar_bytes', 0):,}")
    table.add_row("seconds", f"{seconds:.1f}")
    console.print(table)
    console.print(f"output: {out}")
