"""Near-duplicate grouping over the VL filter's stored video embeddings (the `dedup` stage's
decision; see vidal.stages.dedup for how a build applies it).

Which clips take part: every sample of the `vl_filter` rows with stored embeddings, no error,
and not dropped (a clip dropped by the VL threshold is no representative).

How (memory stays bounded, no N x N matrix anywhere):
  1. the rows give each candidate's key, shard, score and embedding file/row (small records;
     the embeddings stay on disk);
  2. the embeddings are streamed file by file (`work/vl_filter/<shard>/emb-*.npz`, float16),
     re-normalised, and added to a faiss inner-product index in blocks of `block` rows;
  3. streamed again, each block queries its k = `neighbours` nearest neighbours: a
     (block x k) result, never (block x N); pairs with cosine >= `threshold` are edges;
  4. union-find over the edges gives the groups; the member with the best `vl_filter.score`
     (ties: the smallest key) is kept.
Index and scaling: `flat` stores vectors as float16 (`SQfp16`, 2 bytes x dim per clip: 10M x
768 ~ 15 GB) and searches exactly, O(N^2 d) time in blocks: right up to a few 100k clips.
`ivf` (`IVF<4 sqrt N>,SQfp16`, trained on the first 64 x nlist clips, `nprobe` lists per query)
holds the same 2 bytes x dim per clip and searches approximately in ~ N x nprobe/nlist time;
past RAM, use `IVF...,PQ64` (64 bytes per clip: 10M ~ 0.7 GB) or an on-disk inverted list
(faiss `OnDiskInvertedLists`), or shard the index by a coarse cluster over Ray workers: the
k-NN edges of each block are independent, and only the union-find needs them all (edges are
a few ints per duplicate, not per clip). The driver also holds one short record per candidate
(key, score, file, row): ~100 B each, ~1 GB at 10M.

The decisions go to `work/dedup/groups.parquet` (one row per member of a group of two or more:
key, shard, group, kept, neighbours) and then `work/dedup/groups.json` (written last, with a
fingerprint of the dedup parameters and of the candidates: keys, scores, embedding places and
the vl_filter config). A rerun with the same fingerprint reuses the file; a changed threshold
(or changed VL results) recomputes it.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

VL = "vl_filter"


# -- the grouping, independent of any store ---------------------------------------------------
@dataclass
class Grouping:
    """Groups of two or more: for each member index, its group, kept index and neighbours."""

    members: np.ndarray  # (m,) candidate indices in groups of >= 2
    group: np.ndarray  # (m,) group number (groups numbered in order of their kept index)
    kept: np.ndarray  # (m,) candidate index of the member kept
    neighbours: np.ndarray  # (m,) neighbours found at or above the threshold
    index: str = "flat"


def _unit(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.ascontiguousarray(block / np.maximum(norms, 1e-12))


def _rebatch(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Blocks of exactly `size` rows (the last one shorter), from blocks of any size."""
    held, count = [], 0
    for block in blocks:
        while len(block):
            take = block[: size - count]
            block = block[len(take) :]
            held.append(take)
            count += len(take)
            if count == size:
                yield np.concatenate(held)
                held, count = [], 0
    if held:
        yield np.concatenate(held)


