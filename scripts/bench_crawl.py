"""Crawl download throughput against a loopback HTTP server, as a ratio to plain urllib.

Two measurements, each against a plain `urllib.request` loop run in the same process at the same
concurrency (the reference: bytes off the socket, nothing else):

- `vidal crawl --urls` of N direct mp4 links, the whole job in-process on the local runner
  (URL list read into the sharded candidate store, shard tasks, the direct-link path: URL
  policy, size cap, magic bytes, the container header read, the batch's durable commit into
  the store, then crawl.parquet / candidates.parquet / crawl.json published), after an
  untimed crawl of 4 links that pays the process's one-time costs (its seconds are printed);
  goal >= 0.5x urllib's clips/s;
- the download stage alone at 2, 8 and 32 concurrent downloads, through the direct path and
  (`--ytdlp`) through yt-dlp's generic extractor, for what extraction costs.

Each figure is the median of `--rounds` rounds in which urllib and vidal alternate (on a
shared machine the load moves between runs). The ratio says what the crawl's machinery costs
on top of the transfer itself; on the open internet the transfer dominates far more than on
127.0.0.1.

    python scripts/bench_crawl.py [--files 64] [--rounds 3] [--concurrency 2 8 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidal.media.synth import make_bench_clip  # noqa: E402
from vidal.sample import Sample  # noqa: E402
from vidal.stages.base import StageContext  # noqa: E402
from vidal.stages.download import DownloadStage  # noqa: E402


class ClipHandler(http.server.BaseHTTPRequestHandler):
    """/<n>/<i>.mp4 serves clip n (any i), so every download is a distinct URL. HTTP/1.1, as
    servers and CDNs are: a client that keeps the connection (vidal) reuses it, urllib asks
    for `Connection: close` and gets a connection per request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        return None

    def do_GET(self) -> None:
        clips = self.server.clips
        try:
            body = clips[int(self.path.strip("/").split("/")[0]) % len(clips)]
        except ValueError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects (1 s SYN retries)

    def handle_error(self, request, client_address) -> None:
        return None  # yt-dlp's generic extractor reads the headers of a direct link and hangs up


def serve(clips: list[bytes]) -> QuietServer:
    httpd = QuietServer(("127.0.0.1", 0), ClipHandler)
    httpd.clips = clips
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def urls_for(httpd, run: str, n: int, clips: int) -> list[str]:
    port = httpd.server_address[1]
    return [f"http://127.0.0.1:{port}/{i % clips}/{run}-{i}.mp4" for i in range(n)]


def fetch_urllib(urls: list[str], concurrency: int) -> tuple[float, int]:
    def get(url: str) -> int:
        with urllib.request.urlopen(url, timeout=60) as response:
            return len(response.read())

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(get, urls))
    return time.perf_counter() - started, total


def fetch_vidal(
    urls: list[str], concurrency: int, out: str, direct: bool = True
) -> tuple[float, int]:
    stage = DownloadStage(
        threads=concurrency, rate_per_s=0, max_duration=60.0, attempts=1, direct=direct
    )
    stage.setup(StageContext(out=out, allow_private_addresses=True))  # 127.0.0.1
    samples = [
        Sample(key=f"bench-{i:05d}", shard=0, source=url, meta={"candidate": {"platform": "url"}})
        for i, url in enumerate(urls)
    ]
    started = time.perf_counter()
    stage.process_batch(samples)
    seconds = time.perf_counter() - started
    failed = [s.errors for s in samples if s.errors]
    if failed:
        raise SystemExit(f"bench download failed: {failed[0]}")
    return seconds, sum(s.fields["download"]["bytes"] for s in samples)


def row(label: str, seconds: float, total: int, files: int) -> dict:
    return {
        "label": label,
        "seconds": round(seconds, 3),
        "clips_per_s": round(files / seconds, 2),
        "mb_per_s": round(total / 1e6 / seconds, 2),
    }


HEADER = ("concurrency", "urllib clips/s", "urllib MB/s", "vidal clips/s", "vidal MB/s", "ratio")


def crawl_urls(urls: list[str], concurrency: int, work: Path) -> tuple[float, int]:
    """`vidal crawl --urls LIST --local` in this process, into a new folder `work`: the whole
    job, timed."""
    from vidal.config import load_config
    from vidal.run.crawl import run_crawl

    work.mkdir()
    listed = work / "urls.csv"
    listed.write_text("url\n" + "".join(u + "\n" for u in urls))
    overrides = [
        "runner.kind=local",
        "runner.progress=false",
        "source.allow_private_addresses=true",
    ]
    overrides += ["crawl.download.rate_per_s=0", f"crawl.download.threads={concurrency}"]
    config = load_config("crawl", overrides)
    started = time.perf_counter()
    outcome = run_crawl(config, str(work / "crawl-out"), urls_file=str(listed), quiet=True)
    seconds = time.perf_counter() - started
    if outcome.counts["downloaded"] != len(urls):
        raise SystemExit(f"bench crawl failed: {outcome.counts}")
    return seconds, outcome.counts["bytes"]


