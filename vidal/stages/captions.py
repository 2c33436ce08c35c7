"""captions: the multi-view text of a clip, from its keyframes.

Views (in KEY.json `text`; the trainer reads them by name; `pack.caption_view` picks KEY.txt):
  raw                title + hashtags (always there)
  keyframe_captions  one caption per keyframe (8), from an image captioner (the paper: OFA-large,
                     prompt " what does the image describe?", 480x480, 5 beams,
                     no_repeat_ngram_size 3; here BLIP-class through transformers, or any VLM
                     behind an OpenAI-compatible server), prompt `keyframe_caption.txt`
                     (vidal10m.yaml: `keyframe_caption_ofa.txt`, the paper's prompt as BLIP's
                     text prefix, frames at `image_size` 480, the paper's decoding). OFA itself
                     does not run here: its model class lives in OFA-Sys' fork of transformers,
                     not in `transformers`.
  video_caption      a video-language model given the keyframes and a prompt with the title and
                     hashtags (the paper: mPLUG-Owl; here Qwen2-VL-class), `video_caption.txt`
The `enhance` stage adds `enhanced` (an LLM's rewrite). ASR is not a view here.

Backends, per generator: `transformers` (local; one `generate` call per batch for all frames
or all clips; bf16 autocast on GPU) or `openai` (an OpenAI-compatible chat completions server:
vLLM, SGLang, Ollama, llama.cpp server, hosted APIs; `concurrency` requests in flight, frames
as base64 JPEG data URLs). Every output passes the guardrails (vidal.text_guard); a rejected
output is recorded (`fields.captions.rejected`, counted per reason in the shard stats) and the
view falls back to the previous one (a keyframe caption and the video caption to `raw`,
`enhanced` to the video caption). A request that fails for good (after retries) fails the
sample (`errors.captions = "http_5xx: ..."`), so `--retry-failed` redoes it.

Each sample's lineage records, per view: backend, model id, revision, prompt file and its
sha256, and the decoding settings. The prompt's hash is part of the stage's config hash, so
editing a prompt file recomputes the stage on the next build.
"""

from __future__ import annotations

import hashlib
import logging
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from vidal.models.generate import Decoding, check_model
from vidal.models.resolve import PRECISIONS, ModelNotFoundError
from vidal.resources import PROMPTS_DIR
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext, record_model_load
from vidal.stages.keyframes import load_keyframes, skip_without_video
from vidal.stages.outputs import Column, Outputs
from vidal.stages.registry import register
from vidal.text import raw_caption, text_views
from vidal.text_guard import Guard, check, clean_output

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "openai")
# how requests run, never what they return: excluded from the config hash
_REQUEST_FIELDS = ("timeout_s", "max_retries", "concurrency", "api_key_env")


@dataclass
class Generator:
    """One generative model of a caption stage: where it runs, its prompt, its decoding."""

    backend: str = "transformers"  # transformers | openai
    model: str = ""  # transformers: a model reference; openai: the server's model name
    prompt: str = ""  # a file in pipelines/prompts/, or a path
    decoding: Decoding = field(default_factory=Decoding)
    image_size: int = 0  # frames resized to this square before the model (0: the model's own)
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend: the server's /v1 root
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (if any)
    timeout_s: float = 120.0
    max_retries: int = 4
    concurrency: int = 8

    def check(self, where: str, tiny_families: tuple[str, ...]) -> str | None:
        if self.backend not in BACKENDS:
            return f"{where}.backend must be one of {BACKENDS}, got {self.backend!r}"
        if self.backend == "transformers":
            problem = check_model(self.model, tiny_families)
        elif not self.model:
            problem = "the server's model name is empty"
        elif not self.base_url.startswith(("http://", "https://")):
            problem = f"base_url must be an http(s) URL, got {self.base_url!r}"
        else:
            problem = None
        problem = problem or self.decoding.check()
        if problem:
            return f"{where}: {problem}"
        try:
            self.prompt_text()
        except OSError as exc:
            return f"{where}.prompt: {exc}"
        return None

    def prompt_path(self) -> Path:
        path = Path(self.prompt).expanduser()
        return path if path.is_absolute() or path.exists() else PROMPTS_DIR / self.prompt

    def prompt_text(self) -> str:
        if not self.prompt:
            return ""
        path = self.prompt_path()
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {self.prompt!r} not found (looked at {path})")
        return path.read_text(encoding="utf-8").strip()

    def prompt_sha(self) -> str:
        return hashlib.sha256(self.prompt_text().encode()).hexdigest()

    def params(self) -> dict:
        from dataclasses import asdict

        values = {k: v for k, v in asdict(self).items() if k not in _REQUEST_FIELDS}
        return {**values, "prompt_sha256": self.prompt_sha()}

    def client(self):
        from vidal.models.openai_http import OpenAIClient

        return OpenAIClient(
            self.base_url,
            self.model,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            concurrency=self.concurrency,
        )


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, **values) -> str:
    """A prompt template with {title}, {hashtags}, {raw}, ... filled in (unknown names: "")."""
    formatter = string.Formatter()
    out = []
    for literal, name, _spec, _conv in formatter.parse(template):
        out.append(literal)
        if name is not None:
            out.append(str(_Fields(values)[name]))
    return "".join(out)


