"""Balanced search terms from the label vocabularies shipped in `manifests/vocab/`.

LanguageBind built ~100k terms from the label and caption vocabularies of visual datasets,
balanced by part of speech (nouns and verbs) and frequency. No POS tagger installs with its model
from a package registry here, so vidal balances by what the vocabularies already say: each label
is an object (a noun), an action (a verb phrase) or a scene. The list is built in tiers:

1. every label alone (its search form, alternatives like "run|jog" each a term);
2. pairs across categories: action + object, object + scene, action + scene;
3. triples: action + object + scene.

Within a tier every template gets an equal share, and combinations are drawn uniformly without
replacement with a seeded RNG, so each label appears about equally often (the frequency
balance). The same vocabularies, size and seed always give the same list.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vidal.resources import shipped_path

CATEGORIES = ("object", "action", "scene")
PAIRS = (("action", "object"), ("object", "scene"), ("action", "scene"))
TRIPLES = (("action", "object", "scene"),)


@dataclass
class TermsConfig:
    size: int = 100_000
    seed: int = 0
    vocab_dir: str = "manifests/vocab"  # every *.csv in it (label, term, category)
    sources: list[str] = field(default_factory=list)  # file stems to use; empty = all


@dataclass(frozen=True)
class Label:
    term: str  # the search form
    category: str
    source: str  # the vocabulary file's stem (coco_things, hmdb51, ...)


def read_vocab(path: Path) -> list[Label]:
    """Rows of one vocabulary file ('#' lines are its header comments)."""
    text = "".join(ln for ln in path.read_text("utf-8").splitlines(True) if not ln.startswith("#"))
    labels = []
    for row in csv.DictReader(io.StringIO(text)):
        category = row["category"].strip()
        if category not in CATEGORIES:
            raise ValueError(f"{path.name}: category {category!r} is not one of {CATEGORIES}")
        for term in row["term"].split("|"):
            if term.strip():
                labels.append(Label(term.strip().lower(), category, path.stem))
    return labels


def load_vocabularies(config: TermsConfig) -> dict[str, list[Label]]:
    """Labels by category, de-duplicated by search form (the first source keeps it)."""
    files = sorted(shipped_path(config.vocab_dir).glob("*.csv"))
    if config.sources:
        files = [f for f in files if f.stem in config.sources]
    if not files:
        raise FileNotFoundError(f"no vocabulary files in {config.vocab_dir}")
    by_category: dict[str, list[Label]] = {c: [] for c in CATEGORIES}
    seen: set[str] = set()
    for label in itertools.chain.from_iterable(read_vocab(f) for f in files):
        if label.term not in seen:
            seen.add(label.term)
            by_category[label.category].append(label)
    return by_category


def _draw(pools: list[list[Label]], rng: random.Random) -> Iterator[tuple[Label, ...]]:
    """Combinations of one label per pool, uniformly without replacement, never materialised."""
    sizes = [len(p) for p in pools]
    total = 1
    for n in sizes:
        total *= n
    for index in rng.sample(range(total), total) if total <= 2_000_000 else _lazy(total, rng):
        combo = []
        for pool, n in zip(pools, sizes, strict=True):
            index, i = divmod(index, n)
            combo.append(pool[i])
        yield tuple(combo)


def _lazy(total: int, rng: random.Random) -> Iterator[int]:
    """Distinct random indices for product spaces too large to permute."""
    seen: set[int] = set()
    while len(seen) < total:
        i = rng.randrange(total)
        if i not in seen:
            seen.add(i)
            yield i


def _interleave(streams: list[Iterator[tuple[Label, ...]]]) -> Iterator[tuple[Label, ...]]:
    """Round-robin over the templates of a tier, so each gets an equal share."""
    live = list(streams)
    while live:
        for stream in list(live):
            item = next(stream, None)
            if item is None:
                live.remove(stream)
            else:
                yield item


def build_terms(config: TermsConfig) -> list[dict]:
    """The balanced term list: rows of term, kind, categories, sources."""
    vocab = load_vocabularies(config)
    rng = random.Random(config.seed)
    singles = [(label,) for c in CATEGORIES for label in vocab[c]]
    rng.shuffle(singles)
    tiers = [iter(singles)]
    for templates in (PAIRS, TRIPLES):
        usable = [t for t in templates if all(vocab[c] for c in t)]
        tiers.append(_interleave([_draw([vocab[c] for c in t], rng) for t in usable]))
    rows: list[dict] = []
    seen: set[str] = set()
    for combo in itertools.chain.from_iterable(tiers):
        if len(rows) >= config.size:
            break
        term = " ".join(label.term for label in combo)
        if term not in seen:
            seen.add(term)
            rows.append(_row(term, combo))
    return rows


def _row(term: str, combo: tuple[Label, ...]) -> dict:
    kind = {1: "single", 2: "pair", 3: "triple"}[len(combo)]
    return {
        "term": term,
        "kind": kind,
        "categories": "+".join(label.category for label in combo),
        "sources": "+".join(label.source for label in combo),
    }


def read_terms(path: str) -> list[str]:
    """Search terms from a .csv (a `term` column, or the first column), .txt or .parquet file."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        column = "term" if "term" in table.column_names else table.column_names[0]
        values = table.column(column).to_pylist()
    elif p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            column = (
                "term" if "term" in (reader.fieldnames or []) else (reader.fieldnames or [""])[0]
            )
            values = [row.get(column) for row in reader]
    else:
        values = p.read_text("utf-8").splitlines()
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def write_terms(rows: list[dict], path: str) -> None:
    """Write the term list as CSV, atomically (temp file + rename)."""
    from vidal.run.store import Store

    target = Path(path).resolve()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["term", "kind", "categories", "sources"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    Store(str(target.parent)).write_bytes(target.name, buf.getvalue().encode("utf-8"))
