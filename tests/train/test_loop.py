"""The training loop: it really learns, gradient accumulation, exact resume, atomic
checkpoints, the JSONL log, the schedule and the optimizer's parameter groups."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.train.conftest import small_config
from vidal.train import loop
from vidal.train.loop import Trainer, atomic_save, cosine_schedule, param_groups
from vidal.train.run import run_train

LOG_FIELDS = {"step", "epoch", "loss", "temperature", "lr", "samples_per_s", "data_wait_share"}


def log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_it_really_learns(learned, capsys):
    """120 generated clips whose titles say what they show (shape, colour, motion): 96 train a
    2-layer ViT against frozen MiniLM for 60 steps on CPU; the 24 held-out clips are
    combinations never seen in training."""
    summary = learned["summary"]
    retrieval = summary["held_out"]["retrieval"]
    r1, chance = retrieval["text_to_modality"]["R@1"], retrieval["chance_r1"]
    figures = (
        f"learning: held-out text->video R@1 {r1:.3f} (chance {chance:.3f}, "
        f"{r1 / chance:.1f}x), video->text R@1 {retrieval['modality_to_text']['R@1']:.3f}, "
        f"median rank {retrieval['text_to_modality']['median_rank']:.0f}; loss "
        f"{summary['loss_first']:.3f} -> {summary['loss_last']:.3f} in {summary['steps']} steps, "
        f"{learned['seconds']:.0f} s"
    )
    with capsys.disabled():
        print(f"\n{figures}")
    assert retrieval["samples"] == 24 and chance == pytest.approx(1 / 24, abs=1e-4)
    assert r1 >= 5 * chance, figures
    assert summary["loss_last"] < 0.6 * summary["loss_first"], figures
    assert summary["loss_first"] > 2.5  # it starts near log(32): chance, not a lucky init


def test_log_has_loss_temperature_lr_throughput_and_data_wait(learned):
    lines = log_lines(learned["out"])
    assert [line["step"] for line in lines] == [10, 20, 30, 40, 50, 60]
    for line in lines:
        assert line.keys() >= LOG_FIELDS
        assert line["samples_per_s"] > 0 and 0 <= line["data_wait_share"] <= 1
        assert 0.01 <= line["temperature"] <= 0.2 and 2 <= line["negatives"] <= 32
    lrs = [line["lr"] for line in lines]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    summary = json.loads((learned["out"] / "summary.json").read_text())
    assert summary["held_out"]["retrieval"]["samples"] == 24
    assert sorted(p.name for p in (learned["out"] / "checkpoints").iterdir()) == ["last.pt"]


def test_cosine_schedule_with_linear_warmup():
    cfg = small_config("unused", "unused", steps=110, lr=1.0, warmup_steps=10, min_lr=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    schedule = cosine_schedule(optimizer, cfg)
    lrs = []
    for _ in range(115):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # warmup to the peak
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[110:] == pytest.approx([0.1] * 5)  # the floor after the last step
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_adamw_betas_weight_decay_and_no_decay_groups(built, tmp_path, shared_text):
    trainer = Trainer(small_config(built.train, tmp_path))
    (group,) = [g for g in trainer.optimizer.param_groups if g["weight_decay"] > 0]
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert group["weight_decay"] == 0.2 and group["betas"] == (0.9, 0.98)
    assert group["eps"] == 1e-6
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    no_decay = {names[id(p)] for p in param_groups(trainer.model, 0.2)[1]["params"]}
    decay = {names[id(p)] for p in group["params"]}
    assert "loss.logit_scale" in no_decay
    assert "encoder.vision_model.embeddings.class_embedding" in no_decay
    assert "encoder.vision_model.encoder.layers.0.temporal_embedding" in no_decay
    assert any("bias" in n for n in no_decay) and any("layer_norm" in n for n in no_decay)
    assert not any("bias" in n or "norm" in n or "embedding" in n for n in decay)
    assert "encoder.visual_projection.weight" in decay
    frozen = sum(p.numel() for p in trainer.text.parameters())
    optimised = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert optimised == sum(p.numel() for p in trainable) and frozen > 2e7
    assert "encoder.vision_model.embeddings.patch_embedding.weight" not in no_decay | decay


def test_temperature_is_clamped_after_the_optimizer_step(built, tmp_path, shared_text):
    """A scale past 100 still gets its gradient (no clamp in the forward), and the step
    leaves the parameter within [0, ln 100] (open_clip / LanguageBind)."""
    trainer = Trainer(small_config(built.train, tmp_path))
    scale = trainer.model.loss.logit_scale
    with torch.no_grad():
        scale.fill_(math.log(200.0))
    trainer.train_step([next(iter(trainer.loader))])
    assert scale.grad.item() != 0.0
    assert scale.item() == pytest.approx(math.log(100.0))


@pytest.mark.parametrize(
    ("global_batch", "micro", "world", "accum"),
    [(640, 16, 8, 5), (640, 16, 1, 40), (1024, 64, 8, 2), (0, 16, 4, 3)],
)
def test_the_global_batch_is_reached_by_accumulation(global_batch, micro, world, accum):
    cfg = small_config(
        "x", "x", global_batch_size=global_batch, grad_accum=3, data={"batch_size": micro}
    )
    assert loop.accumulation(cfg, world) == accum  # 0: grad_accum as configured


def test_a_global_batch_that_does_not_divide_is_refused():
    cfg = small_config("x", "x", global_batch_size=1024, data={"batch_size": 64})
    with pytest.raises(ValueError, match="not a multiple"):
        loop.accumulation(cfg, 3)


def test_global_batch_and_epochs_set_accumulation_and_steps(built, tmp_path, shared_text):
    """96 clips in the shards (their .stats.json), 2 epochs of a global batch of 16 reached
    with micro-batches of 8: 2 micro-batches per step, 12 steps."""
    from vidal.train.data import count_samples, expand_urls

    assert count_samples(expand_urls(built.train)) == 96
    cfg = small_config(built.train, tmp_path, global_batch_size=16, epochs=2.0)
    trainer = Trainer(cfg)
    assert trainer.grad_accum == 2 and cfg.steps == 12
    with pytest.raises(ValueError, match="Set train.steps"):
        count_samples([str(tmp_path / "missing-00000.tar")])


def split(batch: dict, parts: int) -> list[dict]:
    size = len(batch["key"]) // parts
    return [
        {key: value[i * size : (i + 1) * size] for key, value in batch.items()}
        for i in range(parts)
    ]


def test_grad_accumulation_matches_one_big_batch(built, tmp_path, shared_text):
    """2 micro-batches of B/2 update the model as one batch of B: every sample is contrasted
    with all B (LanguageBind / open_clip's accum_freq), not only with its own half."""
    settings = {"encoder": {"patch_dropout": 0.0}, "data": {"batch_size": 8}}
    whole = Trainer(small_config(built.train, tmp_path / "a", **settings))
    batch = next(iter(whole.loader))
    accumulated = Trainer(small_config(built.train, tmp_path / "b", grad_accum=2, **settings))
    loss_whole, negatives_whole = whole.train_step([batch])
    loss_acc, negatives_acc = accumulated.train_step(split(batch, 2))
    assert negatives_whole == negatives_acc == 8
    assert loss_acc == pytest.approx(loss_whole, rel=1e-5)
    second = dict(accumulated.model.named_parameters())
    for name, p in whole.model.named_parameters():
        if not p.requires_grad:
            continue
        q = second[name]
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), name
        # the AdamW steps agree too, wherever the gradient is not float noise (a key bias
        # shifts all of a query's logits alike: its gradient is 0 + noise, which Adam's first
        # step scales up to +-lr whatever its sign)
        real = p.grad.abs() > 1e-6
        assert torch.allclose(p[real], q[real], atol=1e-6), name


