"""The `vidal crawl` job as users run it: the CLI, no-network failure, the Ray runner."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from vidal.cli import main
from vidal.run.crawl import run_crawl


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_fails_fast_with_one_sentence(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("dog surfing\n")
    command = [sys.executable, "-m", "vidal.cli", "crawl", "--terms", str(terms)]
    command += ["--out", str(tmp_path / "out"), "--local"]
    command += [f"crawl.search.check_url=http://127.0.0.1:{closed_port()}"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert time.monotonic() - started < 60  # generous: it is one refused connection
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("vidal: crawl needs the network, but 127.0.0.1:")
    assert "--urls" in lines[0]


def test_cli_crawls_a_url_list(server, tmp_path):
    urls = tmp_path / "urls.csv"
    urls.write_text(f"url,title\n{server.url('/m/ok-a.mp4')},a red circle on black\n")
    out = tmp_path / "out"
    common = ["--local", "--quiet", "runner.progress=false", "crawl.download.rate_per_s=0"]
    common.append("source.allow_private_addresses=true")  # the server is on 127.0.0.1
    assert main(["crawl", "--urls", str(urls), "--out", str(out), *common]) == 0
    summary = json.loads((out / "crawl.json").read_text())
    assert summary["downloaded"] == 1 and summary["failed"] == 0
    assert pq.read_table(out / "crawl.parquet").column("title").to_pylist() == [
        "a red circle on black"
    ]


def test_a_crawl_where_everything_fails_alike_says_so(server, tmp_path, capsys):
    urls = tmp_path / "urls.csv"
    urls.write_text("url\n" + "".join(server.url(f"/m/f404-{i}.mp4") + "\n" for i in range(2)))
    out = str(tmp_path / "out")
    loopback = "source.allow_private_addresses=true"
    assert main(["crawl", "--urls", str(urls), "--out", out, "--local", "--quiet", loopback]) == 1
    assert "all 2 downloads failed with removed" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_runner_shares_one_rate_limit(ray_cluster, server, crawl_config, tmp_path):
    from vidal.crawl.ratelimit import RayLimiter, start_ray_limiter

    rate = 0.5  # one request per 2 s: 6 bookings span 10 s of slots, whoever books them
    spec, actor = start_ray_limiter({}, default_rate=rate, burst=1)

    @ray_cluster.remote(num_cpus=0.1)
    def book(n: int) -> list[float]:
        limiter = RayLimiter(spec.split(":", 1)[1])
        return [limiter.reserve("youtube") for _ in range(n)]  # waits; nobody sleeps here

    started = time.monotonic()
    waits = sorted(w for part in ray_cluster.get([book.remote(3) for _ in range(2)]) for w in part)
    spent = time.monotonic() - started
    ray_cluster.kill(actor)
    # slot i is at least i / rate after the first booking; a per-worker limiter would give
    # each task its own slots 0, 2 and 4 s
    for i, wait in enumerate(waits):
        assert wait >= i / rate - spent, (waits, spent)

    urls = tmp_path / "urls.csv"
    urls.write_text("url\n" + "".join(server.url(f"/m/ok-{i}.mp4") + "\n" for i in range(3)))
    config = crawl_config("runner.kind=ray", "crawl.download.rate_per_s=50")
    outcome = run_crawl(config, str(tmp_path / "out"), urls_file=str(urls), quiet=True)
    assert outcome.counts["downloaded"] == 3


def test_options_yt_dlp_refuses_stop_the_crawl_before_it_starts(server, crawl_config, tmp_path):
    from vidal.config import ConfigError

    urls = tmp_path / "urls.csv"
    urls.write_text(f"url\n{server.url('/m/ok-a.mp4')}\n")
    config = crawl_config("crawl.download.impersonate=nosuchbrowser99")
    with pytest.raises(ConfigError, match="impersonate|Impersonate"):
        run_crawl(config, str(tmp_path / "out"), urls_file=str(urls), quiet=True)
    assert not server.counts and not (tmp_path / "out").exists()
