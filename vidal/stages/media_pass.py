"""One decode per clip across the media stages (keyframes, audio, clip): vidal.media.onepass.

The rule, by the pipeline's stage order: media stages with no filter stage between them (one
that drops samples, `Funnel.drops`: vl_filter with a threshold, dedup, refilter; or a
dataset-level decision) share ONE ffmpeg pass, run by the first of them, the leader. So
`[probe, keyframes, ..., audio, clip]` decodes each clip once for its keyframes, FLAC and mp4;
with a dropping `vl_filter` after keyframes the keyframes are read by seeking (cheap, every
clip) and the audio stage's pass writes FLAC and mp4 together for the clips the filter kept.

Each output is written at its own stage's payload path and noted in `fields["media_pass"]`
with that stage's config hash; the stage adopts it when the hash is its own, else (a changed
setting on a resumed build, a pass that fell back) it produces its output as before. The
stages' fields, tar members and KEY.json stay what they were.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from vidal.media.encode import EncodeSettings
from vidal.media.ffmpeg import MediaError
from vidal.media.frames import FramePlan
from vidal.media.onepass import PassOutputs, decode_once
from vidal.sample import Sample
from vidal.stages.base import Stage, payload_path
from vidal.stages.decision import DatasetStage

MEDIA_STAGES = ("keyframes", "audio", "clip")
SUFFIX = {"audio": ".flac", "clip": ".mp4"}
FIELD = "media_pass"


@dataclass(frozen=True)
class MediaPass:
    """The later media stages whose outputs the leader's pass writes too."""

    audio: Stage | None = None
    clip: Stage | None = None


def is_filter(stage: Stage) -> bool:
    """Does the stage drop samples in a build (so a clip encoded before it may be wasted)?
    A per-sample filter whose `threshold` is null only scores (vl_filter in vidal10m.yaml)."""
    if isinstance(stage, DatasetStage):
        return True
    if getattr(stage, "threshold", 0.0) is None:
        return False
    funnel = stage.outputs.funnel
    return bool(funnel and funnel.drops)


def plan_media_pass(stages: list[Stage]) -> list[Stage]:
    """Give the first media stage of each filter-free run of them a `media_pass` naming the
    later ones; every other media stage gets None. Returns `stages`."""
    groups, current = [], []
    for stage in stages:
        if is_filter(stage):
            groups.append(current)
            current = []
        elif stage.name in MEDIA_STAGES:
            current.append(stage)
    groups.append(current)
    for group in groups:
        for stage in group:
            stage.media_pass = None
        followers = {s.name: s for s in group[1:] if s.name != "keyframes"}
        if followers:
            group[0].media_pass = MediaPass(followers.get("audio"), followers.get("clip"))
    return stages


def run_pass(
    leader: Stage, sample: Sample, path: str, plan: FramePlan, short_sides: tuple[int, ...] = ()
) -> PassOutputs:
    """The leader's one pass: frames at `short_sides`, plus the followers' outputs for this
    sample (no clip without video, no FLAC without audio), each staged at its own path."""
    info = sample.fields["probe"]
    made = _made_here(leader, info)
    rels = {s.name: payload_path(s.name, sample, SUFFIX[s.name]) for s in made}
    clip = next((s for s in made if s.name == "clip"), None)
    audio = next((s for s in made if s.name == "audio"), None)
    settings = clip.encode_settings(info) if clip else EncodeSettings()
    with contextlib.ExitStack() as stack:
        tmp = {n: stack.enter_context(leader.store.staging(r)) for n, r in rels.items()}
        out = decode_once(
            path,
            plan,
            short_sides,
            tmp.get("clip"),
            settings,
            tmp.get("audio"),
            audio.sample_rate if audio else 16000,
            has_audio=audio is not None,
            timeout=leader.ffmpeg_timeout(sample),
        )
    made_here = {s.name: {"file": rels[s.name], "config": s.config_hash()} for s in made}
    sample.fields[FIELD] = {**sample.fields.get(FIELD, {}), **made_here}
    return out


def _made_here(leader: Stage, info: dict) -> list[Stage]:
    """The leader itself (audio or clip) and its followers that have something to write."""
    mp: MediaPass | None = getattr(leader, "media_pass", None)
    wanted = [leader, *(s for s in (mp.audio, mp.clip) if s is not None)] if mp else [leader]
    return [
        s
        for s in wanted
        if (s.name == "clip" and info.get("has_video", True))
        or (s.name == "audio" and info.get("has_audio"))
    ]


def pass_without_frames(stage, sample: Sample) -> str | None:
    """Run the pass for `stage` with no keyframes (audio and clip only) and adopt its own
    output; None when the pass fails: each stage on its own then says what is wrong."""
    info = sample.fields["probe"]
    plan = FramePlan([], [], info["width"], info["height"])
    try:
        with stage.media(sample) as path:
            run_pass(stage, sample, path, plan)
    except MediaError:
        return None
    return adopted(stage, sample)


def adopted(stage: Stage, sample: Sample) -> str | None:
    """The store path of this stage's output written by an earlier stage's pass, when it was
    made with this stage's settings and is there."""
    entry = (sample.fields.get(FIELD) or {}).get(stage.name)
    if not entry or entry.get("config") != stage.config_hash():
        return None
    return entry["file"] if stage.store.exists(entry["file"]) else None
