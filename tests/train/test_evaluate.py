"""Zero-shot evaluation: retrieval metrics on hand-made embeddings, retrieval over shards,
classification of a folder of labelled clips with prompt templates."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from vidal.train import evaluate
from vidal.train.evaluate import (
    classify,
    embed_shards,
    labelled_files,
    load_templates,
    load_trained,
    retrieval_metrics,
)


def test_perfect_embeddings_rank_every_pair_first():
    features = F.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    metrics = retrieval_metrics(features, features)
    assert metrics["samples"] == 12 and metrics["chance_r1"] == round(1 / 12, 4)
    for direction in ("text_to_modality", "modality_to_text"):
        assert metrics[direction] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.0}


def test_known_ranks():
    """Similarity text i . modality j = j (modality = identity, text rows = 0..9): text i's
    own modality ranks 10 - i; each modality sees all texts alike."""
    n = 10
    modality = torch.eye(n)
    text = torch.arange(n, dtype=torch.float32).expand(n, n).clone()
    metrics = retrieval_metrics(modality, text)
    assert metrics["text_to_modality"] == {
        "R@1": 0.1,
        "R@5": 0.5,
        "R@10": 1.0,
        "median_rank": 5.5,  # ranks 10, 9, ..., 1
    }
    # text i = 0.5 modality i + modality 4-i: the middle pair ranks 1st, every other 2nd
    text = 0.5 * torch.eye(5) + torch.eye(5).flip(0)
    metrics = retrieval_metrics(torch.eye(5), text)
    assert metrics["text_to_modality"] == {"R@1": 0.2, "R@5": 1.0, "R@10": 1.0, "median_rank": 2.0}


def test_collapsed_embeddings_score_no_better_than_chance():
    """A dead encoder (every output the same, or zero) ties every candidate: that must not
    read as perfect retrieval."""
    for same in (torch.zeros(8, 4), F.normalize(torch.ones(8, 4), dim=-1)):
        text = F.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
        metrics = retrieval_metrics(same, text)
        for direction in ("text_to_modality", "modality_to_text"):
            assert metrics[direction]["R@1"] <= metrics["chance_r1"], (direction, metrics)


def test_several_captions_per_sample_rank_by_owner():
    """Sample 0 has two captions, sample 1 one: text->modality ranks each caption; a sample
    counts its best-placed caption for modality->text."""
    modality = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 0.2, 0.9], [0, 1.0, 0], [0, 0, 1.0]])
    owner = torch.tensor([0, 0, 1, 2])  # caption 1 of sample 0 looks like sample 2
    metrics = retrieval_metrics(modality, text, owner)
    assert metrics["samples"] == 3 and metrics["texts"] == 4 and metrics["chance_r1"] == 0.3333
    assert metrics["text_to_modality"]["R@1"] == 0.75  # caption 1 ranks sample 0 third
    assert metrics["modality_to_text"]["R@1"] == 1.0  # each sample's best caption is first
    assert retrieval_metrics(modality, modality) == retrieval_metrics(
        modality, modality, torch.arange(3)
    )


def test_templates_are_languagebinds():
    depth, infrared, audio = (load_templates(m) for m in ("depth", "infrared", "audio"))
    assert len(depth) == 80 and len(set(depth)) == 80 and "a bad depth photo of a {}." in depth
    assert len(infrared) == 80 and len(set(infrared)) == 80 and "itap of a {}." in infrared
    assert audio == ["a sound of {}."]
    assert all(t.count("{}") == 1 for t in depth + infrared + audio + load_templates("video"))


def test_held_out_embeddings_are_deterministic_and_in_shard_order(learned, built):
    encoder, text, data_cfg = load_trained(learned["out"] / "checkpoints" / "last.pt")
    first, texts, owner, keys = embed_shards(encoder, text, built.held_out, data_cfg)
    again, _, _, keys_again = embed_shards(encoder, text, built.held_out, data_cfg)
    assert first.shape == (24, 384) and texts.shape == (24, 384)
    assert torch.equal(owner, torch.arange(24))  # one caption per clip here
    assert keys == keys_again and torch.equal(first, again)  # centre crops, no dropout
    assert (first @ first.T).std() > 0.05  # embeddings differ between clips: no collapse
    titles = [built.combos[int(key.split("-")[0][4:])]["title"] for key in keys]
    assert torch.allclose(texts, text(titles))  # each clip's own caption, in the same order
    assert data_cfg.image_size == 32 and data_cfg.modality == "video"


def test_labelled_files(tmp_path):
    (tmp_path / "red_circle").mkdir()
    (tmp_path / "red_circle" / "a.mp4").write_bytes(b"")
    (tmp_path / "red_circle" / "notes.txt").write_bytes(b"")
    (tmp_path / "blue").mkdir()
    (tmp_path / "blue" / "b.MOV").write_bytes(b"")
    (tmp_path / "stray.mp4").write_bytes(b"")
    items = labelled_files(tmp_path, "video")
    assert [(p.name, label) for p, label in items] == [("b.MOV", "blue"), ("a.mp4", "red circle")]
    with pytest.raises(FileNotFoundError, match="no depth files"):
        labelled_files(tmp_path, "depth")


def test_zero_shot_classification_of_a_labelled_folder(learned, built, tmp_path, capsys):
    """The 24 held-out clips (never trained on), in folders named by their colour: the label
    prompts ("a video of a red.", ...) are not captions the model saw, so this asks less than
    retrieval does; the numbers must agree with a computation by hand."""
    folder = tmp_path / "classes"
    for i, combo in enumerate(built.combos[96:], start=96):
        label = folder / combo["colour"]
        label.mkdir(parents=True, exist_ok=True)
        shutil.copy(built.root / "heldout" / f"clip{i:03d}.mp4", label / f"clip{i:03d}.mp4")
    encoder, text, data_cfg = load_trained(learned["out"] / "checkpoints" / "last.pt")
    result = classify(encoder, text, folder, data_cfg)
    with capsys.disabled():
        print(f"\nzero-shot colour classification of held-out clips: {result}")
    assert result["samples"] == 24 and result["classes"] == 8 and result["chance_top1"] == 0.125

    labels = sorted(p.name for p in folder.iterdir())
    prompts = torch.stack(
        [text([t.format(label) for t in load_templates("video")]).mean(0) for label in labels]
    )
    prompts = F.normalize(prompts, dim=-1)
    hits1 = hits5 = 0
    with torch.no_grad():
        for path, label in labelled_files(folder, "video"):
            feature = encoder(evaluate.file_tensor(path, data_cfg).unsqueeze(0))
            order = (feature @ prompts.T).squeeze(0).argsort(descending=True).tolist()
            hits1 += order[0] == labels.index(label)
            hits5 += labels.index(label) in order[:5]
    assert result["top1"] == round(hits1 / 24, 4) and result["top5"] == round(hits5 / 24, 4)
    assert result["top5"] >= result["top1"]
    assert result["top1"] >= 2 * result["chance_top1"], result
