"""Model loading and batched inference wrappers; nothing here knows about pipelines.

`resolve(ref)` finds a model (local folder, Hugging Face hub id, or `tiny:<family>`);
`ClipEmbedder.load(ref)` and `DepthEstimator.load(ref)` load one onto the GPU when there is
one (bf16/fp16 autocast) or the CPU. Importing this package does not import torch.
"""

from vidal.models.resolve import (
    TINY_FAMILIES,
    ModelNotFoundError,
    ModelSource,
    check_reference,
    resolve,
)

__all__ = [
    "TINY_FAMILIES",
    "ModelNotFoundError",
    "ModelSource",
    "check_reference",
    "resolve",
]
