"""Hostile HTTP servers for the security tests, on loopback addresses only (127.0.0.1, and
127.0.0.2 as the "internal" host a redirect or a link must never reach). Each counts the
requests per path and the connections it accepted, and records the Authorization header of
each request. HTTP/1.0 (a connection per request) unless `keep_alive`."""

from __future__ import annotations

import collections
import http.server
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections += 1

    def log_message(self, *args) -> None:
        return None

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer()

    def answer(self) -> None:
        server: Loopback = self.server.owner
        path = self.path.split("?", 1)[0]
        with server.lock:
            server.hits[path] += 1
            server.auth.append((path, self.headers.get("Authorization")))
        status, headers, body = server.routes.get(path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if server.hang_up:  # keep-alive announced, the connection dropped anyway
            self.close_connection = True


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        return None


class Loopback:
    """`routes[path] = (status, headers, body)`; `hits[path]` counts requests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep_alive: bool = False):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.hits: collections.Counter = collections.Counter()
        self.auth: list[tuple[str, str | None]] = []
        self.connections = 0
        self.hang_up = False  # keep-alive servers: close each connection after one answer
        self.lock = threading.Lock()
        self.httpd = _Server((host, port), _KeepAliveHandler if keep_alive else _Handler)
        self.httpd.owner = self
        self.host, self.port = host, self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, ctype: str = "video/mp4") -> str:
        self.routes[path] = (200, {"Content-Type": ctype}, body)
        return self.url(path)

    def redirect(self, path: str, to: str, status: int = 302) -> str:
        self.routes[path] = (status, {"Location": to}, b"")
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def only_127_0_0_1_is_public(monkeypatch) -> None:
    """Make the policy treat 127.0.0.1 as a public address (and nothing else new), so a test
    can play "public site" on loopback while 127.0.0.2 plays the internal host."""
    from vidal import net

    real = net.address_problem

    def problem(ip: str) -> str | None:
        return None if ip == "127.0.0.1" else real(ip)

    monkeypatch.setattr(net, "address_problem", problem)


def rebinding_name(monkeypatch, host: str, answers: list[str]) -> list[str]:
    """Make `host` resolve to `answers` in turn, one per lookup (a DNS rebinding name);
    every other name resolves as usual. Returns the list of `host`'s lookups as they happen."""
    import socket

    queue, lookups, real = iter(answers), [], socket.getaddrinfo

    def resolve(name, port, *args, **kwargs):
        if name != host:
            return real(name, port, *args, **kwargs)
        lookups.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(queue), port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return lookups
