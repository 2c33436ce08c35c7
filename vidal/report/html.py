"""The dataset report: one static HTML page, every image inline as a data URL.

What it shows, and where each part comes from:

- summary counts: the shard parquets (one row per input sample), `dataset.json` for the
  pipeline and models;
- the funnel found -> text-filtered -> downloaded (the crawl's `crawl.json`, when there is one)
  -> in build -> decoded -> <each filtering stage's step: VL-filtered, deduplicated> -> packed
  (the shard parquets' status, error and dropped columns), each step with the reasons samples
  left at it; steps the pipeline does not have are left out;
- histograms of the columns that declare one (duration, VL score, depth min and max per clip,
  caption length, ...), from the parquet columns only, drawn with numpy + PIL;
- a grid of random kept samples: a row per tar member that declares a preview (8 keyframes
  decoded from `KEY.mp4` with PyAV, the depth maps of `KEY.depth.png` colour-mapped, the
  infrared frames of `KEY.ir.png`, ...), each stage's short facts and every text view from
  `KEY.json`.

What each stage contributes comes from its declarations (`Stage.outputs`,
vidal.stages.outputs), so a new stage shows up here without an edit.

It scales to any dataset size: the parquets are read a few columns and one file at a time
(counts and float arrays only), and the grid's samples come from at most `max_tars` randomly
chosen shards, each tar streamed once and left as soon as its chosen samples were read.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import json
import logging
import os
import random
import tarfile
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidal.io.keys import is_safe_key
from vidal.io.store import Store
from vidal.media.container import open_media
from vidal.stages.outputs import Funnel, Histogram
from vidal.stages.registry import STAGES, declared

log = logging.getLogger(__name__)

STATUS_COLUMNS = ["key", "status", "error", "error_reason", "dropped"]
CORE_HISTOGRAMS = [("caption_chars", Histogram("caption length (kept)", "characters"))]
THUMB_H = 72  # pixel height of each frame in the grid's strips
N_FRAMES = 8
DECODED, PACKED = "decoded", "packed"
UNREAD = ("source", "download")  # errors before any stage read the media


def histogram_columns() -> list[tuple[str, Histogram]]:
    """(column, histogram) for every column that declares one; the core's last."""
    found = [
        (c.name, c.histogram) for _, outputs in declared() for c in outputs.columns if c.histogram
    ]
    return found + CORE_HISTOGRAMS


def funnel_stages() -> dict[str, Funnel]:
    return {name: outputs.funnel for name, outputs in declared() if outputs.funnel}


# -- collecting ----------------------------------------------------------------------------


@dataclass
class DatasetFacts:
    """Everything the report shows except the sample grid, gathered without holding rows."""

    shards: int = 0
    rows: int = 0
    status: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    drops: collections.Counter = field(default_factory=collections.Counter)
    losses: dict = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    values: dict = field(default_factory=dict)  # column -> float array (kept samples' values)
    kept_per_shard: dict = field(default_factory=dict)  # shard file stem -> kept count
    dataset: dict = field(default_factory=dict)
    crawl: dict | None = None
    stages: list = field(default_factory=list)


def _loss_step(
    stages: list[str], status: str, error: str | None, dropped: str | None, funnels: dict
) -> str:
    """The funnel step at which a sample that was not packed left (`funnels`: funnel_stages())."""
    if status == "dropped" and dropped:
        slug = dropped.split(":", 1)[0].strip()
        for f in funnels.values():
            if slug.startswith(f.drops):
                return f.step
        return DECODED
    stage = (error or "").split(":", 1)[0].strip()
    if stage in funnels:
        return funnels[stage].step
    filters = [i for i, s in enumerate(stages) if s in funnels and funnels[s].step != DECODED]
    if stage in stages and filters:  # failed before the first filter: it never got that far
        return DECODED if stages.index(stage) < filters[0] else PACKED
    return DECODED if stage in UNREAD else PACKED


def _loss_reason(status: str, error_reason: str | None, dropped: str | None) -> str:
    if status == "dropped":
        return f"dropped: {(dropped or '?').split(':', 1)[0].strip()}"
    return error_reason or "failed"


