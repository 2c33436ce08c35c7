"""Streaming the shards into training batches, with no vidal code needed to read them.

Shards are listed from URLs (local or fsspec, brace patterns), shuffled per epoch
deterministically (seed + epoch), split across processes and DataLoader workers (or resampled
with replacement, for multi-node runs where shards do not divide evenly), read with
webdataset, shuffled in a buffer, and preprocessed per modality. A sample that cannot be
decoded is skipped with a rate-limited warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.gopen import gopen_schemes

from vidal.io.keys import check_key
from vidal.train import preprocess
from vidal.train.config import DataConfig

log = logging.getLogger(__name__)

# the modalities this trainer has a front end for (vidal.train.preprocess); which tar member
# holds each comes from the stages' declarations (vidal.stages.registry.modalities)
TRAINABLE = ("video", "depth", "infrared", "audio")


def member_of(modality: str) -> str:
    """The tar member extension of a trainable modality, as the stage that makes it declares."""
    from vidal.stages.registry import modalities

    declared = modalities()
    if modality not in TRAINABLE or modality not in declared:
        known = ", ".join(m for m in TRAINABLE if m in declared)
        raise ValueError(f"modality must be one of {known}, not {modality!r}")
    return declared[modality][1].ext


def _fsspec_open(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    import fsspec

    return fsspec.open(url, mode).open()


# webdataset opens local paths, file://, pipe:, http(s) and gs:// itself and refuses any other
# scheme; s3://, az://, memory:// ... go through fsspec
gopen_schemes["__default__"] = _fsspec_open


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace patterns and '::'-separated lists, like webdataset; local globs too."""
    if isinstance(urls, list):
        return [u for pattern in urls for u in expand_urls(pattern)]
    found: list[str] = []
    for url in wds.shardlists.expand_urls(urls):
        if any(ch in url for ch in "*?[") and "://" not in url:
            import glob

            found.extend(sorted(glob.glob(url)))
        else:
            found.append(url)
    if not found:
        raise FileNotFoundError(f"no shards match {urls!r}")
    return found


