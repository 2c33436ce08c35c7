"""`vidal report`: counts, funnel, histograms and the sample grid, from a real small build;
the collection side on 12k synthetic parquet rows; the page in headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vidal.cli import main
from vidal.config import load_config
from vidal.io.shards import SHARD_SCHEMA
from vidal.io.store import Store
from vidal.media.synth import make_clip_set
from vidal.report.html import (
    collect,
    colorize_depth,
    funnel,
    histogram_png,
    pick_samples,
    sample_view,
    write_report,
)
from vidal.run.jobs import build, redecide

CRAWL = {
    "candidates": 20,
    "filtered": 6,
    "filtered_by_reason": {"too_long": 4, "stop_word_title": 2},
    "downloaded": 6,
    "failed": 8,
    "failed_by_reason": {"private": 6, "network": 2},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A real build with every stage that makes a report member: VL filter (drops some),
    depth, clip; one broken file (a failure); a crawl.json beside the source."""
    root = tmp_path_factory.mktemp("report")
    source = root / "source"
    make_clip_set(source, 5, seed=11, duration=(1.0, 1.6), size=(96, 64))
    (source / "broken.mp4").write_bytes(b"not a video")
    (source / "crawl.json").write_text(json.dumps(CRAWL))
    overrides = [
        "runner.kind=local",
        "runner.progress=false",
        "shards=2",
        "stages=[probe,keyframes,vl_filter,depth,clip]",
        "keyframes.short_side=64",
        "depth.inference_size=64",
        "clip.short_side=64",
    ]
    config = load_config("demo", overrides)
    out = root / "out"
    assert build(config, str(source), str(out), quiet=True).failure is None
    # tiny CLIP scores mean nothing: drop the worse half by the stored scores, and repack
    assert redecide(config, str(out), "refilter", quiet=True, top_fraction=0.5).failure is None
    return out


