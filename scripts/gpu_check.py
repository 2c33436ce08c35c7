"""GPU check of the model stages' inference paths: frames/s and achieved TFLOP/s.

Measures, on one GPU with bf16 autocast (by default), the two wrappers the stages call:
  - VL filter: a ViT-L/14-size CLIP (random init) embedding the 8 keyframes of each clip
    (256 x 455, prepared on the GPU: resize, centre crop 224) and each clip's text;
  - depth: a DPT-Large-size model (random init) on the same frames at 384 x 384, maps resized
    back to 256 x 455.
Random weights cost exactly what trained ones do. FLOPs are counted once per call with
torch.utils.flop_counter (matmuls, convolutions, attention), then divided by the timed seconds.
Nothing is downloaded.

    python scripts/gpu_check.py              # on a GPU machine
    python scripts/gpu_check.py --tiny       # CPU smoke check with the tiny models

Prints a table and one JSON line (also written to --json when given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vidal.models import tiny
from vidal.models.clip import ClipEmbedder
from vidal.models.depth import DepthEstimator
from vidal.models.resolve import ModelSource

FRAME_SHAPE = (256, 455, 3)  # a 9:16 short's keyframe at short side 256, landscape here
FRAMES_PER_CLIP = 8


def clip_vit_l14(device: str) -> tiny.Bundle:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    text = dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        pad_token_id=tiny.BERT_PAD,
        bos_token_id=tiny.BERT_CLS,
        eos_token_id=tiny.BERT_SEP,  # the texts are tokenised with the BERT tokenizer
    )
    vision = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    with torch.device(device):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    return tiny.Bundle(model, processor, tiny.bert_tokenizer())


def dpt_large(device: str) -> tiny.Bundle:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    config = DPTConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=384,
        patch_size=16,
        backbone_out_indices=[5, 11, 17, 23],
        neck_hidden_sizes=[256, 512, 1024, 1024],
        fusion_hidden_size=256,
    )
    with torch.device(device):
        model = DPTForDepthEstimation(config)
    processor = DPTImageProcessorPil(size={"height": 384, "width": 384}, keep_aspect_ratio=False)
    return tiny.Bundle(model, processor)


def measure(name: str, call, frames: int, device: str, warmup: int, iters: int) -> dict:
    """frames/s and TFLOP/s of `call` (FLOPs counted on one extra call)."""
    with FlopCounterMode(display=False) as counter:
        call()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        call()
    sync(device)
    started = time.perf_counter()
    for _ in range(iters):
        call()
    sync(device)
    seconds = (time.perf_counter() - started) / iters
    return {
        "stage": name,
        "frames_per_call": frames,
        "ms_per_call": round(seconds * 1000, 2),
        "frames_per_s": round(frames / seconds, 1),
        "gflop_per_frame": round(flops / frames / 1e9, 4),
        "tflop_per_s": round(flops / seconds / 1e12, 4),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def source(name: str) -> ModelSource:
    return ModelSource(name, "random", name, None)


def run(args) -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        sys.exit("gpu_check: no GPU here; run with --tiny for a CPU smoke check")
    rng = np.random.default_rng(0)
    clips = [
        rng.integers(0, 256, (FRAMES_PER_CLIP, *FRAME_SHAPE), dtype=np.uint8)
        for _ in range(args.clips)
    ]
    texts = [f"a cyclist rides down a city street #{i} #cycling" for i in range(args.clips)]
    frames = len(clips) * FRAMES_PER_CLIP
    vl_bundle = tiny.build("clip") if args.tiny else clip_vit_l14(device)
    vl = ClipEmbedder(vl_bundle, source("clip"), "random", device, args.precision)
    depth_bundle = tiny.build("dpt") if args.tiny else dpt_large(device)
    depth = DepthEstimator(depth_bundle, source("dpt"), "random", device, args.precision)
    out_sizes = [FRAME_SHAPE[:2]] * len(clips)
    results = [
        measure(
            "vl_filter",
            lambda: (vl.embed_frames(clips), vl.embed_texts(texts)),
            frames,
            device,
            args.warmup,
            args.iters,
        ),
        measure(
            "depth",
            lambda: depth.predict(clips, out_sizes),
            frames,
            device,
            args.warmup,
            args.iters,
        ),
    ]
    for result in results:
        result.update(device=torch.cuda.get_device_name() if device == "cuda" else "cpu")
        result.update(precision=args.precision if device == "cuda" else "fp32", tiny=args.tiny)
    if device == "cuda":
        results.append({"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke check)")
    parser.add_argument("--clips", type=int, default=None, help="clips per call (8 frames each)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    args.clips = args.clips or (2 if args.tiny else 32)
    args.iters = args.iters or (2 if args.tiny else 10)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 runs use TF32, as inference would
    results = run(args)
    for r in results:
        if "stage" in r:
            print(
                f"{r['stage']:10s} {r['frames_per_s']:>10.1f} frames/s  "
                f"{r['tflop_per_s']:>8.2f} TFLOP/s  {r['gflop_per_frame']:>8.2f} GFLOP/frame  "
                f"({r['frames_per_call']} frames/call, {r['ms_per_call']} ms, {r['device']})"
            )
    line = json.dumps(results)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