def collect(out: str, crawl: str | None = None) -> DatasetFacts:
    """Counts, funnel losses and histogram values from the shard parquets, one at a time."""
    import pyarrow.parquet as pq

    store = Store(out)
    facts = DatasetFacts()
    facts.dataset = store.read_json("dataset.json") or {}
    facts.stages = list((facts.dataset.get("config") or {}).get("stages") or [])
    facts.crawl = _crawl_summary(store, crawl)
    values = collections.defaultdict(list)
    hists, funnels = dict(histogram_columns()), funnel_stages()
    files = sorted(p for p in store.glob("shards/vidal-*.parquet"))
    for rel in files:
        with store.fs.open(store.path(rel), "rb") as f:
            schema = pq.read_schema(f)
            f.seek(0)
            cols = [c for c in [*STATUS_COLUMNS, *hists] if c in schema.names]
            table = pq.read_table(f, columns=cols)
        facts.shards += 1
        facts.rows += table.num_rows
        status = table.column("status").to_pylist()
        get = {
            c: (table.column(c).to_pylist() if c in cols else [None] * len(status))
            for c in STATUS_COLUMNS[2:5]
        }
        kept = 0
        for i, st in enumerate(status):
            facts.status[st] += 1
            if st == "ok":
                kept += 1
                continue
            error, reason, dropped = get["error"][i], get["error_reason"][i], get["dropped"][i]
            if st == "failed" and reason:
                facts.errors[reason] += 1
            if st == "dropped" and dropped:
                facts.drops[dropped.split(":", 1)[0].strip()] += 1
            step = _loss_step(facts.stages, st, error, dropped, funnels)
            facts.losses[step][_loss_reason(st, reason, dropped)] += 1
        facts.kept_per_shard[os.path.basename(rel)[: -len(".parquet")]] = kept
        ok = np.asarray([s == "ok" for s in status], dtype=bool)
        for col, hist in hists.items():
            if col in cols:
                arr = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
                # a filter's scores of dropped samples are the point of the filter: all rows
                mask = np.ones_like(ok) if hist.all_rows else ok
                values[col].append(arr[mask & np.isfinite(arr)])
    facts.values = {c: np.concatenate(v) if v else np.zeros(0) for c, v in values.items()}
    return facts


def _crawl_summary(store: Store, crawl: str | None) -> dict | None:
    """crawl.json: given, in the output, or beside the build's source manifest."""
    candidates = []
    if crawl:
        candidates.append(crawl if crawl.endswith(".json") else os.path.join(crawl, "crawl.json"))
    plan = store.read_json("work/plan.json") or {}
    source = plan.get("source") or ""
    if source:
        folder = source if os.path.isdir(source) else os.path.dirname(source)
        candidates.append(os.path.join(folder, "crawl.json"))
    found = store.read_json("crawl.json")
    if found is not None and not crawl:
        return found
    for path in candidates:
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return found


def funnel(facts: DatasetFacts) -> list[tuple[str, int, dict]]:
    """[(step, samples remaining, {reason: samples lost at this step})]."""
    steps: list[tuple[str, int, dict]] = []
    crawl = facts.crawl
    if crawl and crawl.get("candidates") is not None:
        found = int(crawl.get("candidates", 0))
        filtered = int(crawl.get("filtered", 0))
        steps.append(("found", found, {}))
        steps.append(("text-filtered", found - filtered, dict(crawl.get("filtered_by_reason", {}))))
        failed = dict(crawl.get("failed_by_reason", {}))
        steps.append(("downloaded", int(crawl.get("downloaded", 0)), failed))
    remaining = facts.rows
    steps.append(("in build", remaining, {}))
    names = [DECODED]
    for stage, f in funnel_stages().items():
        if f.step not in names and _ran(facts, stage, f):
            names.append(f.step)
    names.append(PACKED)
    carried = collections.Counter()
    for name in names:
        lost = carried + facts.losses.get(name, collections.Counter())
        carried = collections.Counter()
        remaining -= sum(lost.values())
        steps.append((name, remaining, dict(lost.most_common())))
    # losses at steps this pipeline does not show still count (at "packed")
    hidden = sum(sum(c.values()) for s, c in facts.losses.items() if s not in names)
    if hidden:
        name, count, lost = steps[-1]
        steps[-1] = (name, count - hidden, lost)
    return steps


