"""A loopback HTTP server for the crawl tests: generated clips, HTML pages with <video> tags,
and every fault a real crawl meets. It counts requests per path, so tests can assert that
retries happen where they should and stop where they should.

Media routes are /m/<kind>-<name>.mp4; the kind picks the behaviour (see `FaultHandler`);
/d/<kind>-<name> is the same without an extension (a direct link only its answer reveals).
Pages are /v/<kind>-<name>.html and embed /m/<kind>-<name>.mp4. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import collections
import contextlib
import html
import http.server
import threading
import time

import pytest

from vidal.config import load_config
from vidal.media.synth import make_clip

BIG_BYTES = 50 * 1024**2
CAP_BYTES = 10 * 1024**2
STALL_SECONDS = 6.0


class FaultHandler(http.server.BaseHTTPRequestHandler):
    server_version = "vidal-test"
    protocol_version = "HTTP/1.0"  # one connection per request: counts stay exact

    def log_message(self, *args) -> None:
        return None

    def do_HEAD(self) -> None:
        self.route(head=True)

    def do_GET(self) -> None:
        self.route(head=False)

    def route(self, head: bool) -> None:
        state: FaultServer = self.server.state
        path = self.path.split("?", 1)[0]
        state.count(path)
        kind = path.rsplit("/", 1)[-1].split("-", 1)[0]
        if path.startswith("/v/"):
            return self.page(path, head)
        if path.startswith("/page/novideo"):
            return self.send_body(
                b"<html><head><title>no video here</title></head></html>", "text/html", head
            )
        if not path.startswith(("/m/", "/d/")):
            return self.status(404)
        handler = getattr(self, f"media_{kind}", None)
        return handler(path, head) if handler else self.status(404)

    # -- responses ---------------------------------------------------------------------------
    def status(self, code: int, headers: dict | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_body(self, body: bytes, ctype: str, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def page(self, path: str, head: bool) -> None:
        name = path[len("/v/") : -len(".html")]
        title = html.escape(self.server.state.titles.get(name, "a red circle moving #synthetic"))
        body = (
            f"<html><head><title>{title}</title></head><body>"
            f'<video src="/m/{name}.mp4" type="video/mp4"></video></body></html>'
        ).encode()
        self.send_body(body, "text/html; charset=utf-8", head)

    def media_ok(self, path, head):
        self.send_body(self.server.state.clip, "video/mp4", head)

    def media_long(self, path, head):
        self.send_body(self.server.state.long_clip, "video/mp4", head)

    def media_text(self, path, head):
        self.send_body(b"this is not a video\n" * 100, "video/mp4", head)

    def media_html(self, path, head):
        self.send_body(b"<!DOCTYPE html><html><body>a page</body></html>", "text/html", head)

    def media_m3u(self, path, head):
        body = b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n"
        self.send_body(body, "application/vnd.apple.mpegurl", head)

    def media_hold(self, path, head):
        """Served once the test releases it: a download in flight for as long as needed."""
        self.server.state.release.wait(120)
        self.media_ok(path, head)

    def media_r429(self, path, head):
        self.status(429, {"Retry-After": "1"})

    def media_once429(self, path, head):
        if self.server.state.counts[path] == 1:
            return self.status(429, {"Retry-After": "1"})
        return self.media_ok(path, head)

    def media_f403(self, path, head):
        self.status(403)

    def media_f404(self, path, head):
        self.status(404)

    def media_f500(self, path, head):
        self.status(500)

    def media_stall(self, path, head):
        clip = self.server.state.clip
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(clip)))
        self.end_headers()
        self.wfile.write(clip[:1000])
        self.wfile.flush()
        time.sleep(STALL_SECONDS)  # the client's socket timeout fires first
        self.close_connection = True

    def media_trunc(self, path, head):
        clip = self.server.state.clip
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(clip)))
        self.end_headers()
        self.wfile.write(clip[: len(clip) // 2])
        self.close_connection = True

    def media_big(self, path, head):
        """50 MB with no Content-Length: only a cap enforced while reading can stop it."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.stream_zeros(BIG_BYTES)

    def media_bigmp4(self, path, head):
        """A real MP4 head followed by 50 MB, no Content-Length: a cap while reading stops it."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(self.server.state.clip[:4096])
        self.stream_zeros(BIG_BYTES)

    def media_bigcl(self, path, head):
        """50 MB announced in Content-Length."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(BIG_BYTES))
        self.end_headers()
        self.close_connection = True
        self.stream_zeros(BIG_BYTES)

    def stream_zeros(self, total: int) -> None:
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(total // len(chunk)):
                self.wfile.write(chunk)
                self.server.state.sent[self.path] += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a size cap should do


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects (1 s SYN retries)

    def handle_error(self, request, client_address) -> None:
        return None  # clients that hang up mid-body (caps, timeouts) are the point of the tests


class FaultServer:
    def __init__(self, clip: bytes, long_clip: bytes):
        self.clip, self.long_clip = clip, long_clip
        self.counts: collections.Counter = collections.Counter()
        self.sent: collections.Counter = collections.Counter()
        self.titles: dict[str, str] = {}
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()
        self.httpd = QuietServer(("127.0.0.1", 0), FaultHandler)
        self.httpd.state = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> None:
        with self.lock:
            self.counts[path] += 1

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.sent.clear()
            self.titles.clear()
            self.release.set()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def _server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crawl_media")
    make_clip(folder / "clip.mp4", duration=1.0, width=160, height=120, fps=15)
    make_clip(folder / "long.mp4", duration=3.0, width=96, height=64, fps=10, audio=False)
    server = FaultServer((folder / "clip.mp4").read_bytes(), (folder / "long.mp4").read_bytes())
    yield server
    server.close()


@pytest.fixture
def server(_server) -> FaultServer:
    """The loopback server with fresh request counts."""
    _server.reset()
    return _server


@pytest.fixture
def crawl_config():
    """Config factory for in-process crawls against the loopback server: short timeouts and
    backoffs, a 10 MB cap, no rate limit, no network check, loopback addresses allowed."""

    def make(*overrides: str):
        return load_config(
            "crawl",
            [
                "runner.kind=local",
                "runner.progress=false",
                "source.allow_private_addresses=true",  # the server is on 127.0.0.1
                "crawl.search.check_url=",
                "crawl.search.backoff_base=0.01",
                "crawl.download.backoff_base=0.01",
                "crawl.download.socket_timeout=2.5",
                f"crawl.download.max_bytes={CAP_BYTES}",
                "crawl.download.attempts=2",
                "crawl.download.rate_per_s=0",
                "crawl.download.threads=4",
                "crawl.download.batch_size=16",
                *overrides,
            ],
        )

    return make
