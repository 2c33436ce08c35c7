"""`vidal crawl --source freesound` against a loopback fake of Freesound's APIv2 (text search with
pages, token auth, previews), with its faults (429, 401, 404, truncated audio); then the sounds
built into shards as audio-only samples beside a video."""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import webdataset as wds

from vidal.cli import main
from vidal.config import load_config
from vidal.crawl.freesound import FreesoundOptions, filter_reason
from vidal.media.ffmpeg import run_ffmpeg
from vidal.run.crawl_freesound import run_freesound_crawl
from vidal.run.jobs import build

TOKEN = "fs-secret-token-0123456789"


def sound(id_, name, tags, description, duration=3.0, rating=4.0, ratings=5, downloads=100):
    return {
        "id": id_,
        "name": name,
        "tags": tags,
        "description": description,
        "duration": duration,
        "avg_rating": rating,
        "num_ratings": ratings,
        "num_downloads": downloads,
        "num_comments": 1,
        "license": "http://creativecommons.org/licenses/by/4.0/",
        "username": "tester",
        "url": f"https://freesound.org/s/{id_}/",
    }


# term -> pages of results (page_size 4)
PAGES = {
    "dog barking": [
        [
            sound(101, "Dog_Bark_Loud.wav", ["dog", "bark"], "a dog barking loudly in a yard"),
            sound(102, "rain on tin roof", ["rain", "roof"], "heavy rain on a metal roof"),
            sound(103, "dog growl", ["dog"], "growling dog", rating=2.0, ratings=4),
            sound(109, "barking dog at the gate", ["dog", "barking"], "a dog barks at the gate"),
        ],
        [
            sound(104, "dog whine", ["dog"], "a dog whining", downloads=2),
            sound(105, "dog bark long", ["dog"], "a long recording", duration=45.0),
            sound(106, "puppy yapping", [], "a puppy"),
            sound(108, "small dog barking", ["dog", "bark", "pet"], "a small dog barking"),
        ],
        [sound(107, "dog bark page three", ["dog"], "never read: max_pages is 2")],
    ],
    "rain": [
        [
            sound(201, "rain on window", ["rain", "window"], "rain drops on a window"),
            sound(202, "thunder and rain", ["rain", "thunder"], "a storm with rain"),
        ]
    ],
}


