"""Downloading one candidate with yt-dlp: caps enforced while bytes arrive, retries with
backoff through a global rate limit, and the file verified as video before it counts.

The flow of one attempt: reserve a slot from the platform's rate limiter, let yt-dlp extract and
download into a private temp folder (output name fixed by us, so no id ever becomes a path),
abort from yt-dlp's own hooks as soon as the duration or the byte count passes its cap, find the
file yt-dlp actually wrote (a merge or a remux may change its extension), read its header,
and copy it into the store atomically. A failure is classified (`taxonomy`); rate limits and
network errors are retried with exponential backoff and jitter (at least the server's
Retry-After, which also pauses the platform for every worker), the rest are final.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidal import net
from vidal.crawl import direct, taxonomy
from vidal.crawl.taxonomy import Failure
from vidal.crawl.ytdlp import Recorder, base_params, vetted_youtube_dl

PARTIAL_SUFFIXES = (".part", ".ytdl", ".temp", ".tmp")


@dataclass
class DownloadOptions:
    """What `vidal crawl` downloads and how; the download stage's parameters."""

    format: str = "bv*+ba/b"  # yt-dlp format selector
    # yt-dlp format sort: short side <= 720 first, then h264 + aac in mp4/m4a
    format_sort: list[str] = field(
        default_factory=lambda: ["res:720", "vcodec:h264", "acodec:aac", "ext:mp4:m4a"]
    )
    merge_output_format: str = "mp4"  # container when video and audio are merged (static ffmpeg)
    max_bytes: int = 200 * 1024**2  # per candidate, all its streams together
    max_duration: float = 20.0  # seconds; checked on metadata before any byte, and on the file
    socket_timeout: float = 20.0
    attempts: int = 4  # tries per candidate for retryable failures (rate_limited, network)
    backoff_base: float = 2.0  # seconds; attempt k waits base * 2**(k-1), with jitter
    backoff_max: float = 120.0
    max_retry_after: float = 900.0  # a longer Retry-After is capped here
    rate_per_s: float = 1.0  # requests per second per platform, for the whole crawl
    platform_rates: dict[str, float] = field(default_factory=dict)  # per-platform override
    burst: int = 2
    cookies: str | None = None  # Netscape cookies file (yt-dlp `cookiefile`)
    proxies: list[str] = field(default_factory=list)  # one per candidate, rotated on retries
    sleep_interval: float | None = None  # yt-dlp: seconds to sleep before each download
    max_sleep_interval: float | None = None  # ... randomised up to this
    sleep_requests: float | None = None  # yt-dlp: seconds between extraction requests
    impersonate: str | None = None  # yt-dlp client impersonation target, e.g. "chrome"
    ytdlp: dict[str, Any] = field(default_factory=dict)  # any other yt-dlp option, verbatim
    verify: bool = True  # read the file's container header before marking it downloaded
    # direct media links (a media extension, or a video/* answer to a URL-list row) by plain
    # streaming HTTP instead of yt-dlp; off, or with cookies/proxies/impersonate/ytdlp set
    # (which only yt-dlp honours), every URL goes through yt-dlp
    direct: bool = True
    allow_local: bool = False  # accept file paths / file:// URLs (off: http(s) only)


@dataclass
class Downloaded:
    local_path: str  # in the attempt's temp folder; the caller moves it into the store
    ext: str
    bytes: int
    info: dict  # the candidate fields from yt-dlp's full info dict
    probe: dict | None


class CapExceeded(Exception):
    """Raised from inside yt-dlp (a hook or the match filter) to stop a download at once."""

    def __init__(self, failure: Failure):
        super().__init__(str(failure))
        self.failure = failure


def check_url(url: str, allow_local: bool, policy: net.UrlPolicy | None = None) -> Failure | None:
    """Only http(s) URLs whose host resolves to allowed addresses (vidal.net), unless local
    sources are allowed explicitly; None when the URL may be fetched."""
    return vet_url(url, allow_local, policy)[1]


