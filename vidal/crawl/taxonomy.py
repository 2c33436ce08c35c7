"""Why a search or a download failed, as one of a fixed set of reasons.

yt-dlp reports failures as exceptions whose text comes from the site (YouTube's "Private
video", "Sign in to confirm you're not a bot", ...) or from its HTTP layer ("HTTP Error 429");
`classify` turns either into a reason of the taxonomy plus the original message, so the crawl
manifest can be counted by reason and `--retry-failed` knows what is worth another try.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass

from vidal.net import redact_text

RATE_LIMITED = "rate_limited"
BOT_CHECK = "bot_check"
PRIVATE = "private"
REMOVED = "removed"
GEO_BLOCKED = "geo_blocked"
AGE_RESTRICTED = "age_restricted"
TOO_LARGE = "too_large"
TOO_LONG = "too_long"
NETWORK = "network"
NOT_VIDEO = "not_video"
URL_REFUSED = "url_refused"  # the URL policy (vidal.net) refused a URL or a redirect hop
NOT_AUDIO = "not_audio"  # a downloaded sound (Freesound) that does not decode as audio
OTHER = "other"

REASONS = (
    RATE_LIMITED,
    BOT_CHECK,
    PRIVATE,
    REMOVED,
    GEO_BLOCKED,
    AGE_RESTRICTED,
    TOO_LARGE,
    TOO_LONG,
    NETWORK,
    NOT_VIDEO,
    URL_REFUSED,
    NOT_AUDIO,
    OTHER,
)
# Worth another try later: the server was busy or the connection broke. Everything else says
# something about the video itself and would fail the same way again.
RETRYABLE = frozenset({RATE_LIMITED, NETWORK})

# Checked in order, on the lower-cased message; the first match wins. Site wording first (it is
# the most specific), then HTTP statuses, then transport errors.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (URL_REFUSED, r"url_refused: "),
    (BOT_CHECK, r"not a bot|confirm you.re not|captcha|sign in to confirm(?! your age)"),
    (AGE_RESTRICTED, r"confirm your age|age.restricted|inappropriate for some users|age_limit"),
    (GEO_BLOCKED, r"in your country|geo.?restrict|geo.?block|from your location"),
    (PRIVATE, r"private video|this video is private|members.only|join this channel"),
    (REMOVED, r"video unavailable|has been removed|no longer available|account .*terminated"),
    (REMOVED, r"does not exist|video is unavailable|copyright claim"),
    (TOO_LARGE, r"larger than max-filesize|file is too large|too_large"),
    (TOO_LONG, r"too_long|duration .* exceeds"),
    (NOT_VIDEO, r"unsupported url|no video formats|no video could be found|not a video"),
    (NOT_VIDEO, r"requested format is not available|no_video_stream|not_media"),
)
_HTTP_STATUS = re.compile(r"http error (\d{3})")
_NETWORK = re.compile(
    r"timed out|timeout|connection (?:reset|refused|aborted)|incompleteread|bytes read"
    r"|more expected|remote end closed|name or service not known|temporary failure in name"
    r"|network is unreachable|ssl|eof occurred|broken pipe|unable to download|transporterror"
)


@dataclass(frozen=True)
class Failure:
    reason: str  # one of REASONS
    message: str  # what yt-dlp or the server said, one line
    retry_after: float | None = None  # seconds the server asked us to wait (429/503)

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def reason_of_status(status: int) -> str:
    """The reason an HTTP status stands for when the body says nothing more specific."""
    if status == 429:
        return RATE_LIMITED
    if status in (404, 410):
        return REMOVED
    if status in (401, 403):
        return PRIVATE  # the server refuses us this resource
    if status == 451:
        return GEO_BLOCKED  # unavailable for legal reasons: nearly always a regional block
    if status == 413:
        return TOO_LARGE
    if status >= 500 or status == 408:
        return NETWORK
    return OTHER


def classify_message(message: str, status: int | None = None) -> str:
    """The reason for a failure message (and the HTTP status, when one is known)."""
    text = message.lower()
    for reason, pattern in _PATTERNS:
        if re.search(pattern, text):
            return reason
    if status is None:
        found = _HTTP_STATUS.search(text)
        status = int(found.group(1)) if found else None
    if status is not None:
        return reason_of_status(status)
    return NETWORK if _NETWORK.search(text) else OTHER


def classify(exc: BaseException) -> Failure:
    """A Failure for an exception raised by yt-dlp (or by our own caps)."""
    status, headers = http_details(exc)
    message = one_line(redact_text(str(exc)))
    reason = classify_message(message, status)
    if reason == URL_REFUSED:  # the policy's own words, without yt-dlp's prefixes
        message = message.split("url_refused: ", 1)[1]
    retry_after = parse_retry_after(headers.get("retry-after")) if headers else None
    return Failure(reason, message, retry_after)


def http_details(exc: BaseException) -> tuple[int | None, dict]:
    """HTTP status and headers of the response behind a yt-dlp error, if there was one.

    yt-dlp wraps the networking error: DownloadError.exc_info[1] is the original exception, and
    an ExtractorError keeps its own origin in `.cause`; the HTTPError has `.status` and
    `.response.headers`. We walk that chain rather than import yt-dlp's classes.
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        status = getattr(err, "status", None)
        response = getattr(err, "response", None)
        if isinstance(status, int) and response is not None:
            raw = getattr(response, "headers", None) or {}
            return status, {str(k).lower(): str(v) for k, v in dict(raw).items()}
        info = getattr(err, "exc_info", None)
        stack += [info[1] if info else None, getattr(err, "cause", None), err.__cause__]
    return None, {}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(message: str, limit: int = 500) -> str:
    """yt-dlp's message without colour codes, 'ERROR:' prefixes or line breaks."""
    text = _ANSI.sub("", message).replace("\r", " ").replace("\n", " ")
    text = re.sub(r"^(?:ERROR:\s*)+", "", text.strip())
    return re.sub(r"\s+", " ", text)[:limit]
