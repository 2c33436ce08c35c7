"""An audio tagger through transformers' audio-classification classes (the Audio Spectrogram
Transformer fine-tuned on AudioSet, `MIT/ast-finetuned-audioset-10-10-0.4593`, or any
`AutoModelForAudioClassification` checkpoint; `tiny:ast` for tests): the sound events of a
clip's soundtrack, batched, one forward per batch.

AudioSet is multi-label (a clip has speech *and* music), so scores are sigmoids, not a softmax.
The feature extractor pads or cuts each waveform to the model's input length (AST: 10.24 s);
vidal's clips are at most 20 s, and the first 10 s is what is tagged.
"""

from __future__ import annotations

import numpy as np

from vidal.models import tiny
from vidal.models.resolve import autocast, resolve, select_device, weights_digest


class AudioTagger:
    def __init__(self, bundle: tiny.Bundle, source, device: str, precision: str):
        self.model = bundle.model.to(device).eval()
        self.extractor = bundle.image_processor  # the audio feature extractor
        self.source, self.device, self.precision = source, device, precision
        self.revision = source.revision or weights_digest(bundle.model)
        self.labels = self.model.config.id2label

    @classmethod
    def load(cls, ref: str, precision: str = "bf16", device: str | None = None) -> AudioTagger:
        source = resolve(ref)
        device = device or select_device()
        if source.kind == "tiny":
            bundle = tiny.build(source.location)
        else:
            from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

            model = AutoModelForAudioClassification.from_pretrained(source.location)
            bundle = tiny.Bundle(model, AutoFeatureExtractor.from_pretrained(source.location))
        return cls(bundle, source, device, precision)

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    def tag(self, waveforms: list[np.ndarray], top_k: int) -> list[list[tuple[str, float]]]:
        """Per waveform (mono float32 at `sample_rate`): the top_k (label, score), best first."""
        import torch

        if not waveforms:
            return []
        inputs = self.extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode(), autocast(self.device, self.precision):
            scores = torch.sigmoid(self.model(**inputs).logits.float()).cpu().numpy()
        out = []
        for row in scores:
            best = np.argsort(-row, kind="stable")[:top_k]
            out.append([(str(self.labels[int(i)]), round(float(row[i]), 4)) for i in best])
        return out
