"""Planning: the source's samples grouped into shards in bounded memory (spilled to local disk
past `flush_every` records)."""

from __future__ import annotations

import collections
import os
import tempfile

from vidal.io.sources import shard_of


def group_by_shard(samples, num_shards: int, flush_every: int = 100_000):
    """(shard, {key: record}) for every shard in order, holding at most `flush_every`
    records in memory: the rest wait in per-shard spill files on local disk."""
    with tempfile.TemporaryDirectory(prefix="vidal-plan-") as spill:
        buffers: dict[int, list[str]] = collections.defaultdict(list)
        held = 0
        for sample in samples:
            sample.shard = shard_of(sample.key, num_shards)
            buffers[sample.shard].append(f"{sample.key}\t{sample.to_json()}\n")
            held += 1
            if held >= flush_every:
                _spill(spill, buffers)
                held = 0
        _spill(spill, buffers)
        for shard in range(num_shards):
            path = os.path.join(spill, f"{shard}.tsv")
            if not os.path.exists(path):
                yield shard, {}
                continue
            with open(path, encoding="utf-8") as f:
                yield shard, dict(line.rstrip("\n").split("\t", 1) for line in f)


def _spill(folder: str, buffers: dict[int, list[str]]) -> None:
    for shard, lines in buffers.items():
        with open(os.path.join(folder, f"{shard}.tsv"), "a", encoding="utf-8") as f:
            f.writelines(lines)
    buffers.clear()
