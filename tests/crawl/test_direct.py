"""Direct media links take plain streaming HTTP, not yt-dlp; pages still take yt-dlp. Real
downloads from the loopback server, counted there; yt-dlp's extraction entry point is spied on."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.crawl.conftest import BIG_BYTES, CAP_BYTES
from tests.security.loopback import rebinding_name
from vidal.crawl import download
from vidal.crawl.direct import claimed_by_platform, container_of, media_extension
from vidal.io.store import is_temp, temp_name
from vidal.run.crawl import run_crawl
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.download import DownloadStage

ATTEMPTS = 2
# kind -> (status or failure reason, media requests it must cost)
DIRECT = {
    "ok": ("downloaded", 1),
    "once429": ("downloaded", 2),
    "f404": ("removed", 1),
    "f403": ("private", 1),
    "r429": ("rate_limited", ATTEMPTS),
    "f500": ("network", ATTEMPTS),
    "trunc": ("network", ATTEMPTS),  # cut short of its Content-Length: retried, never kept
    "bigcl": ("too_large", 1),  # announced: refused before the body
    "bigmp4": ("too_large", 1),  # unannounced: stopped while reading
    "big": ("not_video", 1),  # zeros: no container magic in the first bytes
    "text": ("not_video", 1),
    "html": ("not_video", 1),
    "m3u": ("not_video", 1),
    "long": ("too_long", 1),  # measured from the container header
}


@pytest.fixture
def ytdlp_calls(monkeypatch):
    """The URLs yt-dlp was asked to extract (its one entry point in the download path)."""
    calls: list[str] = []
    real = download._Session.download

    def spy(self, url, folder):
        calls.append(url)
        return real(self, url, folder)

    monkeypatch.setattr(download._Session, "download", spy)
    return calls


def crawl_rows(server, crawl_config, tmp_path, urls: list[str]):
    path = tmp_path / "urls.jsonl"
    path.write_text("".join(json.dumps({"url": u}) + "\n" for u in urls))
    config = crawl_config("crawl.download.max_duration=2.0", "crawl.download.socket_timeout=20")
    outcome = run_crawl(config, str(tmp_path / "out"), urls_file=str(path), quiet=True)
    rows = pq.read_table(tmp_path / "out" / "candidates.parquet").to_pylist()
    return outcome, {r["url"]: r for r in rows}


def test_direct_links_skip_ytdlp_pages_do_not(server, crawl_config, tmp_path, ytdlp_calls):
    direct = {kind: server.url(f"/m/{kind}-a.mp4") for kind in DIRECT}
    page, sniffed = server.url("/v/ok-p.html"), server.url("/d/ok-s")
    _, rows = crawl_rows(server, crawl_config, tmp_path, [*direct.values(), page, sniffed])
    assert ytdlp_calls == [page]  # the page only: a direct link never reaches yt-dlp
    for kind, (outcome, requests) in DIRECT.items():
        row = rows[direct[kind]]
        got = row["status"] if row["status"] == "downloaded" else row["reason"]
        assert got == outcome, (kind, row["error"])
        assert server.counts[f"/m/{kind}-a.mp4"] == requests, kind
        assert row["attempts"] == requests, kind
    assert rows[page]["status"] == rows[sniffed]["status"] == "downloaded"
    assert server.counts["/d/ok-s"] == 1  # the sniffing GET is the download
    assert "more expected" in rows[direct["trunc"]]["error"]
    assert str(CAP_BYTES) in rows[direct["bigmp4"]]["error"]
    assert server.sent["/m/bigmp4-a.mp4"] < BIG_BYTES / 2  # stopped while downloading
    assert "HTML page" in rows[direct["html"]]["error"]
    assert "playlist" in rows[direct["m3u"]]["error"]
    raw = tmp_path / "out" / "raw"
    kept = {r["path"] for r in rows.values() if r["status"] == "downloaded"}
    assert sorted(f"raw/{p.name}" for p in raw.iterdir()) == sorted(kept)  # nothing else kept
    ok = rows[direct["ok"]]
    assert (tmp_path / "out" / ok["path"]).read_bytes() == server.clip
    assert ok["width"] == 160 and ok["duration"] == pytest.approx(1.0, abs=0.1)
    assert ok["title_raw"] == "ok-a"  # named after the file, as yt-dlp's generic extractor does


def test_direct_rows_are_a_build_manifest(server, crawl_config, tmp_path, ytdlp_calls):
    urls = [server.url(f"/m/ok-{i}.mp4") for i in range(3)]
    outcome, _ = crawl_rows(server, crawl_config, tmp_path, urls)
    assert outcome.counts["downloaded"] == 3 and not ytdlp_calls
    manifest = pq.read_table(tmp_path / "out" / "crawl.parquet").to_pylist()
    assert sorted(r["webpage_url"] for r in manifest) == sorted(urls)
    assert all((tmp_path / "out" / r["path"]).is_file() for r in manifest)


def test_options_only_ytdlp_honours_keep_ytdlp(server, crawl_config, tmp_path, ytdlp_calls):
    url = server.url("/m/ok-a.mp4")
    path = tmp_path / "urls.csv"
    path.write_text(f"url\n{url}\n")
    config = crawl_config("crawl.download.direct=false")
    assert run_crawl(config, str(tmp_path / "out"), urls_file=str(path), quiet=True).exit_code == 0
    assert ytdlp_calls == [url]


def test_what_counts_as_direct():
    assert media_extension("https://cdn.example/v/a%20b.MP4?sig=1") == ".mp4"
    assert media_extension("https://example.com/watch?v=x.mp4") is None  # the query is no path
    assert media_extension("file:///data/a.mp4") is None
    assert container_of(b"\0\0\0\x18ftypisom") == ".mp4"
    assert container_of(b"\x1a\x45\xdf\xa3\x01\0\0\0webm") == ".webm"
    assert container_of(b"<!DOCTYPE html>") is None
    # a platform's page is never fetched to sniff it (one more request that counts against
    # the platform's limits): yt-dlp reads it
    assert claimed_by_platform("https://www.youtube.com/watch?v=Qz7pL2wXk9A")
    assert not claimed_by_platform("https://cdn.example.com/v/1234?sig=x")


def test_files_land_only_when_their_batch_commits(server, tmp_path):
    """Until the batch's commit (fsync, rename) a downloaded file is a temp file in raw/: a
    crash there leaves nothing that looks finished; the commit lands every file whole."""
    stage = DownloadStage(threads=2, rate_per_s=0, attempts=1)
    stage.setup(StageContext(out=str(tmp_path / "out"), allow_private_addresses=True))
    samples = [
        Sample(key=f"k{i}", shard=0, source=server.url(f"/m/ok-c{i}.mp4"), meta={})
        for i in range(3)
    ]
    for sample in samples:
        stage.run_guarded(sample)  # the download step of process_batch, without its commit
    raw = tmp_path / "out" / "raw"
    assert len(list(raw.iterdir())) == 3 and all(is_temp(p.name) for p in raw.iterdir())
    stage.commit(samples)
    assert sorted(p.name for p in raw.iterdir()) == ["k0.mp4", "k1.mp4", "k2.mp4"]
    assert all(p.read_bytes() == server.clip for p in raw.iterdir())
    assert all("staged" not in s.fields["download"] for s in samples)  # never recorded


def test_a_killed_runs_uncommitted_downloads_are_swept(server, crawl_config, tmp_path):
    leftover = tmp_path / "out" / "raw" / temp_name("k0")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(server.clip[:1000])
    outcome, rows = crawl_rows(server, crawl_config, tmp_path, [server.url("/m/ok-a.mp4")])
    assert outcome.counts["downloaded"] == 1 and not leftover.exists()
    kept = [r["path"] for r in rows.values()]
    assert sorted(f"raw/{p.name}" for p in leftover.parent.iterdir()) == kept


def test_a_direct_download_resolves_its_url_once(server, tmp_path, monkeypatch):
    """The URL check before the download and the connection use one lookup (no second
    answer to rebind to): a name that answers another address after its first lookup is
    still downloaded from the first."""

    from vidal import net
    from vidal.crawl.ratelimit import LocalLimiter

    # nothing listens on 127.0.0.2
    lookups = rebinding_name(monkeypatch, "clips.test", ["127.0.0.1", "127.0.0.2"])
    url = server.url("/m/ok-once.mp4").replace("127.0.0.1", "clips.test")
    opts = download.DownloadOptions(rate_per_s=0, attempts=1)
    got, failure, tries = download.download(
        url, "url", opts, LocalLimiter({}, 0), str(tmp_path), policy=net.UrlPolicy(True)
    )
    assert failure is None and got.bytes == len(server.clip)
    assert lookups == ["clips.test"]
