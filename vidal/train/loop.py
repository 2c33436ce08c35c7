"""The training loop: one CPU, one GPU, or many processes under torchrun (DDP).

AdamW (0.9, 0.98, eps 1e-6), weight decay 0.2 (not on biases, norms, embeddings or the
temperature), cosine schedule with linear warmup, a global batch reached with gradient
accumulation on however many processes there are, the temperature clamped to [0, ln 100] after
every optimizer step (open_clip / LanguageBind), bf16 autocast on GPU, checkpoints
that resume exactly (model, optimizer, scheduler, data position, RNG), JSONL (and TensorBoard
when installed) logs, a progress bar on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vidal.train.config import TrainConfig
from vidal.train.data import count_samples, make_loader
from vidal.train.encoders import ModalityEncoder, TextTower
from vidal.train.loss import ContrastiveLoss

log = logging.getLogger(__name__)


class Model(nn.Module):
    """What trains: the modality encoder and the temperature (the text tower stays frozen)."""

    def __init__(self, cfg: TrainConfig, text_dim: int, clip_source: str | None = None):
        super().__init__()
        self.encoder = ModalityEncoder(
            cfg.data.modality, cfg.encoder, text_dim, cfg.data, clip_source
        )
        self.loss = ContrastiveLoss()
        if self.encoder.start_logit_scale is not None:  # a LanguageBind checkpoint's
            self.loss.logit_scale.data.fill_(self.encoder.start_logit_scale)

    def forward(self, inputs: torch.Tensor, text: torch.Tensor, cached=None, index: int = 0):
        """Loss of this batch; with gradient accumulation, `text` is every micro-batch's and
        `cached` every micro-batch's features (no grad), this one's recomputed at `index`."""
        features = self.encoder(inputs)
        if cached is not None:
            features = torch.cat([*cached[:index], features, *cached[index + 1 :]])
        return self.loss(features, text)


def setup_distributed() -> tuple[int, int, torch.device]:
    if "RANK" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        flat = param.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if flat else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def cosine_schedule(optimizer, cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def accumulation(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per optimizer step: the global batch over (micro-batch x processes),
    so that the recipe's batch (LanguageBind: 640 or 1024 clips) holds on any number of GPUs."""
    if cfg.global_batch_size <= 0:
        return cfg.grad_accum
    per_step = cfg.data.batch_size * world
    if cfg.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size {cfg.global_batch_size} is not a multiple of "
            f"train.data.batch_size {cfg.data.batch_size} x {world} processes"
        )
    return cfg.global_batch_size // per_step


def steps_for_epochs(cfg: TrainConfig, urls: list[str], accum: int, world: int) -> int:
    """Optimizer steps of `cfg.epochs` passes over the shards (their .stats.json counts)."""
    batch = cfg.data.batch_size * accum * world
    return max(1, math.ceil(cfg.epochs * count_samples(urls) / batch))


# may differ between a run and its resumption: how long, how often to log and save
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "out", "shards", "text_cache_mb"}


