"""vidal against video2dataset 1.3.0, the peer, on the same loopback corpus, in one run.

Both start from a list of direct mp4 links served on 127.0.0.1 (the bench corpus of
`scripts/bench.py`) and end with a WebDataset of the clips scaled to a short side of 256:

- video2dataset: its multiprocessing distributor (one process per core, a shard per process
  per round of the list), `ResolutionSubsampler` scaling to height 256 (the short side of these
  landscape clips) with ffmpeg's default libx264 settings; its resize keeps no audio;
- vidal: `vidal crawl --urls` then `vidal build --pipeline vidal10m stages=[probe,keyframes,
  audio,clip]` on the default runner: the mp4 with audio, and also 8 keyframes (tiled at 256
  and, as vidal10m keeps them for its model stages, at the source's size) and a 16 kHz FLAC
  a clip, which the peer does not make; `--vidal-stages probe,clip` for the peer's job alone.

Printed for each side: clips/s (the whole job, wall), CPU seconds of its process tree, clips
kept, mp4 bytes, clips whose mp4 holds audio; the ratio vidal/peer. Rounds alternate the sides
(the order flips each round: the machine's load moves); medians shown.

video2dataset pins torch 2.1.2, torchaudio, torchdata, transformers and more that its download
and resize path never calls: it runs from its own environment, `--peer-python`, where
`video2dataset==1.3.0` is installed without its dependencies plus the few that path uses
(`make bench-peer` makes one in .venv-peer); the modules it imports but does not call on this
path are given to it as empty stand-ins (written to a temporary folder put on its PYTHONPATH).

    python scripts/bench_peer.py --peer-python .venv-peer/bin/python [--clips 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _run_watched, ensure_clips  # noqa: E402
from bench_crawl import serve  # noqa: E402

SHORT_SIDE = 256
SHARDS = 8
# imported by video2dataset's modules, never called by its download + resize path
STAND_INS = (
    "cv2",
    "decord",
    "scenedetect",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.distributed",
    "torch.utils",
    "torch.utils.data",
    "torch.utils.data.datapipes",
    "torch.utils.data.datapipes.iter",
    "torch.utils.data.datapipes.utils",
    "torch.utils.data.datapipes.utils.common",
    "torchaudio",
    "torchaudio.functional",
    "torchdata",
    "torchdata.datapipes",
    "torchdata.datapipes.iter",
    "torchdata.datapipes.utils",
    "torchdata.datapipes.utils.common",
    "transformers",
    "transformers.modeling_outputs",
    "wandb",
)
STAND_IN = """
class _Any:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return a[0] if len(a) == 1 and isinstance(a[0], type) else _Any()

    def __getattr__(self, name):
        return _Any()


class IterableDataset:
    pass


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name[:1].isupper():  # a base class or a generic
        body = {"__init__": lambda self, *a, **k: None}
        return type(name, (), {**body, "__class_getitem__": classmethod(lambda c, i: c)})
    return _Any()
"""
# video2dataset 1.3.0 reads `encode_formats` off the first video subsampler, which only its
# ClippingSubsampler has: ResolutionSubsampler alone fails every shard. Its workers are spawned,
# so the attribute is given at every interpreter start (sitecustomize) rather than in PEER_RUN.
PEER_FIX = """
try:
    from video2dataset.subsamplers.resolution_subsampler import ResolutionSubsampler
    ResolutionSubsampler.encode_formats = {"video": "mp4"}
except ImportError:
    pass
"""
PEER_RUN = """
import sys, yaml
from video2dataset import video2dataset
urls, out, config = sys.argv[1:4]
video2dataset(url_list=urls, input_format="csv", url_col="url", output_format="webdataset",
              output_folder=out, config=yaml.safe_load(open(config)))