class ModelRunner:
    """A generator made ready to run: the local model, or the HTTP client."""

    def __init__(self, spec: Generator, kind: str, precision: str, **load_args):
        self.spec, self.kind = spec, kind
        self.template = spec.prompt_text()
        self.prompt_sha = hashlib.sha256(self.template.encode()).hexdigest()
        self.net = self.client = None
        if spec.backend == "openai":
            self.client = spec.client()
            self.revision = None
        else:
            self.net = _load(kind, spec.model, precision, **load_args)
            self.revision = self.net.revision

    def record(self) -> dict:
        """What a view records in each sample's lineage."""
        info = {
            "backend": self.spec.backend,
            "model": self.spec.model,
            "revision": self.revision,
            "prompt": self.spec.prompt,
            "prompt_text": self.template,
            "prompt_sha256": self.prompt_sha,
            "decoding": self.spec.decoding.record(),
            "image_size": self.spec.image_size or None,
        }
        if self.client is not None:  # what an OpenAI-style request cannot carry
            info["decoding_not_sent"] = self.spec.decoding.not_in_openai()
        return info


def _load(kind: str, ref: str, precision: str, **load_args):
    from vidal.models.captioner import ImageCaptioner, VideoCaptioner
    from vidal.models.llm import TextGenerator

    cls = {"image": ImageCaptioner, "video": VideoCaptioner, "text": TextGenerator}[kind]
    return cls.load(ref, precision, **load_args)


class GenerativeStage(Stage):
    """Setup and failure handling shared by the caption stages: models load once per worker;
    one that cannot load fails every sample alike (the build ends with that sentence)."""

    uses_model: ClassVar[bool] = True
    # a server that times out, drops the connection or answers 5xx after every retry is down,
    # not the sample's fault: those samples are redone by the next run
    environmental_reasons: ClassVar[frozenset[str]] = Stage.environmental_reasons | {
        "timeout",
        "connection",
        "http_5xx",
    }

    def runners(self) -> dict[str, ModelRunner]:
        raise NotImplementedError

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        self.load_error = None
        self.ready: dict[str, ModelRunner] = {}
        started = time.time()
        try:
            self.ready = self.runners()
        except ModelNotFoundError as exc:
            self.load_error = ("model_unavailable", str(exc))
        except Exception as exc:
            self.load_error = ("model_load_failed", f"{type(exc).__name__}: {exc}")
        if self.load_error:
            log.error("stage %s: %s", self.name, self.load_error[1])
            return
        seconds = round(time.time() - started, 3)
        for view, runner in self.ready.items():
            info = {"view": view, "precision": self.precision, "seconds": seconds}
            record_model_load(self.store, self.name, {**runner.record(), **info})

    def guarded(self, sample: Sample, view: str, text, prompt: str, fallback: str) -> str:
        """The cleaned output when it passes the guardrails, else `fallback` (recorded)."""
        if isinstance(text, Exception):
            raise text
        text = clean_output(text)
        problem = check(text, self.guard, prompt)
        if problem is None:
            return text
        reason, detail = problem
        captions = sample.fields.setdefault("captions", {})
        captions.setdefault("rejected", {}).setdefault(view, []).append(f"{reason}: {detail}")
        return fallback

    def run_views(self, sample: Sample, fn) -> None:
        """Run `fn(sample)`; a failed request fails the sample, like any stage error."""
        from vidal.models.openai_http import RequestError

        try:
            fn(sample)
        except RequestError as exc:
            sample.fail(self.name, exc.reason, exc.detail)
        except Exception as exc:
            sample.fail(self.name, "exception", f"{type(exc).__name__}: {exc}")
        else:
            sample.lineage[self.name] = {
                **self.lineage(),
                "views": {view: r.record() for view, r in self.ready.items()},
            }

    def check_common(self) -> str | None:
        if self.precision not in PRECISIONS:
            return f"{self.name}.precision must be one of {PRECISIONS}, got {self.precision!r}"
        problem = self.guard.check_config()
        return f"{self.name}.guard: {problem}" if problem else None


