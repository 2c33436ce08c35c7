"""The model resolver: tiny, local folder and hub references, and the errors for the rest."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from vidal.config import ConfigError, load_config
from vidal.models import tiny
from vidal.models.clip import ClipEmbedder
from vidal.models.depth import DepthEstimator
from vidal.models.resolve import ModelNotFoundError, resolve, weights_digest

FRAMES = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """Downloads off and an empty Hugging Face cache: nothing can be found on the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


@pytest.mark.parametrize("family", ["clip", "glpn", "dpt", "depth_anything", "ast"])
def test_tiny_models_are_deterministic_and_leave_the_rng_alone(family):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, second = tiny.build(family), tiny.build(family)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    assert weights_digest(first.model) == weights_digest(second.model)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resolve(f"tiny:{family}").kind == "tiny"


def test_tiny_clip_tokenizer_matches_the_text_config():
    bundle = tiny.build("clip")
    text, tokenizer = bundle.model.config.text_config, bundle.tokenizer
    assert text.vocab_size == tokenizer.vocab_size == 30522
    assert (text.pad_token_id, text.bos_token_id, text.eos_token_id) == (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    )


def test_a_local_folder_written_by_save_pretrained_loads_the_same_model(tmp_path):
    clip = ClipEmbedder.load("tiny:clip")
    clip.save(tmp_path / "clip")
    again = ClipEmbedder.load(str(tmp_path / "clip"))
    assert again.source.kind == "local" and again.revision.startswith("sha256:")
    assert again.revision == ClipEmbedder.load(str(tmp_path / "clip")).revision  # content hash
    np.testing.assert_allclose(again.embed_frames([FRAMES]), clip.embed_frames([FRAMES]), atol=1e-5)
    texts = ["a red circle", "#synthetic"]
    np.testing.assert_allclose(again.embed_texts(texts), clip.embed_texts(texts), atol=1e-5)

    depth = DepthEstimator.load("tiny:glpn")
    depth.save(tmp_path / "glpn")
    loaded = DepthEstimator.load(str(tmp_path / "glpn"))
    assert not loaded.relative and loaded.source.kind == "local"
    np.testing.assert_allclose(
        loaded.predict([FRAMES], [(48, 64)])[0], depth.predict([FRAMES], [(48, 64)])[0], atol=1e-5
    )


def test_a_cached_hub_model_loads_offline_with_its_commit_as_revision(offline_empty_cache):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_empty_cache / "models--acme--tiny-clip"
    DepthEstimator.load("tiny:dpt").save(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = DepthEstimator.load("acme/tiny-clip")
    assert model.source.kind == "hub" and model.revision == commit and model.relative


def test_an_uncached_hub_model_offline_is_one_clear_error(offline_empty_cache):
    with pytest.raises(ModelNotFoundError) as info:
        ClipEmbedder.load("openai/clip-vit-large-patch14")
    message = str(info.value)
    assert "'openai/clip-vit-large-patch14'" in message and "HF_HUB_OFFLINE" in message
    assert "save_pretrained" in message and "hf download openai/clip-vit-large-patch14" in message
    assert "\n" not in message
    assert info.value.__suppress_context__  # no chained traceback from huggingface_hub


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("tiny:resnet", "unknown tiny model 'tiny:resnet'; known: tiny:clip"),
        ("/no/such/model", "model folder '/no/such/model' does not exist"),
        ("a/b/c", "is neither a folder nor a hub id"),
        ("", "empty model reference"),
    ],
)
def test_references_that_do_not_exist(ref, expected):
    with pytest.raises(ModelNotFoundError, match=re.escape(expected)):
        resolve(ref)


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        resolve(str(tmp_path))


def test_bad_model_references_are_config_errors():
    with pytest.raises(ConfigError, match="depth.model: unknown tiny model"):
        load_config("demo", ["depth.model=tiny:nope"])
    with pytest.raises(ConfigError, match="vl_filter.precision"):
        load_config("demo", ["vl_filter.precision=int4"])
    with pytest.raises(ConfigError, match="vl_filter.threshold"):
        load_config("demo", ["vl_filter.threshold=2"])
