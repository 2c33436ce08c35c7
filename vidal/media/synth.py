"""Synthetic videos made with ffmpeg's lavfi sources, for tests, the demo and benchmarks.

No media is committed to the repository: every clip a test, demo or benchmark needs is generated
here, in a fraction of a second, with content that its caption truthfully describes ("a red
circle moving from left to right"), so a contrastive model can actually learn from it. The
bad-input fixtures (empty, truncated, text-as-mp4, 1x1, 8000x8000, gray, 10-bit, ...) exercise
the error paths of the ingest code with real files rather than mocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidal.media.ffmpeg import MediaError, run_ffmpeg

__all__ = [
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "caption",
    "caption_grid",
    "hashtags",
    "make_audio_only",
    "make_bench_clip",
    "make_clip",
    "make_clip_set",
    "make_empty_file",
    "make_gray_or_10bit",
    "make_huge_video",
    "make_long_clip",
    "make_one_frame_video",
    "make_text_as_mp4",
    "make_tiny_video",
    "make_truncated_mp4",
]

# RGB of each colour a shape can have; ffmpeg's own "green" is 0x008000, too dark to read well.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "orange": (255, 128, 0),
}

# geq alpha expression of each shape inside its W x H tile (255 = opaque).
SHAPES: dict[str, str] = {
    "circle": "255*lte((X-(W-1)/2)^2+(Y-(H-1)/2)^2,(W/2)^2)",
    "square": "255",
    "triangle": "255*lte(abs(2*X-(W-1)),(Y+1)*W/H)",  # apex at the top centre
}

# Start and end of the shape's (x, y) as fractions of the free room (W-w, H-h).
MOTIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "left_to_right": ((0.0, 0.5), (1.0, 0.5)),
    "right_to_left": ((1.0, 0.5), (0.0, 0.5)),
    "top_to_bottom": ((0.5, 0.0), (0.5, 1.0)),
    "bottom_to_top": ((0.5, 1.0), (0.5, 0.0)),
    "static": ((0.5, 0.5), (0.5, 0.5)),
}

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def _atomic(path: PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`, renamed over it only if the block succeeds.

    Readers (and a crashed run) never see a half-written file. The temp name keeps the suffix so
    ffmpeg still picks the muxer from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ffmpeg_to(
    path: PathLike, args: list[str], *, fmt: str | None = None, timeout: float = 300.0
) -> Path:
    """Run ffmpeg with `args` + an output file, atomically.

    The muxer is `fmt`, else guessed by ffmpeg from the suffix, else mp4 when there is none.
    """
    fmt = fmt or ("" if Path(path).suffix else "mp4")
    with _atomic(path) as tmp:
        run_ffmpeg([*args, *(["-f", fmt] if fmt else []), str(tmp)], timeout=timeout)
    return Path(path)


def _hex(colour: str) -> str:
    """ffmpeg colour string: our RGB for the names in COLOURS, anything else passed through."""
    if colour in COLOURS:
        return "0x{:02x}{:02x}{:02x}".format(*COLOURS[colour])
    return colour


def caption(shape: str, colour: str, motion: str) -> str:
    """Natural-English title of a clip, e.g. "a green square moving from top to bottom"."""
    if motion == "static":
        return f"a static {colour} {shape}"
    start, end = motion.split("_to_")
    return f"a {colour} {shape} moving from {start} to {end}"


def hashtags(shape: str, colour: str, motion: str) -> list[str]:
    """Hashtags that name the same facts as the title, so tag-based retrieval works too."""
    return [f"#{colour}", f"#{shape}", "#" + motion.replace("_", ""), "#synthetic"]


def _shape_graph(shape: str, colour: str, motion: str, size: int, fps: int, span: float) -> str:
    """Filtergraph that overlays the moving shape (input 1) on the background (input 0)."""
    r, g, b = COLOURS[colour]
    (x0, y0), (x1, y1) = MOTIONS[motion]
    k = f"min(t/{span:.6f},1)"
    x = f"(W-w)*({x0}+({x1 - x0})*{k})"
    y = f"(H-h)*({y0}+({y1 - y0})*{k})"
    tile = (
        f"color=c=black@0:s={size}x{size}:r={fps},format=rgba,"
        f"geq=r={r}:g={g}:b={b}:a='{SHAPES[shape]}'"
    )
    over = f"overlay=x='{x}':y='{y}':eval=frame:shortest=1"
    return f"{tile}[shape];[0:v][shape]{over},format=yuv420p[v]"


def _check(shape: str, colour: str, motion: str) -> None:
    """Fail early, with the allowed values, instead of with an ffmpeg expression error."""
    for value, allowed in ((shape, SHAPES), (colour, COLOURS), (motion, MOTIONS)):
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {sorted(allowed)}")


def _video_args(codec: str, preset: str, fps: int, keyint_s: float) -> list[str]:
    """Encoder args with a fixed GOP, so keyframes fall every `keyint_s` (seek tests rely on it)."""
    gop = str(max(1, round(fps * keyint_s)))
    args = ["-c:v", codec, "-pix_fmt", "yuv420p", "-g", gop, "-keyint_min", gop]
    args += ["-sc_threshold", "0"]
    if codec in ("libx264", "libx265"):
        args += ["-preset", preset]
    return args


def _sine(duration: float, tone_hz: float) -> list[str]:
    """lavfi input of a mono 44.1 kHz sine tone."""
    return ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100:duration={duration}"]


_AAC = ["-c:a", "aac", "-ac", "1", "-ar", "44100"]
_X264_FAST = ["-c:v", "libx264", "-preset", "ultrafast"]


def make_clip(
    path: PathLike,
    *,
    duration: float = 3.0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    shape: str = "circle",
    colour: str = "red",
    motion: str = "left_to_right",
    background: str = "black",
    audio: bool = True,
    tone_hz: float = 440,
    keyint_s: float = 2.0,
    codec: str = "libx264",
    preset: str = "ultrafast",
) -> dict[str, Any]:
    """Write an mp4 of a coloured shape moving over a plain background; return its metadata.

    Video is yuv420p (h264 by default); audio, when asked for, is a mono 44.1 kHz AAC sine tone.
    The returned title and hashtags describe exactly what is on screen.
    """
    _check(shape, colour, motion)
    size = max(2, min(width, height) // 4 // 2 * 2)
    span = max(duration - 1.0 / fps, 1e-3)  # the last frame shows the shape at its end point
    args = ["-f", "lavfi", "-i", f"color=c={_hex(background)}:s={width}x{height}:r={fps}"]
    args += _sine(duration, tone_hz) if audio else []
    args += ["-filter_complex", _shape_graph(shape, colour, motion, size, fps, span), "-map", "[v]"]
    args += ["-map", "1:a", *_AAC] if audio else []
    args += [*_video_args(codec, preset, fps, keyint_s), "-t", f"{duration}"]
    _ffmpeg_to(path, args, fmt="mp4")
    return {
        "title": caption(shape, colour, motion),
        "hashtags": hashtags(shape, colour, motion),
        "shape": shape,
        "colour": colour,
        "motion": motion,
        "duration": duration,
        "width": width,
        "height": height,
        "fps": fps,
        "has_audio": audio,
    }


def caption_grid(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` distinct (shape, colour, motion) combos, each attribute as evenly used as possible.

    The attribute counts (3 shapes, 8 colours, 5 motions) are pairwise coprime, so walking
    i -> (i mod 3, i mod 8, i mod 5) visits all 120 combos once (Chinese remainder theorem) and
    any run of n consecutive i uses each value of each attribute n/k times, +-1. The seed
    shuffles the value lists and the starting point. Each combo also carries its title.
    """
    shapes, colours, motions = list(SHAPES), list(COLOURS), list(MOTIONS)
    total = len(shapes) * len(colours) * len(motions)
    if not 0 <= n <= total:
        raise ValueError(f"n={n}: there are only {total} distinct shape/colour/motion combos")
    rng = random.Random(seed)
    for values in (shapes, colours, motions):
        rng.shuffle(values)
    start = rng.randrange(total)
    out = []
    for i in range(start, start + n):
        s, c, m = shapes[i % len(shapes)], colours[i % len(colours)], motions[i % len(motions)]
        out.append({"shape": s, "colour": c, "motion": m, "title": caption(s, c, m)})
    return out


