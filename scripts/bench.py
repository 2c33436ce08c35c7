"""`make bench`: media throughput of vidal as ratios against ffmpeg measured in the same run.

Over two corpora of generated 720p h264+aac clips (5-20 s, cached in <out>/clips and
<out>/clips-longgop): a keyframe every 2 s, and x264's default GOP (keyint 250, scenecut on):

- reference: single-threaded ffmpeg decoding each clip's video in full;
- keyframes (exact and snap, each backend): time as a ratio of the reference;
- audio extraction, the clip re-encode (the build's clip settings) and the one pass of
  vidal.media.onepass (keyframes + FLAC + mp4 in one ffmpeg): clips/s;
- the whole build (`vidal build`: the default runner, or `--runner ray|processes`): clips/s, peak
  RSS of the driver, mp4 bytes and how many kept clips have audio;
- the limit: per clip one single-threaded ffmpeg that decodes once and writes the same outputs
  as the build's media stages (the mp4 and FLAC at the clip stage's settings, the 8 frames
  tiled at the keyframes' size and, as vidal10m keeps full frames for its model stages, at the
  source's size), as many in parallel as there are cores. The build's ratio to it says how
  much the pipeline itself costs.
- encoder settings: preset/crf/tune candidates on the first clips of the 2-s-GOP corpus (CPU
  seconds, mp4 bytes, PSNR against the source downscaled as the clip stage scales it) as ratios
  to the peer's setting (video2dataset's: ffmpeg's libx264 defaults), the least CPU with bytes
  and PSNR no worse marked, and one 2-thread ffmpeg at a time against two 1-thread ones.

The single-process measurements run clip by clip, interleaved, so load from other processes on
the machine hits the reference and the measured code alike; CPU-time ratios hold up under load
better than wall-time ones. Results go to stdout as JSON and tables, and to <out>/bench.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from vidal.config import load_config
from vidal.media.audio import extract_audio
from vidal.media.encode import EncodeSettings, encode_clip, even_size
from vidal.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from vidal.media.frames import plan_frames, sample_keyframes, scaled_size, uniform_indices
from vidal.media.onepass import decode_once
from vidal.media.probe import probe
from vidal.media.synth import make_bench_clip
from vidal.stages.clip import ClipStage
from vidal.stages.keyframes import KeyframesStage

SIZE = (1280, 720)
FRAMES = 8
# the media stages, whose outputs the limit reproduces (model stages need weights)
BUILD_OVERRIDES = ["stages=[probe,keyframes,audio,clip]"]
BUILD_PIPELINE = "vidal10m"
BUILD_CONFIG = load_config(BUILD_PIPELINE, BUILD_OVERRIDES)  # what `vidal build` runs below
REFERENCE = "full decode (ffmpeg -threads 1)"
TARGETS = {"exact": 0.4, "snap": 0.1, "build_vs_limit": 0.95}


# --- clips --------------------------------------------------------------------------------


def clip_duration(i: int) -> float:
    """Clip i's length: a golden-ratio sequence, spread evenly over [5, 20) s for any count,
    so `--clips 8` reuses the first clips of the default set."""
    return round(5.0 + 15.0 * ((i * 0.6180339887) % 1.0), 2)


def _make_one(args: tuple[str, int, float | None]) -> str:
    path, i, keyint_s = args
    if not os.path.exists(path):
        make_bench_clip(path, clip_duration(i), seed=i, keyint_s=keyint_s)
    return path


def ensure_clips(folder: Path, n: int, keyint_s: float | None = 2.0) -> list[Path]:
    """The first `n` bench clips, generated (one process per core) where not cached;
    `keyint_s` None: x264's default GOP (a keyframe at most every 250 frames)."""
    paths = [folder / f"clip-{i:04d}.mp4" for i in range(n)]
    todo = [(str(p), i, keyint_s) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        print(f"generating {len(todo)} clips in {folder} ...", file=sys.stderr)
        started = time.perf_counter()
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_make_one, todo))
        print(f"  done in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return paths


# --- single-process measurements ----------------------------------------------------------


def full_decode(path: Path) -> None:
    """The reference: the clip's whole video stream decoded by one ffmpeg thread."""
    run_ffmpeg(["-threads", "1", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"])


def keyframe_jobs() -> dict:
    """name -> fn(path): every keyframe sampler this machine has."""
    short = KeyframesStage.short_side
    backends = ["pyav"] + (["decord"] if _has("decord") else [])
    return {
        f"keyframes {mode} ({backend})": (
            lambda p, m=mode, b=backend: sample_keyframes(p, FRAMES, m, short, b, SIZE)
        )
        for backend in backends
        for mode in ("exact", "snap")
    }


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def encode_settings(duration: float) -> EncodeSettings:
    """The build's clip settings, as the clip stage builds them."""
    return BUILD_CONFIG.stage("clip").encode_settings({"duration": duration})


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (waited-for) children, user + system.

    Ratios of CPU time hold up on a loaded machine, where wall time also measures how the
    scheduler shares the cores: a multi-threaded ffmpeg gets a bigger share than one thread.
    """
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def measure_single(paths: list[Path], tmp: Path, only_keyframes: bool = False) -> dict:
    """Wall and CPU seconds per measurement, summed over the clips; each clip runs every
    measurement in turn, so a burst of load elsewhere hits them all alike."""
    jobs = {REFERENCE: full_decode, **keyframe_jobs()}
    if not only_keyframes:
        jobs["probe (PyAV)"] = probe
        jobs["audio (extract_audio)"] = lambda p: extract_audio(p, tmp / "a.flac", 16000)
        jobs["clip encode (encode_clip)"] = lambda p: encode_clip(
            p, tmp / "c.mp4", SIZE, encode_settings(probe(p).duration), has_audio=True
        )
        jobs["one pass: keyframes + FLAC + mp4"] = lambda p: one_pass(p, tmp)
    totals = {name: {"wall": 0.0, "cpu": 0.0} for name in jobs}
    for k, path in enumerate(paths):
        for name, fn in jobs.items():
            with Timer() as t:
                fn(path)
            totals[name]["wall"] += t.wall
            totals[name]["cpu"] += t.cpu
        if (k + 1) % 20 == 0:
            print(f"  single-process: {k + 1}/{len(paths)} clips", file=sys.stderr)
    return totals


def one_pass(path: Path, tmp: Path) -> None:
    """The keyframes stage's one pass (vidal.media.onepass), as a pipeline without a filter
    between keyframes and clip runs it: a demux for the frame numbers, then one ffmpeg."""
    info = probe(path)
    plan = plan_frames(path, FRAMES, "exact", info.duration)
    settings = encode_settings(info.duration)
    decode_once(path, plan, tile_sides(), tmp / "p.mp4", settings, tmp / "p.flac", has_audio=True)


def tile_sides() -> tuple[int, ...]:
    """The short sides the build's keyframes stage tiles its frames at (0: the source's)."""
    keyframes = BUILD_CONFIG.stage("keyframes")
    return (keyframes.short_side,) + ((keyframes.full_short_side,) if keyframes.full_frames else ())


# --- the limit: one ffmpeg per clip, one decode, every output -----------------------------


def limit_command(path: Path, out: Path) -> list[str]:
    """One single-threaded ffmpeg writing what the build's media stages write for the clip (in
    the build's pipeline): the mp4 and FLAC at the clip stage's settings, and the 8 frames
    tiled at the keyframes stage's short side, plus at the source's size when that pipeline
    keeps full frames for its model stages (vidal10m does)."""
    info = probe(path)
    clip = BUILD_CONFIG.stage("clip")
    width, height = even_size(info.width, info.height, clip.short_side)
    picks = uniform_indices(info.num_frames, FRAMES)
    select = "+".join(f"eq(n\\,{i})" for i in picks)
    sides = tile_sides()
    graph = f"[0:v]split={1 + len(sides)}[v0]" + "".join(f"[f{k}]" for k in range(len(sides)))
    graph += f";[v0]scale={width}:{height}:flags=bicubic,setsar=1[v]"
    for k, side in enumerate(sides):
        w, h = scaled_size(info.width, info.height, side or None)
        graph += f";[f{k}]select='{select}',scale={w}:{h}:flags=bicubic,tile={FRAMES}x1[t{k}]"
    one = ["-threads", "1"]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += [*one, "-filter_threads", "1", "-filter_complex_threads", "1", "-i", str(path)]
    cmd += ["-filter_complex", graph, "-map", "[v]", "-map", "0:a:0", "-c:v", "libx264"]
    cmd += ["-preset", clip.preset, "-crf", str(clip.crf), "-pix_fmt", "yuv420p", *one]
    cmd += ["-tune", clip.tune] if clip.tune else []
    cmd += ["-c:a", "aac", "-b:a", clip.audio_bitrate, "-ac", "1", "-movflags", "+faststart"]
    cmd += [str(out / "clip.mp4"), "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-c:a", "flac"]
    cmd += [str(out / "audio.flac")]
    for k in range(len(sides)):
        cmd += ["-map", f"[t{k}]", "-fps_mode", "passthrough", *one, "-frames:v", "1"]
        cmd += ["-q:v", "2", "-update", "1", str(out / f"frames{k}.jpg")]
    return cmd


def _limit_one(path: Path, tmp: Path) -> int:
    """The limit's run on one clip; returns the mp4's bytes."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    try:
        subprocess.run(limit_command(path, out), check=True, capture_output=True)
        names = ["clip.mp4", "audio.flac", *(f"frames{k}.jpg" for k in range(len(tile_sides())))]
        if not all((out / name).exists() and (out / name).stat().st_size for name in names):
            raise RuntimeError(f"limit run on {path} left an empty output")
        return (out / "clip.mp4").stat().st_size
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure_limit(paths: list[Path], tmp: Path) -> dict:
    with Timer() as t, ThreadPoolExecutor(os.cpu_count()) as pool:
        sizes = list(pool.map(lambda p: _limit_one(p, tmp), paths))
    return {"wall": t.wall, "cpu": t.cpu, "mp4_bytes": sum(sizes), "with_audio": len(sizes)}


# --- encoder settings ---------------------------------------------------------------------

# (preset, crf, tune) candidates for the clip encode. The first is the peer's: video2dataset
# scales with ffmpeg's libx264 defaults (preset medium, crf 23); the chosen setting must give
# mp4 bytes no more and PSNR no less than it, at the least CPU.
PEER_ENCODER = ("medium", 23, None)
ENCODERS = (
    PEER_ENCODER,
    ("veryfast", 23, None),
    ("veryfast", 21, None),
    ("veryfast", 20, None),
    ("faster", 22, None),
    ("fast", 23, None),
    ("medium", 23, "fastdecode"),
    ("superfast", 28, None),
    ("ultrafast", 31, None),
)


def measure_encoders(paths: list[Path], tmp: Path) -> list[dict]:
    """Each candidate's CPU seconds, mp4 bytes and PSNR against the source downscaled the
    same way (video only; audio is the same for all); clip by clip, candidates interleaved."""
    totals = {c: {"wall": 0.0, "cpu": 0.0, "bytes": 0, "psnr": []} for c in ENCODERS}
    for path in paths:
        info = probe(path)
        size = even_size(info.width, info.height, ClipStage.short_side)
        for preset, crf, tune in ENCODERS:
            short = ClipStage.short_side
            settings = EncodeSettings(short, crf, preset, False, "96k", 1, info.duration, tune)
            dst = tmp / "enc.mp4"
            with Timer() as t:
                encode_clip(path, dst, (info.width, info.height), settings)
            row = totals[(preset, crf, tune)]
            row["wall"] += t.wall
            row["cpu"] += t.cpu
            row["bytes"] += dst.stat().st_size
            row["psnr"].append(psnr(dst, path, size))
    base = totals[ENCODERS[0]]
    return [_encoder_row(c, t, base, len(paths)) for c, t in totals.items()]


def _encoder_row(candidate, t: dict, base: dict, n: int) -> dict:
    preset, crf, tune = candidate
    return {
        "preset": preset,
        "crf": crf,
        "tune": tune or "-",
        "clips_per_cpu_s": round(n / t["cpu"], 3),
        "cpu_vs_peer": round(t["cpu"] / base["cpu"], 3),
        "mp4_bytes": t["bytes"],
        "bytes_vs_peer": round(t["bytes"] / base["bytes"], 3),
        "psnr_db": round(sum(t["psnr"]) / n, 2),
        "psnr_vs_peer_db": round((sum(t["psnr"]) - sum(base["psnr"])) / n, 2),
    }


def pick_encoder(rows: list[dict]) -> dict:
    """The least CPU per clip among candidates with bytes and PSNR no worse than the peer's."""
    fit = [r for r in rows if r["bytes_vs_peer"] <= 1.0 and r["psnr_vs_peer_db"] >= 0]
    return min(fit, key=lambda r: r["cpu_vs_peer"])


def psnr(encoded: Path, source: Path, size: tuple[int, int]) -> float:
    """Average PSNR (dB) of `encoded` against `source` scaled to `size` as the clip stage
    scales it (ffmpeg's psnr filter, frames paired in order)."""
    graph = f"[1:v]scale={size[0]}:{size[1]}:flags=bicubic,setsar=1[r];[0:v][r]psnr"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(encoded), "-i", str(source)]
    cmd += ["-lavfi", graph, "-f", "null", "-"]
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    return float(err.rsplit("average:", 1)[1].split()[0])


def measure_threads(paths: list[Path], tmp: Path) -> list[dict]:
    """The default encode as one 2-thread ffmpeg at a time vs two 1-thread ones in parallel."""
    rows = []
    for threads, workers in ((1, 2), (2, 1)):

        def one(i_path, threads=threads):
            i, path = i_path
            info = probe(path)
            s = ClipStage(threads=threads).encode_settings({"duration": info.duration})
            encode_clip(path, tmp / f"t{i}.mp4", (info.width, info.height), s, has_audio=True)

        with Timer() as t, ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, enumerate(paths)))
        rows.append({"threads": threads, "processes": workers, **_rates(len(paths), t.wall, t.cpu)})
    return rows