def square_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """(N, H, W, 3) uint8 frames resized (bicubic) to side x side, as OFA's 480x480 input."""
    from PIL import Image

    resample = Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), resample)) for f in frames])


def sample_raw(sample: Sample) -> str:
    return raw_caption(sample.meta.get("title", ""), sample.meta.get("hashtags", []))


def prompt_values(sample: Sample) -> dict:
    views = dict(sample.fields.get("captions", {}).get("views", {}))
    frames = views.get("keyframe_captions") or []
    unique = list(dict.fromkeys(f for f in frames if f))
    return {
        "title": sample.meta.get("title", ""),
        "hashtags": " ".join(sample.meta.get("hashtags", [])),
        "raw": sample_raw(sample),
        "video_caption": views.get("video_caption") or sample_raw(sample),
        "keyframe_captions": "; ".join(unique),
    }


def guardrail_rejections(sample: Sample) -> list[str]:
    """`view: reason` for every caption output the guardrails rejected (vidal.text_guard)."""
    rejected = sample.fields.get("captions", {}).get("rejected", {})
    return [f"{view}: {r.split(':', 1)[0]}" for view, reasons in rejected.items() for r in reasons]


@register
@dataclass
class CaptionsStage(GenerativeStage):
    """Its views reach KEY.json as `text` and KEY.txt through the packer (vidal.text.text_views),
    so it declares columns only."""

    name = "captions"
    check_always = False  # prompt files: checked when the pipeline runs the stage
    outputs = Outputs(
        columns=(
            Column("caption_views", pa.list_(pa.string()), lambda s: sorted(text_views(s))),
            Column("guardrail_rejections", pa.list_(pa.string()), guardrail_rejections),
        ),
        reads={"keyframes": ("file", "count")},
    )

    keyframe_captions: bool = True  # the keyframe_captions view
    video_caption: bool = True  # the video_caption view
    keyframe: Generator = field(
        default_factory=lambda: Generator(
            model="Salesforce/blip-image-captioning-large",
            prompt="keyframe_caption.txt",
            decoding=Decoding(max_new_tokens=30),
        )
    )
    video: Generator = field(
        default_factory=lambda: Generator(
            model="Qwen/Qwen2-VL-7B-Instruct",
            prompt="video_caption.txt",
            decoding=Decoding(max_new_tokens=96),
        )
    )
    frame_short_side: int = 224  # frames' short side for the local video model
    frames: str = "keyframes"  # keyframes | full (keyframes.full_frames: OFA saw full frames)
    precision: str = "bf16"
    guard: Guard = field(default_factory=Guard)
    batch_size: int = 8

    @property
    def model(self) -> dict:
        """The models per view (dataset.json `models`)."""
        models = {}
        if self.keyframe_captions:
            models["keyframe_captions"] = f"{self.keyframe.backend}:{self.keyframe.model}"
        if self.video_caption:
            models["video_caption"] = f"{self.video.backend}:{self.video.model}"
        return models

    def check(self) -> str | None:
        if self.frames not in ("keyframes", "full"):
            return f"captions.frames must be 'keyframes' or 'full', got {self.frames!r}"
        if not (self.keyframe_captions or self.video_caption):
            return "captions: enable keyframe_captions or video_caption (or drop the stage)"
        if self.keyframe_captions:
            problem = self.keyframe.check("captions.keyframe", ("blip",))
            if problem:
                return problem
        if self.video_caption:
            problem = self.video.check("captions.video", ("qwen2_vl",))
            if problem:
                return problem
        return self.check_common()

    def params(self) -> dict:
        values = super().params()
        for name in ("keyframe", "video"):
            values[name] = getattr(self, name).params()
        return values

    def runners(self) -> dict[str, ModelRunner]:
        ready = {}
        if self.keyframe_captions:
            ready["keyframe_captions"] = ModelRunner(self.keyframe, "image", self.precision)
        if self.video_caption:
            ready["video_caption"] = ModelRunner(
                self.video, "video", self.precision, frame_short_side=self.frame_short_side
            )
        return ready

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        todo = [s for s in batch if s.ok]
        if self.load_error:
            for sample in todo:
                sample.fail(self.name, *self.load_error)
            return batch
        items = [(s, f) for s in todo if (f := self._keyframes(s)) is not None]
        if not items:
            return batch
        clips = [frames for _, frames in items]
        frame_out = self._keyframe_captions(clips) if self.keyframe_captions else None
        video_out, prompts = self._video_captions(items) if self.video_caption else (None, None)
        for i, (sample, _) in enumerate(items):

            def fill(sample, i=i):
                raw = sample_raw(sample)
                views = {"raw": raw}
                if frame_out is not None:
                    runner = self.ready["keyframe_captions"]
                    views["keyframe_captions"] = [
                        self.guarded(sample, "keyframe_captions", t, runner.template, raw)
                        for t in frame_out[i]
                    ]
                if video_out is not None:
                    views["video_caption"] = self.guarded(
                        sample, "video_caption", video_out[i], prompts[i], raw
                    )
                captions = sample.fields.setdefault("captions", {})
                captions["views"] = {**captions.get("views", {}), **views}

            self.run_views(sample, fill)
        return batch

    def _keyframes(self, sample: Sample) -> np.ndarray | None:
        if skip_without_video(self.name, sample):
            return None  # audio only: no frames to caption, and not a failure
        fields = sample.fields.get("keyframes")
        if not fields:
            sample.fail(self.name, "no_keyframes", "the keyframes stage must run before")
            return None
        full = self.frames == "full"
        if full and "full" not in fields:
            sample.fail(self.name, "no_full_frames", "set keyframes.full_frames: true")
            return None
        try:
            return load_keyframes(self.store, fields, full=full)
        except Exception as exc:
            sample.fail(self.name, "keyframes_unreadable", f"{type(exc).__name__}: {exc}")
            return None

    def _keyframe_captions(self, clips: list[np.ndarray]) -> list[list]:
        """Per clip, per frame: the caption text or the request's error."""
        runner = self.ready["keyframe_captions"]
        decoding = runner.spec.decoding
        side = runner.spec.image_size
        if runner.net is not None:
            size = (side, side) if side else None
            return runner.net.caption(clips, runner.template, decoding, size)
        from vidal.models.openai_http import user_message

        clips = [square_frames(frames, side) for frames in clips] if side else clips
        flat = runner.client.chat_many(
            [user_message(runner.template, [frame]) for frames in clips for frame in frames],
            **decoding.openai_kwargs(),
        )
        out, at = [], 0
        for frames in clips:
            out.append(flat[at : at + len(frames)])
            at += len(frames)
        return out

    def _video_captions(self, items) -> tuple[list, list[str]]:
        runner = self.ready["video_caption"]
        decoding = runner.spec.decoding
        prompts = [render(runner.template, **prompt_values(s)) for s, _ in items]
        clips = [frames for _, frames in items]
        if runner.net is not None:
            return runner.net.caption(clips, prompts, decoding), prompts
        from vidal.models.openai_http import user_message

        conversations = [user_message(p, list(c)) for p, c in zip(prompts, clips, strict=True)]
        return runner.client.chat_many(conversations, **decoding.openai_kwargs()), prompts
