"""audio_caption: what the soundtrack sounds like, as text (LanguageBind's `sound_mplug`).

Views in KEY.json `text`:
  audio_tags     the sound events an audio tagger hears (AudioSet classes from an Audio
                 Spectrogram Transformer through transformers; `tiny:ast` for tests), best
                 first: "Speech, Music, Dog"
  audio_caption  with `rewrite` (default), an LLM's one-sentence description of the soundtrack
                 from those tags and the clip's title, hashtags and video caption (prompt
                 `pipelines/prompts/audio_caption.txt`; backends, guardrails and lineage as in
                 the `enhance` stage); without it, or when the guardrails reject the LLM's
                 output, the tag sentence "Sounds: speech, music, dog."
  speech         with `asr` set (a Whisper-class model; `tiny:whisper` for tests), what is said,
                 one batched `generate` per batch; also given to the LLM. An empty transcript
                 or one the guardrails reject (Whisper loops on music) gives no view.

It reads the `audio` stage's 16 kHz FLAC, so `audio` runs before it. A clip without audio gets
neither view (and no error); one whose audio the tagger cannot read fails with the reason.
Tags scoring under `min_score` are left out (the best one is always kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidal.media.audio import read_waveform
from vidal.media.ffmpeg import MediaError
from vidal.models.generate import Decoding, check_model
from vidal.models.resolve import check_reference
from vidal.sample import Sample
from vidal.stages.captions import (
    GenerativeStage,
    Generator,
    ModelRunner,
    prompt_values,
    render,
)
from vidal.stages.outputs import Outputs
from vidal.stages.registry import register
from vidal.text_guard import Guard, clean_output, loop


class SpeechRunner:
    """The ASR model, loaded; records itself in the lineage like a ModelRunner."""

    def __init__(self, ref: str, precision: str, decoding: Decoding):
        from vidal.models.speech import SpeechRecognizer

        self.net = SpeechRecognizer.load(ref, precision)
        self.ref, self.decoding = ref, decoding

    def record(self) -> dict:
        return {
            "backend": "transformers",
            "model": self.ref,
            "revision": self.net.revision,
            "decoding": self.decoding.record(),
        }


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


@register
@dataclass
class AudioCaptionStage(GenerativeStage):
    """Writes the `audio_caption` (and `speech`) views into the captions stage's views."""

    name = "audio_caption"
    check_always = False  # prompt files: checked when the pipeline runs the stage
    outputs = Outputs(reads={"audio": ("file",)}, optional_reads={"captions": ("views",)})

    tagger: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    top_k: int = 5
    min_score: float = 0.1
    rewrite: bool = True  # an LLM turns the tags (+ title, video caption) into a sentence
    asr: str = ""  # a Whisper-class model reference: the `speech` view; "" = no ASR
    asr_decoding: Decoding = field(default_factory=lambda: Decoding(max_new_tokens=96))
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
        if self.asr:
            models["speech"] = f"transformers:{self.asr}"
        if self.rewrite:
            models["audio_caption"] = f"{self.llm.backend}:{self.llm.model}"
        return models

    def check(self) -> str | None:
        problem = check_reference(self.tagger)
        if problem:
            return f"audio_caption.tagger: {problem}"
        if self.top_k < 1 or not 0 <= self.min_score <= 1:
            return "audio_caption: top_k must be >= 1 and min_score in [0, 1]"
        if self.asr:
            problem = check_model(self.asr, ("whisper",)) or self.asr_decoding.check()
            if problem:
                return f"audio_caption.asr: {problem}"
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
        if self.asr:
            ready["speech"] = SpeechRunner(self.asr, self.precision, self.asr_decoding)
            if ready["speech"].net.sample_rate != tagger.net.sample_rate:
                raise ValueError("the tagger and the ASR model hear different sample rates")
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
        samples, waves = [s for s, _ in items], [w for _, w in items]
        tags = self.ready["audio_tags"].tags(waves)
        speech = self._speech(samples, waves)
        texts, prompts = self._rewrite(samples, tags, speech) if self.rewrite else (None, None)
        for i, sample in enumerate(samples):

            def fill(sample, i=i):
                views = sample.fields.setdefault("captions", {}).setdefault("views", {})
                views["audio_tags"] = ", ".join(label for label, _ in tags[i])
                if speech[i]:
                    views["speech"] = speech[i]
                fallback = tag_sentence(tags[i])
                views["audio_caption"] = (
                    self.guarded(sample, "audio_caption", texts[i], prompts[i], fallback)
                    if texts is not None
                    else fallback
                )
                sample.fields[self.name] = {"tags": [list(t) for t in tags[i]]}

            self.run_views(sample, fill)
        return batch

    def _speech(self, samples: list[Sample], waves) -> list[str]:
        """Per sample, the transcript that passed the guardrails, or ""."""
        runner = self.ready.get("speech")
        if runner is None:
            return [""] * len(samples)
        texts = runner.net.transcribe(waves, runner.decoding)
        return [self._guard_speech(s, t) for s, t in zip(samples, texts, strict=True)]

    def _guard_speech(self, sample: Sample, text: str) -> str:
        """A transcript is what people said, not an assistant's answer: only Whisper's failure
        modes are rejected (loops on music, runaway length); silence is simply no view."""
        text = clean_output(text)
        guard = self.guard
        problem = loop(text, guard.loop_ngram, guard.loop_max_repeats, guard.loop_min_distinct)
        if problem is None and len(text) > guard.max_chars:
            problem = f"too_long: {len(text)} chars > {guard.max_chars}"
        elif problem is not None:
            problem = f"loop: {problem}"
        if problem and text:
            captions = sample.fields.setdefault("captions", {})
            captions.setdefault("rejected", {}).setdefault("speech", []).append(problem)
            return ""
        return text

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

    def _rewrite(self, samples: list[Sample], tags, speech) -> tuple[list, list[str]]:
        runner = self.ready["audio_caption"]
        prompts = [
            render(
                runner.template, **prompt_values(s), audio_tags=_tag_list(t), speech=said or "none"
            )
            for s, t, said in zip(samples, tags, speech, strict=True)
        ]
        decoding = runner.spec.decoding
        if runner.net is not None:
            return runner.net.generate(prompts, decoding), prompts
        from vidal.models.openai_http import user_message

        conversations = [user_message(p) for p in prompts]
        return runner.client.chat_many(conversations, **decoding.openai_kwargs()), prompts


def _tag_list(tags: list[tuple[str, float]]) -> str:
    return ", ".join(f"{label} ({score:.2f})" for label, score in tags)
