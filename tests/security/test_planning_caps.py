"""Planning bombs: small inputs that expand. Caps apply before the work, so planning's memory
stays small. Memory is measured as the growth of ru_maxrss in a fresh process (after its
imports), with a generous bound: the point is megabytes, not the gigabytes they cost before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidal.io.sources import MAX_URI_CHARS, SourceOptions, list_source
from vidal.text import clean_text, parse_hashtags

MB = 1 << 20
BOUND_MB = 200

PLAN = textwrap.dedent(
    """
    import json, resource, sys
    from vidal.io.sources import list_source
    import pyarrow.parquet, pyarrow.compute  # imports are not what is measured
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    samples = list(list_source(sys.argv[1]))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    titles = sorted({len(s.meta.get("title", "")) for s in samples})
    print(json.dumps({"grown_mb": grown / 1024, "samples": len(samples), "titles": titles}))
    """
)


def _plan_in_subprocess(source: Path) -> dict:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", PLAN, str(source)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sparse_128_mib_txt_sidecar_costs_little(clip_bank, tmp_path):
    shutil.copy(clip_bank / "synth-000.mp4", tmp_path / "v.mp4")
    with open(tmp_path / "v.txt", "wb") as f:
        f.write(b"a real caption #tag ")
        os.truncate(f.fileno(), 128 * MB)  # sparse: no disk used, 128 MiB to read
    found = _plan_in_subprocess(tmp_path)
    assert found["samples"] == 1
    assert found["grown_mb"] < BOUND_MB, found


def test_parquet_of_repeated_1_mib_titles_is_cut_in_arrow(tmp_path):
    rows = 400  # 400 MiB of titles once in Python; a few kB on disk
    title = pa.array(["word " * (MB // 5)])
    table = pa.table(
        {
            "url": pa.array([f"https://example.com/{i}.mp4" for i in range(rows)]),
            "title": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), title),
            "license": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), title),
        }
    )
    manifest = tmp_path / "bomb.parquet"
    pq.write_table(table, manifest, compression="zstd", dictionary_pagesize_limit=4 * MB)
    assert manifest.stat().st_size < 64 * 1024
    found = _plan_in_subprocess(manifest)
    assert found["samples"] == rows
    assert found["titles"] == [len(clean_text("word " * 400, 1000))]  # max_title_chars
    assert found["grown_mb"] < BOUND_MB, found


def test_manifest_cells_are_capped(tmp_path):
    rows = [
        {
            "url": "https://example.com/a.mp4",
            "title": "t " * 10_000,
            "hashtags": [f"#h{i}" for i in range(5000)],
            "license": "l" * 100_000,
            "nested": [["x" * 1000] * 100] * 100,
        },
        {"url": "https://example.com/" + "u" * MAX_URI_CHARS, "title": "long url"},
    ]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    first, second = list_source(str(manifest), SourceOptions(max_title_chars=100))
    assert len(first.meta["title"]) <= 100
    assert len(first.meta["hashtags"]) == 64
    assert len(first.meta["extra"]["license"]) == 400  # 4x max_title_chars
    assert len(json.dumps(first.meta["extra"]["nested"])) < 100_000  # 10 MB in the file
    assert second.errors["source"].startswith("bad_url: longer than")


def test_text_cleaning_reads_only_what_it_keeps():
    huge = "word " * 2_000_000 + "#late"
    assert len(clean_text(huge, 50)) <= 50
    assert "#late" not in parse_hashtags(huge)  # only the start of a string is read
    assert parse_hashtags(["#a"] * 10_000 + ["#b"]) == ["#a"]
    assert parse_hashtags(5) == ["#5"]  # a number where a list was expected is no crash
