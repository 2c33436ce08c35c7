"""A small pix2pix translator trained here (`vidal train-infrared`): a U-Net generator,
RGB in [-1, 1] -> 1-channel thermal in [-1, 1], and a PatchGAN discriminator on the
(RGB, thermal) pair. Checkpoints (`pix2pix.pt`) hold `{"format", "config", "generator"}`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from vidal.models.munit import CheckpointKeyError, load_strict

FORMAT = "vidal-pix2pix-1"
DEFAULT = dict(ngf=32, depth=4)
TINY = dict(ngf=8, depth=3)


class UNet(nn.Module):
    """Encoder of `depth` stride-2 convs (channels ngf * 2^i, capped at 8 ngf), a mirrored
    decoder of transposed convs with skip connections, tanh output. Sides must be multiples
    of 2**depth."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1, ngf: int = 32, depth: int = 4):
        super().__init__()
        self.depth = depth
        chans = [min(ngf * 2**i, ngf * 8) for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_ch
        for i, ch in enumerate(chans):
            layers = [nn.Conv2d(prev, ch, 4, 2, 1)]
            if i > 0:
                layers.append(nn.InstanceNorm2d(ch, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            self.down.append(nn.Sequential(*layers))
            prev = ch
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            out = chans[i - 1] if i > 0 else ngf
            inp = chans[i] if i == depth - 1 else chans[i] * 2
            self.up.append(
                nn.Sequential(
                    nn.ConvTranspose2d(inp, out, 4, 2, 1),
                    nn.InstanceNorm2d(out, affine=True),
                    nn.ReLU(),
                )
            )
        self.head = nn.Sequential(nn.Conv2d(ngf + in_ch, out_ch, 3, 1, 1), nn.Tanh())

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward(self, x):
        skips, h = [], x
        for block in self.down:
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.up:
            h = block(h)
            if skips:
                h = torch.cat([h, skips.pop()], dim=1)
        return self.head(torch.cat([h, x], dim=1))


class PatchDiscriminator(nn.Module):
    """70x70-style PatchGAN (fewer layers): a real/fake logit per patch of (RGB, thermal)."""

    def __init__(self, in_ch: int = 4, ndf: int = 32, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = ndf
        for i in range(1, n_layers):
            nxt = min(ndf * 2**i, ndf * 8)
            layers += [nn.Conv2d(ch, nxt, 4, 2, 1), nn.InstanceNorm2d(nxt, affine=True)]
            layers += [nn.LeakyReLU(0.2)]
            ch = nxt
        layers += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, rgb, thermal):
        return self.model(torch.cat([rgb, thermal], dim=1))


def build_generator(config: dict) -> UNet:
    return UNet(3, 1, int(config["ngf"]), int(config["depth"]))


def save_checkpoint(path, generator: UNet, config: dict, extra: dict | None = None) -> None:
    """Write `pix2pix.pt` atomically (temp file, then rename)."""
    payload = {
        "format": FORMAT,
        "config": dict(config),
        "generator": generator.state_dict(),
        **(extra or {}),
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def is_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path) -> UNet:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not is_checkpoint(ckpt):
        raise CheckpointKeyError(f"{path}: not a vidal pix2pix checkpoint (format {FORMAT})")
    gen = build_generator(ckpt["config"])
    load_strict(gen, ckpt["generator"], f"{path} [generator]")
    return gen.eval()
