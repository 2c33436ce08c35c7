"""vl_filter: CLIP similarity between a clip's keyframes and its text; keep or drop.

Score = cosine of the clip's video embedding (the mean of its unit frame embeddings, made
unit again) with the embedding of its `raw` text (title + cleaned hashtags); the best single
frame's cosine is stored too (`score_max`), and every frame's. Every score is stored, dropped
samples included, so thresholds can be re-tuned later without recomputing: `vidal refilter`
re-decides from the stored scores (a threshold, or the top fraction per search term, which
needs every score and so cannot be decided batch by batch here).

Embeddings: the unit video and text embeddings, float16, are written per (batch, shard) as
`work/vl_filter/<shard>/emb-<digest>.npz` (arrays `keys`, `video`, `text`), and each sample
records its file and row. One file per batch keeps the file count at samples / batch_size
(10M clips at batch 32: ~310k files of ~100 kB, not 10M files of 3 kB), while a sample's
embeddings are still written by the worker that computed them, atomically, with no
read-modify-write of a shared per-shard file across Ray workers. `load_embeddings` reads
them back for any set of samples.

"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vidal.sample import Sample
from vidal.stages.keyframe_model import KeyframeModelStage
from vidal.stages.outputs import Column, Funnel, Histogram, Outputs, Public
from vidal.stages.registry import register
from vidal.text import raw_caption

log = logging.getLogger(__name__)


@dataclass
class Scores:
    """Unit embeddings and cosines of n clips with their texts."""

    video: np.ndarray  # (n, D)
    text: np.ndarray  # (n, D)
    score: np.ndarray  # (n,) cosine of video and text
    frames: list[np.ndarray] = field(default_factory=list)  # per clip, each frame's cosine


def scores_from(frame_emb: np.ndarray, counts: list[int], text_emb: np.ndarray) -> Scores:
    """Video embedding = the unit mean of a clip's unit frame embeddings."""
    parts = np.split(frame_emb, np.cumsum(counts)[:-1])
    video = np.stack([_unit(p.mean(axis=0)) for p in parts])
    per_frame = [p @ t for p, t in zip(parts, text_emb, strict=True)]
    return Scores(video, text_emb, (video * text_emb).sum(axis=1), per_frame)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _score(public: dict) -> str | None:
    score = public.get("score")
    return None if score is None else f"VL {score:.3f}"


@register
@dataclass
class VLFilterStage(KeyframeModelStage):
    name = "vl_filter"
    outputs = Outputs(
        columns=(
            Column(
                "vl_score",
                pa.float64(),
                "score",
                Histogram("VL score (all scored samples)", "cosine", all_rows=True),
            ),
            Column("vl_score_max", pa.float64(), "score_max"),
        ),
        public=Public(private=("file", "embeddings"), summary=_score),
        reads={"keyframes": ("file", "count")},
        funnel=Funnel("VL-filtered", drops=("vl",)),
    )

    model: str = "openai/clip-vit-large-patch14"
    threshold: float | None = None  # keep when score >= threshold; None: score only, keep all
    batch_size: int = 32

    def check(self) -> str | None:
        problem = super().check()
        if not problem and self.threshold is not None and not -1 <= self.threshold <= 1:
            problem = f"vl_filter.threshold is a cosine in [-1, 1] (or null), got {self.threshold}"
        return problem

    def load_model(self):
        from vidal.models.clip import ClipEmbedder

        return ClipEmbedder.load(self.model, self.precision)

    def score(self, clips: list[np.ndarray], texts: list[str]) -> Scores:
        """One forward for all frames, one for all texts."""
        frames = self.net.embed_frames(clips)
        return scores_from(frames, [len(c) for c in clips], self.net.embed_texts(texts))

    def infer(self, items: list[tuple[Sample, np.ndarray]]) -> None:
        texts = [sample_text(s) for s, _ in items]
        scores = self.score([frames for _, frames in items], texts)
        where = self._save_embeddings([s for s, _ in items], scores)
        for i, (sample, _) in enumerate(items):
            frame_scores = [round(float(x), 6) for x in scores.frames[i]]
            self.results[sample.key] = {
                "score": round(float(scores.score[i]), 6),
                "score_max": max(frame_scores),
                "frame_scores": frame_scores,
                "embeddings": where[sample.key],
            }

    def _save_embeddings(self, samples: list[Sample], scores: Scores) -> dict[str, dict]:
        """One .npz per shard among the batch's samples; returns each sample's file and row."""
        by_shard = collections.defaultdict(list)
        for i, sample in enumerate(samples):
            by_shard[sample.shard].append(i)
        where = {}
        for shard, rows in by_shard.items():
            keys = [samples[i].key for i in rows]
            digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
            rel = f"work/{self.name}/{shard:05d}/emb-{self.config_hash()[:6]}-{digest}.npz"
            buf = io.BytesIO()
            np.savez(
                buf,
                keys=np.array(keys),
                video=scores.video[rows].astype(np.float16),
                text=scores.text[rows].astype(np.float16),
            )
            self.store.write_bytes(rel, buf.getvalue())
            where.update({key: {"file": rel, "row": j} for j, key in enumerate(keys)})
        return where

    def process(self, sample: Sample) -> None:
        result = self.results.pop(sample.key)
        sample.fields[self.name] = {
            **result,
            "model": self.net.ref,
            "revision": self.net.revision,
        }
        if self.threshold is not None and result["score"] < self.threshold:
            sample.drop(self.name, f"vl_score<{self.threshold}")


def sample_text(sample: Sample) -> str:
    """The text a clip is scored against: LanguageBind's `raw` view, title + hashtags."""
    return raw_caption(sample.meta.get("title", ""), sample.meta.get("hashtags", []))


def load_embeddings(store, samples: list[Sample]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(keys, video, text) float16 embeddings of the samples that have them, in order."""
    files: dict[str, np.lib.npyio.NpzFile] = {}
    keys, video, text = [], [], []
    for sample in samples:
        where = sample.fields.get(VLFilterStage.name, {}).get("embeddings")
        if not where:
            continue
        if where["file"] not in files:
            files[where["file"]] = np.load(io.BytesIO(store.read_bytes(where["file"])))
        data = files[where["file"]]
        keys.append(sample.key)
        video.append(data["video"][where["row"]])
        text.append(data["text"][where["row"]])
    if not keys:
        return [], np.zeros((0, 0), np.float16), np.zeros((0, 0), np.float16)
    return keys, np.stack(video), np.stack(text)
