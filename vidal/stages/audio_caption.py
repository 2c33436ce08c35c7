"""audio_caption: what the soundtrack sounds like, as text (LanguageBind's `sound_mplug`).

Two views in KEY.json `text`:
  audio_tags     the sound events an audio tagger hears (AudioSet classes from an Audio
                 Spectrogram Transformer through transformers; `tiny:ast` for tests), best
                 first: "Speech, Music, Dog"
  audio_caption  with `rewrite` (default), an LLM's one-sentence description of the soundtrack
                 from those tags and the clip's title, hashtags and video caption (prompt
                 `pipelines/prompts/audio_caption.txt`; backends, guardrails and lineage as in
                 the `enhance` stage); without it, or when the guardrails reject the LLM's
                 output, the tag sentence "Sounds: speech, music, dog."

It reads the `audio` stage's 16 kHz FLAC, so `audio` runs before it. A clip without audio gets
neither view (and no error); one whose audio the tagger cannot read fails with the reason.
Tags scoring under `min_score` are left out (the best one is always kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidal.media.audio import read_waveform
from vidal.media.ffmpeg import MediaError
from vidal.models.generate import Decoding
from vidal.models.resolve import check_reference
from vidal.sample import Sample
from vidal.stages.captions import (
    GenerativeStage,
    Generator,
    ModelRunner,
    prompt_values,
    render,
)
from vidal.text_guard import Guard


class TaggerRunner:
    """The audio tagger, loaded; records itself in the lineage like a ModelRunner."""

    def __init__(self, ref: str, precision: str, top_k: int, min_score: float):
        from vidal.models.audio_tagger import AudioTagger

        self.net = AudioTagger.load(ref, precision)
        self.ref, self.top_k, self.min_score = ref, top_k, min_score

    def record(self) -> dict:
        return {
            "backend": "transformers",
            "model": self.ref,
            "revision": self.net.revision,
            "top_k": self.top_k,
            "min_score": self.min_score,
        }

    def tags(self, waveforms) -> list[list[tuple[str, float]]]:
        out = []
        for ranked in self.net.tag(waveforms, self.top_k):
            kept = [t for t in ranked if t[1] >= self.min_score]
            out.append(kept or ranked[:1])
        return out


def tag_sentence(tags: list[tuple[str, float]]) -> str:
    return "Sounds: " + ", ".join(label.lower() for label, _ in tags) + "."


@dataclass
class AudioCaptionStage(GenerativeStage):
    name = "audio_caption"

    tagger: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    top_k: int = 5
    min_score: float = 0.1
    rewrite: bool = True  # an LLM turns the tags (+ title, video caption) into a sentence
    llm: Generator = field(
        default_factory=lambda: Generator(
            model="Qwen/Qwen2.5-7B-Instruct",
            prompt="audio_caption.txt",
            decoding=Decoding(max_new_tokens=64),
        )
    )
    precision: str = "bf16"
    guard: Guard = field(default_factory=Guard)
    batch_size: int = 16

    @property
    def model(self) -> dict:
        """The models per view (dataset.json `models`)."""
        models = {"audio_tags": f"transformers:{self.tagger}"}
        if self.rewrite:
            models["audio_caption"] = f"{self.llm.backend}:{self.llm.model}"
        return models

    def check(self) -> str | None:
        problem = check_reference(self.tagger)
        if problem:
            return f"audio_caption.tagger: {problem}"
        if self.top_k < 1 or not 0 <= self.min_score <= 1:
            return "audio_caption: top_k must be >= 1 and min_score in [0, 1]"
        if self.rewrite:
            problem = self.llm.check("audio_caption.llm", ("llama",))
            if problem:
                return problem
        return self.check_common()

    def params(self) -> dict:
        return {**super().params(), "llm": self.llm.params()}

    def runners(self) -> dict:
        tagger = TaggerRunner(self.tagger, self.precision, self.top_k, self.min_score)
        ready = {"audio_tags": tagger}
        if self.rewrite:
            ready["audio_caption"] = ModelRunner(self.llm, "text", self.precision)
        return ready

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        todo = [s for s in batch if s.ok and self._has_audio(s)]
        if self.load_error:
            for sample in todo:
                sample.fail(self.name, *self.load_error)
            return batch
        items = [(s, w) for s in todo if (w := self._waveform(s)) is not None]
        if not items:
            return batch
        tags = self.ready["audio_tags"].tags([w for _, w in items])
        samples = [s for s, _ in items]
        texts, prompts = self._rewrite(samples, tags) if self.rewrite else (None, None)
        for i, sample in enumerate(samples):

            def fill(sample, i=i):
                views = sample.fields.setdefault("captions", {}).setdefault("views", {})
                views["audio_tags"] = ", ".join(label for label, _ in tags[i])
                fallback = tag_sentence(tags[i])
                views["audio_caption"] = (
                    self.guarded(sample, "audio_caption", texts[i], prompts[i], fallback)
                    if texts is not None
                    else fallback
                )
                sample.fields[self.name] = {"tags": [list(t) for t in tags[i]]}

            self.run_views(sample, fill)
        return batch

    def _has_audio(self, sample: Sample) -> bool:
        audio = sample.fields.get("audio")
        if audio is None:
            sample.fail(self.name, "no_audio_stage", "the audio stage must run before")
            return False
        return bool(audio.get("present"))

    def _waveform(self, sample: Sample):
        rate = self.ready["audio_tags"].net.sample_rate
        try:
            with self.store.local_copy(sample.fields["audio"]["file"]) as path:
                return read_waveform(path, rate)
        except MediaError as exc:
            sample.fail(self.name, exc.reason, exc.detail)
        except (OSError, KeyError) as exc:
            sample.fail(self.name, "audio_unreadable", f"{type(exc).__name__}: {exc}")
        return None

    def _rewrite(self, samples: list[Sample], tags) -> tuple[list, list[str]]:
        runner = self.ready["audio_caption"]
        prompts = [
            render(runner.template, **prompt_values(s), audio_tags=_tag_list(t))
            for s, t in zip(samples, tags, strict=True)
        ]
        decoding = runner.spec.decoding
        if runner.net is not None:
            return runner.net.generate(prompts, decoding), prompts
        from vidal.models.openai_http import user_message

        conversations = [user_message(p) for p in prompts]
        return runner.client.chat_many(conversations, **decoding.openai_kwargs()), prompts


def _tag_list(tags: list[tuple[str, float]]) -> str:
    return ", ".join(f"{label} ({score:.2f})" for label, score in tags)