class FakeFreesound(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        return None

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        state["requests"].append((url.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Token {state['token']}":
            return self.reply(401, json.dumps({"detail": "Invalid token."}).encode())
        if url.path == "/apiv2/search/text/":
            return self.search(urllib.parse.parse_qs(url.query))
        if url.path.startswith("/previews/"):
            return self.preview(url.path)
        return self.reply(404, b'{"detail": "Not found."}')

    def search(self, query: dict) -> None:
        term, page = query["query"][0], int(query["page"][0])
        assert query["page_size"] == ["4"] and "num_downloads" in query["fields"][0]
        seen = self.server.state["seen"]
        seen[term] += 1
        if term == "rain" and seen[term] == 1:
            return self.reply(429, b'{"detail": "Request was throttled."}', {"Retry-After": "1"})
        pages = PAGES.get(term, [[]])
        results = [self.with_previews(s) for s in pages[page - 1]]
        base = f"http://127.0.0.1:{self.server.server_port}/apiv2/search/text/"
        more = {"query": term, "page": page + 1, "page_size": 4, "fields": query["fields"][0]}
        nxt = f"{base}?{urllib.parse.urlencode(more)}" if page < len(pages) else None
        body = {"count": sum(map(len, pages)), "next": nxt, "previous": None, "results": results}
        self.reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def with_previews(self, s: dict) -> dict:
        port = self.server.server_port
        mp3 = f"http://127.0.0.1:{port}/previews/{s['id']}.mp3"
        return {**s, "previews": {"preview-hq-mp3": mp3}, "download": f"{s['url']}download/"}

    def preview(self, path: str) -> None:
        state = self.server.state
        id_ = int(Path(path).stem)
        state["downloads"][id_] += 1
        if id_ == 109:
            return self.reply(404, b'{"detail": "Not found."}')
        if id_ == 108 and state["downloads"][id_] == 1:
            return self.reply(429, b"{}", {"Retry-After": "1"})
        audio = state["audio"]
        if id_ == 201:  # promises the whole file, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(audio)))
            self.end_headers()
            self.wfile.write(audio[: len(audio) // 2])
            return None
        return self.reply(200, audio, {"Content-Type": "audio/mpeg"})

    def reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    mp3 = tmp_path_factory.mktemp("fs") / "tone.mp3"
    run_ffmpeg(
        ["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "libmp3lame", str(mp3)]
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeFreesound)
    server.state = {"token": TOKEN, "audio": mp3.read_bytes()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def reset(server) -> None:
    server.state.update(requests=[], seen=Counter(), downloads=Counter())


def config(server, *extra):
    return load_config(
        "crawl",
        [
            "runner.kind=local",
            "runner.progress=false",
            f"crawl.freesound.api_url=http://127.0.0.1:{server.server_port}/apiv2",
            "crawl.freesound.page_size=4",
            "crawl.freesound.per_term=3",
            "crawl.freesound.attempts=2",
            "crawl.freesound.backoff_base=0.1",
            "crawl.freesound.rate_per_s=0",
            *extra,
        ],
    )


def test_filters_are_the_papers_five():
    opts = FreesoundOptions()
    ok = sound(1, "a", ["x"], "d")
    assert filter_reason(ok, opts) is None
    assert filter_reason({**ok, "avg_rating": 2.0}, opts).startswith("low_rating")
    assert filter_reason({**ok, "num_ratings": 0, "avg_rating": 0}, opts) is None  # unrated
    assert filter_reason({**ok, "num_downloads": 1}, opts).startswith("few_downloads")
    assert filter_reason(ok, FreesoundOptions(min_comments=2)).startswith("few_comments")
    assert filter_reason({**ok, "tags": []}, opts).startswith("few_tags")
    assert filter_reason({**ok, "duration": 21}, opts).startswith("too_long")
    assert filter_reason({**ok, "duration": 0.2}, opts).startswith("too_short")


@pytest.fixture(scope="module")
def crawled(fake, tmp_path_factory):
    reset(fake)
    folder = tmp_path_factory.mktemp("fs_crawl")
    terms = folder / "terms.txt"
    terms.write_text("dog barking\nrain\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("FREESOUND_API_KEY", TOKEN)
    try:
        outcome = run_freesound_crawl(config(fake), str(folder / "out"), str(terms), quiet=True)
    finally:
        mp.undo()
    return outcome, folder / "out", dict(fake.state)


def test_crawl_searches_pages_filters_ranks_and_downloads(crawled):
    outcome, out, state = crawled
    assert outcome.failure is None
    searches = [p for p, _ in state["requests"] if p.endswith("/search/text/")]
    assert state["seen"] == {"dog barking": 2, "rain": 2}  # 2 pages; a 429, then the page
    assert len(searches) == 4  # page 3 of "dog barking" is never read (max_pages 2)
    assert {auth for _, auth in state["requests"]} == {f"Token {TOKEN}"}
    counts = outcome.counts
    assert counts["filtered_at_search"] == {
        "low_rating": 1,
        "few_downloads": 1,
        "too_long": 1,
        "few_tags": 1,
    }
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    by_id = {c["id"]: c for c in cands}
    # per_term 3: the three dog sounds outrank the rain on a roof
    assert set(by_id) == {"101", "108", "109", "201", "202"}
    records = {c["id"]: json.loads(c["record"]) for c in cands}
    dog = [records[i]["meta"]["candidate"]["freesound"]["similarity"] for i in ("101", "108")]
    assert min(dog) > 0.4
    # downloads: 101 at once, 108 after a 429, 109 is gone, 201 arrives cut short every time
    assert {c["id"]: c["status"] for c in cands} == {
        "101": "downloaded",
        "108": "downloaded",
        "109": "failed",
        "201": "failed",
        "202": "downloaded",
    }
    assert by_id["109"]["reason"] == "removed" and by_id["201"]["reason"] == "network"
    assert "truncated" in by_id["201"]["error"] and by_id["201"]["attempts"] == 2
    assert state["downloads"][108] == 2 and state["downloads"][109] == 1
    manifest = pq.read_table(out / "crawl.parquet").to_pylist()
    assert sorted(r["path"] for r in manifest) == [
        "raw/freesound-101.mp3",
        "raw/freesound-108.mp3",
        "raw/freesound-202.mp3",
    ]
    row = next(r for r in manifest if r["video_id"] == "101")
    assert row["title"] == "Dog Bark Loud" and row["hashtags"] == ["#dog", "#bark"]
    assert row["freesound_similarity"] > 0.4 and row["freesound_num_downloads"] == 100
    for path in out.rglob("*"):  # the token is in no output file
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_bad_or_missing_token_is_one_sentence(fake, tmp_path, monkeypatch, capsys):
    reset(fake)
    terms = tmp_path / "terms.txt"
    terms.write_text("dog barking\n")
    args = ["crawl", "--source", "freesound", "--terms", str(terms), "--out", str(tmp_path / "o")]
    args += ["--local", "--quiet", *config_overrides(fake)]
    monkeypatch.delenv("FREESOUND_API_KEY", raising=False)
    assert main(args) == 1
    assert "$FREESOUND_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("FREESOUND_API_KEY", "wrong-token")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "HTTP 401: Invalid token." in err and "wrong-token" not in err
    assert len(fake.state["requests"]) == 1  # 401 is final: no retries


def config_overrides(server) -> list[str]:
    return [
        f"crawl.freesound.api_url=http://127.0.0.1:{server.server_port}/apiv2",
        "crawl.freesound.page_size=4",
        "crawl.freesound.rate_per_s=0",
    ]


def test_sounds_build_as_audio_only_samples_beside_a_video(crawled, clip_bank, tmp_path):
    _, out, _ = crawled
    video = sorted(Path(clip_bank).glob("*.mp4"))[0]
    # the crawl's manifest as it is, plus one video row: one build, one set of shards
    rows = pq.read_table(out / "crawl.parquet").to_pylist()
    for row in rows:
        row["path"] = str(out / row["path"])
    rows.append({"path": str(video), "title": "a video clip", "hashtags": ["#clip"]})
    manifest = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    cfg = load_config(
        "demo",
        [
            "runner.kind=local",
            "runner.progress=false",
            "shards=1",
            "probe.audio_only=true",
            "stages=[probe,keyframes,vl_filter,depth,infrared,captions,enhance,audio,clip]",
            "captions.keyframe.decoding.max_new_tokens=3",
            "captions.video.decoding.max_new_tokens=3",
            "enhance.llm.decoding.max_new_tokens=3",
        ],
    )
    outcome = build(cfg, str(manifest), str(tmp_path / "ds"), quiet=True)
    assert outcome.failure is None
    table = pq.read_table(tmp_path / "ds" / "shards" / "vidal-00000.parquet").to_pylist()
    assert Counter(r["status"] for r in table) == {"ok": 4}, [r["error"] for r in table]
    samples = list(wds.WebDataset(str(tmp_path / "ds/shards/vidal-00000.tar"), shardshuffle=False))
    assert len(samples) == 4
    sounds = [s for s in samples if "mp4" not in s]
    assert len(sounds) == 3
    for sample in sounds:
        meta = json.loads(sample["json"])
        assert set(sample) >= {"flac", "json", "txt"} and "depth.png" not in sample
        assert meta["source_video"]["has_video"] is False and meta["audio"]["present"]
        assert meta["audio"]["sample_rate"] == 16000
        audio, rate = soundfile.read(io.BytesIO(sample["flac"]))
        assert rate == 16000 and 2.5 < len(audio) / rate < 3.5
        assert sample["txt"].decode().startswith(meta["title"])
        assert meta["extra"]["freesound_similarity"] > 0
    videos = [s for s in samples if "mp4" in s]
    assert len(videos) == 1 and {"depth.png", "ir.png", "flac"} <= set(videos[0])
