"""Audio-text pairs from Freesound (LanguageBind §4.2): the APIv2 text search, the paper's five
filters (rating, downloads, comments, tags, duration), and candidates ranked by the
sentence-transformers similarity of the term with title + tags + description.

API (https://freesound.org/docs/api/): `GET {api}/search/text/?query=..&page=..&page_size=..
&fields=..`, answering `{"count", "next", "previous", "results": [...]}`; the token goes in
the header `Authorization: Token <token>`, read from an environment variable, sent only to the
API's own host, never logged or written. Previews (`previews["preview-hq-mp3"]`) download with
the token; originals (`download`) need an OAuth2 bearer token (`oauth_token_env`).

The paper gives no thresholds; the defaults below are vidal's. HTTP failures map onto the crawl's
error taxonomy (`vidal.crawl.taxonomy`): 429 -> rate_limited (Retry-After pauses every worker),
401/403 -> private, 404/410 -> removed, 5xx/timeouts/short bodies -> network.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from vidal.crawl import taxonomy
from vidal.crawl.taxonomy import Failure

API = "https://freesound.org/apiv2"
FIELDS = (
    "id,name,tags,description,duration,avg_rating,num_ratings,num_downloads,num_comments,"
    "previews,download,license,username,url"
)
PLATFORM = "freesound"


@dataclass
class FreesoundOptions:
    """`vidal crawl --source freesound`: the search, the filters, the ranking, the download."""

    api_url: str = API
    token_env: str = "FREESOUND_API_KEY"  # the API token's environment variable
    oauth_token_env: str = "FREESOUND_OAUTH_TOKEN"  # originals only (audio: original)
    page_size: int = 150  # the API's maximum
    max_pages: int = 2  # pages read per term (follows `next`)
    per_term: int = 20  # candidates kept per term, best ranked first
    audio: str = "preview"  # preview (token auth) | original (OAuth2)
    preview: str = "preview-hq-mp3"  # which preview
    # the paper's five filters, with vidal's numbers (the paper gives none)
    min_avg_rating: float = 3.0  # rated sounds below this go; unrated ones pass
    min_num_ratings: int = 0
    min_downloads: int = 10
    min_comments: int = 0
    min_tags: int = 1
    min_duration: float = 1.0
    max_duration: float = 20.0
    text_model: str = "minilm"  # sentence-transformers model for the ranking
    min_similarity: float = 0.0  # candidates below this cosine go
    timeout_s: float = 30.0
    attempts: int = 4  # tries for rate_limited / network failures
    backoff_base: float = 2.0
    backoff_max: float = 120.0
    rate_per_s: float = 1.0  # API requests per second for the whole crawl (Freesound: 60/min)
    max_bytes: int = 50 * 1024**2

    def check(self) -> str | None:
        if self.audio not in ("preview", "original"):
            return f"crawl.freesound.audio must be preview or original, got {self.audio!r}"
        if not self.api_url.startswith(("http://", "https://")):
            return f"crawl.freesound.api_url must be an http(s) URL, got {self.api_url!r}"
        if not 1 <= self.page_size <= 150:
            return "crawl.freesound.page_size must be in 1..150 (the API's limit)"
        return None


class HTTPFailure(Exception):
    def __init__(self, failure: Failure):
        super().__init__(str(failure))
        self.failure = failure


def token(opts: FreesoundOptions) -> str:
    """The API token from its environment variable; a clear error when it is not set."""
    value = os.environ.get(opts.token_env, "").strip()
    if not value:
        raise PermissionError(
            f"the Freesound crawl needs an API token in ${opts.token_env} "
            "(https://freesound.org/apiv2/apply)"
        )
    return value


def search_url(opts: FreesoundOptions, term: str, page: int = 1) -> str:
    query = urllib.parse.urlencode(
        {"query": term, "page": page, "page_size": opts.page_size, "fields": FIELDS}
    )
    return f"{opts.api_url.rstrip('/')}/search/text/?{query}"


def request(url: str, opts: FreesoundOptions, secret: str | None, auth: str = "Token"):
    """Open `url` (the token only for the API's host); HTTP and transport failures become
    HTTPFailure with a taxonomy reason. The caller reads and closes the response."""
    headers = {"User-Agent": "vidal"}
    if secret and _same_host(url, opts.api_url):
        headers["Authorization"] = f"{auth} {secret}"
    try:
        return urllib.request.urlopen(  # noqa: S310 (http(s) checked in FreesoundOptions.check)
            urllib.request.Request(url, headers=headers), timeout=opts.timeout_s
        )
    except urllib.error.HTTPError as exc:
        retry_after = taxonomy.parse_retry_after(exc.headers.get("Retry-After"))
        detail = _error_detail(exc)
        reason = taxonomy.reason_of_status(exc.code)
        exc.close()
        raise HTTPFailure(Failure(reason, f"HTTP {exc.code}: {detail}", retry_after)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise HTTPFailure(Failure(taxonomy.NETWORK, taxonomy.one_line(str(exc)))) from exc


def _same_host(url: str, api_url: str) -> bool:
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(api_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The API's own error text ({"detail": ...}), one line, never the request's headers."""
    try:
        body = exc.read(2000).decode("utf-8", "replace")
        return taxonomy.one_line(str(json.loads(body).get("detail", body)), 200)
    except Exception:  # a body that is not JSON: the status says enough
        return exc.reason if isinstance(exc.reason, str) else "error"


def read_json(url: str, opts: FreesoundOptions, secret: str) -> dict:
    with request(url, opts, secret) as response:
        try:
            return json.loads(response.read().decode("utf-8"))
        except (ValueError, http.client.IncompleteRead) as exc:
            raise HTTPFailure(Failure(taxonomy.NETWORK, f"bad JSON from the API: {exc}")) from exc


def search_pages(term: str, opts: FreesoundOptions, secret: str, wait) -> list[dict]:
    """Results of up to `max_pages` pages for `term`, following the API's `next` links.
    `wait()` is called before each request (the rate limit)."""
    url, results = search_url(opts, term), []
    for _ in range(max(1, opts.max_pages)):
        wait()
        page = read_json(url, opts, secret)
        results += [r for r in page.get("results") or [] if isinstance(r, dict) and r.get("id")]
        url = page.get("next")
        if not url:
            break
    return results


def filter_reason(sound: dict, opts: FreesoundOptions) -> str | None:
    """Why a sound fails the paper's filters ("low_rating: 2.5 < 3", ...), or None."""
    duration = float(sound.get("duration") or 0.0)
    if duration > opts.max_duration:
        return f"too_long: {duration:.1f}s > {opts.max_duration:g}s"
    if duration < opts.min_duration:
        return f"too_short: {duration:.2f}s < {opts.min_duration:g}s"
    ratings = int(sound.get("num_ratings") or 0)
    rating = sound.get("avg_rating")
    if ratings < opts.min_num_ratings:
        return f"few_ratings: {ratings} < {opts.min_num_ratings}"
    if ratings and rating is not None and float(rating) < opts.min_avg_rating:
        return f"low_rating: {float(rating):.2f} < {opts.min_avg_rating:g}"
    downloads = int(sound.get("num_downloads") or 0)
    if downloads < opts.min_downloads:
        return f"few_downloads: {downloads} < {opts.min_downloads}"
    comments = int(sound.get("num_comments") or 0)
    if comments < opts.min_comments:
        return f"few_comments: {comments} < {opts.min_comments}"
    tags = [t for t in sound.get("tags") or [] if str(t).strip()]
    if len(tags) < opts.min_tags:
        return f"few_tags: {len(tags)} < {opts.min_tags}"
    return None


def clean_name(name: str) -> str:
    """A sound's name as a title: no file extension, separators as spaces."""
    name = re.sub(r"\.(wav|mp3|ogg|flac|aiff?|m4a)$", "", str(name or ""), flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", re.sub(r"[_]+", " ", name)).strip()


def ranking_text(sound: dict) -> str:
    """What the term is compared with: title + tags + description."""
    tags = " ".join(str(t) for t in sound.get("tags") or [])
    description = re.sub(r"<[^>]+>", " ", str(sound.get("description") or ""))[:1000]
    return f"{clean_name(sound.get('name', ''))}. {tags}. {description}".strip()


def audio_url(sound: dict, opts: FreesoundOptions) -> str | None:
    if opts.audio == "original":
        return sound.get("download")
    return (sound.get("previews") or {}).get(opts.preview)


def candidate(sound: dict, term: str, score: float, opts: FreesoundOptions) -> dict:
    """A crawl candidate (the fields of `vidal.crawl.search.FIELDS`, plus Freesound's own)."""
    tags = [str(t) for t in sound.get("tags") or []]
    return {
        "id": str(sound["id"]),
        "platform": PLATFORM,
        "url": audio_url(sound, opts),
        "page_url": sound.get("url"),
        "title": clean_name(sound.get("name", "")),
        "description": sound.get("description"),
        "hashtags": ["#" + re.sub(r"\s+", "", t) for t in tags if t.strip()],
        "tags": tags,
        "duration": sound.get("duration"),
        "license": sound.get("license"),
        "channel": sound.get("username"),
        "term": term,
        "freesound": {
            "avg_rating": sound.get("avg_rating"),
            "num_ratings": sound.get("num_ratings"),
            "num_downloads": sound.get("num_downloads"),
            "num_comments": sound.get("num_comments"),
            "similarity": round(float(score), 4),
            "name": sound.get("name"),
        },
    }
