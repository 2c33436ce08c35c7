"""MUNIT's AdaIN generator (NVlabs/MUNIT `networks.py`, as used by sRGB-TIR), rebuilt with the
same module structure and attribute names, so the state-dict keys are MUNIT's own and
sRGB-TIR's published `translation_weights.pt` (`{"a": gen_a, "b": gen_b}`) loads strictly.

sRGB-TIR's `configs/tir2rgb_folder.yaml`: dim 64, mlp_dim 256, style_dim 8, relu, 2
downsamples, 4 residual blocks, reflection padding, 3 channels on both sides. Domain `a` is
thermal and `b` is RGB: RGB -> thermal encodes with `b`'s content encoder and decodes with
`a`'s decoder and a style code drawn from N(0, 1); images are in [-1, 1].

Normalisation follows sRGB-TIR's inference (`inference_batch.py` runs the trainer in train
mode): the content encoder's instance norms use each image's own statistics (sRGB-TIR's
`nn.InstanceNorm2d(dim)` has no running statistics, hence no keys; a checkpoint from MUNIT
versions that tracked them loads too, those unused buffers dropped), AdaIN normalises each
image with the MLP's per-image scale and shift, and MUNIT's LayerNorm uses the unbiased std
of the whole feature map. None of them updates a buffer, so outputs do not depend on what
else is in the batch.
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
from torch import nn

SRGB_TIR = dict(
    dim=64, mlp_dim=256, style_dim=8, activ="relu", n_downsample=2, n_res=4, pad_type="reflect"
)
TINY = dict(
    dim=8, mlp_dim=16, style_dim=8, activ="relu", n_downsample=2, n_res=1, pad_type="reflect"
)
# buffers of instance norms that some MUNIT versions tracked (never used at inference)
_IN_STATS = re.compile(r"^(?P<module>.+\.norm)\.(running_mean|running_var|num_batches_tracked)$")


class CheckpointKeyError(ValueError):
    """A checkpoint whose keys do not match the architecture; the message names them."""


# -- blocks ----------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module | None:
    acts = {
        "relu": lambda: nn.ReLU(inplace=True),
        "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
        "prelu": nn.PReLU,
        "selu": lambda: nn.SELU(inplace=True),
        "tanh": nn.Tanh,
        "none": lambda: None,
    }
    if name not in acts:
        raise ValueError(f"unsupported activation {name!r}")
    return acts[name]()


class AdaptiveInstanceNorm2d(nn.Module):
    """Instance norm whose per-image scale (`weight`) and shift (`bias`) come from the MLP."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = None  # assigned by AdaINGen.decode, (batch * num_features,)
        self.bias = None
        # MUNIT's dummy buffers: part of the state dict, never used
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        if self.weight is None or self.bias is None:
            raise RuntimeError("assign AdaIN weight and bias (AdaINGen.decode) before calling")
        b, c = x.shape[:2]
        flat = x.contiguous().view(1, b * c, *x.shape[2:])
        out = F.batch_norm(flat, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return out.view(b, c, *x.shape[2:])

    def __repr__(self):
        return f"AdaptiveInstanceNorm2d({self.num_features})"


class LayerNorm(nn.Module):
    """MUNIT's layer norm: over (C, H, W) per image, unbiased std, per-channel gamma/beta."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features, self.affine, self.eps = num_features, affine, eps
        if affine:
            self.gamma = nn.Parameter(torch.Tensor(num_features).uniform_())
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x):
        shape = [-1] + [1] * (x.dim() - 1)
        flat = x.reshape(x.size(0), -1)
        x = (x - flat.mean(1).view(*shape)) / (flat.std(1).view(*shape) + self.eps)
        if self.affine:
            shape = [1, -1] + [1] * (x.dim() - 2)
            x = x * self.gamma.view(*shape) + self.beta.view(*shape)
        return x


class Conv2dBlock(nn.Module):
    def __init__(
        self,
        input_dim,
        output_dim,
        kernel_size,
        stride,
        padding=0,
        norm="none",
        activation="relu",
        pad_type="zero",
    ):
        super().__init__()
        pads = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d}
        self.pad = pads.get(pad_type, nn.ZeroPad2d)(padding)
        norms = {
            "bn": lambda: nn.BatchNorm2d(output_dim),
            "in": lambda: nn.InstanceNorm2d(output_dim),
            "ln": lambda: LayerNorm(output_dim),
            "adain": lambda: AdaptiveInstanceNorm2d(output_dim),
            "none": lambda: None,
        }
        if norm not in norms:
            raise ValueError(f"unsupported normalization {norm!r}")
        self.norm = norms[norm]()
        self.activation = _activation(activation)
        self.conv = nn.Conv2d(input_dim, output_dim, kernel_size, stride, bias=True)

    def forward(self, x):
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class LinearBlock(nn.Module):
    def __init__(self, input_dim, output_dim, norm="none", activation="relu"):
        super().__init__()
        self.fc = nn.Linear(input_dim, output_dim, bias=True)
        if norm != "none":
            raise ValueError("MUNIT's MLP uses norm 'none'")
        self.norm = None
        self.activation = _activation(activation)

    def forward(self, x):
        out = self.fc(x)
        return self.activation(out) if self.activation is not None else out


class ResBlock(nn.Module):
    def __init__(self, dim, norm="in", activation="relu", pad_type="zero"):
        super().__init__()
        self.model = nn.Sequential(
            Conv2dBlock(dim, dim, 3, 1, 1, norm=norm, activation=activation, pad_type=pad_type),
            Conv2dBlock(dim, dim, 3, 1, 1, norm=norm, activation="none", pad_type=pad_type),
        )

    def forward(self, x):
        return x + self.model(x)


class ResBlocks(nn.Module):
    def __init__(self, num_blocks, dim, norm="in", activation="relu", pad_type="zero"):
        super().__init__()
        self.model = nn.Sequential(
            *[ResBlock(dim, norm, activation, pad_type) for _ in range(num_blocks)]
        )

    def forward(self, x):
        return self.model(x)


class MLP(nn.Module):
    def __init__(self, input_dim, output_dim, dim, n_blk, norm="none", activ="relu"):
        super().__init__()
        layers = [LinearBlock(input_dim, dim, norm=norm, activation=activ)]
        layers += [LinearBlock(dim, dim, norm=norm, activation=activ) for _ in range(n_blk - 2)]
        layers += [LinearBlock(dim, output_dim, norm="none", activation="none")]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x.view(x.size(0), -1))


class StyleEncoder(nn.Module):
    def __init__(self, n_downsample, input_dim, dim, style_dim, norm, activ, pad_type):
        super().__init__()
        kw = dict(norm=norm, activation=activ, pad_type=pad_type)
        layers = [Conv2dBlock(input_dim, dim, 7, 1, 3, **kw)]
        for _ in range(2):
            layers += [Conv2dBlock(dim, 2 * dim, 4, 2, 1, **kw)]
            dim *= 2
        layers += [Conv2dBlock(dim, dim, 4, 2, 1, **kw) for _ in range(n_downsample - 2)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1, 1, 0)]
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x):
        return self.model(x)


class ContentEncoder(nn.Module):
    def __init__(self, n_downsample, n_res, input_dim, dim, norm, activ, pad_type):
        super().__init__()
        kw = dict(norm=norm, activation=activ, pad_type=pad_type)
        layers = [Conv2dBlock(input_dim, dim, 7, 1, 3, **kw)]
        for _ in range(n_downsample):
            layers += [Conv2dBlock(dim, 2 * dim, 4, 2, 1, **kw)]
            dim *= 2
        layers += [ResBlocks(n_res, dim, norm=norm, activation=activ, pad_type=pad_type)]
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x):
        return self.model(x)


class Decoder(nn.Module):
    def __init__(
        self, n_upsample, n_res, dim, output_dim, res_norm="adain", activ="relu", pad_type="zero"
    ):
        super().__init__()
        layers = [ResBlocks(n_res, dim, res_norm, activ, pad_type=pad_type)]
        for _ in range(n_upsample):
            layers += [
                nn.Upsample(scale_factor=2),
                Conv2dBlock(dim, dim // 2, 5, 1, 2, norm="ln", activation=activ, pad_type=pad_type),
            ]
            dim //= 2
        layers += [
            Conv2dBlock(dim, output_dim, 7, 1, 3, norm="none", activation="tanh", pad_type=pad_type)
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class AdaINGen(nn.Module):
    """MUNIT's AdaIN auto-encoder: style encoder, content encoder, decoder, AdaIN MLP."""

    def __init__(self, input_dim: int, params: dict):
        super().__init__()
        dim, style_dim, mlp_dim = params["dim"], params["style_dim"], params["mlp_dim"]
        n_down, n_res = params["n_downsample"], params["n_res"]
        activ, pad = params["activ"], params["pad_type"]
        self.style_dim = style_dim
        self.enc_style = StyleEncoder(4, input_dim, dim, style_dim, "none", activ, pad)
        self.enc_content = ContentEncoder(n_down, n_res, input_dim, dim, "in", activ, pad)
        self.dec = Decoder(
            n_down, n_res, self.enc_content.output_dim, input_dim, "adain", activ, pad
        )
        self.mlp = MLP(style_dim, self.get_num_adain_params(self.dec), mlp_dim, 3, "none", activ)

    def forward(self, images):
        content, style = self.encode(images)
        return self.decode(content, style)

    def encode(self, images):
        return self.enc_content(images), self.enc_style(images)

    def decode(self, content, style):
        self.assign_adain_params(self.mlp(style), self.dec)
        return self.dec(content)

    @staticmethod
    def assign_adain_params(adain_params, model):
        for m in model.modules():
            if isinstance(m, AdaptiveInstanceNorm2d):
                n = m.num_features
                m.bias = adain_params[:, :n].contiguous().view(-1)
                m.weight = adain_params[:, n : 2 * n].contiguous().view(-1)
                adain_params = adain_params[:, 2 * n :]

    @staticmethod
    def get_num_adain_params(model) -> int:
        return sum(
            2 * m.num_features for m in model.modules() if isinstance(m, AdaptiveInstanceNorm2d)
        )


# -- checkpoints -----------------------------------------------------------------------------


def save_translation_weights(path, gen_a: AdaINGen, gen_b: AdaINGen) -> None:
    """sRGB-TIR's layout: `{"a": gen_a.state_dict(), "b": gen_b.state_dict()}`, atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save({"a": gen_a.state_dict(), "b": gen_b.state_dict()}, tmp)
    os.replace(tmp, path)


def load_strict(model: nn.Module, state: dict, where: str) -> None:
    """`load_state_dict(strict=True)` with an error that names the keys and the file."""
    if not isinstance(state, dict):
        raise CheckpointKeyError(f"{where}: expected a state dict, got {type(state).__name__}")
    modules = dict(model.named_modules())
    state = {
        k: v
        for k, v in state.items()
        if not (
            (m := _IN_STATS.match(k)) and isinstance(modules.get(m["module"]), nn.InstanceNorm2d)
        )
    }
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", wrong),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:5])}{more}")
        raise CheckpointKeyError(f"{where} does not match the architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_translation_weights(path, params: dict = SRGB_TIR) -> tuple[AdaINGen, AdaINGen]:
    """(gen_a, gen_b) from a `{"a": ..., "b": ...}` checkpoint, keys matched strictly."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"a", "b"} <= set(ckpt):
        found = sorted(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointKeyError(
            f"{path}: not a MUNIT translation checkpoint (needs state dicts 'a' and 'b'; "
            f"found {found})"
        )
    gens = []
    for side in ("a", "b"):
        gen = AdaINGen(3, params)
        load_strict(gen, ckpt[side], f"{path} [{side!r}]")
        gens.append(gen.eval())
    return gens[0], gens[1]


def rgb_to_thermal(gen_a: AdaINGen, gen_b: AdaINGen, images, styles):
    """RGB in [-1, 1] (N, 3, H, W) -> thermal in [-1, 1]: `b`'s content, `a`'s decoder,
    style codes (N, style_dim, 1, 1)."""
    return gen_a.decode(gen_b.enc_content(images), styles)