# --- the whole build ----------------------------------------------------------------------


def write_manifest(paths: list[Path], out: Path) -> Path:
    manifest = out / "build-source.jsonl"
    rows = [{"path": str(p.resolve()), "title": f"bench clip {p.stem}"} for p in paths]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


class TreeWatch(threading.Thread):
    """Samples, from /proc, a process's peak RSS (VmHWM), its tree's peak summed RSS, and the
    tree's CPU seconds: each process's own, plus what its reaped children used that was not
    counted already (ffmpeg children are counted only so, through their parent: sampled alive
    they would miss their last moments; a worker that its parent reaps counts once, not as
    itself and again in the parent's children's time). CPU is approximate: up to one sampling
    interval of the last moments of a process that nothing counted reaps is missed."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.driver_kb = self.tree_kb = 0
        # (pid, start time) -> (parent pid, own seconds, reaped children's seconds, last sample)
        self.seen: dict[tuple[int, int], tuple[int, float, float, int]] = {}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.samples += 1
            self.driver_kb = max(self.driver_kb, _status_kb(self.pid, "VmHWM"))
            tree = _descendants(self.pid) | {self.pid}
            self.tree_kb = max(self.tree_kb, sum(_status_kb(p, "VmRSS") for p in tree))
            for pid in tree:
                name, start, parent, own, children = _cpu(pid)
                if name and not name.startswith("ffmpeg"):
                    self.seen[(pid, start)] = (parent, own, children, self.samples)

    def cpu_seconds(self) -> float:
        """Each process's own time, plus its reaped children's time less that of the children
        counted here that were gone by its last sample (those it reaped, so counted twice)."""
        last = {}  # pid -> the key of its latest process (a pid can be reused)
        for key in sorted(self.seen, key=lambda k: self.seen[k][3]):
            last[key[0]] = key
        counted = collections.defaultdict(float)
        for parent, own, children, seen_at in self.seen.values():
            parent_key = last.get(parent)
            if parent_key is not None and seen_at < self.seen[parent_key][3]:
                counted[parent_key] += own + children
        return sum(
            own + max(0.0, children - counted[key])
            for key, (_, own, children, _) in self.seen.items()
        )


def _cpu(pid: int) -> tuple[str, int, int, float, float]:
    """(command name, start time, parent pid, its own user + system seconds, its reaped
    children's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", 0, 0, 0.0, 0.0
    name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own, children = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    return name, int(fields[19]), int(fields[1]), own / tick, children / tick


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def measure_build(
    paths: list[Path], out: Path, shards: int, runner: str = "auto", attempts: int = 3
) -> dict:
    """`vidal build` over the clips into a fresh folder, on `runner` (runner.kind): wall and
    CPU seconds, memory.

    A failed build is rerun on the same folder (it resumes: finished stages are skipped) and
    the times add up; the failures are reported, as a build that needs reruns is slower.
    """
    target = out / "build"
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "vidal.cli", "build", "--source", str(write_manifest(paths, out))]
    cmd += ["--pipeline", BUILD_PIPELINE, "--out", str(target), "--shards", str(shards)]
    cmd += ["--quiet", *BUILD_OVERRIDES, f"runner.kind={runner}"]
    result = {"wall": 0.0, "cpu": 0.0, "peak_driver_rss_mb": 0.0, "peak_tree_rss_mb": 0.0}
    result["failures"] = []
    for _ in range(attempts):
        code, stderr = _run_watched(cmd, result)
        if code == 0:
            break
        result["failures"].append(stderr.strip().splitlines()[-1][-300:] if stderr else code)
        print(f"  build failed, resuming: {result['failures'][-1]}", file=sys.stderr)
    else:
        raise RuntimeError(f"vidal build failed {attempts} times: {result['failures']}")
    totals = json.loads((target / "dataset.json").read_text())["totals"]
    return {
        **result,
        "runner": runner,
        "kept": totals.get("kept", 0),
        "failed": totals.get("failed", 0),
        **_build_media(target),
    }


