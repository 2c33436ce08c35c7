"""The search-term sources of the paper (LanguageBind §4.1, Table 9), each read in its published
format from a local file, or fetched (`--fetch`) where a download URL is known and a network is.

| source | published file | what becomes terms |
|---|---|---|
| youtube8m | `vocabulary.csv` (Index, TrainVideoCount, KnowledgeGraphId, Name, ...) | `Name` |
| msrvtt | `train_val_videodatainfo.json` / `MSRVTT_data.json` (`sentences[].caption`) | captions |
| coco_captions | `captions_*2017.json` (`annotations[].caption`), or its zip | captions |
| coco_instances | `instances_*2017.json` (`categories[].name`), or its zip | labels |
| ava | `ava_action_list_v2.*.pbtxt` (`label { name: "..." }`), or a CSV of names | labels |
| hmdb51 | class folders, split files `<class>_test_split<k>.txt`, or one per line | labels |
| imagenet | `LOC_synset_mapping.txt` (`n01440764 tench, Tinca tinca`) | synsets |
| howto100m | `task_ids.csv` (task id, tab, task name) | "how to <task>" |

Sources without a file fall back to the label vocabularies shipped in `manifests/vocab/`
(COCO categories, AVA actions, HMDB-51 classes: small, CC BY 4.0). Fetched files are cached;
each source's licence is recorded beside the term list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LABEL, CAPTION = "label", "caption"


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # label | caption: what its entries are
    licence: str
    url: str | None  # where --fetch gets it (None: no stable public URL; pass a local file)
    shipped: tuple[str, ...] = ()  # manifests/vocab/*.csv used when there is no file


SOURCES = {
    s.name: s
    for s in (
        Source(
            "youtube8m",
            LABEL,
            "CC BY 4.0 (YouTube-8M dataset)",
            "https://research.google.com/youtube8m/csv/2/vocabulary.csv",
        ),
        Source(
            "msrvtt",
            CAPTION,
            "MSR-VTT annotations: Microsoft Research, for research use; check its terms",
            None,
        ),
        Source(
            "coco_captions",
            CAPTION,
            "CC BY 4.0 (COCO annotations)",
            "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        ),
        Source(
            "coco_instances",
            LABEL,
            "CC BY 4.0 (COCO annotations)",
            "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
            ("coco_things", "coco_stuff"),
        ),
        Source(
            "ava",
            LABEL,
            "CC BY 4.0 (AVA actions)",
            "https://research.google.com/ava/download/ava_action_list_v2.2.pbtxt",
            ("ava",),
        ),
        Source("hmdb51", LABEL, "CC BY 4.0 (HMDB-51)", None, ("hmdb51",)),
        Source(
            "imagenet",
            LABEL,
            "synset names from WordNet 3.0 (WordNet licence); ImageNet's terms cover its images",
            None,
        ),
        Source(
            "howto100m",
            LABEL,  # task names: HowTo100M's labels
            "HowTo100M metadata: for research use; check its terms",
            None,
        ),
    )
}


class SourceUnavailable(FileNotFoundError):
    """A source that has neither a local file nor a way to get one; the message says what to do."""


# -- readers, one per published format -------------------------------------------------------


def read_youtube8m(path: Path) -> list[str]:
    rows = csv.DictReader(io.StringIO(_text(path, "vocabulary")))
    return [row["Name"] for row in rows if row.get("Name")]


def read_msrvtt(path: Path) -> list[str]:
    data = json.loads(_text(path, "videodatainfo", "msrvtt"))
    return [s["caption"] for s in data.get("sentences", []) if s.get("caption")]


def read_coco_captions(path: Path) -> list[str]:
    data = json.loads(_text(path, "captions_train", "captions_"))
    return [a["caption"] for a in data.get("annotations", []) if a.get("caption")]


def read_coco_instances(path: Path) -> list[str]:
    data = json.loads(_text(path, "instances_val", "instances_"))
    return [c["name"] for c in data.get("categories", []) if c.get("name")]


_PBTXT_NAME = re.compile(r'\bname:\s*"((?:[^"\\]|\\.)*)"')


def read_ava(path: Path) -> list[str]:
    text = _text(path, "action_list")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = next((header.index(h) for h in ("name", "label_name", "action") if h in header), 1)
        return [r[column] for r in rows[1:] if len(r) > column and r[column].strip()]
    return _PBTXT_NAME.findall(text)


_SPLIT_FILE = re.compile(r"^(.+)_test_split\d+\.txt$")


def read_hmdb51(path: Path) -> list[str]:
    if path.is_dir():
        names = {m.group(1) for p in path.iterdir() if (m := _SPLIT_FILE.match(p.name))}
        names |= {p.name for p in path.iterdir() if p.is_dir()}
        return [n.replace("_", " ") for n in sorted(names)]
    return [ln.strip().replace("_", " ") for ln in _text(path).splitlines() if ln.strip()]


def read_imagenet(path: Path) -> list[str]:
    terms = []
    for line in _text(path, "synset").splitlines():
        wnid, _, names = line.strip().partition(" ") if "\t" not in line else line.partition("\t")
        if re.fullmatch(r"n\d{8}", wnid.strip()) and names.strip():
            terms.append(names.strip())
    return terms


def read_howto100m(path: Path) -> list[str]:
    text = _text(path, "task_ids")
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    tasks = [row[-1].strip() for row in csv.reader(io.StringIO(text), dialect) if row]
    return [f"how to {t[0].lower()}{t[1:]}" for t in tasks if t and not t.isdigit()]


READERS: dict[str, Callable[[Path], list[str]]] = {
    "youtube8m": read_youtube8m,
    "msrvtt": read_msrvtt,
    "coco_captions": read_coco_captions,
    "coco_instances": read_coco_instances,
    "ava": read_ava,
    "hmdb51": read_hmdb51,
    "imagenet": read_imagenet,
    "howto100m": read_howto100m,
}


def _text(path: Path, *members: str) -> str:
    """A file's text; from a zip, the first member whose name contains one of `members`."""
    if path.suffix.lower() != ".zip":
        return path.read_text(encoding="utf-8-sig")
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for wanted in members:
            for name in names:
                if wanted in Path(name).name:
                    return archive.read(name).decode("utf-8-sig")
    raise SourceUnavailable(f"{path.name} holds no file named like {' or '.join(members)}")


# -- fetching --------------------------------------------------------------------------------


def fetch(source: Source, cache_dir: Path, url: str | None = None, timeout: float = 60.0) -> Path:
    """The source's published file in the cache, downloaded once (atomically: temp + rename).
    Not exercised against the real hosts here (no network on the build machines)."""
    url = url or source.url
    if not url:
        raise SourceUnavailable(
            f"{source.name} has no known download URL; pass --source {source.name}=PATH"
        )
    name = Path(urllib.request.urlparse(url).path).name or source.name
    target = cache_dir / source.name / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "vidal-terms"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as f:  # noqa: S310
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise SourceUnavailable(f"cannot fetch {source.name} from {url}: {exc}") from exc
    partial.replace(target)
    return target


def provenance(source: Source, paths: list[Path], url: str | None, count: int) -> dict:
    """What the term list records per source: where it came from, its licence, its size."""
    record = {"licence": source.licence, "entries": count, "kind": source.kind}
    if paths:
        record.update(file=str(paths[0]), sha256=_sha256(paths[0]))
        record["read_at"] = time.strftime("%Y-%m-%d")
    if len(paths) > 1:  # the shipped lists of a source (COCO's things and stuff)
        record["files"] = {str(p): _sha256(p) for p in paths}
    if url:
        record["url"] = url
    return record


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()
