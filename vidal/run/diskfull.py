"""A full disk ends a job with exit 1 and one sentence, not a crash report.

The error can surface anywhere (a row write, a marker, a tar, pyarrow, a Ray worker whose
exception comes back wrapped), so it is recognised on the whole exception chain by errno and,
for libraries that lose the errno (pyarrow), by the operating system's own wording.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = ("no space left on device", "disk quota exceeded")


def disk_full(exc: BaseException) -> OSError | str | None:
    """The OSError (or message) on `exc`'s chain that says the disk is full, if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return current
        if any(words in str(current).lower() for words in FULL_WORDS):
            return str(current)
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


def disk_full_sentence(exc: BaseException, out: str | None) -> str | None:
    """One sentence for a full disk (None when `exc` is something else); also records the
    failure in OUT/dataset.json when there is room for it (a few hundred bytes)."""
    found = disk_full(exc)
    if found is None:
        return None
    where = getattr(found, "filename", None) or out or "the output"
    sentence = (
        f"the disk is full (no space left writing {where}); free some space or choose "
        "another --out, then rerun the same command to resume"
    )
    if out and "://" not in out:
        _record(out, sentence)
    return sentence


def _record(out: str, sentence: str) -> None:
    path = os.path.join(out, "dataset.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data.update(status="failed", failure=sentence)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:  # a temp file first: a failed write must not truncate the dataset.json that is there
        os.makedirs(out, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # best effort: the disk is full