def vet_url(
    url: str, allow_local: bool, policy: net.UrlPolicy | None = None
) -> tuple[net.Vetted | None, Failure | None]:
    """`check_url`, with the vetted addresses when the URL was resolved: the direct path
    connects to them (one resolution per URL, nothing to rebind in between)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if allow_local and (scheme == "file" or (not scheme and url)):
        return None, None
    if scheme not in ("http", "https"):
        return None, Failure(taxonomy.URL_REFUSED, net.check_scheme(url) or scheme)
    if policy is None:
        return None, None
    try:
        return net.vet(url, policy), None
    except net.UrlRefused as exc:
        return None, Failure(taxonomy.URL_REFUSED, exc.detail)
    except net.FetchError as exc:
        return None, Failure(taxonomy.NETWORK, exc.detail)


def limiter_key(platform: str, url: str) -> str:
    """Rate-limit bucket: the platform, or the host for plain pages (generic extractor)."""
    if platform in ("generic", ""):
        return "host:" + (urllib.parse.urlsplit(url).hostname or "local")
    return platform


def pick_proxy(proxies: list[str], seed: str, attempt: int) -> str | None:
    """Spread candidates over the proxies, and move to the next one on each retry."""
    if not proxies:
        return None
    return proxies[(zlib.crc32(seed.encode()) + attempt) % len(proxies)]


def backoff(attempt: int, opts: DownloadOptions, retry_after: float | None, rng=random) -> float:
    """Seconds before try `attempt + 1`: exponential with "equal jitter", never shorter than the
    server's Retry-After (capped at max_retry_after)."""
    base = min(opts.backoff_max, opts.backoff_base * 2 ** max(0, attempt - 1))
    delay = base / 2 + rng.uniform(0, base / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, opts.max_retry_after))
    return delay


def download(
    url: str,
    platform: str,
    opts: DownloadOptions,
    limiter,
    workdir: str,
    sleep: Callable[[float], None] = time.sleep,
    seed: str = "",
    policy: net.UrlPolicy = net.UrlPolicy(),
    media_path: str | None = None,
) -> tuple[Downloaded | None, Failure | None, int]:
    """Download with retries: (result, None, tries) or (None, failure, tries). A direct link's
    body is written to `media_path` when given (a temp name in the store: no copy after),
    else into a temp folder under `workdir`, like yt-dlp's downloads."""
    vetted, refused = vet_url(url, opts.allow_local, policy)
    if refused and refused.reason != taxonomy.NETWORK:
        return None, refused, 0
    bucket = limiter_key(platform, url)
    rng = random.Random(f"{seed}|{url}")
    failure: Failure | None = None
    for attempt in range(1, max(1, opts.attempts) + 1):
        wait = limiter.reserve(bucket)
        if wait > 0:  # no sleep(0) per download when unlimited: it only hands the GIL away
            sleep(wait)
        proxy = pick_proxy(opts.proxies, seed, attempt)
        try:
            sniff = platform == "url"
            first = vetted if attempt == 1 else None  # a retry resolves the name again
            got = attempt_once(url, opts, workdir, proxy, policy, sniff, media_path, first)
            return got, None, attempt
        except Exception as exc:  # yt-dlp raises many types; each becomes a taxonomy entry
            failure = exc.failure if isinstance(exc, CapExceeded) else taxonomy.classify(exc)
        if failure.retry_after is not None:
            limiter.pause(bucket, min(failure.retry_after, opts.max_retry_after))
        if not failure.retryable or attempt >= opts.attempts:
            break
        sleep(backoff(attempt, opts, failure.retry_after, rng))
    return None, failure, attempt


def attempt_once(
    url: str,
    opts: DownloadOptions,
    workdir: str,
    proxy: str | None,
    policy: net.UrlPolicy = net.UrlPolicy(),
    sniff: bool = False,
    media_path: str | None = None,
    vetted: net.Vetted | None = None,
) -> Downloaded:
    """One try: a direct media link by plain HTTP; otherwise (pages, platforms) a fresh temp
    folder, yt-dlp with our caps, then the written file verified. With `sniff` (a URL-list
    row), a link without a media extension is fetched once to see if it serves video/*.
    `vetted`: the URL's vetted addresses, when the caller resolved it already."""
    if direct_allowed(opts, proxy):
        if direct.media_extension(url):
            return direct_attempt(url, opts, workdir, policy, None, media_path, vetted)
        if sniff and _sniffable(url):
            response = _sniffed_media(url, opts, policy, vetted)
            if response is not None:
                return direct_attempt(url, opts, workdir, policy, response, media_path)
    return ytdlp_attempt(url, opts, workdir, proxy, policy)


def direct_allowed(opts: DownloadOptions, proxy: str | None) -> bool:
    """Plain HTTP only where yt-dlp would add nothing: no per-request options of its own."""
    return opts.direct and not (proxy or opts.cookies or opts.impersonate or opts.ytdlp)


def _sniffable(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and not direct.claimed_by_platform(url)


def _sniffed_media(url: str, opts: DownloadOptions, policy: net.UrlPolicy, vetted=None):
    """The open GET of `url` when it answers video/*; None (closed) for anything else,
    failures included: yt-dlp then reads the URL as a page and reports what it finds."""
    try:
        response = direct.open_media(url, policy, opts.socket_timeout, vetted)
    except direct.DirectFailure:
        return None
    if direct.is_video_response(response):
        return response
    response.close()
    return None


def direct_attempt(
    url,
    opts: DownloadOptions,
    workdir: str,
    policy,
    response=None,
    path: str | None = None,
    vetted: net.Vetted | None = None,
) -> Downloaded:
    """A direct link streamed to `path` (else a temp folder's file) and verified from its
    header (no yt-dlp); on failure nothing is left behind."""
    folder = None
    if path is None:
        folder = tempfile.mkdtemp(prefix="dl-", dir=workdir)
        path = os.path.join(folder, "media")
    try:
        response = response or direct.open_media(url, policy, opts.socket_timeout, vetted)
        with response:
            ext, ends = direct.stream_to_file(response, path, url, opts.max_bytes)
        info = direct.direct_info(url, ext, None)
        return _verified(path, info, opts, ext, ends)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, direct.DirectFailure):
            raise CapExceeded(exc.failure) from None
        raise


