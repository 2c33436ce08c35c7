"""enhance: an LLM rewrites the video caption into one faithful, dense description, using the
title, hashtags and keyframe captions (the paper's ChatGPT polish; LanguageBind's
`polish_mplug`). View `enhanced`; prompt `pipelines/prompts/enhance.txt` ({title},
{hashtags}, {raw}, {video_caption}, {keyframe_captions}).

Backends as in the captions stage: a local causal LM through transformers (one `generate`
call per batch) or an OpenAI-compatible server. A rejected output (vidal.text_guard) falls back
to the video caption (the previous view; `raw` when there is none) and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidal.models.generate import Decoding
from vidal.sample import Sample
from vidal.stages.captions import (
    GenerativeStage,
    Generator,
    ModelRunner,
    prompt_values,
    render,
    sample_raw,
)
from vidal.stages.keyframes import skip_without_video
from vidal.stages.outputs import Outputs
from vidal.stages.registry import register
from vidal.text_guard import Guard


@register
@dataclass
class EnhanceStage(GenerativeStage):
    """Writes the `enhanced` view into the captions stage's views (see CaptionsStage)."""

    name = "enhance"
    check_always = False  # prompt files: checked when the pipeline runs the stage
    outputs = Outputs(optional_reads={"captions": ("views",)})

    llm: Generator = field(
        default_factory=lambda: Generator(
            model="Qwen/Qwen2.5-7B-Instruct",
            prompt="enhance.txt",
            decoding=Decoding(max_new_tokens=160),
        )
    )
    precision: str = "bf16"
    guard: Guard = field(default_factory=Guard)
    batch_size: int = 16

    @property
    def model(self) -> dict:
        """The model of the view (dataset.json `models`)."""
        return {"enhanced": f"{self.llm.backend}:{self.llm.model}"}

    def check(self) -> str | None:
        return self.llm.check("enhance.llm", ("llama",)) or self.check_common()

    def params(self) -> dict:
        return {**super().params(), "llm": self.llm.params()}

    def runners(self) -> dict[str, ModelRunner]:
        return {"enhanced": ModelRunner(self.llm, "text", self.precision)}

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        # an audio-only sample has no video caption to rewrite: skipped, not failed
        todo = [s for s in batch if s.ok and not skip_without_video(self.name, s)]
        if self.load_error:
            for sample in todo:
                sample.fail(self.name, *self.load_error)
            return batch
        if not todo:
            return batch
        runner = self.ready["enhanced"]
        prompts = [render(runner.template, **prompt_values(s)) for s in todo]
        decoding = runner.spec.decoding
        if runner.net is not None:
            outputs = runner.net.generate(prompts, decoding)
        else:
            from vidal.models.openai_http import user_message

            outputs = runner.client.chat_many(
                [user_message(p) for p in prompts], **decoding.openai_kwargs()
            )
        for sample, prompt, text in zip(todo, prompts, outputs, strict=True):

            def fill(sample, prompt=prompt, text=text):
                views = sample.fields.setdefault("captions", {}).setdefault("views", {})
                previous = views.get("video_caption") or sample_raw(sample)
                views.setdefault("raw", sample_raw(sample))
                views["enhanced"] = self.guarded(sample, "enhanced", text, prompt, previous)

            self.run_views(sample, fill)
        return batch
