"""`vidal train` and `vidal eval` end to end, small."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from vidal.cli import main

SMALL = [
    "train.data.workers=0",
    "train.data.batch_size=8",
    "train.data.image_size=16",
    "train.encoder.image_size=16",
    "train.encoder.hidden_size=32",
    "train.encoder.layers=1",
    "train.encoder.heads=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
]
HELD_OUT_LINE = re.compile(
    r"held-out text->modality R@1 (\d\.\d+) over 24 samples \(chance 0\.042\)"
)


def test_train_then_eval(built, tmp_path, capsys, shared_text):
    out = tmp_path / "run"
    argv = ["train", "--pipeline", "demo", "--data", built.train, "--modality", "video"]
    argv += ["--out", str(out), "--steps", "2", "--held-out", built.held_out, *SMALL]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert HELD_OUT_LINE.search(printed), printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["held_out"]["retrieval"]["samples"] == 24
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").open()] == [1, 2]
    checkpoint = out / "checkpoints" / "last.pt"

    folder = tmp_path / "classes"
    for label, index in (("first", 96), ("second", 97)):
        (folder / label).mkdir(parents=True)
        shutil.copy(built.root / "heldout" / f"clip{index:03d}.mp4", folder / label)
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", built.held_out]
    assert main([*argv, "--classify", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert HELD_OUT_LINE.search(printed), printed
    metrics = json.loads(printed[: printed.rindex("}") + 1])
    assert metrics["retrieval"] == summary["held_out"]["retrieval"]  # the same checkpoint
    assert metrics["classification"]["samples"] == 2
    assert metrics["classification"]["classes"] == 2


def test_train_settings_come_from_the_pipeline_and_overrides(built, tmp_path, shared_text):
    out = tmp_path / "run"
    argv = ["train", "--pipeline", "demo", "--data", built.train, "--out", str(out)]
    assert main([*argv, "--steps", "1", *SMALL, "train.lr=0.002", "train.grad_accum=2"]) == 0
    import torch

    config = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["config"]
    assert config["lr"] == 0.002 and config["grad_accum"] == 2 and config["steps"] == 1
    assert config["warmup_steps"] == 8  # from pipelines/demo.yaml
    assert config["data"]["modality"] == "video" and config["text_model"] == "minilm"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--pipeline", "demo"], "no shards to train on"),
        (["train", "--pipeline", "demo", "--data", "/nowhere/x-*.tar"], "no shards match"),
        (["train", "--pipeline", "demo", "--data", "x.tar", "train.data.nope=1"], "nope"),
        (["eval", "--checkpoint", "/nowhere/last.pt"], "last.pt"),
    ],
)
def test_bad_train_and_eval_command_lines_exit_2(argv, message, capsys, shared_text):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_modality_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--modality", "smell"])
    assert exited.value.code == 2