def _write_json(path: PathLike, obj: Any) -> Path:
    """Write JSON atomically (a sidecar must never be seen half-written)."""
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    return Path(path)


def make_clip_set(
    folder: PathLike,
    n: int,
    *,
    seed: int = 0,
    duration: tuple[float, float] = (2.0, 4.0),
    size: tuple[int, int] = (320, 240),
    audio_every: int = 2,
    **kw: Any,
) -> list[Path]:
    """Write `n` captioned clips `synth-000.mp4`, ... with `synth-000.json` sidecars.

    Captions come from caption_grid (distinct, balanced). Durations are drawn from the seed;
    clip i has audio only when i % audio_every == 0, so sets hold both kinds. Extra keyword
    arguments go to make_clip.
    """
    if audio_every < 1:
        raise ValueError("audio_every must be >= 1")
    folder = Path(folder)
    rng = random.Random(f"durations-{seed}")
    paths = []
    for i, combo in enumerate(caption_grid(n, seed)):
        video = folder / f"synth-{i:03d}.mp4"
        secs = round(rng.uniform(*duration), 2)
        meta = make_clip(
            video,
            duration=secs,
            width=size[0],
            height=size[1],
            audio=i % audio_every == 0,
            shape=combo["shape"],
            colour=combo["colour"],
            motion=combo["motion"],
            **kw,
        )
        keys = ("title", "hashtags", "shape", "colour", "motion")
        _write_json(video.with_suffix(".json"), {k: meta[k] for k in keys})
        paths.append(video)
    return paths


