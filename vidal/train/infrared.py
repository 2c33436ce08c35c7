"""`vidal train-infrared`: train the pix2pix translator on paired RGB/thermal images.

Pairs come in LLVIP's layout: `DIR/visible/NAME.jpg|png` and `DIR/infrared/NAME.*` with the
same stem (a `train/` or `test/` level below `visible/` and `infrared/` is searched too).
Each step reads a random batch: both images resized so the short side is `size`, one random
`size` x `size` crop at the same place, a random horizontal flip; thermal as one channel.
Loss: L1 x `l1_weight` + LSGAN on a PatchGAN discriminator (pix2pix's recipe, least squares).
The checkpoint `OUT/pix2pix.pt` (generator state dict + config) is written atomically at the
end and every `checkpoint_every` steps; the `infrared` stage loads it as `model: OUT/pix2pix.pt`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def find_pairs(folder) -> list[tuple[Path, Path]]:
    """(visible, infrared) paths with matching stems, sorted by name."""
    root = Path(folder)
    pairs = []
    for visible in sorted((root / "visible").rglob("*")):
        if visible.suffix.lower() not in IMAGE_EXTS or not visible.is_file():
            continue
        rel = visible.relative_to(root / "visible")
        matches = sorted(
            p
            for p in (root / "infrared" / rel.parent).glob(rel.stem + ".*")
            if p.suffix.lower() in IMAGE_EXTS
        )
        if matches:
            pairs.append((visible, matches[0]))
    if not pairs:
        raise FileNotFoundError(
            f"no image pairs under {root}: expected {root}/visible/NAME.jpg|png and "
            f"{root}/infrared/NAME.* with matching names (LLVIP's layout)"
        )
    return pairs


def load_pair(pair, size: int, rng: random.Random | None = None):
    """(rgb (3, s, s), thermal (1, s, s)) float32 arrays in [-1, 1]; center crop without rng."""
    rgb = Image.open(pair[0]).convert("RGB")
    ir = Image.open(pair[1]).convert("L").resize(rgb.size, Image.BILINEAR)
    scale = size / min(rgb.size)
    w, h = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
    rgb, ir = rgb.resize((w, h), Image.BILINEAR), ir.resize((w, h), Image.BILINEAR)
    if rng is None:
        left, top, flip = (w - size) // 2, (h - size) // 2, False
    else:
        left, top = rng.randint(0, w - size), rng.randint(0, h - size)
        flip = rng.random() < 0.5
    box = (left, top, left + size, top + size)
    a = np.asarray(rgb.crop(box), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    b = np.asarray(ir.crop(box), dtype=np.float32)[None] / 127.5 - 1
    if flip:
        a, b = a[:, :, ::-1], b[:, :, ::-1]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def batch_of(pairs, size, rng=None):
    import torch

    loaded = [load_pair(p, size, rng) for p in pairs]
    return (
        torch.from_numpy(np.stack([a for a, _ in loaded])),
        torch.from_numpy(np.stack([b for _, b in loaded])),
    )


def l1_loss(generator, pairs, size: int) -> float:
    """Mean L1 (in [-1, 1] units) of the generator on `pairs`, center crops."""
    import torch

    generator.eval()
    with torch.inference_mode():
        rgb, ir = batch_of(pairs, size)
        return float((generator(rgb) - ir).abs().mean())


def train_pix2pix(
    pairs_dir,
    out,
    steps: int = 2000,
    size: int = 128,
    batch_size: int = 8,
    lr: float = 2e-4,
    l1_weight: float = 100.0,
    ngf: int = 32,
    depth: int = 4,
    seed: int = 0,
    checkpoint_every: int = 500,
    device: str | None = None,
) -> dict:
    """Train; write OUT/pix2pix.pt and OUT/train_infrared.json; return the summary."""
    import torch

    from vidal.models.pix2pix import PatchDiscriminator, build_generator, save_checkpoint
    from vidal.models.resolve import select_device

    if size % 2**depth:
        raise ValueError(f"--size must be a multiple of {2**depth}, got {size}")
    pairs = find_pairs(pairs_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or select_device()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    config = {"ngf": ngf, "depth": depth, "size": size}
    gen = build_generator(config).to(device)
    disc = PatchDiscriminator(4, ngf, 3).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    path = out / "pix2pix.pt"
    started, history = time.time(), []
    for step in range(1, steps + 1):
        gen.train()
        rgb, ir = batch_of(rng.choices(pairs, k=batch_size), size, rng)
        rgb, ir = rgb.to(device), ir.to(device)
        fake = gen(rgb)
        # discriminator: real pairs -> 1, generated pairs -> 0 (least squares)
        opt_d.zero_grad()
        d_loss = 0.5 * ((disc(rgb, ir) - 1).pow(2).mean() + disc(rgb, fake.detach()).pow(2).mean())
        d_loss.backward()
        opt_d.step()
        # generator: fool the discriminator, stay close to the real thermal image
        opt_g.zero_grad()
        l1 = (fake - ir).abs().mean()
        g_loss = (disc(rgb, fake) - 1).pow(2).mean() + l1_weight * l1
        g_loss.backward()
        opt_g.step()
        history.append({"step": step, "l1": l1.item(), "g": g_loss.item(), "d": d_loss.item()})
        if step % checkpoint_every == 0 and step < steps:
            save_checkpoint(path, gen.cpu(), config, {"step": step})
            gen.to(device)
    save_checkpoint(path, gen.cpu(), config, {"step": steps})
    summary = {
        "checkpoint": str(path),
        "pairs": len(pairs),
        "steps": steps,
        "seconds": round(time.time() - started, 1),
        "final_l1": history[-1]["l1"] if history else None,
        "config": config,
    }
    (out / "train_infrared.json").write_text(json.dumps({**summary, "history": history[-100:]}))
    return summary


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-infrared", help="train the pix2pix RGB->thermal translator on paired images"
    )
    p.add_argument("--pairs", required=True, help="folder with visible/ and infrared/ (LLVIP)")
    p.add_argument("--out", required=True, help="output folder: pix2pix.pt")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--size", type=int, default=128, help="training crop side")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ngf", type=int, default=32, help="generator width")
    p.add_argument("--depth", type=int, default=4, help="U-Net levels (size: multiple of 2^depth)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    summary = train_pix2pix(
        args.pairs,
        args.out,
        steps=args.steps,
        size=args.size,
        batch_size=args.batch_size,
        lr=args.lr,
        ngf=args.ngf,
        depth=args.depth,
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2))
    print(f"use it with: infrared.model={summary['checkpoint']}")
    return 0
