"""Search terms the paper's way: every source read in its published format (files made here),
fetched and cached from a (loopback) server, pooled, POS-tagged, reduced by frequency and
balanced over nouns and verbs."""

from __future__ import annotations

import collections
import csv
import http.server
import json
import threading
import zipfile

import pytest

from vidal.cli import main
from vidal.crawl import term_sources
from vidal.crawl.terms import TermsConfig, build_terms, read_terms, read_vocab
from vidal.resources import shipped_path

SHIPPED = {"coco_things": 80, "coco_stuff": 53, "hmdb51": 51, "ava": 80}
NOUNS = ["dog", "cat", "horse", "child", "chef", "car", "bird", "woman"]
VERBS = ["running", "jumping", "eating", "swimming", "sleeping", "playing"]
PLACES = ["park", "kitchen", "beach", "street"]


def captions(n: int) -> list[str]:
    return [
        f"a {NOUNS[i % 8]} is {VERBS[i % 6]} in the {PLACES[i % 4]} number {i}." for i in range(n)
    ]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One small file per source, in that source's published format."""
    d = tmp_path_factory.mktemp("term_sources")
    files = {}
    files["youtube8m"] = d / "vocabulary.csv"
    with open(files["youtube8m"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Index",
                "TrainVideoCount",
                "KnowledgeGraphId",
                "Name",
                "WikiUrl",
                "Vertical1",
                "Vertical2",
                "Vertical3",
                "WikiDescription",
            ]
        )
        w.writerow(
            [
                0,
                788288,
                "/m/03bt1gh",
                "Game",
                "https://en.wikipedia.org/wiki/Game",
                "Games",
                "",
                "",
                'A game is structured playing, "usually" for fun.',
            ]
        )
        w.writerow([1, 539945, "/m/01mw1", "Video game", "x", "Games", "", "", "y"])
        w.writerow([2, 415890, "/m/07yv9", "Vehicle", "x", "Autos & Vehicles", "", "", "z"])
    files["msrvtt"] = d / "train_val_videodatainfo.json"
    files["msrvtt"].write_text(
        json.dumps(
            {
                "info": {"year": 2016},
                "videos": [{"video_id": "video0", "category": 9}],
                "sentences": [
                    {"caption": c, "video_id": "video0", "sen_id": i}
                    for i, c in enumerate(captions(40))
                ],
            }
        )
    )
    coco_caps = {
        "images": [],
        "annotations": [{"image_id": 1, "id": i, "caption": c} for i, c in enumerate(captions(20))],
    }
    coco_inst = {
        "categories": [
            {"supercategory": "animal", "id": 18, "name": "dog"},
            {"supercategory": "animal", "id": 19, "name": "horse"},
        ]
    }
    files["coco_zip"] = d / "annotations_trainval2017.zip"
    with zipfile.ZipFile(files["coco_zip"], "w") as z:
        z.writestr("annotations/captions_train2017.json", json.dumps(coco_caps))
        z.writestr("annotations/instances_val2017.json", json.dumps(coco_inst))
    files["ava"] = d / "ava_action_list_v2.2.pbtxt"
    files["ava"].write_text(
        'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
        "  label_type: PERSON_MOVEMENT\n}\n"
        'label {\n  name: "ride (e.g., a bike, a car, a horse)"\n  label_id: 56\n'
        "  label_type: OBJECT_MANIPULATION\n}\n"
    )
    files["hmdb51"] = d / "testTrainMulti_7030_splits"
    files["hmdb51"].mkdir()
    for name in ("brush_hair", "ride_horse", "shoot_ball"):
        for k in (1, 2, 3):
            (files["hmdb51"] / f"{name}_test_split{k}.txt").write_text("a.avi 1\n")
    files["imagenet"] = d / "LOC_synset_mapping.txt"
    files["imagenet"].write_text(
        "n02510455 giant panda, panda, panda bear, coon bear, Ailuropoda melanoleuca\n"
        "n02071294 killer whale, killer, orca, grampus, sea wolf, Orcinus orca\n"
    )
    files["howto100m"] = d / "task_ids.csv"
    files["howto100m"].write_text("1382\tMake Beef Bourguignon\n15341\tPlay Chess\n")
    return files


