"""Direct media links downloaded without yt-dlp: plain streaming HTTP through the URL policy.

yt-dlp's extraction is for pages (it reads the page, picks formats, merges streams); for a URL
that already is the media file it costs a page-style probe of the link and a PyAV open of the
result per file. Here a direct link is one GET through `vidal.net.open_url` (every address
vetted, every redirect hop re-vetted, credentials kept to their origin), streamed to a temp
file under the size cap, checked by its first bytes (a real container's magic; text such as an
HTML page or a playlist is `not_video`), checked for truncation against Content-Length, and
described by its container header (an MP4's boxes read by `vidal.media.mp4_header`, any other
file opened by `vidal.media.probe`; no frame is decoded).

A link is direct when its path ends in a media extension, or (for URL-list rows that no
dedicated yt-dlp extractor claims: never a platform's page, which would only cost it an extra
request) when the server answers the GET with a `video/*` Content-Type; anything else goes to
yt-dlp.
"""

from __future__ import annotations

import posixpath
import threading
import urllib.parse

from vidal import net
from vidal.crawl import taxonomy
from vidal.crawl.taxonomy import Failure
from vidal.io.uncached import UncachedWriter

MEDIA_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".flv", ".ts", ".mpg")
MEDIA_EXTENSIONS += (".mpeg", ".ogv", ".3gp")
HEAD_BYTES = 2048  # enough for every magic below and for `net.text_body`
# first and last bytes kept in memory: an MP4's moov is at one end or the other (~25 KB for a
# 20 s clip); under glibc's 128 KiB mmap threshold, so the copies reuse heap memory
KEEP = 64 * 1024
# families of extensions one container magic may carry: the URL's own one is kept if it fits
_FAMILIES = {".mp4": (".mp4", ".m4v", ".mov", ".3gp"), ".mkv": (".mkv", ".webm")}


class DirectFailure(Exception):
    """A direct download that failed, as a taxonomy Failure (the caller retries or stops)."""

    def __init__(self, failure: Failure):
        super().__init__(str(failure))
        self.failure = failure


def media_extension(url: str) -> str | None:
    """The media extension an http(s) URL's path ends in, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return None
    ext = posixpath.splitext(urllib.parse.unquote(parts.path))[1].lower()
    return ext if ext in MEDIA_EXTENSIONS else None


_EXTRACTORS: list = []
_EXTRACTORS_LOCK = threading.Lock()


def claimed_by_platform(url: str) -> bool:
    """Whether a yt-dlp extractor other than the generic one handles `url` (a platform's
    page): such URLs are never sniffed. The extractors' patterns compile once per process."""
    with _EXTRACTORS_LOCK:
        if not _EXTRACTORS:
            from yt_dlp.extractor import gen_extractor_classes

            _EXTRACTORS.extend(c for c in gen_extractor_classes() if c.ie_key() != "Generic")
    try:
        return any(ie.suitable(url) for ie in _EXTRACTORS)
    except Exception:  # a pattern that chokes on this URL: leave the URL to yt-dlp
        return True


def container_of(head: bytes) -> str | None:
    """The extension of the container whose magic `head` starts with, or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return ".mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm" if b"webm" in head[:64] else ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:4] == b"OggS":
        return ".ogv"
    if head[:3] == b"FLV":
        return ".flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return ".mpg"
    if head[:1] == b"\x47" and (len(head) <= 188 or head[188:189] == b"\x47"):
        return ".ts"
    return None


def open_media(
    url: str, policy: net.UrlPolicy, timeout: float, vetted: net.Vetted | None = None
) -> net.Response:
    """The GET of a direct link (to `vetted`'s addresses when given: the crawl resolved the
    URL once, before queueing it); an HTTP error or a refusal as a DirectFailure."""
    try:
        return net.open_url(url, policy, timeout, vetted=vetted)
    except net.UrlRefused as exc:
        raise DirectFailure(Failure(taxonomy.URL_REFUSED, exc.detail)) from None
    except net.FetchError as exc:
        raise DirectFailure(fetch_failure(exc)) from None


def fetch_failure(exc: net.FetchError) -> Failure:
    detail = taxonomy.one_line(net.redact_text(exc.detail))
    retry_after = taxonomy.parse_retry_after((exc.headers or {}).get("Retry-After"))
    return Failure(taxonomy.classify_message(detail, exc.status), detail, retry_after)


def is_video_response(response: net.Response) -> bool:
    return str(response.headers.get("Content-Type") or "").lower().startswith("video/")


def stream_to_file(
    response: net.Response, path: str, url: str, max_bytes: int
) -> tuple[str, tuple[bytes, bytes, int]]:
    """The body into `path`, checked as it arrives: announced and received size against the
    cap, the first bytes against text and container magic, the end against the announced
    length. Returns the extension its magic (and the URL) say, and the file's first and last
    `KEEP` bytes and its size (its container header is read from them); raises DirectFailure,
    and the caller removes what was written."""
    length = _content_length(response)
    if length is not None and length > max_bytes:
        raise _fail(taxonomy.TOO_LARGE, f"{length} bytes announced > {max_bytes}")
    head = _read_head(response)
    ext = _checked_container(head, response, url)
    with UncachedWriter(path, KEEP) as out:  # media read much later: around the page cache
        out.write(head)
        while n := response.readinto(out.space()):  # socket to the write buffer, no copy
            if out.size + n > max_bytes:
                raise _fail(taxonomy.TOO_LARGE, f"{out.size + n} bytes > {max_bytes} (stopped)")
            out.filled(n)
    got = out.size
    if length is not None and got < length:  # the connection ended early: worth a retry
        raise _fail(taxonomy.NETWORK, f"{got} bytes received, {length - got} more expected")
    return ext, (out.first, out.last, got)


def _content_length(response: net.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _read_head(response: net.Response) -> bytes:
    head = b""
    while len(head) < HEAD_BYTES:
        chunk = response.read(HEAD_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _checked_container(head: bytes, response: net.Response, url: str) -> str:
    """The file's extension from its magic; text, a playlist type or no magic: not_video."""
    kind = net.text_body(head)
    ctype = str(response.headers.get("Content-Type") or "").lower()
    if kind:
        raise _fail(taxonomy.NOT_VIDEO, f"{kind}, not a media container")
    found = container_of(head)
    if found is None:
        what = f"Content-Type {ctype}" if ctype else "no Content-Type"
        raise _fail(taxonomy.NOT_VIDEO, f"no known media container magic ({what})")
    named = media_extension(url)
    return named if named in _FAMILIES.get(found, (found,)) else found


def _fail(reason: str, detail: str) -> DirectFailure:
    return DirectFailure(Failure(reason, detail))


def direct_info(url: str, ext: str, probed: dict | None) -> dict:
    """What a direct link says about itself, in yt-dlp's info-dict terms (its generic
    extractor names a direct file's title and id after the file name)."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    stem = posixpath.splitext(name)[0] or "media"
    info = {"id": stem, "title": stem, "ext": ext.lstrip("."), "webpage_url": url}
    info["extractor_key"] = "Generic"
    for key in ("duration", "width", "height", "fps"):
        if probed and probed.get(key):
            info[key] = probed[key]
    return info
