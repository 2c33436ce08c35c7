"""Two processes under torchrun on CPU (gloo): negatives gathered from both, disjoint data per
rank, replicas in sync, and a second invocation that resumes where the first stopped, on
every rank.

This file is also the job torchrun runs (`python -m torch.distributed.run ... THIS_FILE
SETTINGS_JSON`): it trains, recording each rank's batches, and writes `rank<r>.json`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def torchrun(settings: dict, timeout: float = 300) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        json.dumps(settings),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


def ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def expected_batches(shards: str, rank: int, batch_size: int, count: int, monkeypatch):
    """The keys rank `rank` of 2 (one DataLoader worker) reads, batch after batch, epoch after
    epoch: the data order is a function of seed, epoch, rank and worker."""
    from tests.train.conftest import small_config
    from vidal.train import data

    monkeypatch.setattr(data, "process_info", lambda: (rank, 2, 0, 1))
    cfg = small_config(shards, "unused", data={"batch_size": batch_size}).data
    loader, shard_list = data.make_loader(shards, cfg, train=True, drop_last=True)
    batches, epoch = [], 0
    while len(batches) < count:
        shard_list.epoch, epoch = epoch, epoch + 1
        batches += [list(batch["key"]) for batch in loader]
    return batches[:count]


def test_two_processes_gather_negatives_split_data_and_resume(built, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = {"shards": built.train, "batch_size": 4, "grad_accum": 2, "out": str(out)}
    torchrun({**settings, "steps": 6})
    first = ranks(out)
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    # every sample is contrasted with 2 processes x 2 micro-batches x 4 samples
    assert [line["negatives"] for line in log] == [16] * 6
    assert abs(log[0]["loss"] - math.log(16)) < 0.35  # a 16-way softmax at the start, not 8
    assert first[0]["world"] == first[1]["world"] == 2
    # the ranks read disjoint samples (within an epoch: each reads its own shards)
    seen = [{(b["epoch"], key) for b in rank["batches"] for key in b["keys"]} for rank in first]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert first[0]["checksum"] == pytest.approx(first[1]["checksum"], rel=1e-9)  # in sync

    torchrun({**settings, "steps": 9})  # a second invocation resumes from step 6
    resumed = ranks(out)
    assert [r["resumed_from"] for r in resumed] == [6, 6]
    lines = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert [line["step"] for line in lines] == list(range(1, 10))  # 1-6, then 7-9
    for rank in range(2):  # each rank carries on from its own place in its own shards
        expected = expected_batches(built.train, rank, 4, 18, monkeypatch)
        assert [b["keys"] for b in first[rank]["batches"]] == expected[:12], f"rank {rank}"
        assert [b["keys"] for b in resumed[rank]["batches"]] == expected[12:], f"rank {rank}"
    epochs = {b["epoch"] for rank in resumed for b in rank["batches"]}
    assert 1 in epochs  # the run crossed an epoch boundary on at least one rank
    assert resumed[0]["checksum"] == pytest.approx(resumed[1]["checksum"], rel=1e-9)


def _job(settings: dict) -> None:
    """One rank of the torchrun job."""
    import torch
    import torch.distributed as dist

    from tests.train.conftest import small_config
    from vidal.train.loop import Trainer

    torch.set_num_threads(1)
    cfg = small_config(
        settings["shards"],
        Path(settings["out"]),
        steps=settings["steps"],
        grad_accum=settings["grad_accum"],
        checkpoint_every=3,
        data={"batch_size": settings["batch_size"], "workers": 1},
    )
    trainer = Trainer(cfg)
    batches, feed = [], trainer.batches

    def recording():
        for batch in feed():
            entry = {"epoch": trainer.epoch, "position": trainer.batch_in_epoch}
            batches.append({**entry, "keys": list(batch["key"])})
            yield batch

    trainer.batches = recording
    summary = trainer.train()
    checksum = sum(p.double().sum().item() for p in trainer.model.parameters())
    record = {
        "world": summary["world"],
        "resumed_from": summary["resumed_from"],
        "batches": batches,
        "checksum": checksum,
    }
    (Path(settings["out"]) / f"rank{trainer.rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    _job(json.loads(sys.argv[1]))
