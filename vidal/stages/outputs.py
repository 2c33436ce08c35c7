"""What a stage adds to a sample, declared once on its class (`Stage.outputs`).

The packer (vidal.io.shards), the report and any reader iterate over these declarations
instead of naming stages, so a new stage or modality is one file:

- `Member`: a tar member `KEY.<ext>`, the stage's stored payload (`fields[stage]["file"]`)
  copied verbatim, with what its bytes are (media type, dtype, frames tiled or not);
- `Column`: a shard parquet column (name, pyarrow type, value from the sample);
- `Public`: which of the stage's fields go into `KEY.json`, and under which key;
- `reads` / `optional_reads`: the fields of other stages it reads (validated against the
  pipeline's order when a config loads);
- `Funnel`, `Histogram`, `Member.preview`: how the report shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vidal.sample import Sample

# what the packer writes itself (vidal.io.shards): no stage may declare these
CORE_MEMBERS = ("json", "txt")
CORE_FIELDS = (  # the parquet's core columns, before the stages' own
    ("key", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("error_reason", pa.string()),
    ("dropped", pa.string()),
    ("source", pa.string()),
    ("title", pa.string()),
    ("caption", pa.string()),
    ("caption_chars", pa.int64()),
    ("sample_bytes", pa.int64()),
)
CORE_COLUMNS = tuple(name for name, _ in CORE_FIELDS)
CORE_JSON = (
    "key",
    "source",
    "title",
    "hashtags",
    "text",
    "caption_view",
    "extra",
    "errors",
    "lineage",
)


@dataclass(frozen=True)
class Histogram:
    """A report histogram of a column; columns with the same `title` are overlaid."""

    title: str
    unit: str  # the x axis label
    scale: float = 1.0  # values are multiplied by this (e.g. 0.001: mm -> m)
    all_rows: bool = False  # every row with a value (a filter's scores), not only kept samples


@dataclass(frozen=True)
class Column:
    """A shard parquet column: one value per input sample (None when the stage did not run)."""

    name: str
    type: pa.DataType
    # a key of the stage's own fields, or a function of the whole sample
    value: str | Callable[[Sample], Any]
    histogram: Histogram | None = None

    def of(self, stage: str, sample: Sample) -> Any:
        if callable(self.value):
            return self.value(sample)
        return (sample.fields.get(stage) or {}).get(self.value)


@dataclass(frozen=True)
class Member:
    """A tar member `KEY.<ext>`: the stage's stored payload file, copied verbatim."""

    ext: str  # "mp4", "flac", "depth.png": the member is KEY.<ext>, the webdataset key <ext>
    media_type: str  # what the bytes are: "video/mp4", "audio/flac", "image/png"
    dtype: str | None = None  # pixel type of an image: "uint8", "uint16"
    # N frames tiled side by side, frame k at columns k*W .. (k+1)*W; N: the "count" of the
    # stage's KEY.json fields, else of KEY.json "frames" (the keyframes)
    frames: bool = False
    field: str = "file"  # the stage's field holding the payload's store path
    size_column: str | None = None  # a parquet column of the member's byte size ("mp4_bytes")
    # the report's row: "video" (frames decoded from it), "tiles" (tiled 8/16-bit image),
    # "depth" (tiled uint16 depth, colour-mapped) or fn(bytes, public fields, n) -> [HxW(x3)]
    preview: str | Callable | None = None
    label: str = ""  # the report row's label; "" = the stage name
    modality: str = ""  # what readers call it (train.data.modality); "" = the stage name

    def payload(self, stage: str, sample: Sample) -> str | None:
        """Store path of the payload, or None when the sample has none (e.g. no audio)."""
        return (sample.fields.get(stage) or {}).get(self.field) or None


@dataclass(frozen=True)
class Public:
    """The stage's fields in `KEY.json`."""

    key: str = ""  # the KEY.json key; "" = the stage name
    fields: tuple[str, ...] | None = None  # exactly these (null when missing); None: all...
    private: tuple[str, ...] = ("file",)  # ...but these (store locations mean nothing outside)
    default: Mapping[str, Any] = field(default_factory=dict)  # when the stage did not run
    summary: Callable[[dict], str | None] | None = None  # a short fact for the report's grid

    def of(self, stage: str, sample: Sample) -> dict:
        values = sample.fields.get(stage)
        if values is None:
            values = dict(self.default)
        if self.fields is not None:
            return {k: values.get(k) for k in self.fields}
        return {k: v for k, v in values.items() if k not in self.private}


@dataclass(frozen=True)
class Funnel:
    """Where samples this stage drops or fails leave, in the report's funnel."""

    step: str  # e.g. "VL-filtered"; "decoded" for the stages that read the media
    drops: tuple[str, ...] = ()  # prefixes of the drop reasons it writes (parquet `dropped`)


@dataclass(frozen=True)
class Outputs:
    members: tuple[Member, ...] = ()
    columns: tuple[Column, ...] = ()
    public: Public | None = None  # None: nothing in KEY.json
    # other stages' fields this stage needs ({stage: (field, ...)}): those stages must run
    # before it; optional_reads are used when present
    reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    optional_reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    funnel: Funnel | None = None

    def json_key(self, stage: str) -> str | None:
        return (self.public.key or stage) if self.public else None