def ytdlp_attempt(
    url: str, opts: DownloadOptions, workdir: str, proxy: str | None, policy: net.UrlPolicy
) -> Downloaded:
    session = _session(opts, proxy, policy)
    folder = tempfile.mkdtemp(prefix="dl-", dir=workdir)
    try:
        info = session.download(url, folder)
        path = written_file(info, folder, session.recorder, opts)
        return _verified(path, info, opts)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if type(exc).__name__ != "DownloadError":  # yt-dlp's own, cleanly handled, failures
            _drop_session(opts, proxy, policy)
        raise


class _Session:
    """A YoutubeDL kept per worker thread and settings: building one costs ~0.2 s of CPU (the
    extractor registry, an SSL context) and it keeps connections and cookies warm. What is
    per download — the output folder, the size-cap counter, what yt-dlp said — is reset before
    each one."""

    def __init__(self, opts: DownloadOptions, proxy: str | None, policy: net.UrlPolicy):
        self.cap = _SizeCap(opts.max_bytes)
        self.params = ytdlp_params(opts, "", proxy, self.cap)
        self.recorder: Recorder = self.params["logger"]
        self.ydl = vetted_youtube_dl(self.params, policy)

    def download(self, url: str, folder: str) -> dict:
        self.cap.reset()
        self.recorder.lines.clear()
        self.ydl.params["outtmpl"]["default"] = os.path.join(folder, "media.%(ext)s")
        self.ydl.local_candidate = not url.lower().startswith(("http://", "https://"))
        return self.ydl.sanitize_info(self.ydl.extract_info(url, download=True)) or {}


_THREAD = threading.local()


def _session_key(opts: DownloadOptions, proxy: str | None, policy: net.UrlPolicy) -> str:
    values = {f.name: getattr(opts, f.name) for f in dataclasses.fields(DownloadOptions)}
    return json.dumps([values, proxy, repr(policy)], sort_keys=True, default=str)


def _session(opts: DownloadOptions, proxy: str | None, policy: net.UrlPolicy) -> _Session:
    sessions = _THREAD.__dict__.setdefault("sessions", {})
    key = _session_key(opts, proxy, policy)
    if key not in sessions:
        sessions[key] = _Session(opts, proxy, policy)
    return sessions[key]


def _drop_session(opts: DownloadOptions, proxy: str | None, policy: net.UrlPolicy) -> None:
    _THREAD.__dict__.get("sessions", {}).pop(_session_key(opts, proxy, policy), None)


def ytdlp_params(
    opts: DownloadOptions, folder: str, proxy: str | None, cap: _SizeCap | None = None
) -> dict:
    from vidal.media.ffmpeg import ffmpeg_exe

    params = base_params(opts.socket_timeout)
    params.update(
        format=opts.format,
        format_sort=list(opts.format_sort),
        merge_output_format=opts.merge_output_format,
        outtmpl={"default": os.path.join(folder, "media.%(ext)s")},
        ffmpeg_location=ffmpeg_exe(),
        max_filesize=opts.max_bytes,
        match_filter=_duration_cap(opts.max_duration),
        progress_hooks=[(cap or _SizeCap(opts.max_bytes)).hook],
        enable_file_urls=opts.allow_local,
        # yt-dlp's own downloaders for every protocol (HLS and DASH too): they fetch through
        # its urlopen, where the URL policy vets each request; ffmpeg would fetch on its own
        external_downloader={"default": "native"},
        hls_prefer_native=True,
        overwrites=True,
        continuedl=False,
        cachedir=False,
    )
    params.update(_passthrough(opts, proxy))
    params.update(opts.ytdlp)
    return params


def _passthrough(opts: DownloadOptions, proxy: str | None) -> dict:
    """The yt-dlp options users need at scale, only when set."""
    extra: dict[str, Any] = {}
    if opts.cookies:
        extra["cookiefile"] = opts.cookies
    if proxy:
        extra["proxy"] = proxy
    if opts.sleep_interval is not None:
        extra["sleep_interval"] = opts.sleep_interval
        extra["max_sleep_interval"] = opts.max_sleep_interval or opts.sleep_interval
    if opts.sleep_requests is not None:
        extra["sleep_interval_requests"] = opts.sleep_requests
    if opts.impersonate:
        from yt_dlp.networking.impersonate import ImpersonateTarget

        extra["impersonate"] = ImpersonateTarget.from_str(opts.impersonate)
    return extra