"""
PEER_CONFIG = {
    "subsampling": {
        "ResolutionSubsampler": {"args": {"video_size": SHORT_SIDE, "resize_mode": "scale"}}
    },
    "reading": {"yt_args": {}, "timeout": 60, "sampler": None},
    "storage": {"oom_shard_count": 5, "captions_are_subtitles": False},
    "distribution": {"thread_count": 8, "subjob_size": 1000, "distributor": "multiprocessing"},
}


def write_stand_ins(folder: Path) -> None:
    for name in STAND_INS:
        package = folder.joinpath(*name.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(STAND_IN)
    (folder / "sitecustomize.py").write_text(PEER_FIX)


def peer_env(work: Path) -> dict:
    """PYTHONPATH with the stand-ins; PATH with `ffmpeg` = the binary vidal uses (the peer
    runs `ffmpeg` from PATH: the same build on both sides)."""
    from vidal.media.ffmpeg import ffmpeg_exe

    stand_ins, bin_dir = work / "stand-ins", work / "bin"
    write_stand_ins(stand_ins)
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "ffmpeg").exists():
        (bin_dir / "ffmpeg").symlink_to(ffmpeg_exe())
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PYTHONPATH": str(stand_ins), "PATH": path}


def run_peer(peer_python: str, urls: Path, out: Path, n: int, work: Path) -> dict:
    import yaml

    config = json.loads(json.dumps(PEER_CONFIG))
    config["distribution"]["processes_count"] = os.cpu_count() or 1
    config["storage"]["number_sample_per_shard"] = -(-n // SHARDS)
    (work / "peer.yaml").write_text(yaml.safe_dump(config))
    cmd = [peer_python, "-c", PEER_RUN, str(urls), str(out), str(work / "peer.yaml")]
    result = watched(cmd, "video2dataset", env=peer_env(work))
    return {**result, **tar_media(out)}


def run_vidal(urls: Path, out: Path, stages: str) -> dict:
    vidal = [sys.executable, "-m", "vidal.cli"]
    crawl = [*vidal, "crawl", "--urls", str(urls), "--out", str(out / "crawl"), "--quiet"]
    crawl += ["source.allow_private_addresses=true", "crawl.download.rate_per_s=0"]
    build = [*vidal, "build", "--source", str(out / "crawl" / "crawl.parquet")]
    build += ["--out", str(out / "build"), "--pipeline", "vidal10m", "--shards", str(SHARDS)]
    build += ["--quiet", f"stages=[{stages}]"]
    first, second = watched(crawl, "vidal crawl"), watched(build, "vidal build")
    result = {k: round(first[k] + second[k], 2) for k in ("wall", "cpu")}
    result["crawl_share"] = round(first["wall"] / result["wall"], 3)
    return {**result, **tar_media(out / "build" / "shards")}


def watched(cmd: list[str], label: str, env: dict | None = None) -> dict:
    """Wall and CPU seconds of `cmd`'s process tree (bench.py's measure); a failure stops."""
    result = {"wall": 0.0, "cpu": 0.0, "peak_driver_rss_mb": 0.0, "peak_tree_rss_mb": 0.0}
    code, stderr = _run_watched(cmd, result, env)
    if code:
        tail = stderr.strip().splitlines()[-5:]
        raise SystemExit(f"{label} failed ({code}): " + "\n".join(tail))
    return {"wall": round(result["wall"], 2), "cpu": round(result["cpu"], 2)}


def tar_media(folder: Path) -> dict:
    """Clips (mp4 members) in the tars under `folder`, their bytes and their video streams'
    (the peer's have no audio track), and how many hold audio (read with PyAV)."""
    import io

    import av

    found = {"clips": 0, "mp4_bytes": 0, "video_stream_bytes": 0, "with_audio": 0}
    for tar_path in sorted(folder.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if not member.name.endswith(".mp4"):
                    continue
                data = tar.extractfile(member).read()
                found["clips"] += 1
                found["mp4_bytes"] += len(data)
                with av.open(io.BytesIO(data)) as container:
                    found["with_audio"] += bool(container.streams.audio)
                    packets = container.demux(container.streams.video[0])
                    found["video_stream_bytes"] += sum(p.size for p in packets)
    return found


def one_round(order: list[str], args, urls: Path, work: Path, n: int) -> dict:
    results = {}
    for side in order:
        out = work / side
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        if side == "peer":
            results[side] = run_peer(args.peer_python, urls, out, n, work)
        else:
            results[side] = run_vidal(urls, out, args.vidal_stages)
        print(f"  {side}: {results[side]}", flush=True)
        if results[side]["clips"] != n:
            raise SystemExit(f"{side} kept {results[side]['clips']} of {n} clips: no ratio")
    return results


def summary(rounds: list[dict], n: int, stages: str) -> dict:
    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    sides = {}
    for side in ("peer", "vidal"):
        wall = median(side, "wall")
        sides[side] = {"clips_per_s": round(n / wall, 3), "wall_s": wall}
        sides[side]["cpu_s"] = median(side, "cpu")
        media = ("clips", "mp4_bytes", "video_stream_bytes", "with_audio")
        sides[side].update({k: rounds[-1][side][k] for k in media})
    ratios = [r["peer"]["wall"] / r["vidal"]["wall"] for r in rounds]
    cpu = [r["peer"]["cpu"] / r["vidal"]["cpu"] for r in rounds]
    sides["vidal"]["crawl_share"] = median("vidal", "crawl_share")
    return {
        "clips": n,
        "rounds": len(rounds),
        "vidal_stages": stages,
        **sides,
        "vidal_vs_peer_clips_per_s": round(statistics.median(ratios), 3),
        "vidal_vs_peer_cpu": round(statistics.median(cpu), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python with video2dataset 1.3.0")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2, help="alternations; medians shown")
    parser.add_argument("--corpus", default="bench-out/clips", help="bench.py's clip folder")
    parser.add_argument(
        "--vidal-stages",
        default="probe,keyframes,audio,clip",
        help="vidal's stages (probe,clip: the peer's job alone, the mp4 keeping its audio)",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    paths = ensure_clips(Path(args.corpus), args.clips)
    httpd = serve([p.read_bytes() for p in paths])
    port = httpd.server_address[1]
    work = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    try:
        urls = work / "urls.csv"
        lines = [f"http://127.0.0.1:{port}/{i}/{p.name}" for i, p in enumerate(paths)]
        urls.write_text("url\n" + "\n".join(lines) + "\n")
        rounds = []
        for r in range(args.rounds):
            order = ["peer", "vidal"] if r % 2 == 0 else ["vidal", "peer"]
            print(f"round {r + 1}/{args.rounds}: {' then '.join(order)}", flush=True)
            rounds.append(one_round(order, args, urls, work, len(paths)))
    finally:
        httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    result = summary(rounds, len(paths), args.vidal_stages)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
