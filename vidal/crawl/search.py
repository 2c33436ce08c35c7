"""yt-dlp searches: one term in, candidate videos (metadata only, nothing downloaded) out.

`extract_info` is the only function here that calls `YoutubeDL.extract_info`; tests replace it
with recorded info dicts. Every field we keep per candidate is read defensively: whatever a site
does not give is None, never an error.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

from vidal.crawl.ytdlp import base_params, sanitize_id
from vidal.text import hashtags_in, parse_hashtags

# Entries of a search result that are not videos (channels, playlists, further searches).
NOT_VIDEO_IES = frozenset({"youtubetab", "youtubeplaylist", "youtubesearch", "youtubesearchurl"})
FIELDS = (
    "id",
    "platform",
    "url",
    "title",
    "description",
    "hashtags",
    "tags",
    "duration",
    "width",
    "height",
    "fps",
    "upload_date",
    "channel",
    "channel_id",
    "license",
    "view_count",
    "like_count",
    "language",
    "age_limit",
    "live_status",
    "term",
)


def extract_info(url: str, params: dict) -> dict:
    """yt-dlp's info dict for `url`, without downloading: the one seam tests replace."""
    import yt_dlp

    with yt_dlp.YoutubeDL(params) as ydl:
        return ydl.sanitize_info(ydl.extract_info(url, download=False))


def search_url(template: str, term: str, n: int) -> str:
    """The yt-dlp search for a term: `ytsearch{n}:{term}` or a URL with {term_q}."""
    return template.format(n=n, term=term, term_q=urllib.parse.quote_plus(term))


def search_params(n: int, socket_timeout: float, extra: dict | None = None) -> dict:
    params = base_params(socket_timeout, extra)
    params.update(extract_flat="in_playlist", skip_download=True, playlistend=n, noplaylist=False)
    return params


def search(term: str, template: str, n: int, params: dict) -> list[dict]:
    """Candidates for one term, in the order the site ranked them."""
    result = extract_info(search_url(template, term, n), params)
    entries = result.get("entries") if result.get("_type") == "playlist" else [result]
    out = []
    for entry in list(entries or [])[:n]:
        if isinstance(entry, dict) and is_video_entry(entry):
            out.append(candidate(entry, term))
    return out


def is_video_entry(entry: dict) -> bool:
    ie = str(entry.get("ie_key") or entry.get("extractor_key") or "").lower()
    return bool(entry.get("id")) and ie not in NOT_VIDEO_IES and entry.get("_type") != "playlist"


def candidate(info: dict, term: str | None = None) -> dict:
    """The fields we keep for a candidate, from a flat search entry or a full info dict."""
    title = _str(info.get("title")) or ""
    description = _str(info.get("description"))
    return {
        "id": _str(info.get("id")),
        "platform": platform_of(info),
        "url": _url_of(info),
        "title": title,
        "description": description,
        "hashtags": parse_hashtags(hashtags_in(title) + hashtags_in(description or "")),
        "tags": [str(t) for t in info.get("tags") or [] if t is not None],
        "duration": _num(info.get("duration")),
        "width": _int(info.get("width")),
        "height": _int(info.get("height")),
        "fps": _num(info.get("fps")),
        "upload_date": _str(info.get("upload_date")),
        "channel": _str(info.get("channel") or info.get("uploader")),
        "channel_id": _str(info.get("channel_id") or info.get("uploader_id")),
        "license": _str(info.get("license")),
        "view_count": _int(info.get("view_count")),
        "like_count": _int(info.get("like_count")),
        "language": _str(info.get("language")),
        "age_limit": _int(info.get("age_limit")),
        "live_status": _str(info.get("live_status")),
        "term": term,
    }


_IDENTITY = frozenset({"id", "platform", "url", "term"})


def _url_of(info: dict) -> str | None:
    """The video's page: a flat entry's own `url` (its `webpage_url`, when yt-dlp adds one, is
    the search's), a full info dict's `webpage_url`."""
    if info.get("_type") in ("url", "url_transparent"):
        return _str(info.get("url"))
    return _str(info.get("webpage_url") or info.get("original_url") or info.get("url"))


def merge(old: dict, new: dict) -> dict:
    """A candidate updated with better metadata (a full info dict over a flat entry): known
    values win over unknown ones; what identifies it (and the term that found it) is kept."""
    merged = dict(old)
    for k, v in new.items():
        if v not in (None, "", []) and k not in _IDENTITY:
            merged[k] = v
    return merged


def fill(old: dict, new: dict) -> dict:
    """A candidate with its unknown fields filled from `new`; what it already says is kept
    (a URL list's own title wins over the page's)."""
    merged = dict(old)
    for k, v in new.items():
        if merged.get(k) in (None, "", []) and v not in (None, "", []):
            merged[k] = v
    return merged


def platform_of(info: dict) -> str:
    """'youtube', 'tiktok', ... from yt-dlp's extractor key; 'generic' for plain pages."""
    ie = str(info.get("ie_key") or info.get("extractor_key") or info.get("extractor") or "")
    return sanitize_id(ie.split(":")[0].lower() or "generic", 32)


def candidate_key(platform: str, video_id: str) -> str:
    """Sanitised platform+id; a short hash keeps ids that sanitising changed unique."""
    safe = sanitize_id(video_id)
    key = f"{sanitize_id(platform, 32)}-{safe}"
    if safe != video_id:
        key += "-" + hashlib.sha1(video_id.encode("utf-8", "replace")).hexdigest()[:8]
    return key


def _str(value: Any) -> str | None:
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _num(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)
