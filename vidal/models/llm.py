"""A local (transformers) LLM for caption enhancement, batched: one `generate` call per batch
(left padding). Chat models get their chat template; a model without one (the tiny model)
gets the prompt as it is.
"""

from __future__ import annotations

from vidal.models import tiny
from vidal.models.generate import Decoding, load_bundle, revision_of
from vidal.models.resolve import autocast


class TextGenerator:
    def __init__(self, bundle: tiny.Bundle, source, device: str, precision: str):
        self.model = bundle.model.to(device).eval()
        self.tokenizer = bundle.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.source = source
        self.revision = revision_of(source, bundle.model)
        self.device, self.precision = device, precision

    @classmethod
    def load(cls, ref: str, precision: str = "bf16", device: str | None = None) -> TextGenerator:
        return cls(*load_bundle(ref, precision, device, _from_folder), precision)

    @property
    def ref(self) -> str:
        return self.source.ref

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, prompts: list[str], decoding: Decoding) -> list[str]:
        """The completion of every prompt; one generate call."""
        import torch

        if not prompts:
            return []
        tokens = self.tokenizer(
            [self._text(p) for p in prompts],
            padding=True,
            truncation=True,
            return_tensors="pt",
            add_special_tokens=not getattr(self.tokenizer, "chat_template", None),
        )
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                pad_token_id=self.tokenizer.pad_token_id,
                **decoding.hf_kwargs(),
            )
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        return [t.strip() for t in texts]


def _from_folder(folder: str, dtype) -> tiny.Bundle:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return tiny.Bundle(model, None, AutoTokenizer.from_pretrained(folder))
