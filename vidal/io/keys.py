"""Sample keys are untrusted wherever they are read back (shards, manifests, exports): one rule
says what a key may be, and every reader that turns a key into a path checks it here first.

A key is 1-128 characters of ASCII letters, digits, `_` and `-`, starting with a letter or a
digit: no dots (webdataset splits member names at the first dot), no separators, nothing a
shell or ffmpeg could read as an option.
"""

from __future__ import annotations

import re

KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class UnsafeKeyError(ValueError):
    """A key that could leave a destination folder or be misread as an option or a member."""


def is_safe_key(key: object) -> bool:
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def check_key(key: object) -> str:
    """The key itself when it is safe; otherwise UnsafeKeyError naming it."""
    if not is_safe_key(key):
        shown = str(key)[:80]
        raise UnsafeKeyError(f"unsafe sample key {shown!r}: keys are [A-Za-z0-9][A-Za-z0-9_-]*")
    return key
