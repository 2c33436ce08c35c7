"""Downloads with the real yt-dlp (generic extractor) from the loopback server: every fault ends
as the right taxonomy entry, retries happen where they should and stop where they should
(counted on the server), a rerun resumes, and the manifest is what `vidal build` reads."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from tests.crawl.conftest import BIG_BYTES, CAP_BYTES
from vidal.io.sources import list_source
from vidal.run.crawl import run_crawl
from vidal.run.jobs import build

ATTEMPTS = 2
# kind -> (status or failure reason, media requests it must cost)
FINAL = {
    "ok": ("downloaded", 1),
    "once429": ("downloaded", 2),  # 429 + Retry-After, then served: retried once
    "f403": ("private", 1),
    "f404": ("removed", 1),
    "f500": ("network", ATTEMPTS),
    "big": ("too_large", 1),
    "bigcl": ("too_large", 1),
    "text": ("not_video", 1),
    "long": ("too_long", 1),
}
RETRIED = {
    kind: ("rate_limited" if kind == "r429" else "network", ATTEMPTS)
    for kind in ("r429", "f500", "stall", "trunc")
}


def write_urls(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _kind(url: str) -> str:
    found = re.search(r"/v/(\w+)-a\.html$", url)
    return found.group(1) if found else url.rsplit("/", 1)[-1]


def outcome_of(row) -> str:
    return row["status"] if row["status"] == "downloaded" else row["reason"]


@pytest.fixture
def crawl_urls(server, crawl_config, tmp_path):
    """Crawl one page per kind (plus extra rows) into one output; returns rows by kind."""

    def crawl(kinds, *overrides, extra_rows=(), **kw):
        rows = [{"url": server.url(f"/v/{kind}-a.html"), "batch": 7} for kind in kinds]
        urls = write_urls(tmp_path / "urls.jsonl", [*rows, *extra_rows])
        config = crawl_config("crawl.download.max_duration=2.0", *overrides)
        run_crawl(config, str(tmp_path / "out"), urls_file=urls, quiet=True, **kw)
        table = pq.read_table(tmp_path / "out" / "candidates.parquet").to_pylist()
        return {_kind(r["url"]): r for r in table}

    return crawl


def assert_outcomes(rows, server, expected: dict) -> None:
    for kind, (outcome, requests) in expected.items():
        assert outcome_of(rows[kind]) == outcome, (kind, rows[kind]["error"])
        assert server.counts[f"/m/{kind}-a.mp4"] == requests, (kind, rows[kind]["error"])
        assert rows[kind]["attempts"] == requests, kind
        assert outcome == "downloaded" or re.match(r"^[a-z_]+: .+", rows[kind]["error"])


def test_final_failures_are_not_retried_and_a_rerun_resumes(crawl_urls, server):
    # a long socket timeout: nothing here stalls, and a loaded machine must not look like one
    extra = [{"url": server.url("/page/novideo.html")}, {"url": "file:///etc/passwd"}]
    timeout = "crawl.download.socket_timeout=20"
    rows = crawl_urls(FINAL, timeout, extra_rows=extra)
    assert_outcomes(rows, server, FINAL)
    assert rows["novideo.html"]["reason"] == "not_video"
    assert rows["passwd"]["error"].startswith("url_refused: scheme 'file' is not allowed")
    assert server.sent["/m/big-a.mp4"] < BIG_BYTES / 2  # stopped while downloading
    assert str(CAP_BYTES) in rows["big"]["error"] and str(CAP_BYTES) in rows["bigcl"]["error"]

    server.reset()  # a rerun skips what is downloaded or failed: not one request
    crawl_urls(FINAL, timeout, extra_rows=extra)
    assert sum(server.counts.values()) == 0

    server.reset()  # --retry-failed retries only the retryable reasons
    rows = crawl_urls(FINAL, timeout, extra_rows=extra, retry_failed=True)
    assert {p for p in server.counts if p.startswith("/m/")} == {"/m/f500-a.mp4"}
    assert server.counts["/m/f500-a.mp4"] == ATTEMPTS
    assert outcome_of(rows["ok"]) == "downloaded" and outcome_of(rows["f404"]) == "removed"


def test_rate_limits_and_network_errors_are_retried_then_given_up(crawl_urls, server):
    rows = crawl_urls(RETRIED, "crawl.download.threads=4")
    assert_outcomes(rows, server, RETRIED)
    assert "Read timed out" in rows["stall"]["error"]
    assert "more expected" in rows["trunc"]["error"]


def test_manifest_is_a_build_source(server, crawl_config, local_config, tmp_path):
    rows = [
        {"url": server.url("/v/ok-x.html"), "license": "cc-by", "lang": "en"},
        {"url": server.url("/m/ok-direct.mp4"), "title": "a red circle moving right #circle"},
        {"url": server.url("/m/ok-hostile.mp4"), "id": "../../etc/passwd", "title": "two words"},
    ]
    out = tmp_path / "crawl"
    outcome = run_crawl(crawl_config(), str(out), urls_file=write_urls(tmp_path / "u.jsonl", rows))
    assert outcome.counts["downloaded"] == 3 and outcome.exit_code == 0
    media = sorted(p.name for p in (out / "raw").iterdir())
    assert len(media) == 3 and all(re.fullmatch(r"[A-Za-z0-9_-]+\.mp4", m) for m in media)
    samples = {s.meta["title"]: s for s in list_source(str(out / "crawl.parquet"))}
    direct = samples["a red circle moving right #circle"]
    assert direct.source.startswith(str(out / "raw")) and direct.meta["hashtags"] == ["#circle"]
    page = next(s for t, s in samples.items() if t.startswith("a red circle moving #synthetic"))
    assert page.meta["extra"]["license"] == "cc-by" and page.meta["extra"]["lang"] == "en"
    assert page.meta["extra"]["webpage_url"] == server.url("/v/ok-x.html")
    assert page.meta["extra"]["width"] == 160  # measured on the file when the site is silent
    # and a build takes it as it is
    config = local_config("stages=[probe]", "shards=1")
    done = build(config, str(out / "crawl.parquet"), str(tmp_path / "built"), quiet=True)
    assert done.failure is None and done.total.get("ok", done.total.get("kept")) == 3, done.total


def test_local_paths_need_the_flag(server, crawl_config, tmp_path, clip_bank):
    clip = sorted(clip_bank.glob("*.mp4"))[0]
    urls = write_urls(tmp_path / "u.jsonl", [{"url": str(clip), "title": "a local clip here"}])
    refused = run_crawl(crawl_config(), str(tmp_path / "a"), urls_file=urls, quiet=True)
    assert refused.counts["failed_by_reason"] == {"url_refused": 1}
    allowed = run_crawl(
        crawl_config(), str(tmp_path / "b"), urls_file=urls, allow_local=True, quiet=True
    )
    assert allowed.counts["downloaded"] == 1
