"""Small helpers around yt-dlp's Python API that search and download share."""

from __future__ import annotations

import logging
import re

log = logging.getLogger("vidal.crawl.ytdlp")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class Recorder:
    """A yt-dlp `logger`: keeps what yt-dlp said (to classify failures that it reports only as
    a message, e.g. max-filesize) and sends it to our debug log instead of the terminal."""

    def __init__(self):
        self.lines: list[str] = []

    def debug(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("%s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("warning: %s", msg)

    def error(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("error: %s", msg)

    def said(self, pattern: str) -> str | None:
        for line in self.lines:
            if re.search(pattern, line, re.IGNORECASE):
                return line
        return None


def base_params(socket_timeout: float, extra: dict | None = None) -> dict:
    """Quiet, non-interactive yt-dlp parameters; retries are ours, not yt-dlp's (so they go
    through the global rate limit and the backoff, and can be counted)."""
    params = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "socket_timeout": socket_timeout,
        "retries": 0,
        "fragment_retries": 0,
        "extractor_retries": 0,
        "file_access_retries": 0,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": Recorder(),
    }
    params.update(extra or {})
    return params


def sanitize_id(value: str, limit: int = 64) -> str:
    """A file-name-safe form of a platform id: [A-Za-z0-9_-] only, never empty or a path."""
    return _SAFE.sub("_", str(value)).strip("_")[:limit] or "x"