def paired(reference, candidate, files: int, rounds: int) -> dict:
    """`rounds` alternations of the urllib reference and vidal (`fn(round)` -> (seconds,
    bytes)); each side's median round. On a shared machine the load moves from one second to
    the next, and the ratio of a single pair can be off by 2x either way."""
    refs, gots = [], []
    for r in range(rounds):
        refs.append(reference(r))
        gots.append(candidate(r))
    ref, got = row("urllib", *_median(refs), files), row("vidal", *_median(gots), files)
    ratio = round(got["clips_per_s"] / ref["clips_per_s"], 4)
    return {"urllib": ref, "vidal": got, "ratio": ratio, "rounds": rounds}


def _median(runs: list[tuple[float, int]]) -> tuple[float, int]:
    return sorted(runs)[len(runs) // 2]


def measure_crawl(httpd, files: int, concurrency: int, work: Path, rounds: int) -> dict:
    """The whole job, after an untimed crawl of 4 links: what a process pays once (imports;
    pyarrow loads pandas on its first table, ~0.5-1.5 s here) is not a per-clip cost."""
    first = crawl_urls(urls_for(httpd, "cw", 4, 2), concurrency, work / "warm-up")[0]
    result = paired(
        lambda r: fetch_urllib(urls_for(httpd, f"cu{r}", files, 2), concurrency),
        lambda r: crawl_urls(urls_for(httpd, f"cv{r}", files, 2), concurrency, work / f"c{r}"),
        files,
        rounds,
    )
    return {"concurrency": concurrency, **result, "first_crawl_of_4_s": round(first, 3)}


def measure(httpd, concurrency: int, files: int, work: Path, rounds: int, direct: bool) -> dict:
    def vidal(r: int) -> tuple[float, int]:
        out = str(work / f"out-{concurrency}-{direct}-{r}")
        return fetch_vidal(
            urls_for(httpd, f"v{concurrency}{direct}{r}", files, 2), concurrency, out, direct
        )

    result = paired(
        lambda r: fetch_urllib(
            urls_for(httpd, f"u{concurrency}{direct}{r}", files, 2), concurrency
        ),
        vidal,
        files,
        rounds,
    )
    return {"concurrency": concurrency, **result}


def show(result: dict) -> None:
    ref, got = result["urllib"], result["vidal"]
    values = (result["concurrency"], ref["clips_per_s"], ref["mb_per_s"])
    values += (got["clips_per_s"], got["mb_per_s"], result["ratio"])
    print("  ".join(f"{v:>{len(h)}}" for v, h in zip(values, HEADER, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=64, help="downloads per setting")
    parser.add_argument("--crawl-threads", type=int, default=8, help="crawl --urls downloads")
    parser.add_argument("--ytdlp", action="store_true", help="also the stage through yt-dlp")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--clip-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternations; medians shown")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    try:
        paths = [make_bench_clip(work / f"c{i}.mp4", args.clip_seconds, i) for i in range(2)]
        httpd = serve([p.read_bytes() for p in paths])
        size = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(f"crawl download vs urllib, loopback, 720p clips of {size:.2f} MB, {args.files} each")
        print(f"medians of {args.rounds} rounds, urllib and vidal alternating")
        print("vidal crawl --urls (direct mp4 links, whole job, local runner); goal ratio >= 0.5")
        print("  ".join(HEADER))
        whole = measure_crawl(httpd, args.files, args.crawl_threads, work, args.rounds)
        show(whole)
        print(f"(after an untimed first crawl of 4 links: {whole['first_crawl_of_4_s']} s)")
        results = {"crawl_urls": whole, "stage_direct": [], "stage_ytdlp": []}
        for label, direct in (("direct", True), ("ytdlp", False))[: 2 if args.ytdlp else 1]:
            print(f"download stage alone, {label} path")
            print("  ".join(HEADER))
            for concurrency in args.concurrency:
                results[f"stage_{label}"].append(
                    measure(httpd, concurrency, args.files, work, args.rounds, direct)
                )
                show(results[f"stage_{label}"][-1])
        httpd.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
