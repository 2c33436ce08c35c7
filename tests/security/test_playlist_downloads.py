"""Issue 11: a download that is a playlist or a manifest (m3u, m3u8, mpd, ffconcat, HTML) is
`not_video` and never kept, whatever its name or Content-Type says: the check reads the bytes.
Built here: playlists that point at a local file, served on 127.0.0.1 as `.mp4` and as what
they are, through the crawl (yt-dlp) and through a manifest build (the probe's fetch)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.security.loopback import Loopback
from vidal import net
from vidal.config import load_config
from vidal.run.crawl import run_crawl
from vidal.run.jobs import build

PLAYLISTS = {
    "hls": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
    "m3u": b"#EXTINF:10,secret\n../../../../etc/passwd\n",
    "dash": b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>\n',
    "mpd": b'<MPD type="static"><Period><BaseURL>file:///etc/</BaseURL></Period></MPD>',
    "ffconcat": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
    "html": b"\xef\xbb\xbf<!DOCTYPE html><html><body>hello</body></html>",
}


@pytest.fixture
def playlist_site():
    server = Loopback("127.0.0.1")
    for name, body in PLAYLISTS.items():
        server.serve(f"/{name}.mp4", body, "video/mp4")  # lies about what it is
    yield server
    server.close()


def test_text_heads_are_recognised_by_content():
    for body in PLAYLISTS.values():
        assert net.text_body(body) is not None
    assert net.text_body(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") is None  # MP4
    assert net.text_body(b"\x1aE\xdf\xa3\x9fB\x86\x81\x01") is None  # Matroska / WebM


def test_crawled_playlists_are_not_video_and_never_kept(playlist_site, tmp_path):
    urls = tmp_path / "urls.jsonl"
    rows = [{"url": playlist_site.url(f"/{n}.mp4"), "title": "two words"} for n in PLAYLISTS]
    urls.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(
        "crawl",
        [
            "runner.kind=local",
            "runner.progress=false",
            "crawl.search.check_url=",
            "crawl.download.rate_per_s=0",
            "crawl.download.verify=false",
            "source.allow_private_addresses=true",
        ],
    )  # fmt: skip  (verify=false: the content check must not lean on the probe)
    run_crawl(config, str(tmp_path / "out"), urls_file=str(urls), quiet=True)
    table = pq.read_table(tmp_path / "out" / "candidates.parquet").to_pylist()
    assert {r["reason"] for r in table} == {"not_video"}, [r["error"] for r in table]
    assert all(playlist_site.hits[f"/{n}.mp4"] for n in PLAYLISTS)  # fetched, then refused
    raw = tmp_path / "out" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


def test_fetched_playlists_fail_in_probe(playlist_site, tmp_path):
    manifest = tmp_path / "m.jsonl"
    names = ["hls", "dash", "ffconcat"]
    rows = [{"url": playlist_site.url(f"/{n}.mp4").replace(".mp4", ".m3u8")} for n in names]
    for name in names:  # served under a playlist's own extension too
        playlist_site.serve(f"/{name}.m3u8", PLAYLISTS[name], "application/vnd.apple.mpegurl")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(
        "demo",
        ["runner.kind=local", "runner.progress=false", "stages=[probe,clip]", "shards=1",
         "source.allow_private_addresses=true"],
    )  # fmt: skip
    out = tmp_path / "out"
    build(config, str(manifest), str(out), quiet=True)
    table = pq.read_table(out / "shards" / "vidal-00000.parquet").to_pylist()
    assert {r["error_reason"] for r in table} == {"probe: not_media"}
    assert not list((out / "work" / "probe").rglob("*.m3u8"))  # nothing kept, no such name
    assert not list((out / "work" / "probe").rglob("*.bin"))