def _rows(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("shards/*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_counts_and_funnel_match_the_shard_parquets(dataset):
    rows = _rows(dataset)
    facts = collect(str(dataset))
    assert facts.rows == len(rows) == 6
    kept = sum(r["status"] == "ok" for r in rows)
    vl_dropped = sum(r["status"] == "dropped" for r in rows)
    assert vl_dropped and kept  # the threshold splits the tiny model's scores
    steps = {name: (count, lost) for name, count, lost in funnel(facts)}
    assert list(steps) == [
        "found",
        "text-filtered",
        "downloaded",
        "in build",
        "decoded",
        "VL-filtered",
        "packed",
    ]
    assert steps["found"][0] == 20 and steps["text-filtered"][0] == 14
    assert steps["text-filtered"][1] == {"too_long": 4, "stop_word_title": 2}
    assert steps["downloaded"] == (6, {"private": 6, "network": 2})
    assert steps["in build"][0] == 6
    assert steps["decoded"][0] == 5 and sum(steps["decoded"][1].values()) == 1
    assert next(iter(steps["decoded"][1])).startswith("probe: ")
    assert steps["VL-filtered"][0] == kept
    assert sum(steps["VL-filtered"][1].values()) == vl_dropped
    assert all(r.startswith("dropped: vl") for r in steps["VL-filtered"][1])
    assert steps["packed"][0] == kept
    # histogram values: VL scores of every scored sample, the rest of kept ones
    assert facts.values["vl_score"].size == kept + vl_dropped
    assert facts.values["duration"].size == kept
    assert facts.values["depth_max_mm"].size == kept


def test_grid_shows_frames_depth_and_every_text_view(dataset, tmp_path):
    store = Store(str(dataset))
    facts = collect(str(dataset))
    picked = pick_samples(store, facts, count=3, seed=0, max_tars=1)
    assert len(picked) == 1 and sum(len(k) for k in picked.values()) == min(
        3, max(facts.kept_per_shard.values())
    )
    path = write_report(str(dataset), str(tmp_path / "r.html"), samples=50, seed=1)
    page = Path(path).read_text()
    kept = [r["key"] for r in _rows(dataset) if r["status"] == "ok"]
    assert page.count("class='cell'") == len(kept)  # 50 asked, all kept samples shown
    assert page.count("class='row frames'") == len(kept)
    assert page.count("class='row depth'") == len(kept)
    assert "class='problem'" not in page
    for key in kept:
        assert f"data-key='{key}'" in page
    assert "<dt>raw</dt>" in page
    assert page.count("<img src='data:image/png;base64,") == 4  # the histograms


def test_infrared_views_and_list_texts(tmp_path):
    """A sample with an infrared member and a list text view (keyframe captions)."""
    n, w, h = 8, 12, 10
    ir = np.tile(np.arange(n * w, dtype=np.uint8)[None, :] * 2, (h, 1))
    depth = (np.random.default_rng(0).random((h, n * w)) * 9000 + 500).astype(np.uint16)
    members = {}
    for name, arr in (("ir.png", ir), ("depth.png", depth)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        members[name] = buf.getvalue()
    meta = {"frames": {"count": n}, "text": {"raw": "a <b>bold</b> title", "ofa": ["x"] * n}}
    members["json"] = json.dumps(meta).encode()
    view = sample_view("k", "vidal-00000", members)
    assert set(view.strips) == {"depth", "infrared"} and not view.problems  # no mp4: no frames
    assert Image.open(io.BytesIO(_decode(view.strips["infrared"]))).size == (
        n * round(72 * w / h) + 2 * (n - 1),
        72,
    )


def _decode(url: str) -> bytes:
    import base64

    return base64.b64decode(url.split(",", 1)[1])


def test_colour_map_and_histogram_are_pure_numpy_pil():
    depth = np.array([[0, 1000, 5000, 10000]], dtype=np.uint16)
    rgb = colorize_depth(depth)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all()  # no depth: black
    assert not (rgb[0, 1] == rgb[0, 3]).all()  # near and far differ
    png = histogram_png([(np.random.default_rng(0).normal(size=500), (76, 120, 168))], "x")
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.std() > 5
    empty = histogram_png([(np.zeros(0), (0, 0, 0))], "nothing")
    assert Image.open(io.BytesIO(empty)).size == (360, 190)


def test_collect_scales_over_many_rows_and_samples_few_tars(tmp_path):
    """12 shards x 1000 rows: counts come from the parquets; the grid picks from 2 tars."""
    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    for shard in range(12):
        rows = []
        for i in range(1000):
            status = ["ok", "ok", "ok", "dropped", "failed"][i % 5]
            rows.append(
                {
                    "key": f"s{shard}-{i}",
                    "status": status,
                    "error": "clip: ffmpeg_failed: x" if status == "failed" else None,
                    "error_reason": "clip: ffmpeg_failed" if status == "failed" else None,
                    "dropped": "vl_score<0.2: 0.1" if status == "dropped" else None,
                    "duration": float(rng.uniform(1, 20)),
                    "caption_chars": int(rng.integers(5, 200)),
                    "vl_score": None if status == "failed" else float(rng.normal(0.25, 0.05)),
                    "depth_min_mm": 500.0,
                    "depth_max_mm": float(rng.uniform(2000, 9000)),
                }
            )
        table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
        pq.write_table(table, tmp_path / "shards" / f"vidal-{shard:05d}.parquet")
    facts = collect(str(tmp_path))
    assert facts.rows == 12000 and facts.status == {"ok": 7200, "dropped": 2400, "failed": 2400}
    steps = {name: count for name, count, _ in funnel(facts)}
    assert steps == {"in build": 12000, "decoded": 12000, "VL-filtered": 9600, "packed": 7200}
    picked = pick_samples(Store(str(tmp_path)), facts, count=16, seed=3, max_tars=2)
    assert len(picked) == 2 and sum(len(v) for v in picked.values()) == 16
    assert facts.values["vl_score"].size == 9600  # ok + dropped (the failed were never scored)


def test_cli_report_writes_into_the_dataset(dataset, capsys):
    assert main(["report", "--out", str(dataset), "--samples", "2"]) == 0
    assert (dataset / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


# -- headless Chromium -----------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: chromium is not installed (see .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


def test_report_renders_in_headless_chromium(dataset, tmp_path):
    chromium = _chromium()
    page = Path(write_report(str(dataset), str(tmp_path / "report.html"), samples=4, seed=2))
    cells = page.read_text().count("class='cell'")
    assert cells >= 2
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chr") as profile:
        shot = tmp_path / "shot.png"
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        done = subprocess.run(
            [
                *common,
                f"--screenshot={shot}",
                "--window-size=1280,2000",
                "--enable-logging=stderr",
                "--v=0",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shot.is_file(), done.stderr[-3000:]
        console = [
            line
            for line in done.stderr.splitlines()
            if "Uncaught" in line or "ERROR:CONSOLE" in line or "CONSOLE(" in line
        ]
        assert not console, console
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert dom.stdout.count('class="cell"') == cells
    assert dom.stdout.count('class="row frames"') == cells
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 20  # not a blank page
    # the grid (below the histograms) has content too: coloured pixels (frames, depth maps)
    lower = img[1100:]
    saturation = lower.max(axis=2) - lower.min(axis=2)
    assert (saturation > 60).mean() > 0.01


def test_funnel_leaves_out_steps_the_pipeline_lacks(tmp_path):
    (tmp_path / "shards").mkdir()
    rows = [
        {"key": "a", "status": "ok", "duration": 2.0},
        {
            "key": "b",
            "status": "failed",
            "error": "probe: not_media: x",
            "error_reason": "probe: not_media",
        },
        {"key": "c", "status": "dropped", "dropped": "too_long: 31.0s > 20s"},
        {
            "key": "d",
            "status": "failed",
            "error": "clip: ffmpeg_failed: x",
            "error_reason": "clip: ffmpeg_failed",
        },
    ]
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    pq.write_table(table, tmp_path / "shards" / "vidal-00000.parquet")
    steps = funnel(collect(str(tmp_path)))
    assert [(name, count) for name, count, _ in steps] == [
        ("in build", 4),
        ("decoded", 2),
        ("packed", 1),
    ]
    assert steps[1][2] == {"probe: not_media": 1, "dropped: too_long": 1}
    assert steps[2][2] == {"clip: ffmpeg_failed": 1}