def _make_index(params, n: int, dim: int):
    import faiss

    kind = params.index
    if kind == "auto":
        kind = "flat" if n <= params.flat_max else "ivf"
    if kind == "flat":
        qt = faiss.ScalarQuantizer.QT_fp16
        return kind, faiss.IndexScalarQuantizer(dim, qt, faiss.METRIC_INNER_PRODUCT), 0
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
    index = faiss.index_factory(dim, f"IVF{nlist},SQfp16", faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(params.nprobe, nlist)
    return kind, index, min(n, 64 * nlist)


def _search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One block's k-NN: (len(queries), k) cosines and ids. The only search call."""
    return index.search(queries, k)


def group_vectors(
    blocks: Callable[[], Iterable[np.ndarray]],
    n: int,
    scores: np.ndarray,
    keys: list[str],
    params,
) -> Grouping:
    """Group n unit vectors streamed twice by `blocks()` (an iterable of (rows, dim) arrays, in
    candidate order); `scores` and `keys` pick each group's kept member."""
    if n == 0:
        empty = np.zeros(0, np.int64)
        return Grouping(empty, empty, empty, empty)
    index, kind, train_rows, buffered, added = None, "flat", 0, [], 0
    for block in _rebatch(blocks(), params.block):
        block = _unit(block)
        if index is None:
            kind, index, train_rows = _make_index(params, n, block.shape[1])
        if not index.is_trained:
            buffered.append(block)
            if sum(len(b) for b in buffered) < train_rows:
                continue
            held = np.concatenate(buffered)
            index.train(held)
            block, buffered = held, []
        index.add(block)
        added += len(block)
    if buffered:  # fewer rows than the training sample asked for
        held = np.concatenate(buffered)
        index.train(held)
        index.add(held)
        added += len(held)
    assert added == n, f"streamed {added} vectors for {n} candidates"

    k = min(params.neighbours + 1, n)  # + 1: a clip finds itself
    parent = np.arange(n, dtype=np.int64)
    found = np.zeros(n, dtype=np.int64)
    start = 0
    for block in _rebatch(blocks(), params.block):
        cos, ids = _search(index, _unit(block), k)
        rows = np.arange(start, start + len(block))[:, None]
        hit = (ids >= 0) & (ids != rows) & (cos >= params.threshold - 1e-6)
        found[start : start + len(block)] = hit.sum(axis=1)
        for a, b in zip(np.broadcast_to(rows, ids.shape)[hit], ids[hit], strict=True):
            _union(parent, int(a), int(b))
        start += len(block)
    roots = np.array([_find(parent, i) for i in range(n)], dtype=np.int64)
    return _choose(roots, found, scores, keys, kind)


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return int(root)


def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def _choose(roots, found, scores, keys, kind) -> Grouping:
    sizes = np.bincount(roots, minlength=len(roots))
    members = np.flatnonzero(sizes[roots] >= 2)
    by_root = collections.defaultdict(list)
    for i in members:
        by_root[int(roots[i])].append(int(i))
    best = {
        root: min(ids, key=lambda i: (-float(scores[i]), keys[i])) for root, ids in by_root.items()
    }
    order = {root: g for g, root in enumerate(sorted(best, key=lambda r: keys[best[r]]))}
    group = np.array([order[int(roots[i])] for i in members], dtype=np.int64)
    kept = np.array([best[int(roots[i])] for i in members], dtype=np.int64)
    return Grouping(members, group, kept, found[members], kind)


# -- the dataset: candidates and the decisions file --------------------------------------------
@dataclass
class Candidate:
    shard: int
    key: str
    score: float
    file: str
    row: int


@dataclass
class Outcome:
    candidates: int = 0
    groups: int = 0
    duplicates: int = 0
    reused: bool = False
    index: str = ""
    fingerprint: str = ""


def candidates(samples, name: str) -> list[Candidate]:
    """The clips that take part, sorted so each embedding file is read once per pass."""
    found = []
    for sample in samples:
        result = sample.fields.get(VL) or {}
        where = result.get("embeddings")
        eligible = sample.dropped is None or sample.dropped_by == name
        if where and "score" in result and not sample.errors and eligible:
            score = float(result["score"])
            found.append(Candidate(sample.shard, sample.key, score, where["file"], where["row"]))
    found.sort(key=lambda c: (c.file, c.row))
    return found


def _fingerprint(config_hash: str, found: list[Candidate]) -> str:
    h = hashlib.sha256(f"{config_hash}\n".encode())
    for c in sorted(found, key=lambda c: c.key):
        h.update(f"{c.key}\t{c.shard}\t{c.score!r}\t{c.file}\t{c.row}\n".encode())
    return h.hexdigest()[:16]


def _stream(store, found: list[Candidate]) -> Iterator[np.ndarray]:
    """The candidates' video embeddings, in candidate order, one embedding file at a time."""
    i = 0
    while i < len(found):
        j = i
        while j < len(found) and found[j].file == found[i].file:
            j += 1
        with np.load(io.BytesIO(store.read_bytes(found[i].file))) as data:
            video = data["video"]
            yield video[[c.row for c in found[i:j]]]
        i = j


def decide(store, params, found: list[Candidate], paths: tuple[str, str]) -> Outcome:
    """Write (or reuse) the decisions file at paths = (table, marker); returns the counts."""
    table_path, marker_path = paths
    fingerprint = _fingerprint(params.config_hash(), found)
    marker = store.read_json(marker_path)
    if marker and marker.get("fingerprint") == fingerprint and store.exists(table_path):
        fields = ("candidates", "groups", "duplicates", "index", "fingerprint")
        return Outcome(**{k: marker[k] for k in fields}, reused=True)
    started = time.time()
    keys = [c.key for c in found]
    scores = np.array([c.score for c in found], dtype=np.float64)
    grouping = group_vectors(lambda: _stream(store, found), len(found), scores, keys, params)
    m = grouping.members
    table = pa.table(
        {
            "key": [keys[i] for i in m],
            "shard": pa.array([found[i].shard for i in m], pa.int32()),
            "group": pa.array(grouping.group, pa.int64()),
            "kept": [keys[i] for i in grouping.kept],
            "neighbours": pa.array(grouping.neighbours, pa.int32()),
        }
    )
    store.remove(marker_path)  # the file and its marker never disagree
    store.write_table(table_path, table)
    groups = len(set(grouping.group.tolist()))
    outcome = Outcome(len(found), groups, len(m) - groups, False, grouping.index, fingerprint)
    store.write_json(
        marker_path,
        {
            "fingerprint": fingerprint,
            "params": params.params(),
            "candidates": outcome.candidates,
            "groups": outcome.groups,
            "duplicates": outcome.duplicates,
            "index": grouping.index,
            "seconds": round(time.time() - started, 3),
            "finished": time.time(),
        },
    )
    return outcome


__all__ = ["Candidate", "Outcome", "candidates", "decide", "group_vectors"]
