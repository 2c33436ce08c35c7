"""The shipped vocabularies and the balanced term list built from them."""

from __future__ import annotations

import collections
import csv

from vidal.cli import main
from vidal.crawl.terms import TermsConfig, build_terms, read_terms, read_vocab
from vidal.resources import shipped_path

EXPECTED = {"coco_things": 80, "coco_stuff": 53, "hmdb51": 51, "ucf101": 101, "ava": 80}


def test_vocabularies_are_complete_and_name_their_source():
    folder = shipped_path("manifests/vocab")
    for stem, count in EXPECTED.items():
        text = (folder / f"{stem}.csv").read_text("utf-8")
        assert "Source:" in text and ("licen" in text.lower())
        rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
        assert len(rows) == count == len({r["label"] for r in rows}), stem
        assert read_vocab(folder / f"{stem}.csv")


def test_term_list_is_deterministic_unique_and_sized():
    config = TermsConfig(size=3000, seed=7)
    rows = build_terms(config)
    assert rows == build_terms(config)
    assert len(rows) == 3000 == len({r["term"] for r in rows})
    assert build_terms(TermsConfig(size=3000, seed=8)) != rows


def test_every_label_alone_comes_first_then_balanced_combinations():
    rows = build_terms(TermsConfig(size=5000))
    kinds = [r["kind"] for r in rows]
    singles = kinds.count("single")
    assert kinds[:singles] == ["single"] * singles and singles > 300
    pairs = [r for r in rows if r["kind"] == "pair"]
    by_template = collections.Counter(r["categories"] for r in pairs)
    assert set(by_template) == {"action+object", "object+scene", "action+scene"}
    assert max(by_template.values()) - min(by_template.values()) <= 1  # equal shares
    objects = collections.Counter(
        r["term"].split(" ")[-1] for r in pairs if r["categories"] == "action+object"
    )
    assert max(objects.values()) <= 4 * (sum(objects.values()) / len(objects))  # no label dominates


def test_cli_writes_the_term_manifest(tmp_path):
    out = tmp_path / "terms.csv"
    assert main(["terms", "--out", str(out), "--size", "500"]) == 0
    assert len(read_terms(str(out))) == 500
    assert read_terms(str(out))[:3] == [r["term"] for r in build_terms(TermsConfig(size=3))]
