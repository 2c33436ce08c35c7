"""Caption throughput, as ratios against a one-at-a-time baseline measured in the same run.

- local (transformers, tiny models, CPU): keyframe captions/s (tiny:blip), video captions/s
  (tiny:qwen2_vl), enhanced captions/s (tiny:llama): batched (one generate call for the batch,
  as the stages run) vs one generate call per frame / clip / prompt;
- HTTP (the OpenAI-compatible client against a loopback server that answers each request
  after a fixed latency, standing in for server-side generation): requests/s at concurrency
  1, 4 and 16, as ratios against concurrency 1.

Tiny models make the local figures a measure of the batching and plumbing, not of real model
speed. Prints a table and JSON (also to --json).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from vidal.models.captioner import ImageCaptioner, VideoCaptioner
from vidal.models.generate import Decoding
from vidal.models.llm import TextGenerator
from vidal.models.openai_http import OpenAIClient, user_message

BASELINE = 16  # single-frame calls timed for the keyframe baseline (per-caption rate)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_local(n_clips: int, tokens: int, repeats: int = 2) -> dict:
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (8, 120, 160, 3), dtype=np.uint8) for _ in range(n_clips)]
    prompts = [f"a short clip number {i} of a moving shape #shape" for i in range(n_clips)]
    decoding = Decoding(max_new_tokens=tokens)
    image = ImageCaptioner.load("tiny:blip", device="cpu")
    video = VideoCaptioner.load("tiny:qwen2_vl", device="cpu", frame_short_side=56)
    llm = TextGenerator.load("tiny:llama", device="cpu")
    frames = n_clips * 8
    pairs = zip(clips, prompts, strict=True)
    singles = [(c[i : i + 1], p) for c, p in pairs for i in range(8)][:BASELINE]
    cases = {
        "keyframe_captions": (
            frames,
            lambda: image.caption(clips, "a picture of", decoding),
            lambda: [image.caption([f], "a picture of", decoding) for f, _ in singles],
            len(singles),
        ),
        "video_caption": (
            n_clips,
            lambda: video.caption(clips, prompts, decoding),
            lambda: [
                video.caption([c], [p], decoding) for c, p in zip(clips, prompts, strict=True)
            ],  # noqa: E501
            n_clips,
        ),
        "enhanced": (
            n_clips,
            lambda: llm.generate(prompts, decoding),
            lambda: [llm.generate([p], decoding) for p in prompts],
            n_clips,
        ),
    }
    out = {}
    for name, (count, batched, single, single_count) in cases.items():
        batched()  # warm up
        # interleaved, best of `repeats`: load from other processes hits both alike
        t_single = t_batched = float("inf")
        for _ in range(repeats):
            t_single = min(t_single, timed(single) / single_count)
            t_batched = min(t_batched, timed(batched) / count)
        out[name] = {
            "captions": count,
            "single_per_s": round(1 / t_single, 1),
            "batched_per_s": round(1 / t_batched, 1),
            "ratio": round(t_single / t_batched, 2),
        }
    return out


class _Threading(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default (5) drops connections beyond 5 at once


class _Server:
    def __init__(self, latency_s: float):
        body = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "a caption"}}]}
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(latency_s)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def bench_http(requests: int, latency_ms: float, levels=(1, 4, 16)) -> dict:
    server = _Server(latency_ms / 1000)
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    conversations = [user_message("what does the image describe?", [frame])] * requests
    out = {}
    try:
        for level in levels:
            client = OpenAIClient(server.url, "bench", api_key_env="", concurrency=level)
            client.chat_many(conversations[:level])  # warm up
            seconds = min(timed(lambda c=client: c.chat_many(conversations)) for _ in range(2))
            out[f"concurrency_{level}"] = {"requests_per_s": round(requests / seconds, 1)}
    finally:
        server.close()
    base = out["concurrency_1"]["requests_per_s"]
    for row in out.values():
        row["ratio"] = round(row["requests_per_s"] / base, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per caption")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = {
        "local": bench_local(args.clips, args.tokens),
        "http": bench_http(args.requests, args.latency_ms),
        "settings": vars(args),
    }
    print(f"{'local (tiny, CPU)':<22}{'one at a time/s':>16}{'batched/s':>12}{'ratio':>8}")
    for name, row in result["local"].items():
        print(f"{name:<22}{row['single_per_s']:>16}{row['batched_per_s']:>12}{row['ratio']:>8}")
    print(f"{'http (loopback)':<22}{'requests/s':>16}{'ratio':>20}")
    for name, row in result["http"].items():
        print(f"{name:<22}{row['requests_per_s']:>16}{row['ratio']:>20}")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
