"""The one URL policy for every fetch vidal makes, and the one rule for recording a URL.

URLs come from strangers (manifest rows, crawled pages and what they link to), so a fetch must
not become a way into the machine's own network or a leak of credentials:

- schemes: http and https only (object stores go through fsspec with the user's own endpoint and
  credentials, see `vidal.io.sources.REMOTE_SCHEMES`; they are not fetched here);
- addresses are checked after DNS resolution, every address a name resolves to: private,
  loopback, link-local (the 169.254.169.254 cloud metadata service), multicast, reserved,
  unspecified and shared ranges are refused, also inside IPv4-mapped, 6to4, Teredo and NAT64
  IPv6 addresses. Numeric spellings (`0x7f.1`, `2130706433`, `017700000001`) reach the check
  already normalised by the resolver. `source.allow_private_addresses` turns this off (tests
  serving on 127.0.0.1, or a build that reads an intranet on purpose);
- the connection goes to the address that was checked (no second lookup, so a name cannot
  rebind to another address between check and connect; TLS still verifies the host name). A
  caller that vetted the URL already (the crawl, before it queues a download) passes that
  `Vetted` on: one resolution per URL;
- connections are kept alive per thread and reused for the same (scheme, host, port) only when
  the address they are connected to is among the addresses just vetted for the new request:
  every URL and every redirect hop is still vetted first, reuse saves only the TCP (and TLS)
  handshake;
- redirects are followed here, hop by hop, each hop vetted like the first, at most
  `max_redirects`; credentials (Authorization, Cookie) never follow a redirect to another origin.

`redact` is applied wherever a URL is recorded (KEY.json, shard parquets, crawl manifests, error
messages, logs): `user:pass@` and secret-looking query parameters become `REDACTED`. The real URL
is kept only where a later fetch needs it: in memory and in the build's private stage store
(`OUT/work/`), never in a published file.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

REDACTED = "REDACTED"
ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
# query parameter names whose values are credentials (lower case); any name containing one of
# the _SECRET_PARTS is treated the same
SECRET_PARAMS = frozenset(
    {"sig", "key", "token", "auth", "code", "pass", "pwd", "session", "sessionid", "jwt"}
)
_SECRET_PARTS = ("signature", "credential", "token", "secret", "password", "passwd", "api_key")
_SECRET_PARTS += ("apikey", "access_key", "security", "key-pair-id", "policy")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(ValueError):
    """A URL the policy refuses; str() is `url_refused: <why>` with the URL redacted."""

    reason = "url_refused"

    def __init__(self, detail: str):
        super().__init__(f"url_refused: {detail}")
        self.detail = detail


class FetchError(OSError):
    """A fetch that failed on the network or with an HTTP error status (message redacted)."""

    def __init__(self, detail: str, status: int | None = None, headers=None):
        super().__init__(detail)
        self.detail, self.status, self.headers = detail, status, headers or {}


@dataclass(frozen=True)
class UrlPolicy:
    allow_private: bool = False  # source.allow_private_addresses
    max_redirects: int = MAX_REDIRECTS  # 0: a redirect is refused, never followed


@dataclass(frozen=True)
class Vetted:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]  # resolved and checked, in the resolver's order


# -- the policy ------------------------------------------------------------------------------


def address_problem(ip: str) -> str | None:
    """Why an address may not be fetched from (None for a public unicast address)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])  # an IPv6 scope id is no part of it
    inner = _embedded_ipv4(addr)
    if inner is not None:
        return address_problem(str(inner))
    for label, test in (
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("unspecified", addr.is_unspecified),
        ("reserved", addr.is_reserved),
        ("private", addr.is_private),
        ("non-public", not addr.is_global),
    ):
        if test:
            return f"{label} address {addr}"
    return None


