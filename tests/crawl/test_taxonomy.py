"""yt-dlp's failure messages and HTTP statuses map onto the crawl's error taxonomy."""

from __future__ import annotations

import email.utils

import pytest

from vidal.crawl import taxonomy
from vidal.crawl.taxonomy import classify, classify_message, parse_retry_after


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("ERROR: [youtube] abc: Sign in to confirm you’re not a bot. Use --cookies", "bot_check"),
        (
            "ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate",
            "age_restricted",
        ),
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", "private"),
        (
            "ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
            "removed",
        ),
        (
            "ERROR: [youtube] abc: The uploader has not made this video available in your country",
            "geo_blocked",
        ),
        (
            "ERROR: [generic] Unable to download webpage: HTTP Error 429: Too Many Requests",
            "rate_limited",
        ),
        ("ERROR: unable to download video data: HTTP Error 404: Not Found", "removed"),
        ("ERROR: unable to download video data: HTTP Error 410: Gone", "removed"),
        ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "private"),
        ("ERROR: unable to download video data: HTTP Error 451: Unavailable", "geo_blocked"),
        ("ERROR: [download] Got error: HTTP Error 503: Service Unavailable", "network"),
        ("ERROR: [download] Got error: 6370 bytes read, 6370 more expected", "network"),
        (
            "ERROR: [download] Got error: HTTPConnectionPool(host='x', port=1): Read timed out.",
            "network",
        ),
        ("ERROR: Unsupported URL: http://127.0.0.1:1/page", "not_video"),
        ("ERROR: [youtube] abc: Requested format is not available", "not_video"),
        (
            "[download] File is larger than max-filesize (52428800 bytes > 10485760 bytes)",
            "too_large",
        ),
        ("something nobody has seen before", "other"),
    ],
)
def test_messages_map_to_reasons(message, reason):
    assert classify_message(message) == reason


def test_only_rate_limits_and_network_errors_are_retryable():
    assert {"rate_limited", "network"} == taxonomy.RETRYABLE
    assert set(taxonomy.REASONS) >= {"bot_check", "private", "removed", "geo_blocked", "too_long"}


class _Response:
    def __init__(self, headers):
        self.headers = headers


class _HTTPError(Exception):
    """The shape of yt-dlp's networking HTTPError: status and response headers."""

    def __init__(self, status, headers):
        super().__init__(f"HTTP Error {status}")
        self.status, self.response = status, _Response(headers)


class _DownloadError(Exception):
    """The shape of yt-dlp's DownloadError: the original exception in exc_info."""

    def __init__(self, msg, original):
        super().__init__(msg)
        self.exc_info = (type(original), original, None)


def test_status_and_retry_after_come_from_the_wrapped_http_error():
    inner = _HTTPError(429, {"Retry-After": "7"})
    failure = classify(
        _DownloadError("ERROR: unable to download video data: HTTP Error 429", inner)
    )
    assert failure.reason == "rate_limited" and failure.retryable
    assert failure.retry_after == 7.0
    assert failure.message.startswith("unable to download video data")  # 'ERROR:' stripped


def test_retry_after_accepts_an_http_date():
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(when, now=1_000_000) == pytest.approx(30, abs=1)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