def _build_media(target: Path) -> dict:
    """mp4 bytes and how many kept clips carry audio (a FLAC member), from the shard tables."""
    import pyarrow.parquet as pq

    rows = [r for p in target.glob("shards/*.parquet") for r in pq.read_table(p).to_pylist()]
    kept = [r for r in rows if r.get("status") == "ok"]
    return {
        "mp4_bytes": sum(r.get("mp4_bytes") or 0 for r in kept),
        "with_audio": sum(1 for r in kept if r.get("flac_bytes")),
    }


def _run_watched(cmd: list[str], result: dict, env: dict | None = None) -> tuple[int, str]:
    """Run `cmd`, adding its wall and CPU seconds to `result` and raising its memory peaks."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watch = TreeWatch(proc.pid)
    watch.start()
    _, stderr = proc.communicate()
    result["wall"] += time.perf_counter() - started
    watch.done.set()
    watch.join()
    result["cpu"] += watch.cpu_seconds()
    for key, kb in (("peak_driver_rss_mb", watch.driver_kb), ("peak_tree_rss_mb", watch.tree_kb)):
        result[key] = max(result[key], round(kb / 1024, 1))
    return proc.returncode, stderr


# --- report -------------------------------------------------------------------------------


def _rates(n: int, wall: float, cpu: float, ref: dict | None = None) -> dict:
    row = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "clips_per_s": round(n / wall, 3)}
    if ref:
        row["cpu_vs_full_decode"] = round(cpu / ref["cpu"], 4)
        row["wall_vs_full_decode"] = round(wall / ref["wall"], 4)
    return row


def summarise(paths: list[Path], single: dict, limit: dict, build: dict) -> dict:
    n, ref = len(paths), single[REFERENCE]
    rows = {name: _rates(n, t["wall"], t["cpu"], ref) for name, t in single.items()}
    ratio = {"clips_per_s": round(limit["wall"] / build["wall"], 4)}
    ratio["cpu"] = round(limit["cpu"] / build["cpu"], 4) if build["cpu"] else None
    checks = {name: row["cpu_vs_full_decode"] <= _target(name) for name, row in rows.items()}
    checks = {k: v for k, v in checks.items() if _target(k) < 1e9}
    checks["build_vs_limit"] = ratio["clips_per_s"] >= TARGETS["build_vs_limit"]
    keys = ("runner", "kept", "failed", "failures", "peak_driver_rss_mb", "peak_tree_rss_mb")
    keys += ("mp4_bytes", "with_audio")
    stats = {k: build[k] for k in keys}
    return {
        "clips": n,
        "cores": os.cpu_count(),
        "video_seconds": round(sum(clip_duration(i) for i in range(n)), 1),
        "single_process": rows,
        "limit": {**_rates(n, limit["wall"], limit["cpu"]), **_media(limit)},
        "build": {**_rates(n, build["wall"], build["cpu"]), **stats},
        "build_vs_limit": ratio,
        "targets": TARGETS,
        "meets_target": checks,
    }


def _media(row: dict) -> dict:
    return {"mp4_bytes": row["mp4_bytes"], "with_audio": row["with_audio"]}


def _target(name: str) -> float:
    """The ratio to full decode a keyframe sampler must stay under (pyav is the default)."""
    if "keyframes" not in name or "pyav" not in name:
        return float("inf")
    return TARGETS["snap"] if "snap" in name else TARGETS["exact"]


def print_table(result: dict, corpus: str) -> None:
    from rich.console import Console
    from rich.table import Table

    n, cores = result["clips"], result["cores"]
    title = (
        f"vidal bench, {corpus}: {n} clips (720p h264+aac, 5-20 s, {result['video_seconds']} s), "
    )
    table = Table(title=title + f"{cores} cores", header_style="bold")
    for col in ("measurement", "wall s", "CPU s", "clips/s", "ratio (CPU)", "ratio (wall)"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    table.add_column("target")
    for name, row in result["single_process"].items():
        target = _target(name)
        mark = "" if target > 1e9 else f"≤ {target}× " + _ok(row["cpu_vs_full_decode"] <= target)
        table.add_row(
            name, *_cells(row), f"{row['cpu_vs_full_decode']:.3f}×",
            f"{row['wall_vs_full_decode']:.3f}×", mark,
        )  # fmt: skip
    ratio, goal = result["build_vs_limit"], TARGETS["build_vs_limit"]
    table.add_row("limit: 1 ffmpeg per clip, pool", *_cells(result["limit"]), "1×", "1×", "")
    cpu = f"{ratio['cpu']:.3f}×" if ratio["cpu"] else "?"
    met = _ok(ratio["clips_per_s"] >= goal)
    table.add_row(
        f"whole build (vidal build, {result['build']['runner']})", *_cells(result["build"]), cpu,
        f"{ratio['clips_per_s']:.3f}×", f"≥ {goal}× limit {met}",
    )  # fmt: skip
    console = Console(width=max(150, Console().width))
    console.print(table)
    build = result["build"]
    console.print(
        "ratios: single-process rows against the full decode, the build against the limit "
        "(clips/s for wall, CPU seconds for CPU)\n"
        f"build: kept {build['kept']}, failed {build['failed']}, reruns after a crash: "
        f"{len(build['failures'])} {build['failures'] or ''}; peak RSS: driver "
        f"{build['peak_driver_rss_mb']} MB, driver + Ray processes {build['peak_tree_rss_mb']} MB"
    )
    limit = result["limit"]
    console.print(
        f"mp4 bytes: vidal {build['mp4_bytes']:,} (audio in {build['with_audio']} of "
        f"{build['kept']} kept), limit {limit['mp4_bytes']:,} (audio in {limit['with_audio']})"
    )


def print_encoders(rows: list[dict], threads: list[dict], chosen: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "clip encode settings (video only, short side 256; peer: video2dataset's)"
    table = Table(title=title, header_style="bold")
    cols = ("preset", "crf", "tune", "clips/CPU s", "CPU vs peer", "mp4 bytes")
    for col in (*cols, "bytes vs peer", "PSNR dB", "PSNR vs peer"):
        table.add_column(col, justify="right")
    for r in rows:
        mark = " ← chosen" if r is chosen else ""
        table.add_row(
            r["preset"], str(r["crf"]), r["tune"], f"{r['clips_per_cpu_s']:.2f}",
            f"{r['cpu_vs_peer']:.3f}×", f"{r['mp4_bytes']:,}", f"{r['bytes_vs_peer']:.3f}×",
            f"{r['psnr_db']:.2f}", f"{r['psnr_vs_peer_db']:+.2f}{mark}",
        )  # fmt: skip
    console = Console(width=150)
    console.print(table)
    for r in threads:
        console.print(
            f"clip stage encode, {r['threads']} thread(s) x {r['processes']} process(es): "
            f"{r['clips_per_s']:.3f} clips/s wall, {r['cpu_s']:.1f} CPU s"
        )


def _cells(row: dict) -> list[str]:
    return [f"{row['wall_s']:.1f}", f"{row['cpu_s']:.1f}", f"{row['clips_per_s']:.2f}"]


def _ok(good: bool) -> str:
    return "[green]ok[/]" if good else "[red]missed[/]"


def keyframes_only(corpora: dict[str, list[Path]], out: Path) -> int:
    """`--only keyframes`: the reference and the keyframe samplers on both corpora, the
    corpora interleaved clip by clip so that load from elsewhere hits both alike."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        single = {name: {} for name in corpora}
        for pair in zip(*corpora.values(), strict=True):
            for name, path in zip(corpora, pair, strict=True):
                _add(single[name], measure_single([path], Path(tmp), only_keyframes=True))
    report = {"load_average": [load_before, os.getloadavg()], "cores": os.cpu_count()}
    for name, totals in single.items():
        ref = totals[REFERENCE]
        rows = {k: _rates(len(corpora[name]), t["wall"], t["cpu"], ref) for k, t in totals.items()}
        report[name] = {"clips": len(corpora[name]), "single_process": rows}
    (out / "bench-keyframes.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print_keyframes(report, corpora)
    return 0


def build_only(paths: list[Path], out: Path, shards: int, runner: str, rounds: int = 1) -> int:
    """`--only build`: the limit, then the whole build, on the same clips: how much of the
    single-pass ffmpeg limit a build on `runner` reaches once its start-up is amortised. With
    `rounds` > 1 the pair runs again and the ratios are the medians of the rounds' ratios:
    on a shared machine identical builds vary by more than the goal's margin."""
    report = {"clips": len(paths), "cores": os.cpu_count(), "runner": runner, "rounds": []}
    for _ in range(rounds):
        report["rounds"].append(build_round(paths, out, shards, runner))
    ratios = [r["build_vs_limit"] for r in report["rounds"]]
    report["build_vs_limit"] = {
        key: round(statistics.median(r[key] for r in ratios), 4) for key in ("clips_per_s", "cpu")
    }
    (out / "bench-build.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def build_round(paths: list[Path], out: Path, shards: int, runner: str) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        limit = measure_limit(paths, Path(tmp))
    build = measure_build(paths, out, shards, runner)
    n = len(paths)
    return {
        "load_average": [load_before, os.getloadavg()],
        "limit": {**_rates(n, limit["wall"], limit["cpu"]), **_media(limit)},
        "build": {**_rates(n, build["wall"], build["cpu"]), **_media(build)},
        "build_vs_limit": {
            "clips_per_s": round(limit["wall"] / build["wall"], 4),
            "cpu": round(limit["cpu"] / build["cpu"], 4),
        },
    }


def _add(totals: dict, more: dict) -> None:
    for name, t in more.items():
        row = totals.setdefault(name, {"wall": 0.0, "cpu": 0.0})
        row["wall"] += t["wall"]
        row["cpu"] += t["cpu"]


def print_keyframes(report: dict, corpora: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    load = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(*report["load_average"], strict=True))
    table = Table(
        title=f"keyframes vs {REFERENCE}, {report['cores']} cores, load average "
        f"(1/5/15 min, before/after) {load}",
        header_style="bold",
    )
    for col in ("corpus", "measurement", "CPU s", "ratio (CPU)", "ratio (wall)", "target"):
        table.add_column(col, justify="left" if col in ("corpus", "measurement") else "right")
    for corpus in corpora:
        for name, row in report[corpus]["single_process"].items():
            target = _target(name)
            mark = (
                "" if target > 1e9 else f"≤ {target}× " + _ok(row["cpu_vs_full_decode"] <= target)
            )
            table.add_row(
                f"{corpus} ({report[corpus]['clips']} clips)", name, f"{row['cpu_s']:.1f}",
                f"{row['cpu_vs_full_decode']:.3f}×", f"{row['wall_vs_full_decode']:.3f}×", mark,
            )  # fmt: skip
    Console(width=max(150, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="clips per corpus (default 200)")
    parser.add_argument("--out", default="bench-out", help="output folder (clips cached inside)")
    parser.add_argument("--shards", type=int, default=8, help="shards of the build (default 8)")
    parser.add_argument("--encoder-clips", type=int, default=20, help="clips of the encoder sweep")
    parser.add_argument(
        "--runner",
        choices=["auto", "ray", "processes"],
        default="auto",
        help="runner.kind of the whole build (default auto, as `vidal build`)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="--only build: limit/build pairs, median ratios"
    )
    parser.add_argument(
        "--only",
        choices=["keyframes", "build"],
        help="keyframes: only the full-decode reference and the keyframe samplers, on both "
        "corpora (no build, limit or encoder sweep); to <out>/bench-keyframes.json. "
        "build: only the limit and the whole build, on the 2-s GOP corpus; to "
        "<out>/bench-build.json",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only == "build":
        clips = ensure_clips(out / "clips", args.clips)
        return build_only(clips, out, args.shards, args.runner, args.rounds)
    corpora = {
        "2-s GOP": ensure_clips(out / "clips", args.clips),
        "long GOP (x264 default, keyint 250)": ensure_clips(
            out / "clips-longgop", args.clips, keyint_s=None
        ),
    }
    if args.only == "keyframes":
        return keyframes_only(corpora, out)
    report = {}
    for corpus, paths in corpora.items():
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            print(f"{corpus}: single-process measurements ...", file=sys.stderr)
            single = measure_single(paths, Path(tmp))
            print(f"{corpus}: limit, one ffmpeg per clip ...", file=sys.stderr)
            limit = measure_limit(paths, Path(tmp))
        print(f"{corpus}: whole build ...", file=sys.stderr)
        build = measure_build(paths, out, args.shards, args.runner)
        report[corpus] = summarise(paths, single, limit, build)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        print("encoder settings ...", file=sys.stderr)
        sample = corpora["2-s GOP"][: args.encoder_clips]
        encoders = measure_encoders(sample, Path(tmp))
        threads = measure_threads(sample, Path(tmp))
    chosen = pick_encoder(encoders)
    report["encoders"] = {"rows": encoders, "chosen": chosen, "threads": threads}
    (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    for corpus in corpora:
        print_table(report[corpus], corpus)
    print_encoders(encoders, threads, chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
