"""LanguageBind's checkpoint layout, in and out, on tiny configs: an exported vidal checkpoint
has the parameter names and shapes of LanguageBind's CLIP-based model classes (as reconstructed
in vidal/train/languagebind.py, without LanguageBind's code at hand), and training starts from
such a folder or from a LanguageBind training checkpoint (DDP + peft names) with the same
outputs."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from vidal.cli import main
from vidal.train import languagebind
from vidal.train.config import DataConfig, EncoderConfig, TrainConfig
from vidal.train.encoders import ModalityEncoder
from vidal.train.loop import Model

TINY = {"hidden_size": 32, "layers": 2, "heads": 4, "patch_size": 8, "image_size": 32}
DATA = {"num_frames": 4, "audio_bins": 16, "audio_frames": 96, "image_size": 32}  # audio: 2 x 12


def data(modality: str) -> DataConfig:
    return DataConfig(modality=modality, **DATA)


def example(modality: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if modality == "video":
        return torch.randn(2, 4, 3, 32, 32, generator=gen)
    if modality == "audio":
        return torch.randn(2, 3, 16, 96, generator=gen)
    return torch.randn(2, 3, 32, 32, generator=gen)


def trained_checkpoint(tmp_path, modality: str) -> tuple:
    """A `vidal train` checkpoint of the tiny CLIP pair (text tower `tiny:clip`), with LoRA
    weights that are not zero, so that merging them matters."""
    cfg = TrainConfig(text_model="tiny:clip", data=data(modality), encoder=EncoderConfig(**TINY))
    torch.manual_seed(0)
    model = Model(cfg, 32, clip_source="tiny:clip")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
        model.loss.logit_scale.fill_(3.0)
    path = tmp_path / "last.pt"
    torch.save({"config": asdict(cfg), "model": model.state_dict()}, path)
    return path, model


def languagebind_names(modality: str) -> dict[str, tuple]:
    """LanguageBind's model = transformers' CLIPModel with, per vision layer, temporal_attn,
    temporal_layer_norm1 and temporal_embedding (video), and the audio position table
    resized to the fbank's patch grid."""
    from vidal.models import tiny

    shapes = {k: tuple(v.shape) for k, v in tiny.build("clip").model.state_dict().items()}
    if modality == "video":
        for i in range(2):
            layer = f"vision_model.encoder.layers.{i}"
            shapes[f"{layer}.temporal_embedding"] = (1, 4, 32)
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{layer}.temporal_attn.{name}.weight"] = (32, 32)
                shapes[f"{layer}.temporal_attn.{name}.bias"] = (32,)
            shapes[f"{layer}.temporal_layer_norm1.weight"] = (32,)
            shapes[f"{layer}.temporal_layer_norm1.bias"] = (32,)
    if modality == "audio":
        shapes["vision_model.embeddings.position_embedding.weight"] = (2 * 12 + 1, 32)
    return shapes


@pytest.mark.parametrize("modality", ["video", "audio", "depth", "infrared"])
def test_export_has_languagebinds_names_and_shapes_and_round_trips(tmp_path, modality):
    checkpoint, model = trained_checkpoint(tmp_path, modality)
    out = languagebind.export(checkpoint, tmp_path / "lb")
    state = load_file(str(out / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in state.items()} == languagebind_names(modality)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == languagebind.MODEL_TYPES[modality]
    vision = config["vision_config"]
    assert vision["add_time_attn"] == (modality == "video")
    assert vision["lora_r"] == {"video": 16, "audio": 16}.get(modality, 2)
    if modality == "audio":
        assert (vision["num_mel_bins"], vision["target_length"]) == (16, 96)

    # back in: the same encoder outputs (LoRA merged), the same temperature
    cfg = EncoderConfig(**TINY, init_from=str(out))
    again = Model(TrainConfig(text_model="tiny:clip", data=data(modality), encoder=cfg), 32)
    model.eval(), again.eval()
    x = example(modality)
    with torch.no_grad():
        assert torch.allclose(again.encoder(x), model.encoder(x), atol=1e-5)
    assert again.loss.logit_scale.item() == pytest.approx(3.0)


def test_starts_from_a_languagebind_training_checkpoint_with_ddp_and_peft_names(tmp_path):
    """LanguageBind trains with peft around vision_model.encoder under DDP: names like
    module.vision_model.encoder.base_model.model.layers.0.temporal_attn.q_proj.lora_A...;
    read back with LoRA merged, the encoder gives the same outputs."""
    _, model = trained_checkpoint(tmp_path, "video")
    state = {f"module.{k}": v for k, v in model.encoder.state_dict().items()}
    state["module.logit_scale"] = torch.tensor(3.0)
    assert any(".base_model.model." in k and "lora_A" in k for k in state)
    path = tmp_path / "epoch_16.pt"
    torch.save({"epoch": 16, "state_dict": state}, path)
    assert languagebind.is_layout(str(path))
    encoder = ModalityEncoder(
        "video", EncoderConfig(**TINY, init_from=str(path)), 32, data("video")
    )
    x = example("video")
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(x), model.encoder.eval()(x), atol=1e-5)
    assert encoder.start_logit_scale == pytest.approx(3.0)


def test_a_checkpoint_of_another_modality_is_refused(tmp_path):
    checkpoint, _ = trained_checkpoint(tmp_path, "depth")
    out = languagebind.export(checkpoint, tmp_path / "lb")
    with pytest.raises(RuntimeError, match="temporal"):  # depth has no temporal attention
        ModalityEncoder("video", EncoderConfig(**TINY, init_from=str(out)), 32, data("video"))


def test_export_command(tmp_path, capsys):
    checkpoint, _ = trained_checkpoint(tmp_path, "depth")
    argv = ["export", "languagebind-model", "--checkpoint", str(checkpoint)]
    assert main([*argv, "--to", str(tmp_path / "lb")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "lb")
    assert sorted(p.name for p in (tmp_path / "lb").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert main(["export", "languagebind-model", "--to", str(tmp_path / "x")]) == 2
