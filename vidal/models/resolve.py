"""One resolver for every model reference, and the runtime every model wrapper shares.

A reference is one of:
  - `tiny:<family>`: a deterministic, randomly initialised small model of the real class,
    built from a config (vidal.models.tiny), for tests, the demo and speed checks;
  - a local folder written by `save_pretrained` (it must hold a config.json);
  - a Hugging Face hub id, `org/name` or `org/name@revision`: taken from the local HF cache,
    downloaded into it only where downloads are allowed (HF_HUB_OFFLINE unset).

A reference that cannot be loaded raises ModelNotFoundError, whose one-line message names the
model and says how to supply it; the original exception is suppressed so nothing but that
line reaches the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

TINY = "tiny:"
TINY_FAMILIES = ("clip", "glpn", "dpt", "depth_anything", "ast")
PRECISIONS = ("bf16", "fp16", "fp32")
# what a transformers model needs; the other weight formats (tf, flax, onnx) are never fetched
_META_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")
_HOW = (
    "a model reference is a local folder written by save_pretrained, a Hugging Face hub id "
    f"('org/name' or 'org/name@revision') or tiny:<family> ({', '.join(TINY_FAMILIES)})"
)


class ModelNotFoundError(FileNotFoundError):
    """A model reference that cannot be loaded; the message says how to supply it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a reference points: `kind` tiny | local | hub, `location` the tiny family or a
    local folder (a hub snapshot in the cache for hub ids), `revision` the hub commit or a
    content hash of a local folder (tiny models get theirs from their weights once built)."""

    ref: str
    kind: str
    location: str
    revision: str | None


def check_reference(ref: str) -> str | None:
    """A problem with the reference's form (None when fine); no file or network access."""
    if not isinstance(ref, str) or not ref.strip():
        return f"empty model reference; {_HOW}"
    if ref.startswith(TINY):
        family = ref[len(TINY) :]
        if family not in TINY_FAMILIES:
            return f"unknown tiny model {ref!r}; known: " + ", ".join(
                TINY + f for f in TINY_FAMILIES
            )
        return None
    if _looks_local(ref) or _HUB_ID.match(ref):
        return None
    return f"model reference {ref!r} is neither a folder nor a hub id; {_HOW}"


def resolve(ref: str) -> ModelSource:
    """Where `ref`'s files are (downloading hub models only where that is allowed)."""
    problem = check_reference(ref)
    if problem:
        raise ModelNotFoundError(problem)
    if ref.startswith(TINY):
        return ModelSource(ref, "tiny", ref[len(TINY) :], None)
    if _looks_local(ref):
        return _local(ref)
    return _hub(ref)


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(ref))


def _local(ref: str) -> ModelSource:
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder {ref!r} does not exist; {_HOW}")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(
            f"{ref!r} is not a model folder (no config.json); write one with save_pretrained"
        )
    return ModelSource(ref, "local", str(folder.resolve()), folder_digest(folder))


def folder_digest(folder: Path) -> str:
    """Content hash of every file in a model folder: the revision of a local model."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def hub_offline() -> bool:
    """Downloads are off (read now, not at import, so tests and callers can switch it)."""
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def hub_cache() -> str | None:
    """The HF cache folder from the environment now (None: huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hub(ref: str) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = ref.partition("@")
    try:
        path = snapshot_download(
            repo, revision=revision or None, cache_dir=hub_cache(), local_files_only=True
        )
    except LocalEntryNotFoundError:
        if hub_offline():
            why = "downloads are off (HF_HUB_OFFLINE=1)"
            raise ModelNotFoundError(_not_cached(ref, why)) from None
        path = _download(ref, repo, revision or None)
    # a snapshot folder is named after the commit it holds
    return ModelSource(ref, "hub", path, Path(path).name)


def _download(ref: str, repo: str, revision: str | None) -> str:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = [s.rfilename for s in HfApi().model_info(repo, revision=revision).siblings]
        # one weight format: safetensors when the repo has it, else the PyTorch .bin files
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
        return snapshot_download(
            repo,
            revision=revision,
            cache_dir=hub_cache(),
            allow_patterns=[*_META_FILES, weights],
        )
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelNotFoundError(
            f"model {ref!r} does not exist on the Hugging Face hub (or is private); {_HOW}"
        ) from None
    except Exception as exc:  # no network, proxy, timeouts: all mean "not here"
        raise ModelNotFoundError(
            _not_cached(ref, f"the download failed ({type(exc).__name__})")
        ) from None


def _not_cached(ref: str, why: str) -> str:
    repo = ref.partition("@")[0]
    cache = hub_cache() or "~/.cache/huggingface/hub"
    return (
        f"model {ref!r} is not in the Hugging Face cache ({cache}) and {why}. Supply it: "
        f"download it where there is a network (`hf download {repo}`) and copy the cache "
        f"here (or set HF_HUB_CACHE), or set the stage's `model:` to a local folder written "
        f"by save_pretrained, or use a tiny:<family> model for tests"
    )


# -- the runtime every wrapper shares -------------------------------------------------------


def select_device() -> str:
    """The GPU when this worker sees one (Ray hides GPUs from actors that did not ask)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: str, precision: str):
    """bf16/fp16 autocast on GPU; CPUs run in float32 (their bf16 matmuls are slower)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if device == "cpu" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def weights_digest(model) -> str:
    """Hash of a model's parameters and buffers: the revision of a tiny (built) model."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=_byte()).numpy().data)
    return "sha256:" + h.hexdigest()[:16]


def _byte():
    import torch

    return torch.uint8


def load_image_processor(folder: str):
    """The folder's image processor, PIL backend (torchvision is not in the environment);
    only its settings (sizes, mean, std) are used: pixels are prepared in torch."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder, backend="pil")


_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's BILINEAR, BICUBIC


def to_pixels(frames, size: tuple[int, int], processor):
    """uint8 (N, H, W, 3) tensor -> float (N, 3, h, w) the way `processor` prepares images:
    resized (antialiased, with its resampling), rescaled and normalised, on frames' device."""
    import torch
    import torch.nn.functional as F

    x = frames.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        mode = _RESAMPLE.get(int(getattr(processor, "resample", 3) or 3), "bilinear")
        x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
        x = x.clamp(0, 255)  # bicubic overshoots
    if getattr(processor, "do_rescale", True):
        x = x * float(getattr(processor, "rescale_factor", 1 / 255))
    if getattr(processor, "do_normalize", False):
        mean = torch.tensor(processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x
