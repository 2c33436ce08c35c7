"""Local (transformers) captioners, batched: one `generate` call per batch.

- `ImageCaptioner`: an image-captioning model of the BLIP class
  (`BlipForConditionalGeneration`, e.g. Salesforce/blip-image-captioning-large), conditioned on
  a text prefix (the prompt); one caption per keyframe, every frame of every clip of the batch
  in one `generate` call.
- `VideoCaptioner`: a Qwen2-VL-class video-language model (`Qwen2VLForConditionalGeneration`,
  e.g. Qwen/Qwen2-VL-2B-Instruct) given a clip's keyframes as a video and a prompt with the
  title and hashtags; every clip of the batch in one `generate` call (left padding).

Frames are prepared in torch on the model's device from the model's image-processor settings
(no torchvision). bf16/fp16 autocast on GPU, float32 on CPU.
"""

from __future__ import annotations

import numpy as np

from vidal.models import tiny
from vidal.models.generate import Decoding, load_bundle, revision_of
from vidal.models.resolve import (
    ModelSource,
    autocast,
    load_image_processor,
    to_pixels,
)


class _Local:
    def __init__(self, bundle: tiny.Bundle, source: ModelSource, device: str, precision: str):
        self.model = bundle.model.to(device).eval()
        self.processor, self.tokenizer = bundle.image_processor, bundle.tokenizer
        self.source = source
        self.revision = revision_of(source, bundle.model)
        self.device, self.precision = device, precision

    @classmethod
    def load(cls, ref: str, precision: str = "bf16", device: str | None = None, **kwargs):
        return cls(*load_bundle(ref, precision, device, _from_folder), precision, **kwargs)

    @property
    def ref(self) -> str:
        return self.source.ref

    def _decode(self, ids) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class ImageCaptioner(_Local):
    def caption(
        self,
        clips: list[np.ndarray],
        prompt: str,
        decoding: Decoding,
        size: tuple[int, int] | None = None,
    ) -> list[list[str]]:
        """A caption per frame of every clip (n_i, H, W, 3) uint8; one generate call. `size`:
        the (h, w) frames are resized to (default: the processor's)."""
        import torch

        if not clips:
            return []
        native = _square(self.processor)
        size = tuple(size or native)
        with torch.inference_mode():
            pixels = torch.cat(
                [to_pixels(_tensor(f).to(self.device), size, self.processor) for f in clips]
            )
            bos = self.model.config.text_config.bos_token_id
            prefix = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            ids = torch.tensor([[bos, *prefix]] * len(pixels), device=self.device)
            with autocast(self.device, self.precision):
                out = self.model.generate(
                    pixel_values=pixels,
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    # another size than the model was trained at (OFA's 480 on BLIP's 384)
                    interpolate_pos_encoding=size != native,
                    **decoding.hf_kwargs(),
                )
        texts = self._decode(out[:, ids.shape[1] :])
        counts = np.cumsum([len(f) for f in clips])[:-1]
        return [list(part) for part in np.split(np.array(texts, dtype=object), counts)]


class VideoCaptioner(_Local):
    def __init__(self, *args, frame_short_side: int = 224):
        super().__init__(*args)
        self.frame_short_side = int(frame_short_side)
        vision = self.model.config.vision_config
        self.patch, self.merge = int(vision.patch_size), int(vision.spatial_merge_size)
        self.temporal = int(vision.temporal_patch_size)

    def caption(self, clips: list[np.ndarray], prompts: list[str], decoding: Decoding) -> list[str]:
        """A caption per clip (n_i, H, W, 3) uint8 with its prompt; one generate call."""
        import torch

        if not clips:
            return []
        with torch.inference_mode():
            patches, grids, rows = [], [], []
            for frames, prompt in zip(clips, prompts, strict=True):
                pixels, grid = self._patches(frames)
                patches.append(pixels)
                grids.append(grid)
                rows.append(self._ids(prompt, grid[0] * grid[1] * grid[2] // self.merge**2))
            ids, mask = _left_pad(rows, self.tokenizer.pad_token_id or 0, self.device)
            with autocast(self.device, self.precision):
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    pixel_values_videos=torch.cat(patches),
                    video_grid_thw=torch.tensor(grids, device=self.device),
                    **decoding.hf_kwargs(),
                )
        return self._decode(out[:, ids.shape[1] :])

    def frame_size(self, height: int, width: int) -> tuple[int, int]:
        unit = self.patch * self.merge
        scale = self.frame_short_side / min(height, width)
        return (
            max(unit, round(height * scale / unit) * unit),
            max(unit, round(width * scale / unit) * unit),
        )

    def _patches(self, frames: np.ndarray):
        """Qwen2-VL's video patches (as its processor makes them) and (t, h, w) grid."""
        import torch

        x = to_pixels(
            _tensor(frames).to(self.device), self.frame_size(*frames.shape[1:3]), self.processor
        )
        if len(x) % self.temporal:
            extra = self.temporal - len(x) % self.temporal
            x = torch.cat([x, x[-1:].repeat(extra, 1, 1, 1)])
        t, c = len(x) // self.temporal, x.shape[1]
        h, w = x.shape[2] // self.patch, x.shape[3] // self.patch
        m, p = self.merge, self.patch
        x = x.reshape(t, self.temporal, c, h // m, m, p, w // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(t * h * w, c * self.temporal * p * p), [t, h, w]

    def _ids(self, prompt: str, n_video: int) -> list[int]:
        """The prompt's token ids with the video placeholder: Qwen's chat format where the
        tokenizer knows it, else [CLS] + video + prompt (the tiny model)."""
        config = self.model.config
        video = [config.vision_start_token_id, *[config.video_token_id] * n_video]
        video.append(config.vision_end_token_id)
        encode = self.tokenizer.convert_tokens_to_ids
        if encode("<|im_start|>") not in (None, self.tokenizer.unk_token_id):
            head = self.tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
            tail = self.tokenizer(
                f"{prompt}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
            )["input_ids"]
            return [*head, *video, *tail]
        body = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.cls_token_id, *video, *body]


def _square(processor) -> tuple[int, int]:
    size = processor.size
    height = size.get("height") or size.get("shortest_edge")
    width = size.get("width") or size.get("shortest_edge")
    return int(height), int(width)


def _tensor(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames))


def _left_pad(rows: list[list[int]], pad: int, device: str):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _from_folder(folder: str, dtype) -> tiny.Bundle:
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    return tiny.Bundle(model, load_image_processor(folder), tokenizer)