def count_samples(urls: list[str]) -> int:
    """Samples in the shards, from the `.stats.json` vidal writes beside each tar."""
    import fsspec

    total = 0
    for url in urls:
        stats = url[: -len(".tar")] + ".stats.json" if url.endswith(".tar") else url
        try:
            with fsspec.open(stats, "rb") as f:
                total += int(json.load(f)["kept"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(
                f"train.epochs needs each shard's sample count; {stats}: {exc}. "
                "Set train.steps instead"
            ) from exc
    return total


def process_info() -> tuple[int, int, int, int]:
    """(rank, world size, worker id, workers)."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    worker = get_worker_info()
    return rank, world, (worker.id if worker else 0), (worker.num_workers if worker else 1)


class ShardList(IterableDataset):
    """This process and worker's shards for the current epoch."""

    def __init__(self, urls: list[str], seed: int, shuffle: bool, resampled: bool):
        self.urls, self.seed, self.shuffle, self.resampled = urls, seed, shuffle, resampled
        self.epoch = 0

    def __iter__(self):
        rank, world, worker, workers = process_info()
        if self.resampled:
            rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
            while True:
                yield {"url": rng.choice(self.urls)}
        urls = list(self.urls)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(urls)
        for url in urls[rank * workers + worker :: world * workers]:
            yield {"url": url}


class EpochShuffle:
    """A shuffle buffer reseeded per (epoch, process, worker): a different order every epoch,
    the same order on a rerun (which exact resume relies on)."""

    def __init__(self, bufsize: int, shards: ShardList, seed: int):
        self.bufsize, self.shards, self.seed = bufsize, shards, seed

    def __call__(self, src):
        rank, _, worker, _ = process_info()
        rng = random.Random(f"{self.seed}/{self.shards.epoch}/{rank}/{worker}")
        return wds.shuffle(self.bufsize, min(100, self.bufsize), rng=rng)(src)


class RateLimitedWarning:
    """Counts skipped samples; logs at most once every `every` seconds."""

    def __init__(self, every: float = 10.0):
        self.every, self.last, self.skipped = every, 0.0, 0

    def __call__(self, exc: Exception) -> bool:
        self.skipped += 1
        if time.monotonic() - self.last > self.every:
            self.last = time.monotonic()
            log.warning(
                "skipping a sample that does not decode (%d so far): %s: %s",
                self.skipped,
                type(exc).__name__,
                exc,
            )
        return True  # keep going


def caption(meta: dict, cfg: DataConfig, rng: random.Random) -> tuple[str, int | None]:
    """The training text and, when it is keyframe caption k, k: LanguageBind then pairs the
    text with depth / infrared frame k, the frame it describes."""
    views = {k: v for k, v in meta.get("text", {}).items() if v}
    title = meta.get("title", "")
    if cfg.text_view != "mix":
        name = cfg.text_view if cfg.text_view in views else "raw"
    else:
        names = [n for n in cfg.mix_weights if n in views] or ["raw"]
        name = rng.choices(names, weights=[cfg.mix_weights.get(n, 1.0) for n in names])[0]
    text = views.get(name, title)
    if isinstance(text, list):  # keyframe captions: one of the 8, and its frame
        if not text:
            return str(title), None
        index = rng.randrange(len(text))
        return str(text[index]), index
    return str(text), None


def eval_captions(meta: dict, view: str) -> list[str]:
    """The held-out texts of a sample: the fixed `view` of json.text (raw, then the title, when
    the sample lacks it); a list there (several captions of one video) gives them all."""
    views = {k: v for k, v in meta.get("text", {}).items() if v}
    value = views.get(view) or views.get("raw") or meta.get("title", "")
    texts = [str(t) for t in (value if isinstance(value, list) else [value]) if t]
    return texts or [str(meta.get("title", ""))]


class Preprocess:
    """Raw tar members -> {"input": tensor, "text": str, "captions": [str], "key": str}.
    Training draws the text (cfg.text_view, "mix" included) per sample and epoch; evaluation
    reads the fixed cfg.eval_text_view, every caption of it (`captions`; `text` is the first)."""

    def __init__(self, cfg: DataConfig, train: bool, epoch_ref: ShardList):
        self.cfg, self.train, self.epoch_ref = cfg, train, epoch_ref
        self.member = member_of(cfg.modality)

    def __call__(self, sample: dict) -> dict:
        member = self.member
        check_key(sample["__key__"])  # untrusted: a bad one is skipped with a warning, as errors
        if member not in sample:
            raise KeyError(f"{sample.get('__key__')} has no .{member} member")
        meta = json.loads(sample["json"])
        if self.train:
            seed = hashlib.sha256(
                f"{sample['__key__']}/{self.cfg.seed}/{self.epoch_ref.epoch}".encode()
            )
            rng = random.Random(seed.hexdigest())
            text, frame = caption(meta, self.cfg, rng)
            captions = [text]
        else:  # centre crops, middle frames: nothing random
            rng, frame = random.Random(0), None
            captions = eval_captions(meta, self.cfg.eval_text_view)
        tensor = self._tensor(sample[member], meta, rng, frame)
        key = sample["__key__"]
        return {"input": tensor, "text": captions[0], "captions": captions, "key": key}

    def _tensor(self, data: bytes, meta: dict, rng: random.Random, frame: int | None):
        cfg, size = self.cfg, self.cfg.image_size
        if cfg.modality == "video":
            return preprocess.video_tensor(
                data, cfg.num_frames, size, self.train, rng, cfg.flip if self.train else 0.0
            )
        if cfg.modality == "audio":
            return preprocess.audio_tensor(
                data,
                cfg.audio_frames,
                cfg.audio_bins,
                cfg.audio_sample_rate,
                rng if self.train else None,
            )
        image = _png(data)
        count = meta.get("frames", {}).get("count") or 8
        fn = preprocess.depth_tensor if cfg.modality == "depth" else preprocess.infrared_tensor
        return fn(image, count, size, self.train, rng, frame)


def collate(samples: list[dict]) -> dict:
    """Inputs stacked; texts, caption lists and keys as lists."""
    batch = {k: [s[k] for s in samples] for k in samples[0]}
    batch["input"] = torch.stack(batch["input"])
    return batch


def _png(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def make_dataset(urls, cfg: DataConfig, train: bool) -> tuple[wds.DataPipeline, ShardList]:
    member_of(cfg.modality)  # a modality nothing declares, or no front end for it: refused
    shards = ShardList(
        expand_urls(urls), cfg.seed, shuffle=train, resampled=cfg.resampled and train
    )
    handler = RateLimitedWarning()
    stages = [shards, wds.tarfile_to_samples(handler=handler)]
    if train and cfg.shuffle_buffer > 1:
        stages.append(EpochShuffle(cfg.shuffle_buffer, shards, cfg.seed))
    stages.append(wds.map(Preprocess(cfg, train, shards), handler=handler))
    return wds.DataPipeline(*stages), shards


def make_loader(
    urls, cfg: DataConfig, train: bool, drop_last: bool | None = None
) -> tuple[DataLoader, ShardList]:
    """A DataLoader over the shards. Each worker batches its own samples, so a worker's last
    batch is partial; `drop_last` (default: in training) drops it. Several processes must drop
    it: gathering features needs equal batch sizes on every rank."""
    dataset, shards = make_dataset(urls, cfg, train)
    workers = min(cfg.workers, len(shards.urls)) if not cfg.resampled else cfg.workers
    # its own generator, so creating a loader iterator never draws from the global RNG: exact
    # resume relies on the global RNG stream belonging to the training steps alone
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        dataset,
        generator=generator,
        batch_size=cfg.batch_size,
        collate_fn=collate,
        num_workers=workers,
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=False,
        multiprocessing_context="fork" if workers else None,
    )
    return loader, shards