def check_options(opts: DownloadOptions) -> str | None:
    """A sentence when yt-dlp refuses these options (e.g. an impersonation target whose
    dependency is missing), so the crawl stops before it starts instead of failing every
    download the same way."""
    try:
        _Session(opts, opts.proxies[0] if opts.proxies else None, net.UrlPolicy())
    except Exception as exc:  # yt-dlp reports bad options with several exception types
        return f"yt-dlp refuses the download options: {taxonomy.one_line(str(exc))}"
    return None


def _duration_cap(max_duration: float):
    """A yt-dlp match_filter: stops before any byte is fetched when the site says too long."""

    def check(info: dict, *, incomplete: bool = False):
        duration = info.get("duration")
        if isinstance(duration, (int, float)) and duration > max_duration:
            detail = f"{float(duration):.1f}s > {max_duration:g}s"
            raise CapExceeded(Failure(taxonomy.TOO_LONG, detail))
        if info.get("live_status") in ("is_live", "is_upcoming"):
            raise CapExceeded(Failure(taxonomy.NOT_VIDEO, f"live stream ({info['live_status']})"))
        return None

    return check


class _SizeCap:
    """A yt-dlp progress hook: aborts as soon as the bytes of all streams pass the cap, or the
    announced size does — also when the server sent no Content-Length."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.seen: dict[str, int] = {}

    def reset(self) -> None:
        self.seen = {}

    def hook(self, d: dict) -> None:
        name = str(d.get("filename") or d.get("tmpfilename") or "")
        self.seen[name] = max(self.seen.get(name, 0), int(d.get("downloaded_bytes") or 0))
        announced = d.get("total_bytes") or 0
        total = sum(self.seen.values())
        if total > self.max_bytes or announced > self.max_bytes:
            detail = f"{max(total, announced)} bytes > {self.max_bytes} (stopped while downloading)"
            raise CapExceeded(Failure(taxonomy.TOO_LARGE, detail))


def written_file(info: dict, folder: str, recorder: Recorder, opts: DownloadOptions) -> str:
    """The file yt-dlp actually wrote: its own record first, else the one finished file."""
    for item in info.get("requested_downloads") or []:
        path = item.get("filepath") or item.get("_filename")
        if path and os.path.isfile(path):
            return path
    files = [
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.startswith("media.") and not f.endswith(PARTIAL_SUFFIXES)
    ]
    if len(files) == 1:
        return files[0]
    said = recorder.said(r"larger than max-filesize")
    if said:
        raise CapExceeded(Failure(taxonomy.TOO_LARGE, taxonomy.one_line(said)))
    said = recorder.said(r"does not pass filter|skipping")
    detail = taxonomy.one_line(said) if said else "yt-dlp finished without writing a file"
    raise CapExceeded(Failure(taxonomy.classify_message(detail), detail))


def _verified(
    path: str, info: dict, opts: DownloadOptions, ext: str = "", ends: tuple | None = None
) -> Downloaded:
    """The file checked by content and described from its header. `ends`: a direct
    download's first and last bytes, held in memory (its head was checked as it arrived),
    and its size."""
    from vidal.crawl.search import candidate
    from vidal.media.ffmpeg import MediaError
    from vidal.media.mp4_header import read_header
    from vidal.media.probe import probe

    size = ends[2] if ends else os.path.getsize(path)
    if size > opts.max_bytes:
        raise CapExceeded(Failure(taxonomy.TOO_LARGE, f"{size} bytes > {opts.max_bytes}"))
    if ends is None:
        with open(path, "rb") as head:  # by content: a name says nothing about what it is
            kind = net.text_body(head.read(2048))
        if kind:
            raise CapExceeded(Failure(taxonomy.NOT_VIDEO, f"{kind}, not a media container"))
    probed = None
    if opts.verify:
        try:  # an MP4's own boxes where they say it plainly (no PyAV open), else PyAV
            probed = read_header(path, *(ends or ())) or probe(path).to_dict()
        except MediaError as exc:
            raise CapExceeded(Failure(taxonomy.NOT_VIDEO, f"{exc.reason}: {exc.detail}")) from exc
        if probed["duration"] > opts.max_duration:
            detail = f"{probed['duration']:.1f}s > {opts.max_duration:g}s (measured on the file)"
            raise CapExceeded(Failure(taxonomy.TOO_LONG, detail))
    ext = ext or os.path.splitext(path)[1].lower() or ".bin"
    return Downloaded(path, ext, size, candidate(info), probed)
