"""CLIP image and text embeddings, batched: one forward for all frames, one for all texts.

Any `transformers` model with `get_image_features` / `get_text_features` works (CLIP and its
kin); the default in the pipelines is OpenAI's ViT-L/14. Frames are prepared in torch on the
model's device (resize of the short side, centre crop, normalisation, as the model's image
processor would), so a batch of clips crosses to the GPU once, as uint8.
"""

from __future__ import annotations

import numpy as np

from vidal.models import tiny
from vidal.models.resolve import (
    ModelSource,
    autocast,
    load_image_processor,
    resolve,
    select_device,
    to_pixels,
    weights_digest,
)


class ClipEmbedder:
    def __init__(
        self, bundle: tiny.Bundle, source: ModelSource, revision: str, device: str, precision: str
    ):
        self.model = bundle.model.to(device).eval()
        self.processor, self.tokenizer = bundle.image_processor, bundle.tokenizer
        self.source, self.revision = source, revision
        self.device, self.precision = device, precision

    @classmethod
    def load(cls, ref: str, precision: str = "bf16", device: str | None = None) -> ClipEmbedder:
        source = resolve(ref)
        if source.kind == "tiny":
            bundle = tiny.build(source.location)
        else:
            bundle = _from_folder(source.location)
        revision = source.revision or weights_digest(bundle.model)
        return cls(bundle, source, revision, device or select_device(), precision)

    @property
    def ref(self) -> str:
        return self.source.ref

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def embed_frames(self, clips: list[np.ndarray]) -> np.ndarray:
        """Unit-norm embeddings (sum of n_i, D) of every frame of every clip (n_i, H, W, 3)
        uint8, in order; clips may differ in size. One forward pass."""
        import torch

        if not clips:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            pixels = torch.cat([self._pixels(frames) for frames in clips])
            with autocast(self.device, self.precision):
                out = self.model.get_image_features(pixel_values=pixels)
            return _unit(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings (M, D) of `texts` (cut at the model's context length)."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        limit = min(
            int(self.tokenizer.model_max_length),
            int(self.model.config.text_config.max_position_embeddings),
        )
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt"
        )
        inputs = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), autocast(self.device, self.precision):
            return _unit(self.model.get_text_features(**inputs))

    def _pixels(self, frames: np.ndarray):
        """Resize the short side, centre-crop: the model's preprocessing, on its device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        height, width = x.shape[1:3]
        short = _shortest_edge(self.processor)
        scale = short / min(height, width)
        size = (max(short, int(height * scale)), max(short, int(width * scale)))
        x = to_pixels(x, size, self.processor)
        crop = self.processor.crop_size
        top = (size[0] - crop["height"]) // 2
        left = (size[1] - crop["width"]) // 2
        return x[:, :, top : top + crop["height"], left : left + crop["width"]]

    def save(self, folder) -> None:
        """Write model, tokenizer and image processor, loadable as a local reference."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.processor.save_pretrained(folder)


def _shortest_edge(processor) -> int:
    size = processor.size
    return int(size.get("shortest_edge") or min(size["height"], size["width"]))


def _unit(out) -> np.ndarray:
    """Features (a tensor, or a model output whose pooler_output holds them) as unit rows."""
    import torch

    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


def _from_folder(folder: str) -> tiny.Bundle:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder)
    return tiny.Bundle(model, load_image_processor(folder), AutoTokenizer.from_pretrained(folder))
