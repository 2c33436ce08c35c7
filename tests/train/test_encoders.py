"""Encoders: patch dropout, LoRA, init from a CLIP checkpoint, the video temporal path, the
frozen MiniLM text tower."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidal.train.config import EncoderConfig
from vidal.train.encoders import PATCH_DROPOUT, ModalityEncoder, PatchDropout

TINY = {"hidden_size": 32, "layers": 2, "heads": 2, "patch_size": 8, "image_size": 32}


def tiny(**overrides) -> EncoderConfig:
    return EncoderConfig(**{**TINY, **overrides})


class Tokens(nn.Module):
    """Stands in for CLIP's embeddings: token i of every image is the vector (i, i, ...)."""

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        batch = pixel_values.shape[0]
        return torch.arange(17.0).view(1, 17, 1).expand(batch, 17, 4).clone()


def test_patch_dropout_keeps_cls_and_a_fraction_of_patches_in_training():
    dropout = PatchDropout(Tokens(), 0.3)
    out = dropout(torch.zeros(5, 3, 32, 32))
    keep = int(16 * 0.7)
    assert out.shape == (5, 1 + keep, 4)
    assert (out[:, 0] == 0).all()  # the CLS token, always first
    ids = out[:, 1:, 0]
    for row in ids:
        assert len(set(row.tolist())) == keep and min(row.tolist()) >= 1  # distinct patches
    assert len({tuple(row.tolist()) for row in ids}) > 1  # a different subset per image
    dropout.eval()
    assert torch.equal(dropout(torch.zeros(2, 3, 32, 32)), Tokens()(torch.zeros(2, 3, 32, 32)))