def _ran(facts: DatasetFacts, stage: str, f: Funnel) -> bool:
    """Whether the build ran the stage: in its pipeline, or seen in the rows it left."""
    columns = [c.name for c in STAGES[stage].outputs.columns]
    has_values = any(facts.values.get(c, np.zeros(0)).size for c in columns)
    return stage in facts.stages or bool(facts.losses.get(f.step)) or has_values


# -- drawing (numpy + PIL only) ------------------------------------------------------------


def turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colour map (polynomial fit), x in [0, 1] -> uint8 RGB."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    coeffs = np.array(
        [
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ]
    )
    powers = x ** np.arange(6)
    rgb = powers @ coeffs.T
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def colorize_depth(depth: np.ndarray, relative: bool = False) -> np.ndarray:
    """uint16 depth (mm, or min-max inverse depth when relative) -> RGB, near = warm."""
    d = depth.astype(np.float64)
    valid = d > 0 if not relative else np.ones_like(d, dtype=bool)
    if not valid.any():
        return np.zeros((*d.shape, 3), np.uint8)
    lo, hi = np.percentile(d[valid], [2, 98])
    x = (d - lo) / (hi - lo) if hi > lo else np.full_like(d, 0.5)
    rgb = turbo(x if relative else 1.0 - x)
    rgb[~valid] = 0
    return rgb