def _check_same_run(saved: dict, current: dict, path: Path) -> None:
    changed = sorted(
        k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if changed:
        raise ValueError(
            f"{path} was written by a run with different settings ({', '.join(changed)}): "
            "resume with the same config, or train into a new --out"
        )


def atomic_save(obj, path: Path) -> None:
    """Temp file, fsync, rename: a reader (or a resume after a crash) sees the old checkpoint
    or the new one, never half of one, and a failed save leaves no temp file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.rank, self.world, self.device = setup_distributed()
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.text = TextTower(cfg.text_model, cache_mb=cfg.text_cache_mb).to(self.device)
        clip_source = self.text.ref if self.text.is_clip else None
        self.model = Model(cfg, self.text.dim, clip_source).to(self.device)
        self.wrapped = self._wrap(self.model)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay),
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
        )
        # one process may train on a worker's partial last batch (small datasets lose nothing);
        # several must not: their gathered batches have to be the same size
        self.loader, self.shards = make_loader(cfg.shards, cfg.data, True, drop_last=self.world > 1)
        self.grad_accum = accumulation(cfg, self.world)
        if cfg.epochs > 0:
            cfg.steps = steps_for_epochs(cfg, self.shards.urls, self.grad_accum, self.world)
        self.scheduler = cosine_schedule(self.optimizer, cfg)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.out = Path(cfg.out)
        self.autocast = cfg.precision == "bf16" or (
            cfg.precision == "auto" and self.device.type == "cuda"
        )
        self.resumed_from = self._resume()

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def checkpoint(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": rng_state(),
            "world": self.world,
        }

    def save(self, name: str = "last.pt") -> None:
        positions = self._positions()  # a collective: every rank calls save
        if self.rank == 0:
            state = {**self.checkpoint(), "positions": positions}
            atomic_save(state, self.out / "checkpoints" / name)

    def _positions(self) -> list[list[int]]:
        """Every rank's (epoch, batch in epoch): ranks read different shards, so one may be
        into its next epoch while another is not."""
        mine = [self.epoch, self.batch_in_epoch]
        if self.world == 1:
            return [mine]
        every = [None] * self.world
        dist.all_gather_object(every, mine)
        return every

    def _resume(self) -> int | None:
        path = self.out / "checkpoints" / "last.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.device, weights_only=False)
        _check_same_run(state["config"], asdict(self.cfg), path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        positions = state.get("positions", [])
        if len(positions) == self.world:  # this rank's own place in its own shards
            self.epoch, self.batch_in_epoch = positions[self.rank]
        self._rng = state["rng"]
        return self.step

    def batches(self):
        """Batches forever, epoch after epoch; after a resume, fast-forwards to the exact
        batch where the checkpoint stopped (the data order is a function of seed and epoch)."""
        skip = self.batch_in_epoch
        if getattr(self, "_rng", None):
            set_rng_state(self._rng)
        while True:
            self.shards.epoch = self.epoch
            produced = 0
            for index, batch in enumerate(self.loader):
                if len(batch["key"]) < 2:  # a contrastive loss needs a negative
                    continue
                produced += 1
                if index < skip:
                    continue
                self.batch_in_epoch = index + 1
                yield batch
            if produced == 0:
                raise RuntimeError(
                    f"a whole pass over {len(self.shards.urls)} shards gave no batch of "
                    f"{self.cfg.data.batch_size} {self.cfg.data.modality} samples: the shards "
                    "lack that modality, every sample failed to decode (see the warnings), or "
                    "the batch size is larger than a worker's share of the data"
                )
            self.epoch, self.batch_in_epoch, skip = self.epoch + 1, 0, 0

    def train_step(self, micro_batches: list[dict]) -> tuple[float, int]:
        """One optimizer step. Micro-batches are contrasted as one batch (open_clip's
        accum_freq): their features are computed without grad first, then each micro-batch is
        re-encoded with grad against the others' cached features, so the gradients are those
        of the whole batch."""
        self.optimizer.zero_grad(set_to_none=True)
        inputs = [b["input"].to(self.device, non_blocking=True) for b in micro_batches]
        text = torch.cat([self.text(list(b["text"])) for b in micro_batches])
        cached = self._features(inputs) if len(inputs) > 1 else None
        for i, x in enumerate(inputs):
            sync = i == len(inputs) - 1 or self.world == 1
            context = self.wrapped.no_sync() if not sync else _nullcontext()
            with context, self._autocast():
                loss, negatives = self.wrapped(x, text, cached, i)
                loss.backward()
        if cached is not None:  # each pass added the temperature's whole gradient
            self.model.loss.logit_scale.grad /= len(inputs)
        self.optimizer.step()
        with torch.no_grad():  # after the step, so a scale past 100 still gets a gradient back
            self.model.loss.logit_scale.clamp_(0, math.log(100))
        self.scheduler.step()
        self.step += 1
        return loss.item(), negatives

    @torch.no_grad()
    def _features(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        with self._autocast():
            return [self.model.encoder(x) for x in inputs]

    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast)

    def train(self) -> dict:
        logger = MetricsLog(self.out, self.rank)
        batches = self.batches()
        progress = _progress(self.rank, self.cfg.steps, self.step)
        losses, window = [], _Window()
        while self.step < self.cfg.steps:
            waited = time.perf_counter()
            micro = [next(batches) for _ in range(self.grad_accum)]
            window.wait += time.perf_counter() - waited
            started = time.perf_counter()
            loss, negatives = self.train_step(micro)
            window.add(
                time.perf_counter() - started, sum(len(b["key"]) for b in micro) * self.world
            )
            losses.append(loss)
            progress(self.step, loss)
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                logger.write(self._metrics(loss, negatives, window))
                window = _Window()
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save()
        logger.close()
        progress(None, None)
        return {
            "steps": self.step,
            "losses": losses,
            "resumed_from": self.resumed_from,
            "world": self.world,
            "negatives": self.cfg.data.batch_size * self.grad_accum * self.world,
        }

    def _metrics(self, loss: float, negatives: int, window: _Window) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": round(loss, 5),
            "temperature": round(self.model.loss.temperature, 5),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": round(window.rate, 2),
            "data_wait_share": round(window.wait_share, 4),
            "negatives": negatives,
        }


class _Window:
    """Throughput and data-wait share over the steps since the last log line."""

    def __init__(self):
        self.wait, self.compute, self.samples = 0.0, 0.0, 0

    def add(self, seconds: float, samples: int) -> None:
        self.compute += seconds
        self.samples += samples

    @property
    def rate(self) -> float:
        return self.samples / max(1e-9, self.wait + self.compute)

    @property
    def wait_share(self) -> float:
        return self.wait / max(1e-9, self.wait + self.compute)


class MetricsLog:
    """JSONL always; TensorBoard too when it is installed. Rank 0 only."""

    def __init__(self, out: Path, rank: int):
        self.enabled = rank == 0
        self.file, self.tb = None, None
        if not self.enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, metrics: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(metrics) + "\n")
        self.file.flush()
        if self.tb:
            for key, value in metrics.items():
                if key != "step":
                    self.tb.add_scalar(key, value, metrics["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _progress(rank: int, total: int, start: int):
    if rank != 0 or not os.isatty(2):
        return lambda step, loss: None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("train", total=total, completed=start)
    bar.start()

    def update(step, loss):
        if step is None:
            bar.stop()
            return
        bar.update(task, completed=step, description=f"train loss {loss:.3f}")

    return update


def train(cfg: TrainConfig) -> dict:
    trainer = Trainer(cfg)
    try:
        return trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