def test_patch_dropout_ratio_per_modality_and_from_config():
    assert PATCH_DROPOUT == {"video": 0.3, "audio": 0.3, "depth": 0.5, "infrared": 0.5}
    seen = []
    for modality in ("video", "audio", "depth", "infrared"):
        encoder = ModalityEncoder(modality, tiny(layers=1), 16)
        dropout = next(m for m in encoder.modules() if isinstance(m, PatchDropout))
        seen.append(dropout.ratio)
        tokens: list[int] = []
        dropout.register_forward_hook(lambda m, args, out, seen=tokens: seen.append(out.shape[1]))
        x = torch.randn(2, 8, 3, 32, 32) if modality == "video" else torch.randn(2, 3, 32, 32)
        encoder.train()(x)
        encoder.eval()(x)
        assert tokens == [1 + int(16 * (1 - dropout.ratio)), 17]  # dropped only in training
    assert seen == [0.3, 0.3, 0.5, 0.5]
    override = ModalityEncoder("depth", tiny(layers=1, patch_dropout=0.0), 16)
    assert next(m for m in override.modules() if isinstance(m, PatchDropout)).ratio == 0.0


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_lora_freezes_the_backbone_and_trains_fewer_parameters():
    full = ModalityEncoder("depth", tiny(), 16)
    lora = ModalityEncoder("depth", tiny(lora_rank=2), 16)
    assert trainable(lora.backbone) < trainable(full.backbone) / 10
    names = [n for n, p in lora.backbone.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    # rank 2 on q, k, v, out of 2 layers: 4 projections x 2 layers x (32x2 + 2x32)
    assert trainable(lora.backbone) == 2 * 4 * (32 * 2 + 2 * 32)
    base = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        lora(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(base[n], p) for n, p in lora.named_parameters() if n in base)
    lora_b = [p for n, p in lora.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it did train


def vision_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """name -> tensor of a CLIP vision tower, by the name's tail after 'embeddings.' /
    'encoder.' so that wrapped and plain models compare."""
    out = {}
    for name, tensor in module.state_dict().items():
        for anchor in ("patch_embedding", "class_embedding", "encoder.layers"):
            if anchor in name and "text" not in name:
                out[name[name.index(anchor) :]] = tensor
    return out


@pytest.mark.parametrize("kind", ["vision_tower", "full_clip"])
def test_init_from_a_saved_clip_checkpoint_loads_its_weights(tmp_path, kind):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    vision = {
        "hidden_size": 48,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 8,
        "image_size": 32,
    }
    if kind == "vision_tower":
        saved = CLIPVisionModel(CLIPVisionConfig(**vision))
    else:  # what openai/clip-vit-*-patch14 is: text and vision towers together
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
        config = CLIPConfig(text_config={**text, "num_attention_heads": 2}, vision_config=vision)
        saved = CLIPModel(config)
    saved.save_pretrained(tmp_path)
    encoder = ModalityEncoder("video", tiny(init_from=str(tmp_path)), 16, num_frames=4)
    assert encoder.backbone.config.hidden_size == 48  # the checkpoint's size, not the config's
    expected, loaded = vision_weights(saved), vision_weights(encoder)
    assert len(expected) > 10 and expected.keys() == loaded.keys()
    assert all(torch.equal(expected[k], loaded[k]) for k in expected)
    assert encoder(torch.randn(2, 4, 3, 32, 32)).shape == (2, 16)


def test_video_frames_are_encoded_one_by_one_then_mixed_and_mean_pooled():
    encoder = ModalityEncoder("video", tiny(), 24, num_frames=8).eval()
    images = []
    encoder.backbone.register_forward_hook(
        lambda m, args, kwargs, out: images.append(kwargs["pixel_values"].shape), with_kwargs=True
    )
    x = torch.randn(3, 8, 3, 32, 32)
    out = encoder(x)
    assert images == [(24, 3, 32, 32)]  # 3 clips x 8 frames through the ViT
    assert out.shape == (3, 24) and torch.allclose(out.norm(dim=-1), torch.ones(3))
    assert isinstance(encoder.temporal, nn.TransformerEncoder)
    assert encoder.frame_pos.shape == (1, 8, 32)
    # the temporal layer sees the frames in order once frame positions are learned
    with torch.no_grad():
        encoder.frame_pos.normal_()
    assert not torch.allclose(encoder(x), encoder(x.flip(1)), atol=1e-4)
    # one clip is each frame's own: changing clip 0 leaves clips 1 and 2 as they were
    changed = x.clone()
    changed[0] += 1
    assert torch.allclose(encoder(changed)[1:], encoder(x)[1:], atol=1e-5)


def test_image_modalities_have_no_temporal_module_and_take_non_square_input():
    audio = ModalityEncoder("audio", tiny(), 16).eval()
    assert audio.temporal is None
    out = audio(torch.randn(2, 3, 64, 32))  # fbank images are tall: positions interpolated
    assert out.shape == (2, 16) and torch.allclose(out.norm(dim=-1), torch.ones(2))


def test_text_tower_is_frozen_minilm_with_a_cache(text_tower, monkeypatch):
    assert text_tower.dim == 384 and not text_tower.is_clip
    assert all(not p.requires_grad for p in text_tower.parameters())
    text_tower.train()
    assert not text_tower.training and not text_tower.model.training  # always eval: no dropout
    texts = ["a red circle moving from left to right", "a blue square", "a red circle"]
    first = text_tower(texts)
    assert first.shape == (3, 384) and torch.allclose(first.norm(dim=-1), torch.ones(3))
    sims = first @ first.T
    assert sims[0, 2] > sims[0, 1]  # real MiniLM weights: meaning, not noise
    calls = []
    original = text_tower._embed
    monkeypatch.setattr(text_tower, "_embed", lambda t: calls.append(t) or original(t))
    again = text_tower([texts[2], texts[0], "a new caption", texts[2]])
    assert calls == [["a new caption"]]  # only the unseen text is embedded
    assert torch.equal(again[0], first[2]) and torch.equal(again[1], first[0])
    assert torch.equal(again[3], first[2])