def histogram_png(
    series: list[tuple[np.ndarray, tuple[int, int, int]]],
    label: str,
    bins: int = 30,
    size: tuple[int, int] = (360, 190),
) -> bytes:
    """A histogram of one or more series (overlaid, translucent) as PNG bytes."""
    w, h = size
    left, right, top, bottom = 44, 10, 10, 34
    img = Image.new("RGBA", size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    data = [s for s in series if s[0].size]
    if not data:
        draw.text((left, h // 2 - 6), f"no {label} values", fill=(90, 90, 90), font=font)
        return _png(img.convert("RGB"))
    lo = min(float(d.min()) for d, _ in data)
    hi = max(float(d.max()) for d, _ in data)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(d, bins=edges)[0] for d, _ in data]
    top_count = max(int(c.max()) for c in counts) or 1
    pw, ph = w - left - right, h - top - bottom
    for c, (_, colour) in zip(counts, data, strict=True):
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        for i, n in enumerate(c):
            if not n:
                continue
            x0 = left + pw * i / bins
            x1 = left + pw * (i + 1) / bins - 1
            y0 = top + ph * (1 - n / top_count)
            ld.rectangle(
                [x0, y0, max(x0, x1), top + ph], fill=(*colour, 170 if len(data) > 1 else 255)
            )
        img = Image.alpha_composite(img, layer)
    draw = ImageDraw.Draw(img)
    draw.line([left, top + ph, left + pw, top + ph], fill=(0, 0, 0))
    draw.line([left, top, left, top + ph], fill=(0, 0, 0))
    draw.text((2, top - 2), str(top_count), fill=(0, 0, 0), font=font)
    draw.text((2, top + ph - 10), "0", fill=(0, 0, 0), font=font)
    draw.text((left, top + ph + 4), _fmt(lo), fill=(0, 0, 0), font=font)
    hi_text = _fmt(hi)
    draw.text((left + pw - 6 * len(hi_text), top + ph + 4), hi_text, fill=(0, 0, 0), font=font)
    draw.text((left + pw // 2 - 3 * len(label), top + ph + 18), label, fill=(0, 0, 0), font=font)
    return _png(img.convert("RGB"))


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def strip(frames: list[np.ndarray] | np.ndarray, height: int = THUMB_H) -> Image.Image:
    """Frames (H, W[, 3]) side by side, each scaled to `height`."""
    thumbs = []
    for f in frames:
        im = Image.fromarray(f)
        w = max(1, round(im.width * height / im.height))
        thumbs.append(im.resize((w, height), Image.BILINEAR))
    out = Image.new("RGB", (sum(t.width for t in thumbs) + 2 * (len(thumbs) - 1), height), "white")
    x = 0
    for t in thumbs:
        out.paste(t.convert("RGB"), (x, 0))
        x += t.width + 2
    return out


def decode_keyframes(mp4: bytes, n: int = N_FRAMES) -> list[np.ndarray]:
    """n frames at LanguageBind's indices (linspace over the clip's frames), via PyAV."""
    # a shard's mp4 is untrusted bytes: opened as a vetted container, never as a playlist
    with open_media(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        if total and total >= n:
            wanted = set(np.linspace(0, total - 1, n, dtype=int).tolist())
            picked = []
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    picked.append(_small(frame))
                if len(picked) == len(wanted):
                    break
            if len(picked) == len(wanted):
                return picked
            container.seek(0)
        frames = [_small(f) for f in container.decode(stream)]
    if not frames:
        raise ValueError("no video frames")
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n, dtype=int)]


def _small(frame) -> np.ndarray:
    im = frame.to_image()
    w = max(1, round(im.width * THUMB_H / im.height))
    return np.asarray(im.resize((w, THUMB_H), Image.BILINEAR))


def _untile(image: np.ndarray, n: int) -> list[np.ndarray]:
    if image.shape[1] % n:
        return [image]
    return list(np.split(image, n, axis=1))


def preview_frames(kind, data: bytes, public: dict, n: int) -> list[np.ndarray]:
    """The frames a member's row shows (`Member.preview`): uint8 (H, W) or (H, W, 3) arrays."""
    if callable(kind):
        return kind(data, public, n)
    if kind == "video":
        return decode_keyframes(data, n)
    image = Image.open(io.BytesIO(data))
    if kind == "depth":
        relative = bool(public.get("relative"))
        return [colorize_depth(t, relative) for t in _untile(np.asarray(image), n)]
    if kind == "tiles":
        if image.mode.startswith("I"):  # 16/32-bit: the high byte is enough to see
            pixels = np.asarray(image).astype(np.uint32)
            return _untile((pixels >> 8).clip(0, 255).astype(np.uint8), n)
        image = image if image.mode in ("L", "RGB") else image.convert("RGB")
        return _untile(np.asarray(image), n)
    raise ValueError(f"unknown preview {kind!r}")


# -- the sample grid -----------------------------------------------------------------------


def pick_samples(
    store: Store, facts: DatasetFacts, count: int, seed: int, max_tars: int
) -> dict[str, list[str]]:
    """{shard stem: [keys]}: `count` random kept samples from at most `max_tars` shards."""
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    shards = sorted(s for s, k in facts.kept_per_shard.items() if k)
    chosen = rng.sample(shards, min(max_tars, len(shards)))
    pool = []
    for stem in sorted(chosen):
        with store.fs.open(store.path(f"shards/{stem}.parquet"), "rb") as f:
            t = pq.read_table(f, columns=["key", "status"])
        pool += [
            (stem, k)
            for k, s in zip(t["key"].to_pylist(), t["status"].to_pylist(), strict=True)
            if s == "ok" and is_safe_key(k)  # keys read back are untrusted (vidal.io.keys)
        ]
    picked = sorted(rng.sample(pool, min(count, len(pool))))
    out = collections.defaultdict(list)
    for stem, key in picked:
        out[stem].append(key)
    return dict(out)


def read_members(store: Store, stem: str, keys: list[str]) -> dict[str, dict[str, bytes]]:
    """The chosen samples' members, streaming the tar once and stopping when all were read."""
    wanted = set(keys)
    found: dict[str, dict[str, bytes]] = collections.defaultdict(dict)
    with (
        store.fs.open(store.path(f"shards/{stem}.tar"), "rb") as f,
        tarfile.open(fileobj=f, mode="r|") as tar,
    ):
        for member in tar:
            key, _, ext = member.name.partition(".")
            if key in wanted:
                data = tar.extractfile(member)
                if data is not None:
                    found[key][ext] = data.read()
            elif set(found) == wanted:  # members of a sample are adjacent: all were read
                break
    return dict(found)


@dataclass
class SampleView:
    key: str
    shard: str
    meta: dict
    strips: dict = field(default_factory=dict)  # row label ("frames", "depth") -> data URL
    problems: list = field(default_factory=list)


def sample_view(key: str, shard: str, members: dict[str, bytes]) -> SampleView:
    meta = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError as exc:
            meta = {}
            problem = f"json: {exc}"
        else:
            problem = None
    else:
        problem = "json: missing"
    view = SampleView(key, shard, meta, problems=[problem] if problem else [])
    n = int((meta.get("frames") or {}).get("count") or N_FRAMES)
    for name, outputs in declared():
        public = (meta.get(outputs.json_key(name)) or {}) if outputs.public else {}
        for member in outputs.members:
            if member.preview is None or member.ext not in members:
                continue
            label = member.label or name
            try:
                count = int(public.get("count") or n)
                frames = preview_frames(member.preview, members[member.ext], public, count)
                view.strips[label] = data_url(_jpeg(strip(frames)), "image/jpeg")
            except Exception as exc:  # one unreadable member: said in its cell, page goes on
                view.problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return view


# -- the page ------------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px}h2{margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#777}table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;
border-bottom:1px solid #eee}th{text-align:left}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:8px 14px}.card b{display:block;font-size:22px}
.bar{background:#4c78a8;height:14px;display:inline-block;vertical-align:middle}
.hists{display:flex;flex-wrap:wrap;gap:16px}.hists figure{margin:0;background:#fff;
border:1px solid #ddd;padding:6px}.grid{display:grid;grid-template-columns:1fr;gap:14px}
.cell{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;overflow:hidden}
.cell h3{margin:0 0 4px;font-size:14px;font-family:monospace}.row{display:flex;
align-items:center;gap:8px;margin:4px 0}.row span{width:70px;color:#555;flex:none}
.row img{max-width:calc(100% - 80px);height:auto;image-rendering:auto}
dl{margin:6px 0 0;display:grid;grid-template-columns:max-content 1fr;gap:2px 10px}
dt{color:#555;font-family:monospace}dd{margin:0}.problem{color:#b00}
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _table(rows: list[tuple], head: tuple) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render(facts: DatasetFacts, views: list[SampleView], out_label: str) -> str:
    kept = facts.status.get("ok", 0)
    hours = float(facts.values.get("duration", np.zeros(0)).sum()) / 3600
    cards = [
        ("samples in", facts.rows),
        ("kept", kept),
        ("dropped", facts.status.get("dropped", 0)),
        ("failed", facts.status.get("failed", 0)),
        ("shards", facts.shards),
        ("hours kept", f"{hours:.2f}"),
    ]
    totals = facts.dataset.get("totals") or {}
    if totals.get("tar_bytes"):
        cards.append(("tar size", f"{totals['tar_bytes'] / 1e9:.2f} GB"))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vidal report: {_e(out_label)}</title><style>{CSS}</style></head><body>",
        f"<h1>vidal dataset report</h1><p class='muted'>{_e(out_label)} · generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
        "<h2>Summary</h2><div class='cards' id='summary'>",
        *(f"<div class='card'><b>{_e(v)}</b>{_e(k)}</div>" for k, v in cards),
        "</div>",
    ]
    if facts.dataset.get("models"):
        models = ", ".join(
            f"{_e(k)}: <code>{_e(v)}</code>" for k, v in facts.dataset["models"].items()
        )
        parts.append(f"<p>pipeline: {_e(' → '.join(facts.stages))}<br>models: {models}</p>")

    steps = funnel(facts)
    first = max(steps[0][1], 1)
    rows = []
    for name, count, lost in steps:
        width = max(0, round(300 * count / first))
        reasons = ", ".join(f"{_e(r)} ({n})" for r, n in list(lost.items())[:6]) or "—"
        rows.append(
            (_e(name), f"{count}", f"<span class='bar' style='width:{width}px'></span>", reasons)
        )
    parts += [
        "<h2>Funnel</h2><div id='funnel'>",
        _table(rows, ("step", "samples", "", "left here because")),
        "</div>",
    ]

    reasons = [(_e(r), n) for r, n in facts.errors.most_common()] + [
        (f"dropped: {_e(r)}", n) for r, n in facts.drops.most_common()
    ]
    if reasons:
        parts += ["<h2>Failures and drops</h2>", _table(reasons, ("reason", "samples"))]

    parts.append("<h2>Histograms</h2><div class='hists' id='histograms'>")
    for title, series, unit in _histograms(facts):
        url = data_url(histogram_png(series, unit), "image/png")
        n = max((s.size for s, _ in series), default=0)
        parts.append(
            f"<figure><img src='{url}' width='360' height='190' alt='{_e(title)}'>"
            f"<figcaption>{_e(title)} · n={n}</figcaption></figure>"
        )
    parts.append("</div>")

    parts.append(f"<h2>Samples</h2><p class='muted'>{len(views)} random kept samples</p>")
    parts.append("<div class='grid' id='grid'>")
    for view in views:
        parts.append(_cell(view))
    parts.append("</div></body></html>")
    return "\n".join(parts)


COLOURS = [(76, 120, 168), (245, 133, 24), (84, 162, 75), (228, 87, 86)]


def _histograms(facts: DatasetFacts) -> list[tuple[str, list, str]]:
    """(title, [(values, colour)], unit): columns sharing a title overlaid, in declared order."""
    charts: dict[str, tuple[list, str]] = {}
    for column, hist in histogram_columns():
        series, _ = charts.setdefault(hist.title, ([], hist.unit))
        values = facts.values.get(column, np.zeros(0)) * hist.scale
        series.append((values, COLOURS[len(series) % len(COLOURS)]))
    return [(title, series, unit) for title, (series, unit) in charts.items()]


def _summaries(meta: dict) -> list[str]:
    """Each stage's short fact about the sample (`Public.summary`), from KEY.json."""
    out = []
    for name, outputs in declared():
        if outputs.public and outputs.public.summary:
            try:
                fact = outputs.public.summary(meta.get(outputs.json_key(name)) or {})
            except Exception:  # a fact that cannot be said is left out, the cell stays
                fact = None
            if fact:
                out.append(fact)
    return out


def _cell(view: SampleView) -> str:
    meta = view.meta
    facts = [*_summaries(meta), view.shard]
    out = [
        f"<div class='cell' data-key='{_e(view.key)}'><h3>{_e(view.key)}</h3>",
        f"<div class='muted'>{_e(' · '.join(facts))}</div>",
    ]
    for label, url in view.strips.items():
        out.append(
            f"<div class='row {_e(label)}'><span>{_e(label)}</span>"
            f"<img src='{url}' alt='{_e(label)}'></div>"
        )
    texts = meta.get("text") or {}
    if texts:
        out.append("<dl>")
        for name, text in texts.items():
            if isinstance(text, list):
                body = "<ol>" + "".join(f"<li>{_e(t)}</li>" for t in text) + "</ol>"
            else:
                body = _e(text)
            out.append(f"<dt>{_e(name)}</dt><dd>{body}</dd>")
        out.append("</dl>")
    for p in view.problems:
        out.append(f"<div class='problem'>{_e(p)}</div>")
    out.append("</div>")
    return "".join(out)


def write_report(
    out: str,
    to: str | None = None,
    samples: int = 16,
    seed: int = 0,
    max_tars: int = 4,
    crawl: str | None = None,
) -> str:
    """Write the report of the dataset at `out` (default: OUT/report.html); returns its path."""
    store = Store(out)
    facts = collect(out, crawl)
    if facts.shards == 0:
        raise FileNotFoundError(f"no shard parquets under {store.url}/shards/: build first")
    views = []
    for stem, keys in pick_samples(store, facts, samples, seed, max_tars).items():
        try:
            members = read_members(store, stem, keys)
        except (OSError, tarfile.TarError) as exc:
            log.warning("report: cannot read %s.tar: %s", stem, exc)
            continue
        views += [sample_view(k, stem, members[k]) for k in keys if k in members]
    page = render(facts, views, store.url).encode("utf-8")
    if to:
        with open(to, "wb") as f:
            f.write(page)
        return to
    store.write_bytes("report.html", page)
    return store.path("report.html")
