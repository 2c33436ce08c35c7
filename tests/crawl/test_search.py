"""The search step on yt-dlp info dicts written in the shape yt-dlp returns (no network):
`fixtures/ytsearch_flat.json` is a `ytsearch` flat playlist (Shorts and watch URLs, a channel
entry, entries missing duration, views or channel), `fixtures/video_full.json` a full video info
dict without a `license` field. They are injected by replacing `vidal.crawl.search.extract_info`,
the one function that calls `YoutubeDL.extract_info`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidal.crawl import search
from vidal.run.crawl import run_crawl
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.search import SearchStage

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text("utf-8"))


@pytest.fixture
def recorded(monkeypatch):
    """Replace yt-dlp with the fixtures; records every URL asked for."""
    calls: list[str] = []
    flat, full = fixture("ytsearch_flat.json"), fixture("video_full.json")

    def fake(url: str, params: dict) -> dict:
        calls.append(url)
        return copy.deepcopy(flat if url.startswith("ytsearch") else full)

    monkeypatch.setattr(search, "extract_info", fake)
    return calls


def test_flat_entries_become_candidates_with_nulls_for_unknowns(recorded):
    found = search.search("dog surfing", "ytsearch{n}:{term} #shorts", 20, {})
    assert recorded == ["ytsearch20:dog surfing #shorts"]
    assert len(found) == 6  # the channel entry is not a video
    first = found[0]
    assert first["id"] == "Qz7pL2wXk9A" and first["platform"] == "youtube"
    assert first["url"] == "https://www.youtube.com/shorts/Qz7pL2wXk9A"
    assert first["hashtags"] == ["#dog", "#surfing", "#shorts"]
    assert first["duration"] == 14.0 and first["view_count"] == 1234567
    assert first["term"] == "dog surfing"
    assert first["width"] is None and first["license"] is None and first["upload_date"] is None
    unknown = next(c for c in found if c["id"] == "Gr8tRetr1ev")
    assert unknown["duration"] is None and unknown["channel"] is None
    assert unknown["view_count"] is None
    assert set(first) == set(search.FIELDS)


def test_full_info_dict_fills_the_rest(recorded):
    info = fixture("video_full.json")
    cand = search.candidate(info, "dog surfing")
    assert cand["url"] == "https://www.youtube.com/watch?v=Qz7pL2wXk9A"
    assert (cand["width"], cand["height"], cand["fps"]) == (720, 1280, 30.0)
    assert cand["upload_date"] == "20250314" and cand["like_count"] == 45210
    assert cand["language"] == "en" and cand["license"] is None
    assert "#goldenretriever" in cand["hashtags"] and "golden retriever" in cand["tags"]
    del info["duration"], info["title"], info["channel"], info["uploader"]
    sparse = search.candidate(info)
    assert sparse["duration"] is None and sparse["title"] == "" and sparse["channel"] is None


def test_search_stage_fetches_full_info_on_request(recorded, tmp_path):
    stage = SearchStage(full_info=True, rate_per_s=0)
    stage.setup(StageContext(out=str(tmp_path)))
    sample = Sample(key="term-x", shard=0, source="", meta={"term": "dog surfing"})
    stage.process_batch([sample])
    found = sample.fields["search"]["candidates"]
    assert len(recorded) == 1 + 6  # the search, then one info dict per result
    assert found[0]["url"] == "https://www.youtube.com/shorts/Qz7pL2wXk9A"  # identity kept
    assert found[0]["like_count"] == 45210 and found[0]["width"] == 720


def test_a_rate_limited_search_is_retried_then_recorded(monkeypatch, tmp_path):
    calls = []

    def limited(url, params):
        calls.append(url)
        raise RuntimeError("ERROR: [youtube:search] HTTP Error 429: Too Many Requests")

    monkeypatch.setattr(search, "extract_info", limited)
    stage = SearchStage(attempts=3, backoff_base=0.001, rate_per_s=0)
    stage.setup(StageContext(out=str(tmp_path)))
    sample = Sample(key="term-x", shard=0, source="", meta={"term": "cat"})
    stage.process_batch([sample])
    assert len(calls) == 3
    assert sample.errors["search"].startswith("rate_limited: ")


def test_crawl_dedups_across_terms_and_records_every_drop(
    monkeypatch, server, crawl_config, tmp_path
):
    """terms -> recorded search -> filters -> real yt-dlp downloads from the loopback server."""
    flat = fixture("ytsearch_flat.json")
    for entry in flat["entries"]:  # the videos live on the loopback server
        if entry["ie_key"] == "Youtube":
            entry["url"] = server.url(f"/v/ok-{entry['id']}.html")

    def fake(url, params):
        result = copy.deepcopy(flat)
        if "cat" in url:  # a second term finds the first video again, and one more
            result["entries"] = result["entries"][:1] + [
                dict(result["entries"][0], id="Other12345a")
            ]
        return result

    monkeypatch.setattr(search, "extract_info", fake)
    terms = tmp_path / "terms.txt"
    terms.write_text("dog surfing\ncat surfing\n")
    out = tmp_path / "out"
    outcome = run_crawl(crawl_config(), str(out), terms_file=str(terms), quiet=True)
    rows = {r["id"]: r for r in pq.read_table(out / "candidates.parquet").to_pylist()}
    assert len(rows) == 7  # 6 + 1 new from the second term; the shared one counted once
    assert rows["Qz7pL2wXk9A"]["terms"] == ["dog surfing", "cat surfing"]
    assert rows["Qz7pL2wXk9A"]["status"] == "downloaded"
    assert rows["Hh3KmN8vR1s"]["dropped"] == "too_long: 45.0s > 20s"
    assert rows["Xy0AbCdEfGh"]["dropped"] == "emoji_only_title"
    assert rows["Fn4yD0gF4il"]["dropped"] == "stop_word: funny"
    assert rows["SnglWrd0001"]["reason"] == "too_few_words"
    assert rows["Gr8tRetr1ev"]["status"] == "downloaded"  # unknown duration: measured on the file
    assert rows["Gr8tRetr1ev"]["duration"] == pytest.approx(1.0, abs=0.1)
    assert outcome.counts["downloaded"] == 3 and outcome.counts["filtered"] == 4
    manifest = pq.read_table(out / "crawl.parquet").to_pylist()
    first = next(r for r in manifest if r["video_id"] == "Qz7pL2wXk9A")
    assert first["hashtags"] == ["#dog", "#surfing"]  # #shorts stripped
    assert first["title"] == "Dog surfing a big wave \U0001f3c4 #dog #surfing"
    assert (out / first["path"]).is_file()

    # a rerun searches nothing and downloads nothing again
    server.reset()
    run_crawl(crawl_config(), str(out), terms_file=str(terms), quiet=True)
    assert sum(server.counts.values()) == 0