class Crash(Exception):
    pass


def test_resume_is_exact(built, tmp_path, shared_text, monkeypatch):
    """18 steps straight vs. killed right after the step-14 checkpoint (mid-epoch 1) and run
    again: the same weights and the same log lines after the resume. Two DataLoader workers,
    video patch dropout on (the RNG state is part of the checkpoint)."""
    settings = {"steps": 18, "checkpoint_every": 7, "data": {"workers": 2, "batch_size": 8}}
    straight = run_train(small_config(built.train, tmp_path / "straight", **settings))
    assert straight["resumed_from"] is None

    save = Trainer.save

    def save_then_crash(self, name="last.pt"):
        save(self, name)
        if self.step == 14:
            raise Crash

    cfg = small_config(built.train, tmp_path / "resumed", **settings)
    monkeypatch.setattr(Trainer, "save", save_then_crash)
    with pytest.raises(Crash):
        run_train(cfg)
    monkeypatch.setattr(Trainer, "save", save)
    resumed = run_train(cfg)
    assert resumed["resumed_from"] == 14 and resumed["steps"] == 18

    final = [
        torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)
        for d in ("straight", "resumed")
    ]
    assert final[0]["step"] == final[1]["step"] == 18 and final[0]["epoch"] >= 1
    assert final[0]["epoch"] == final[1]["epoch"]
    assert final[0]["batch_in_epoch"] == final[1]["batch_in_epoch"]
    for name, tensor in final[0]["model"].items():
        assert torch.allclose(tensor, final[1]["model"][name], atol=1e-6), name

    lines = {d: log_lines(tmp_path / d) for d in ("straight", "resumed")}
    assert [line["step"] for line in lines["resumed"]] == list(range(1, 19))  # 1-14, then 15-18
    for ours, theirs in zip(lines["straight"], lines["resumed"], strict=True):
        assert_same_line(ours, theirs)


