"""The search-term database, built the paper's way (LanguageBind §4.1, Appendix A):

1. pool the labels and captions of the visual datasets (YouTube-8M, MSR-VTT, COCO, AVA,
   HMDB-51, ImageNet, and HowTo100M from Table 9), each read in its published format
   (`vidal.crawl.term_sources`), de-duplicated after normalising case, spaces and end punctuation;
2. tag every term's part of speech offline (`vidal.crawl.pos`: Penn tags, as NLTK's tagger);
   its nouns and verbs are its keywords;
3. reduce by frequency: a keyword seen in fewer than `min_keyword_count` terms of the pool is no
   keyword (a typo, a name) unless a label has it; a term of more than `max_words` words, or
   with no keyword left, goes;
4. take a balanced subset of `size` terms (default 100,000): nouns and verbs take turns, and
   within each part of speech its keywords take turns, each taking its next unused term (labels
   before captions, the rest in a seeded random order): nouns and verbs get the same share while
   both last, and the keywords of one part of speech about the same number of terms each.

The paper gives no frequency threshold and no balancing ratio; these are vidal's readings.
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vidal.crawl import term_sources
from vidal.crawl.pos import NOUN, VERB, keywords_many
from vidal.resources import shipped_path

COLUMNS = ["term", "kind", "source", "keyword", "pos", "keywords"]


@dataclass
class TermsConfig:
    size: int = 100_000  # the paper's 100k
    seed: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # source -> local file, folder or zip
    use: list[str] = field(default_factory=lambda: list(term_sources.SOURCES))  # sources to pool
    fetch: bool = False  # download the sources that have a URL and no local file (cached)
    cache_dir: str = "~/.cache/vidal/terms"
    urls: dict[str, str] = field(default_factory=dict)  # override a source's download URL
    vocab_dir: str = "manifests/vocab"  # the shipped label vocabularies (fallback)
    min_keyword_count: int = 2  # a keyword must occur in this many pooled terms
    max_words: int = 16  # longer captions are no search terms
    workers: int = 0  # tagging processes for large pools; 0: one per CPU


@dataclass
class Entry:
    term: str
    kind: str  # label | caption
    source: str
    keywords: list[tuple[str, str]] = field(default_factory=list)  # (word, noun|verb)


def read_vocab(path: Path) -> list[str]:
    """Search forms of a shipped vocabulary CSV (label, term, category; '#' lines are its header);
    '|' separates alternatives (AVA's "run/jog" -> "run|jog")."""
    text = "".join(ln for ln in path.read_text("utf-8").splitlines(True) if not ln.startswith("#"))
    found = []
    for row in csv.DictReader(io.StringIO(text)):
        found += [t.strip() for t in row["term"].split("|") if t.strip()]
    return found


def normalise(text: str) -> str:
    """One form per term: lower case, single spaces, no end punctuation."""
    return re.sub(r"\s+", " ", text).strip().strip(".!?;:, ").lower()


def read_sources(config: TermsConfig) -> tuple[list[Entry], dict]:
    """Every source's entries, and per source its provenance (file or URL, licence, count)."""
    entries, record = [], {}
    cache = Path(config.cache_dir).expanduser()
    for name in config.use:
        source = term_sources.SOURCES.get(name)
        if source is None:
            known = ", ".join(term_sources.SOURCES)
            raise ValueError(f"unknown term source {name!r}; known: {known}")
        texts, paths, url = _read_one(source, config, cache)
        if texts is None:
            continue
        entries += [Entry(t, source.kind, name) for t in texts]
        record[name] = term_sources.provenance(source, paths, url, len(texts))
    if not entries:
        raise FileNotFoundError(
            "no term source could be read: pass --source NAME=PATH (or --fetch with a network)"
        )
    return entries, record


def _read_one(source, config: TermsConfig, cache: Path):
    """(texts, paths, url) of one source: its local file, a fetched copy, or the shipped
    labels; (None, [], None) when it has none of them."""
    local = config.sources.get(source.name)
    if local:
        path = Path(local).expanduser()
        return term_sources.READERS[source.name](path), [path], None
    url = config.urls.get(source.name) or source.url
    if config.fetch and url:
        path = term_sources.fetch(source, cache, url)
        return term_sources.READERS[source.name](path), [path], url
    if source.shipped:
        files = [shipped_path(config.vocab_dir) / f"{stem}.csv" for stem in source.shipped]
        texts = [t for f in files for t in read_vocab(f)]
        return texts, files, None
    return None, [], None


def pool(entries: list[Entry], config: TermsConfig) -> list[Entry]:
    """De-duplicated, tagged, frequency-reduced entries (the first source keeps a term)."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        term = normalise(entry.term)
        if term and term not in unique and len(term.split()) <= config.max_words:
            unique[term] = Entry(term, entry.kind, entry.source)
    workers = config.workers or os.cpu_count() or 1
    tagged = keywords_many([e.term for e in unique.values()], workers)
    for entry, keywords in zip(unique.values(), tagged, strict=True):
        entry.keywords = list(dict.fromkeys(keywords))
    counts = Counter(k for e in unique.values() for k in e.keywords)
    # a dataset's label is its own evidence: its keywords stay, and count in captions too
    labelled = {k for e in unique.values() if e.kind == term_sources.LABEL for k in e.keywords}
    for entry in unique.values():
        entry.keywords = [
            k for k in entry.keywords if k in labelled or counts[k] >= config.min_keyword_count
        ]
    return [e for e in unique.values() if e.keywords]


def balance(entries: list[Entry], size: int, seed: int) -> list[tuple[Entry, tuple[str, str]]]:
    """`size` entries picked in rounds over the keywords (nouns and verbs alternating), each
    with the keyword that picked it."""
    rng = random.Random(seed)
    order = list(range(len(entries)))
    rng.shuffle(order)
    order.sort(key=lambda i: entries[i].kind != term_sources.LABEL)  # labels first, stable
    queues: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in order:
        for keyword in entries[i].keywords:
            queues[keyword].append(i)
    by_pos = {pos: sorted(k for k in queues if k[1] == pos) for pos in (NOUN, VERB)}
    for keys in by_pos.values():
        rng.shuffle(keys)
    rings = {pos: collections.deque(keys) for pos, keys in by_pos.items()}
    cursors = dict.fromkeys(queues, 0)
    taken: set[int] = set()
    picked: list[tuple[Entry, tuple[str, str]]] = []
    turns = itertools.cycle((NOUN, VERB))
    while len(picked) < size and any(rings.values()):
        ring = rings[next(turns)]
        while ring:  # this part of speech's next keyword that still has an unused term
            keyword = ring.popleft()
            index = _next_unused(queues[keyword], cursors, keyword, taken)
            if index is not None:
                ring.append(keyword)
                taken.add(index)
                picked.append((entries[index], keyword))
                break
    return picked


def _next_unused(queue: list[int], cursors: dict, keyword, taken: set[int]) -> int | None:
    at = cursors[keyword]
    while at < len(queue) and queue[at] in taken:
        at += 1
    cursors[keyword] = at + 1
    return queue[at] if at < len(queue) else None


def build_terms(config: TermsConfig, provenance: dict | None = None) -> list[dict]:
    """The balanced term list: rows of term, kind, source, keyword (that picked it), its pos,
    and all its keywords. `provenance`, when given, receives each source's record."""
    entries, record = read_sources(config)
    if provenance is not None:
        provenance.update(record)
    picked = balance(pool(entries, config), config.size, config.seed)
    return [
        {
            "term": entry.term,
            "kind": entry.kind,
            "source": entry.source,
            "keyword": keyword[0],
            "pos": keyword[1],
            "keywords": " ".join(w for w, _ in entry.keywords),
        }
        for entry, keyword in picked
    ]


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


def write_terms(rows: list[dict], path: str, provenance: dict | None = None) -> None:
    """Write the term list as CSV, atomically (temp file + rename), and beside it
    `<name>.sources.json`: each source's file or URL, licence and entry count."""
    import json

    from vidal.io.store import Store

    target = Path(path).resolve()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    store = Store(str(target.parent))
    store.write_bytes(target.name, buf.getvalue().encode("utf-8"))
    if provenance is not None:
        blob = json.dumps(provenance, indent=2, sort_keys=True).encode("utf-8")
        store.write_bytes(f"{target.stem}.sources.json", blob)
