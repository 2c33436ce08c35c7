"""The record that flows between stages: id, source, fields, per-stage errors, lineage.

Large payloads (frames, audio, clips) never travel inside a Sample: stages write them to the
stage store and keep only their store paths here, so a Sample stays a few kB of JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

import orjson

OK, DROPPED, FAILED = "ok", "dropped", "failed"


@dataclass
class Sample:
    key: str
    shard: int
    source: str  # local path or fsspec URL of the input media
    meta: dict = field(default_factory=dict)  # title, hashtags, text, extra manifest columns
    fields: dict = field(default_factory=dict)  # stage name -> that stage's outputs
    errors: dict = field(default_factory=dict)  # stage name -> "<reason>: <detail>"
    dropped: str | None = None  # why a filter dropped it ("too_long: 31.0s > 20s")
    dropped_by: str | None = None  # the stage that dropped it
    lineage: dict = field(default_factory=dict)  # stage name -> config hash, version, models

    @property
    def ok(self) -> bool:
        return not self.errors and self.dropped is None

    @property
    def status(self) -> str:
        if self.errors:
            return FAILED
        return DROPPED if self.dropped is not None else OK

    @property
    def first_error(self) -> str | None:
        """`stage: reason: detail` of the earliest failure, for shard rows and summaries."""
        for stage, message in self.errors.items():
            return f"{stage}: {message}"
        return None

    def fail(self, stage: str, reason: str, detail: str = "") -> None:
        self.errors[stage] = f"{reason}: {detail}" if detail else reason

    def drop(self, stage: str, reason: str) -> None:
        self.dropped, self.dropped_by = reason, stage

    def to_json(self) -> str:
        return self.encode()[0]

    def encode(self) -> tuple[str, str]:
        """(record, body): the Sample's JSON, and the same without its lineage (what a stage's
        output depends on; see `body_digest`). The record is the body with `lineage` appended
        last, so one encoding serves both."""
        body = _dumps({name: getattr(self, name) for name in _BODY})
        lineage = _dumps(self.lineage)
        return f'{body[:-1]},"lineage":{lineage}}}', body

    @classmethod
    def from_json(cls, text: str) -> Sample:
        try:
            return cls(**orjson.loads(text))
        except orjson.JSONDecodeError:  # lone surrogates, which only the json module reads
            return cls(**json.loads(text))


def _dumps(value: dict) -> str:
    """Compact, key-sorted, UTF-8 JSON; orjson (10x json's speed, which the per-stage rows of
    millions of samples need), json for what orjson refuses (lone surrogates, huge ints)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:24]


_BODY = tuple(f.name for f in fields(Sample) if f.name != "lineage")


def error_reason(message: str | None) -> str | None:
    """The reason slug of an error message: 'probe: not_media: ...' -> 'probe: not_media'."""
    if not message:
        return None
    parts = message.split(": ", 2)
    return ": ".join(parts[:2])