def _embedded_ipv4(addr) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if addr.version != 6:
        return None
    if addr.ipv4_mapped or addr.sixtofour:
        return addr.ipv4_mapped or addr.sixtofour
    if addr.teredo:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def check_scheme(url: str) -> str | None:
    """Why a URL's scheme is refused (None for http/https); no network access."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ALLOWED_SCHEMES:
        return None
    return f"scheme {scheme or 'none'!r} is not allowed (http or https only): {redact(url)[:120]}"


def vet(url: str, policy: UrlPolicy, resolve=None) -> Vetted:
    """The URL's scheme, host and every resolved address checked; raises UrlRefused."""
    problem = check_scheme(url)
    if problem:
        raise UrlRefused(problem)
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise UrlRefused(f"bad port in {redact(url)[:120]}") from None
    host = parts.hostname
    if not host:
        raise UrlRefused(f"no host in {redact(url)[:120]}")
    try:
        infos = (resolve or socket.getaddrinfo)(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise FetchError(f"{host} resolves to no address")
    if not policy.allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise UrlRefused(problem if address == host else f"{problem} (from {host})")
    return Vetted(url, parts.scheme.lower(), host, port, addresses)


# -- fetching --------------------------------------------------------------------------------


class Response:
    """An HTTP answer being read: `read(n)`, `status`, `headers`, `url` (after redirects).
    Closed once read to its end, its connection goes back to the thread's pool (keep-alive);
    closed earlier, the connection is closed too."""

    def __init__(self, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse, url: str):
        self._conn, self._raw, self.url = conn, raw, url
        self.status, self.headers = raw.status, raw.headers

    def read(self, n: int | None = None) -> bytes:
        # http.client reads to EOF on a negative size, which a keep-alive server never sends
        return self._raw.read(None if n is None or n < 0 else n)

    def readinto(self, buffer) -> int:
        """Up to len(buffer) bytes of the body into `buffer`; 0 at its end."""
        return self._raw.readinto(buffer)

    def drain(self, limit: int = 64 * 1024) -> None:
        """A small announced body (a redirect's, an error page's) read and dropped, so the
        connection can serve the next request; a larger or unannounced one is left (close)."""
        length = self._raw.length
        if length is not None and length <= limit and not self._raw.isclosed():
            try:
                self._raw.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()

    def close(self) -> None:
        # read to its end (http.client released it) and the server keeps the connection open
        reusable = self._raw.isclosed() and not self._raw.will_close
        self._raw.close()
        if reusable:
            _POOL.put(self._conn)
        else:
            self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_url(
    url: str,
    policy: UrlPolicy,
    timeout: float,
    headers: dict | None = None,
    data: bytes | None = None,
    method: str | None = None,
    vetted: Vetted | None = None,
) -> Response:
    """GET (or POST with `data`) `url` under the policy, following redirects by hand.

    `vetted`: `vet(url, policy)`'s answer when the caller has it (the first hop then resolves
    nothing again); every redirect hop is vetted here. A status >= 400 raises FetchError with
    the status and headers; a redirect when `policy.max_redirects` is 0, or past it, raises
    UrlRefused."""
    headers = {"User-Agent": "vidal", "Accept-Encoding": "identity", **(headers or {})}
    headers.update(_basic_auth(url))
    method = method or ("POST" if data is not None else "GET")
    for _hop in range(policy.max_redirects + 1):
        target = vetted if vetted is not None and vetted.url == url else vet(url, policy)
        vetted = None
        response = _request(target, method, headers, data, timeout)
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            return _checked(response)
        response.drain()
        response.close()
        if policy.max_redirects == 0:
            raise UrlRefused(f"redirect ({response.status}) refused: {redact(url)[:120]}")
        new_url = urllib.parse.urljoin(url, location.strip())
        headers = _headers_for_redirect(headers, url, new_url)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, data = "GET", None
        url = new_url
    raise UrlRefused(f"more than {policy.max_redirects} redirects: {redact(url)[:120]}")


def _basic_auth(url: str) -> dict:
    """`user:pass@` in a URL is HTTP basic auth (for that origin only, see redirects)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return {}
    user = urllib.parse.unquote(parts.username)
    secret = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _checked(response: Response) -> Response:
    if response.status >= 400:
        response.drain()
        response.close()
        raise FetchError(
            f"HTTP {response.status} from {redact(response.url)[:120]}",
            response.status,
            response.headers,
        )
    return response


def _headers_for_redirect(headers: dict, old: str, new: str) -> dict:
    """Credentials stay with their origin: another scheme, host or port gets none of them."""
    same = _origin(old) == _origin(new)
    private = {"authorization", "cookie", "proxy-authorization"}
    return {k: v for k, v in headers.items() if same or k.lower() not in private}


def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def _request(target: Vetted, method, headers, data, timeout) -> Response:
    """One request: on a kept-alive connection to a vetted address if the thread has one,
    else to the first vetted address that accepts a connection."""
    parts = urllib.parse.urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = _POOL.take(target, timeout)
    if kept is not None:
        try:
            kept.request(method, path, body=data, headers=headers)
            return Response(kept, kept.getresponse(), target.url)
        except (OSError, http.client.HTTPException) as exc:
            kept.close()
            if data is not None or not _closed_while_idle(exc):
                raise FetchError(_cannot(target, exc)) from exc
            # the server closed the idle connection first: a new one (no request was served)
    error: Exception | None = None
    for address in target.addresses:
        conn = _connection(target, address, timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            return Response(conn, conn.getresponse(), target.url)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            error = exc
            if not isinstance(exc, ConnectionRefusedError):
                break  # the server was reached: another address would repeat the request
    raise FetchError(_cannot(target, error)) from error


def _cannot(target: Vetted, error: Exception | None) -> str:
    return f"cannot fetch {redact(target.url)[:120]}: {type(error).__name__}: {error}"


def _closed_while_idle(exc: Exception) -> bool:
    """A kept-alive connection the server had closed: no answer at all came back."""
    closed = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
    return isinstance(exc, closed)


def _connection(target: Vetted, address: str, timeout: float) -> http.client.HTTPConnection:
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=_tls_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def connect_to_vetted(_address, timeout=None, source_address=None):
        # the Host header and TLS name stay the host's; the socket goes to the checked address
        return socket.create_connection((address, target.port), timeout, source_address)

    conn._create_connection = connect_to_vetted
    conn.vidal_key = (target.scheme, target.host, target.port, address)
    return conn


_TLS: list[ssl.SSLContext] = []


def _tls_context() -> ssl.SSLContext:
    """One default context per process: building one loads the CA store (milliseconds)."""
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return _TLS[0]


class _KeptAlive(threading.local):
    """Each thread's idle connections, keyed (scheme, host, port, address): one thread makes
    one request at a time, so one idle connection per key. Beyond `MAX` the least recently
    used is closed; one idle longer than `IDLE_S` (servers drop idle ones) is closed instead
    of reused, and when the next connection comes back."""

    MAX = 16
    IDLE_S = 15.0

    def __init__(self):
        self.idle: dict[tuple, tuple[http.client.HTTPConnection, float]] = {}

    def put(self, conn: http.client.HTTPConnection) -> None:
        key = getattr(conn, "vidal_key", None)
        if key is None or conn.sock is None:
            conn.close()
            return
        now = time.monotonic()
        for old_key in [k for k, (_, since) in self.idle.items() if now - since > self.IDLE_S]:
            self.idle.pop(old_key)[0].close()
        old = self.idle.pop(key, None)
        if old is not None:
            old[0].close()
        self.idle[key] = (conn, now)
        while len(self.idle) > self.MAX:
            self.idle.pop(next(iter(self.idle)))[0].close()

    def take(self, target: Vetted, timeout: float) -> http.client.HTTPConnection | None:
        """An idle connection to one of the addresses `target` was just vetted for."""
        for address in target.addresses:
            found = self.idle.pop((target.scheme, target.host, target.port, address), None)
            if found is None:
                continue
            conn, since = found
            if time.monotonic() - since > self.IDLE_S or conn.sock is None:
                conn.close()
                continue
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            return conn
        return None


_POOL = _KeptAlive()


# -- recording -------------------------------------------------------------------------------


def redact(url: str) -> str:
    """`url` with its userinfo and secret query/fragment parameters replaced by REDACTED.

    Strings that are not URLs (local paths) come back unchanged."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query, fragment = _redact_params(parts.query), _redact_params(parts.fragment)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_params(text: str) -> str:
    if "=" not in text:
        return text
    out = []
    for item in text.split("&"):
        name, eq, _value = item.partition("=")
        if eq and _is_secret(urllib.parse.unquote_plus(name)):
            item = f"{name}={REDACTED}"
        out.append(item)
    return "&".join(out)


def _is_secret(name: str) -> bool:
    name = name.strip().lower()
    return name in SECRET_PARAMS or any(part in name for part in _SECRET_PARTS)


def redact_text(text: str | None) -> str | None:
    """Every URL inside free text (an error message, a log line) redacted."""
    if not text or "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def redact_values(value):
    """`value` (JSON-like: dicts, lists, strings) with every URL inside its strings redacted:
    for the extra manifest columns a sample carries into KEY.json and the crawl manifests."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(v) for v in value]
    return value


# -- what a fetched body is ------------------------------------------------------------------

_TEXT_KINDS = (
    (b"#extm3u", "an M3U/HLS playlist"),
    (b"#ext", "an M3U/HLS playlist"),
    (b"ffconcat", "an ffconcat script"),
    (b"<mpd", "a DASH manifest"),
    (b"<?xml", "an XML document (DASH/SMIL manifest?)"),
    (b"<smil", "a SMIL playlist"),
    (b"[playlist]", "a PLS playlist"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
)
_CONTROL = frozenset(range(0, 9)) | frozenset(range(14, 32)) | {127}


def text_body(head: bytes) -> str | None:
    """What a file is when its first bytes are text (a playlist, a manifest, a page), or None
    for binary data. Real media containers (MP4, Matroska, MPEG-TS, AVI, Ogg, FLV, ...) start
    with binary magic; any text-only head is refused whatever the file's name says."""
    head = head[:2048]
    if not head or any(b in _CONTROL for b in head):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) < 2048 or not _decodes_but_last(head):
            return None
        text = head.decode("utf-8", errors="ignore")
    lowered = text.lstrip("\ufeff \t\r\n").lower().encode()
    for magic, kind in _TEXT_KINDS:
        if lowered.startswith(magic):
            return kind
    return "a text file"


def _decodes_but_last(head: bytes) -> bool:
    """True when only a multi-byte character cut by the 2 KiB window fails to decode."""
    try:
        head[:-4].decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