EXPECTED = {
    "youtube8m": ["Game", "Video game", "Vehicle"],
    "ava": ["bend/bow (at the waist)", "ride (e.g., a bike, a car, a horse)"],
    "hmdb51": ["brush hair", "ride horse", "shoot ball"],
    "imagenet": [
        "giant panda, panda, panda bear, coon bear, Ailuropoda melanoleuca",
        "killer whale, killer, orca, grampus, sea wolf, Orcinus orca",
    ],
    "howto100m": ["how to make Beef Bourguignon", "how to play Chess"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_source_reads_its_published_format(published, name):
    assert term_sources.READERS[name](published[name]) == EXPECTED[name]


def test_caption_sources_and_the_coco_zip(published):
    assert term_sources.read_msrvtt(published["msrvtt"]) == captions(40)
    assert term_sources.read_coco_captions(published["coco_zip"]) == captions(20)
    assert term_sources.read_coco_instances(published["coco_zip"]) == ["dog", "horse"]
    assert term_sources.read_ava(_ava_csv(published)) == ["bend/bow (at the waist)"]


def _ava_csv(published):
    path = published["ava"].with_suffix(".csv")
    path.write_text("label_id,label_name,label_type\n1,bend/bow (at the waist),PERSON_MOVEMENT\n")
    return path


def test_shipped_vocabularies_are_complete_and_name_their_source():
    folder = shipped_path("manifests/vocab")
    for stem, count in SHIPPED.items():
        text = (folder / f"{stem}.csv").read_text("utf-8")
        assert "Source:" in text and ("licen" in text.lower())
        rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
        assert len(rows) == count == len({r["label"] for r in rows}), stem
        assert read_vocab(folder / f"{stem}.csv")


def _config(published, **kw) -> TermsConfig:
    sources = {n: str(published[n]) for n in EXPECTED}
    sources.update(
        msrvtt=str(published["msrvtt"]),
        coco_captions=str(published["coco_zip"]),
        coco_instances=str(published["coco_zip"]),
    )
    return TermsConfig(sources=sources, **kw)


def test_pool_is_tagged_reduced_and_balanced(published):
    provenance = {}
    rows = build_terms(_config(published, size=30), provenance)
    assert len(rows) == 30 == len({r["term"] for r in rows})
    assert set(provenance) == set(term_sources.SOURCES)
    assert provenance["msrvtt"]["entries"] == 40 and "licence" in provenance["ava"]
    assert all(r["term"] == r["term"].lower() and not r["term"].endswith(".") for r in rows)
    # labels come first; the picking keyword is one of the term's nouns and verbs
    kinds = [r["kind"] for r in rows]
    assert kinds.count("label") >= 10 and "how to play chess" in {r["term"] for r in rows}
    assert all(r["keyword"] in r["keywords"].split() for r in rows)
    # nouns and verbs alternate while both last: equal shares
    pos = collections.Counter(r["pos"] for r in rows)
    assert abs(pos["noun"] - pos["verb"]) <= 1, pos


def test_every_keyword_gets_its_round_share():
    rows = _caption_terms(40, size=24)
    # about 13 noun keywords (nouns, places, "number") and 6 verbs (as the tagger sees them):
    # 12 picks each, spread evenly over the keywords of each part of speech
    for pos in ("noun", "verb"):
        keywords = collections.Counter(r["keyword"] for r in rows if r["pos"] == pos)
        assert sum(keywords.values()) == 12, keywords
        assert max(keywords.values()) - min(keywords.values()) <= 1, keywords


def _caption_terms(n, size, tmp=None):
    import tempfile
    from pathlib import Path

    folder = Path(tmp or tempfile.mkdtemp())
    path = folder / "MSRVTT_data.json"
    path.write_text(json.dumps({"sentences": [{"caption": c} for c in captions(n)]}))
    return build_terms(TermsConfig(sources={"msrvtt": str(path)}, use=["msrvtt"], size=size))


def test_rare_caption_words_are_no_keywords(published, tmp_path):
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(
        json.dumps(
            {
                "sentences": [
                    {"caption": "a zorblax glimmers"},  # made-up words, seen once: no keywords left
                    *({"caption": c} for c in captions(12)),
                ]
            }
        )
    )
    rows = build_terms(TermsConfig(sources={"msrvtt": str(path)}, use=["msrvtt"], size=1000))
    assert rows and not any("zorblax" in r["term"] for r in rows)
    assert len(rows) == 12


def test_deterministic_and_seeded(published):
    config = _config(published, size=40)
    assert build_terms(config) == build_terms(config)
    other = build_terms(_config(published, size=40, seed=3))
    assert [r["term"] for r in other] != [r["term"] for r in build_terms(config)]


def test_without_files_the_shipped_labels_serve():
    rows = build_terms(TermsConfig(size=100_000))
    assert 200 < len(rows) <= 264
    assert {r["source"] for r in rows} == {"coco_instances", "ava", "hmdb51"}
    provenance = {}
    build_terms(TermsConfig(size=10), provenance)
    assert set(provenance["coco_instances"]["files"]) == {
        str(shipped_path("manifests/vocab") / "coco_things.csv"),
        str(shipped_path("manifests/vocab") / "coco_stuff.csv"),
    }
    assert provenance["coco_instances"]["licence"].startswith("CC BY 4.0")
    with pytest.raises(ValueError, match="unknown term source"):
        build_terms(TermsConfig(use=["ucf101"]))
    with pytest.raises(FileNotFoundError, match="--source"):
        build_terms(TermsConfig(use=["msrvtt"]))


class _Files(http.server.BaseHTTPRequestHandler):
    served: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        body = self.served.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


def test_fetch_downloads_once_into_the_cache_and_records_the_url(published, tmp_path):
    _Files.served = {"/csv/2/vocabulary.csv": published["youtube8m"].read_bytes()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/csv/2/vocabulary.csv"
    try:
        config = TermsConfig(
            use=["youtube8m", "imagenet"],
            fetch=True,
            urls={"youtube8m": url},
            cache_dir=str(tmp_path / "cache"),
            size=10,
        )
        provenance = {}
        rows = build_terms(config, provenance)
        build_terms(config)  # cached: no second request
        missing = TermsConfig(
            use=["youtube8m"],
            fetch=True,
            cache_dir=str(tmp_path / "c2"),
            urls={"youtube8m": url.replace("vocabulary", "nope")},
        )
        with pytest.raises(FileNotFoundError, match="cannot fetch youtube8m"):
            build_terms(missing)
    finally:
        server.shutdown()
    assert {r["term"] for r in rows} == {"game", "video game", "vehicle"}
    assert _Files.hits.count("/csv/2/vocabulary.csv") == 1
    assert provenance["youtube8m"]["url"] == url
    assert (tmp_path / "cache" / "youtube8m" / "vocabulary.csv").is_file()
    assert "imagenet" not in provenance  # no file and no URL: left out, not an error


def test_cli_writes_terms_and_their_sources(published, tmp_path):
    out = tmp_path / "terms.csv"
    args = [
        "terms",
        "--out",
        str(out),
        "--size",
        "1000",
        "--source",
        f"msrvtt={published['msrvtt']}",
        "--source",
        f"howto100m={published['howto100m']}",
    ]
    assert main(args) == 0
    terms = read_terms(str(out))
    assert 250 < len(terms) < 1000 and "how to play chess" in terms
    sources = json.loads((tmp_path / "terms.sources.json").read_text())
    assert sources["msrvtt"]["file"] == str(published["msrvtt"])
    assert main(["terms", "--out", str(out), "--source", "msrvtt"]) == 2
