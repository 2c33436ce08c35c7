"""Small helpers around yt-dlp's Python API that search and download share."""

from __future__ import annotations

import logging
import re
import urllib.parse
import urllib.request

from vidal.net import redact_text

log = logging.getLogger("vidal.crawl.ytdlp")
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class Recorder:
    """A yt-dlp `logger`: keeps what yt-dlp said (to classify failures that it reports only as
    a message, e.g. max-filesize) and sends it to our debug log instead of the terminal."""

    def __init__(self):
        self.lines: list[str] = []

    def debug(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("%s", redact_text(msg))  # URLs in logs lose their credentials

    info = debug

    def warning(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("warning: %s", redact_text(msg))

    def error(self, msg: str) -> None:
        self.lines.append(msg)
        log.debug("error: %s", redact_text(msg))

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


def vetted_youtube_dl(params: dict, policy):
    """A YoutubeDL whose every request goes through the URL policy (vidal.net): each URL it
    asks for (pages, media, fragments) is vetted before the request, each redirect hop before
    it is followed (requests handler: a response hook), and the URL an answer finally came
    from before a byte of it is read. yt-dlp makes the connections itself; the vetting lookup
    is vidal's own, just before each request."""
    import yt_dlp

    class VettedYoutubeDL(yt_dlp.YoutubeDL):
        # set per download: a local candidate (crawl --allow-local) may open file:// URLs,
        # a remote page never (its playlist could name local files)
        local_candidate = False

        def urlopen(self, req):
            url = req if isinstance(req, str) else req.url
            if url.lower().startswith("file:") and not self.local_candidate:
                from vidal.net import UrlRefused

                raise UrlRefused("a file:// URL named by a remote page")
            _vet_request_url(url, policy)
            response = super().urlopen(req)
            try:
                _vet_request_url(response.url, policy)
            except BaseException:
                response.close()
                raise
            return response

        def build_request_director(self, handlers, preferences=None):
            handlers = [_redirect_vetting(h, policy) for h in handlers]
            return super().build_request_director(handlers, preferences)

    return VettedYoutubeDL(params)


def _vet_request_url(url: str, policy) -> None:
    from vidal import net

    if url.lower().startswith("file:"):
        return  # yt-dlp opens file:// only with enable_file_urls (crawl --allow-local)
    net.vet(url, policy)


def _redirect_vetting(handler: type, policy) -> type:
    """yt-dlp's requests and urllib handlers with each redirect's target vetted before it is
    followed (a requests response hook; urllib's redirect handler); others as they are (their
    final URL is still vetted by `urlopen`)."""
    from yt_dlp.networking._urllib import UrllibRH

    try:
        from yt_dlp.networking._requests import RequestsRH
    except ImportError:  # requests is not installed: yt-dlp uses urllib alone
        RequestsRH = ()  # noqa: N806

    if issubclass(handler, UrllibRH):
        base_create = handler._create_instance

        def create(self, *args, **kwargs):
            opener = base_create(self, *args, **kwargs)
            for redirects in opener.handlers:
                if isinstance(redirects, urllib.request.HTTPRedirectHandler):
                    _vet_urllib_redirects(redirects, policy)
            return opener

    elif RequestsRH and issubclass(handler, RequestsRH):
        base_create = handler._create_instance

        def create(self, *args, **kwargs):
            session = base_create(self, *args, **kwargs)
            session.hooks["response"].append(_requests_hook(policy))
            return session

    else:
        return handler
    # same class name: yt-dlp keys its handlers (and users' preferences) by it
    return type(handler.__name__, (handler,), {"_create_instance": create})


def _refuse_hop(target: str, policy) -> None:
    """Vet a redirect target; a refusal is raised as yt-dlp's own RequestError, since any
    other exception makes yt-dlp retry the request with its next handler."""
    try:
        _vet_request_url(target, policy)
    except (ValueError, OSError) as exc:
        from yt_dlp.networking.exceptions import RequestError

        raise RequestError(str(exc)) from None


def _requests_hook(policy):
    def vet_redirect(response, *args, **kwargs):
        if response.is_redirect:
            target = urllib.parse.urljoin(response.url, response.headers.get("location", ""))
            try:
                _refuse_hop(target, policy)
            except Exception:
                response.close()
                raise

    return vet_redirect


def _vet_urllib_redirects(redirects, policy) -> None:
    follow = redirects.redirect_request

    def redirect_request(req, fp, code, msg, headers, newurl):
        _refuse_hop(newurl, policy)
        return follow(req, fp, code, msg, headers, newurl)

    redirects.redirect_request = redirect_request
