"""Encoders as LanguageBind builds them: parameter names, shapes and trainable sets per
modality, temporal attention in every video layer, patch dropout, LoRA targets and ranks, the
projection kept from the CLIP checkpoint, the frozen MiniLM text tower and its bounded cache."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidal.train.config import DataConfig, EncoderConfig
from vidal.train.encoders import LORA_RANK, PATCH_DROPOUT, ModalityEncoder, TextCache
from vidal.train.vision import PatchDropout, TemporalEncoderLayer

TINY = {"hidden_size": 32, "layers": 2, "heads": 2, "patch_size": 8, "image_size": 32}
DATA = {"num_frames": 4, "audio_bins": 16, "audio_frames": 64}  # audio: a 2 x 8 patch grid


def tiny(**overrides) -> EncoderConfig:
    return EncoderConfig(**{**TINY, **overrides})


def encoder(modality: str, out_dim: int = 16, **overrides) -> ModalityEncoder:
    data = DataConfig(modality=modality, **DATA)
    return ModalityEncoder(modality, tiny(**overrides), out_dim, data)


def example(modality: str, batch: int = 2) -> torch.Tensor:
    if modality == "video":
        return torch.randn(batch, DATA["num_frames"], 3, 32, 32)
    if modality == "audio":
        return torch.randn(batch, 3, DATA["audio_bins"], DATA["audio_frames"])
    return torch.randn(batch, 3, 32, 32)


def trainable_names(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_patch_dropout_keeps_cls_and_the_same_patches_in_every_frame_of_a_clip():
    tokens = torch.arange(17.0).view(1, 17, 1).expand(6, 17, 4).clone()  # token i is (i, ...)
    dropout = PatchDropout(0.3)
    out = dropout(tokens, frames=3)  # 2 clips x 3 frames
    keep = int(16 * 0.7)
    assert out.shape == (6, 1 + keep, 4) and (out[:, 0] == 0).all()  # CLS first, always
    ids = out[:, 1:, 0]
    assert all(len(set(row.tolist())) == keep for row in ids)  # distinct patches
    assert torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2])  # one clip: one subset
    images = dropout(tokens, frames=1)
    assert len({tuple(row.tolist()) for row in images[:, 1:, 0]}) > 1  # images: their own
    dropout.eval()
    assert torch.equal(dropout(tokens, frames=3), tokens)


def test_patch_dropout_ratio_per_modality_and_from_config():
    assert PATCH_DROPOUT == {"video": 0.3, "audio": 0.1, "depth": 0.5, "infrared": 0.5}
    for modality, ratio in PATCH_DROPOUT.items():
        enc = encoder(modality, layers=1)
        seen: list[int] = []
        enc.patch_dropout.register_forward_hook(
            lambda m, a, out, seen=seen: seen.append(out.shape[1])
        )
        enc.train()(example(modality))
        enc.eval()(example(modality))
        patches = 16
        assert enc.patch_dropout.ratio == ratio
        assert seen == [1 + int(patches * (1 - ratio)), 1 + patches]  # dropped in training only
    assert encoder("depth", layers=1, patch_dropout=0.0).patch_dropout.ratio == 0.0


def expected_trainable(modality: str, layers: int) -> set[str]:
    """LanguageBind's split: class embedding, post-LN, projection; LoRA A/B on the temporal
    attention (video: plus the temporal embedding and LN) or on the spatial attention."""
    names = {
        "vision_model.embeddings.class_embedding",
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
        "visual_projection.weight",
    }
    attn = "temporal_attn" if modality == "video" else "self_attn"
    for i in range(layers):
        layer = f"vision_model.encoder.base_model.model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            names |= {f"{layer}.{attn}.{proj}.lora_{ab}.default.weight" for ab in "AB"}
        if modality == "video":
            names |= {f"{layer}.temporal_embedding"}
            names |= {f"{layer}.temporal_layer_norm1.{w}" for w in ("weight", "bias")}
    return names


@pytest.mark.parametrize("modality", ["video", "audio", "depth", "infrared"])
def test_trainable_set_lora_targets_and_ranks_per_modality(modality):
    enc = encoder(modality)
    assert enc.lora_rank == LORA_RANK[modality] == {"video": 16, "audio": 16}.get(modality, 2)
    assert trainable_names(enc) == expected_trainable(modality, 2)
    params = dict(enc.named_parameters())
    attn = "temporal_attn" if modality == "video" else "self_attn"
    lora_a = params[
        f"vision_model.encoder.base_model.model.layers.0.{attn}.q_proj.lora_A.default.weight"
    ]
    assert lora_a.shape == (enc.lora_rank, 32)
    scaling = {m.scaling["default"] for m in enc.modules() if hasattr(m, "scaling")}
    assert scaling == {16 / enc.lora_rank}  # alpha 16
    for frozen in ("patch_embedding.weight", "position_embedding.weight"):
        assert not params[f"vision_model.embeddings.{frozen}"].requires_grad
    assert not params["vision_model.pre_layrnorm.weight"].requires_grad
    assert enc.visual_projection.weight.shape == (16, 32)  # CLIP's projection, no bias
    assert enc(example(modality)).shape == (2, 16)


def test_full_fine_tuning_trains_every_layer_but_not_the_stem():
    enc = encoder("depth", lora_rank=0)
    names = trainable_names(enc)
    assert "vision_model.encoder.layers.1.mlp.fc2.weight" in names
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in names
    assert not any(re.search(r"patch_embedding|position_embedding|pre_layrnorm", n) for n in names)


def test_every_video_layer_has_temporal_attention_initialised_from_its_spatial_attention():
    enc = encoder("video", lora_rank=0)
    layers = enc.layers()
    assert len(layers) == 2 and all(isinstance(layer, TemporalEncoderLayer) for layer in layers)
    for layer in layers:
        for name, tensor in layer.self_attn.state_dict().items():
            assert torch.equal(layer.temporal_attn.state_dict()[name], tensor)
        assert torch.equal(layer.temporal_layer_norm1.weight, layer.layer_norm1.weight)
        assert layer.temporal_embedding.shape == (1, 4, 32)
    assert len({layer.temporal_embedding.data_ptr() for layer in layers}) == 2  # per layer
    names = dict(enc.named_parameters())
    assert "vision_model.encoder.layers.1.temporal_attn.out_proj.weight" in names


def test_video_is_per_frame_cls_post_ln_then_the_mean_over_frames():
    enc = encoder("video", out_dim=24).eval()
    seen = []
    enc.vision_model.post_layernorm.register_forward_hook(lambda m, a, out: seen.append(out))
    x = example("video", batch=3)
    out = enc(x)
    assert seen[0].shape == (3 * 4, 32)  # one CLS per frame, after the post-LN
    expected = F.normalize(enc.visual_projection(seen[0].view(3, 4, 32).mean(1)), dim=-1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(enc(x), enc(x.flip(1)), atol=1e-4)  # frame order matters
    changed = x.clone()
    changed[0] += 1  # clips are independent of each other
    assert torch.allclose(enc(changed)[1:], out[1:], atol=1e-5)


def test_audio_position_table_is_resized_once_to_the_fbank_grid_and_frozen():
    enc = encoder("audio").eval()
    table = enc.vision_model.embeddings.position_embedding.weight
    assert table.shape == (2 * 8 + 1, 32) and not table.requires_grad
    assert enc(example("audio")).shape == (2, 16)
    with pytest.raises(ValueError, match="position table"):  # no per-call interpolation
        enc(torch.randn(1, 3, 16, 32))


def test_lora_trains_only_the_adapters_inside_the_encoder():
    enc = encoder("depth")
    base = {n: p.detach().clone() for n, p in enc.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        enc(example("depth", 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(base[n], p) for n, p in enc.named_parameters() if n in base)
    lora_b = [p for n, p in enc.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it did train


def save_clip(path, projection_dim: int = 16):
    from transformers import CLIPConfig, CLIPModel

    vision = {**{k: v for k, v in TINY.items() if k != "layers"}, "num_hidden_layers": 2}
    vision.update(intermediate_size=64, num_attention_heads=2)
    del vision["heads"]
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={**text, "num_attention_heads": 2},
        vision_config=vision,
        projection_dim=projection_dim,
    )
    model = CLIPModel(config)
    model.save_pretrained(path)
    return model


def test_vision_tower_and_projection_come_from_the_clip_checkpoint(tmp_path):
    saved = save_clip(tmp_path)
    enc = encoder("depth", init_from=str(tmp_path), hidden_size=999)  # sizes: the checkpoint's
    state = enc.state_dict()
    assert torch.equal(state["visual_projection.weight"], saved.visual_projection.weight)
    for name, tensor in saved.vision_model.state_dict().items():
        lora_name = name.replace("encoder.layers", "encoder.base_model.model.layers")
        lora_name = re.sub(r"(_proj)\.(weight|bias)$", r"\1.base_layer.\2", lora_name)
        assert torch.equal(state[f"vision_model.{lora_name}"], tensor), name
    with pytest.raises(ValueError, match="same CLIP checkpoint"):
        encoder("depth", out_dim=384, init_from=str(tmp_path))  # MiniLM's width: no fit


def test_vision_starts_from_the_text_towers_clip_model():
    from vidal.models import tiny as tiny_models

    enc = ModalityEncoder("infrared", tiny(lora_rank=0), 32, clip_source="tiny:clip")
    reference = tiny_models.build("clip").model
    assert torch.equal(enc.visual_projection.weight, reference.visual_projection.weight)
    ours = enc.vision_model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in reference.vision_model.state_dict().items())


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = encoder("video", lora_rank=0, patch_dropout=0.0)
    checkpointed = encoder("video", lora_rank=0, patch_dropout=0.0, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = example("video")
    for enc in (plain, checkpointed):
        enc(x).sum().backward()
    for (name, a), (_, b) in zip(
        plain.named_parameters(), checkpointed.named_parameters(), strict=True
    ):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_text_tower_is_frozen_sentence_transformers_minilm(text_tower, monkeypatch):
    from sentence_transformers import SentenceTransformer

    assert isinstance(text_tower.model, SentenceTransformer)
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


def test_text_cache_is_bounded_by_bytes_least_recently_used_out():
    vector = torch.zeros(384)
    entry = TextCache.size("caption 000", vector)
    cache = TextCache(max_bytes=10 * entry)
    for i in range(10):
        cache.put(f"caption {i:03d}", vector)
    assert len(cache) == 10 and cache.bytes <= cache.max_bytes
    assert cache.get("caption 000") is not None  # used: now the most recent
    for i in range(10, 15):
        cache.put(f"caption {i:03d}", vector)
    assert len(cache) == 10 and cache.bytes <= cache.max_bytes
    assert cache.get("caption 000") is not None
    assert all(cache.get(f"caption {i:03d}") is None for i in range(1, 6))  # the oldest went
    for i in range(100, 1000):
        cache.put(f"caption {i:03d}", vector)
    assert len(cache) == 10 and cache.bytes <= cache.max_bytes  # never grows past the bound


def test_text_tower_with_a_tiny_cache_still_embeds_every_text(text_tower, monkeypatch):
    texts = [f"a caption about thing number {i}" for i in range(6)]
    expected = text_tower._embed(texts)
    monkeypatch.setattr(text_tower, "cache", TextCache(max_bytes=2 * 2000))
    out = text_tower(texts + texts[:2])
    assert torch.allclose(out[:6], expected, atol=1e-6) and torch.equal(out[6], out[0])
    assert len(text_tower.cache) <= 2
