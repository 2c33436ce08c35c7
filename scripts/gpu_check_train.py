"""GPU check of the trainer's step: samples/s, achieved TFLOP/s and MFU of LanguageBind's
ViT-L/14 video encoder (random init: CLIP vision 1024 wide, 24 layers, 16 heads, patch 14,
224 px, its projection into the 768-d text space) over 8 frames per clip, with temporal
attention in every layer, LoRA rank 16 on the temporal attention (the video recipe), patch
dropout 0.3 (the same patches in every frame), the symmetric InfoNCE loss and an AdamW step,
under bf16 autocast.

The inputs are synthetic (random frames, random unit text features standing in for the
frozen text tower's cached output): this measures the model step, not the loader (see
scripts/bench_train.py for that). FLOPs are counted once, on one whole step (forward +
backward) with torch.utils.flop_counter, then divided by the timed seconds per step.

    python scripts/gpu_check_train.py               # on a GPU machine: the video recipe
    python scripts/gpu_check_train.py --lora-rank 0 # full fine-tuning instead of LoRA
    python scripts/gpu_check_train.py --tiny        # CPU smoke check with a tiny encoder

MFU: achieved FLOP/s over the GPU's dense bf16 peak (--peak-tflops, or known for A100, H100,
H200).

Prints a table and one JSON line (also written to --json when given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vidal.train.config import DataConfig, EncoderConfig, TrainConfig
from vidal.train.loop import Model, param_groups

VIT_L14 = {"hidden_size": 1024, "layers": 24, "heads": 16, "patch_size": 14, "image_size": 224}
PEAK_BF16_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0}  # dense, SXM
TINY = {"hidden_size": 64, "layers": 2, "heads": 4, "patch_size": 8, "image_size": 32}
TEXT_DIM = 768  # CLIP ViT-L/14's text projection


def build(args, device: str):
    encoder = EncoderConfig(
        **(TINY if args.tiny else VIT_L14),
        lora_rank=args.lora_rank,
        gradient_checkpointing=args.grad_checkpointing,
    )
    data = DataConfig(modality="video", num_frames=args.frames, image_size=encoder.image_size)
    cfg = TrainConfig(data=data, encoder=encoder)
    with torch.device(device):
        model = Model(cfg, TEXT_DIM)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )
    return model.train(), optimizer, encoder.image_size


def make_step(model, optimizer, inputs, text, device: str, autocast: bool):
    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=autocast):
            loss, _ = model(inputs, text)
        loss.backward()
        optimizer.step()
        return loss

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(step, device: str, warmup: int, iters: int) -> tuple[float, float]:
    """(FLOPs of one step, seconds per step)."""
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(iters):
        loss = step()
    sync(device)
    seconds = (time.perf_counter() - started) / iters
    if not torch.isfinite(loss):
        sys.exit(f"gpu_check_train: the loss is {loss.item()}")
    return flops, seconds


def run(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        sys.exit("gpu_check_train: no GPU here; run with --tiny for a CPU smoke check")
    torch.manual_seed(0)
    model, optimizer, size = build(args, device)
    inputs = torch.randn(args.batch, args.frames, 3, size, size, device=device)
    text = F.normalize(torch.randn(args.batch, TEXT_DIM, device=device), dim=-1)
    autocast = device == "cuda" and args.precision == "bf16"
    step = make_step(model, optimizer, inputs, text, device, autocast)
    flops, seconds = measure(step, device, args.warmup, args.iters)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {
        "check": "train_step_video",
        "encoder": "tiny" if args.tiny else "ViT-L/14 LanguageBind video (random init)",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "precision": "bf16 autocast" if autocast else "fp32",
        "batch_clips": args.batch,
        "frames": args.frames,
        "lora_rank": args.lora_rank,
        "trainable_params_m": round(trainable / 1e6, 2),
        "ms_per_step": round(seconds * 1000, 1),
        "samples_per_s": round(args.batch / seconds, 2),
        "frames_per_s": round(args.batch * args.frames / seconds, 1),
        "gflop_per_step": round(flops / 1e9, 2),
        "tflop_per_s": round(flops / seconds / 1e12, 3),
    }
    if device == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 0)
        if peak:
            result["mfu"] = round(flops / seconds / 1e12 / peak, 4)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny encoder on CPU (smoke check)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--lora-rank", type=int, default=16, help="0: full fine-tuning")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.tiny else 32)
    args.iters = args.iters or (2 if args.tiny else 10)
    torch.backends.cuda.matmul.allow_tf32 = True
    r = run(args)
    print(
        f"{r['encoder']}, {r['batch_clips']} clips x {r['frames']} frames, {r['precision']}, "
        f"{r['device']}: {r['samples_per_s']:.2f} clips/s ({r['frames_per_s']:.1f} frames/s), "
        f"{r['tflop_per_s']:.3f} TFLOP/s, {r['gflop_per_step']:.1f} GFLOP/step, "
        f"{r['ms_per_step']} ms/step, {r['trainable_params_m']} M trainable"
    )
    line = json.dumps(r)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
