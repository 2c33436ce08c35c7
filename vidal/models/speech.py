"""Local (transformers) speech recognition, batched: a Whisper-class model
(`WhisperForConditionalGeneration`, e.g. openai/whisper-small; `tiny:whisper` for tests), one
`generate` call per batch. Whisper hears 30 s windows; vidal's clips are at most 20 s.
"""

from __future__ import annotations

import numpy as np

from vidal.models import tiny
from vidal.models.generate import Decoding, load_bundle, revision_of
from vidal.models.resolve import autocast


class SpeechRecognizer:
    def __init__(self, bundle: tiny.Bundle, source, device: str, precision: str):
        self.model = bundle.model.to(device).eval()
        self.extractor, self.tokenizer = bundle.image_processor, bundle.tokenizer
        self.source, self.device, self.precision = source, device, precision
        self.revision = revision_of(source, bundle.model)

    @classmethod
    def load(cls, ref: str, precision: str = "bf16", device: str | None = None):
        return cls(*load_bundle(ref, precision, device, _from_folder), precision)

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    def transcribe(self, waveforms: list[np.ndarray], decoding: Decoding) -> list[str]:
        """The transcript of every waveform (mono float32 at `sample_rate`); one generate."""
        import torch

        if not waveforms:
            return []
        features = self.extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )["input_features"].to(self.device, self.model.dtype)
        with torch.inference_mode(), autocast(self.device, self.precision):
            ids = self.model.generate(input_features=features, **decoding.hf_kwargs())
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts]


def _from_folder(folder: str, dtype) -> tiny.Bundle:
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, dtype=dtype)
    processor = AutoProcessor.from_pretrained(folder)
    return tiny.Bundle(model, processor.feature_extractor, processor.tokenizer)