def assert_same_line(ours: dict, theirs: dict) -> None:
    """Equal but for timing (throughput, data wait) and float noise in the last digit."""
    assert ours["step"] == theirs["step"] and ours["epoch"] == theirs["epoch"]
    assert ours["lr"] == theirs["lr"] and ours["negatives"] == theirs["negatives"]
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=2e-5), ours["step"]
    assert ours["temperature"] == pytest.approx(theirs["temperature"], abs=2e-5)


def test_resume_refuses_a_checkpoint_of_different_settings(built, tmp_path, shared_text):
    cfg = small_config(built.train, tmp_path, steps=1, checkpoint_every=1)
    run_train(cfg)
    cfg.steps, cfg.log_every = 2, 5  # may change between a run and its resumption
    assert run_train(cfg)["resumed_from"] == 1
    cfg.lr = 0.5
    with pytest.raises(ValueError, match=r"different settings \(lr\)"):
        run_train(cfg)


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"step": 1}, path)
    assert torch.load(path)["step"] == 1

    def broken_save(obj, f, *args, **kwargs):
        if hasattr(f, "write"):
            f.write(b"half a checkpoint")
        else:
            Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1  # the last good checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # and no temp file is left


def test_progress_bar_only_on_rank_zero(monkeypatch):
    monkeypatch.setattr(loop.os, "isatty", lambda fd: True)
    other = loop._progress(1, 10, 0)
    assert other(1, 0.5) is None and other.__name__ == "<lambda>"
    main = loop._progress(0, 10, 0)
    assert main.__name__ == "update"
    main(1, 0.5)
    main(None, None)


def test_samples_per_second_and_data_wait_share():
    window = loop._Window()
    window.wait = 1.0
    window.add(3.0, 40)
    assert window.rate == 10.0 and window.wait_share == 0.25
    assert math.isfinite(loop._Window().rate) and loop._Window().wait_share == 0.0