# --- bad-input fixtures --------------------------------------------------------------------


def make_empty_file(path: PathLike) -> Path:
    """A zero-byte file: the very first thing a demuxer must reject."""
    with _atomic(path) as tmp:
        tmp.write_bytes(b"")
    return Path(path)


def make_truncated_mp4(
    path: PathLike, src: PathLike, *, keep_header: bool = False, fraction: float = 0.4
) -> Path:
    """The first `fraction` of a real mp4, as left by an interrupted download.

    `src` is first remuxed so the layout is known: with `keep_header` the moov atom is at the
    front (faststart), so the file opens but its media data ends early; without it moov is at
    the end and is cut off, so the file does not open at all.
    """
    with tempfile.TemporaryDirectory() as tmpdir:
        remuxed = Path(tmpdir) / "remuxed.mp4"
        flags = ["-movflags", "+faststart"] if keep_header else []
        run_ffmpeg(["-i", str(src), "-map", "0", "-c", "copy", *flags, str(remuxed)])
        data = remuxed.read_bytes()
    with _atomic(path) as tmp:
        tmp.write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def make_text_as_mp4(path: PathLike) -> Path:
    """A text file wearing a video's name: extensions must not be trusted."""
    with _atomic(path) as tmp:
        tmp.write_text("This is not a video, whatever its name says.\n" * 20, encoding="utf-8")
    return Path(path)


def make_audio_only(path: PathLike, duration: float = 2.0) -> Path:
    """An mp4/m4a (by suffix) holding an AAC sine tone and no video stream."""
    return _ffmpeg_to(path, [*_sine(duration, 440), *_AAC, "-t", f"{duration}"])


def make_tiny_video(path: PathLike) -> Path:
    """A decodable 1x1 video (1 s, 10 fps); h264 in yuv444p, as yuv420p needs even sizes."""
    src = ["-f", "lavfi", "-i", "color=c=red:s=1x1:r=10:d=1"]
    return _ffmpeg_to(path, [*src, *_X264_FAST, "-pix_fmt", "yuv444p"])


