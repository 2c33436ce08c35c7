"""The train / eval / export jobs behind the CLI: run the library, print what happened."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vidal.train.config import TrainConfig


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run_train(cfg: TrainConfig, held_out: str | None = None) -> dict:
    """Train; then, on rank 0 and when held-out shards are given, zero-shot retrieval."""
    _quiet_transformers()
    from vidal.train.loop import train

    summary = train(cfg)
    losses = summary.pop("losses")
    window = max(1, min(10, len(losses) // 4))
    summary["loss_first"] = round(sum(losses[:window]) / window, 4) if losses else None
    summary["loss_last"] = round(sum(losses[-window:]) / window, 4) if losses else None
    rank = int(os.environ.get("RANK", 0))
    if held_out and rank == 0:
        summary["held_out"] = run_eval(Path(cfg.out) / "checkpoints" / "last.pt", held_out)
    if rank == 0:
        (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_eval(
    checkpoint: str | Path, shards: str | None = None, classify_folder: str | None = None
) -> dict:
    _quiet_transformers()
    from vidal.train.evaluate import classify, embed_shards, load_trained, retrieval_metrics

    encoder, text, data_cfg = load_trained(checkpoint)
    result = {}
    if shards:
        modality, texts, owner, _ = embed_shards(encoder, text, shards, data_cfg)
        result["retrieval"] = retrieval_metrics(modality, texts, owner)
        result["retrieval"]["text_view"] = data_cfg.eval_text_view
    if classify_folder:
        result["classification"] = classify(encoder, text, classify_folder, data_cfg)
    return result


def print_summary(summary: dict) -> None:
    from rich.console import Console

    console = Console()
    console.print_json(json.dumps(summary))
    retrieval = summary.get("held_out", summary).get("retrieval")
    if retrieval:
        r1 = retrieval["text_to_modality"]["R@1"]
        console.print(
            f"held-out text->modality R@1 {r1:.3f} over {retrieval['samples']} samples "
            f"(chance {retrieval['chance_r1']:.3f})"
        )