def make_huge_video(path: PathLike, width: int = 8000, height: int = 8000) -> Path:
    """A real one-frame solid-colour video whose header says width x height.

    x264 accepts 8000x8000 (beyond level 6.2, which it only warns about); mjpeg is the fallback
    for an ffmpeg whose x264 refuses.
    """
    src = ["-f", "lavfi", "-i", f"color=c=blue:s={width}x{height}:r=1", "-frames:v", "1"]
    try:
        return _ffmpeg_to(path, [*src, *_X264_FAST, "-pix_fmt", "yuv420p"])
    except MediaError:
        return _ffmpeg_to(path, [*src, "-c:v", "mjpeg", "-pix_fmt", "yuvj420p"])


def make_long_clip(path: PathLike, duration: float = 30.0) -> Path:
    """A clip longer than the 20 s maximum, small (160x120, 5 fps) so it encodes fast."""
    make_clip(path, duration=duration, width=160, height=120, fps=5, keyint_s=2.0)
    return Path(path)


def make_gray_or_10bit(path: PathLike, pix_fmt: str = "gray") -> Path:
    """A 1 s 160x120 clip that decodes to `pix_fmt` (a format converters often get wrong).

    yuv420p10le is h264 High 10 (x264 here is 8/10-bit); other formats use lossless ffv1,
    because h264 4:0:0 "gray" decodes as yuvj420p and would not test what it says.
    """
    args = ["-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=1", "-pix_fmt", pix_fmt]
    if pix_fmt == "yuv420p10le":
        args += [*_X264_FAST, "-profile:v", "high10"]
    else:
        args += ["-c:v", "ffv1"]
    return _ffmpeg_to(path, args)


def make_one_frame_video(path: PathLike) -> Path:
    """An h264 video with exactly one frame (duration ~0: frame-sampling edge case)."""
    src = ["-f", "lavfi", "-i", "color=c=green:s=64x48:r=25", "-frames:v", "1"]
    return _ffmpeg_to(path, [*src, *_X264_FAST, "-pix_fmt", "yuv420p"])


# --- benchmark clips -----------------------------------------------------------------------


def make_bench_clip(
    path: PathLike, duration: float, seed: int, keyint_s: float | None = 2.0
) -> Path:
    """A 1280x720 30 fps h264+aac clip (keyframe every 2 s; `keyint_s` None: x264's own
    keyframe choice, at most every 250 frames) that costs real work to decode.

    testsrc2 (moving, detailed, ~3 Mbit/s at veryfast) is hue-shifted by the seed and gets a
    seeded shape moving over it, and a seeded tone, so clips differ. Noise filters would make it
    far bigger and several times slower to generate, for no benefit to a decode benchmark.
    """
    rng = random.Random(f"bench-{seed}")
    shape, colour = rng.choice(list(SHAPES)), rng.choice(list(COLOURS))
    motion = rng.choice([m for m in MOTIONS if m != "static"])
    fps, span = 30, max(duration - 1 / 30, 1e-3)
    src = f"testsrc2=s=1280x720:r={fps}:d={duration},hue=h={rng.randrange(360)}"
    graph = _shape_graph(shape, colour, motion, 180, fps, span)
    args = ["-f", "lavfi", "-i", src, *_sine(duration, rng.randrange(220, 880))]
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "1:a", *_AAC]
    if keyint_s is None:
        args += [*_X264_DEFAULT_GOP, "-preset", "veryfast", "-t", f"{duration}"]
    else:
        args += [*_video_args("libx264", "veryfast", fps, keyint_s), "-t", f"{duration}"]
    return _ffmpeg_to(path, args, timeout=max(300.0, 30 * duration))


_X264_DEFAULT_GOP = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]  # keyint 250, scenecut on
