"""The OpenAI-compatible client against a scripted loopback server that injects faults."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from vidal.models.openai_http import (
    OpenAIClient,
    RequestError,
    parse_retry_after,
    user_message,
)

SECRET = "sk-test-DO-NOT-LEAK-4242"


class _Threading(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default (5) refuses bursts of concurrent connections


class ScriptedServer:
    """/v1/chat/completions on 127.0.0.1: `faults` is a queue of what the next requests get
    (timeout, 500, 429, bad_json, no_choices, 400; then normal answers); `answer(body)` makes
    the normal answers (None: an empty choice list). Counts every request and every fault served."""

    def __init__(self, answer=None, delay: float = 0.0):
        self.answer = answer or (lambda body: "a scripted caption of a small red circle")
        self.delay = delay
        self.faults: list[str] = []
        self.retry_after = "0"
        self.counts: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    fault = server.faults.pop(0) if server.faults else "ok"
                    server.counts[fault] = server.counts.get(fault, 0) + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.respond(fault, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def respond(self, fault, body):
                if server.delay:
                    time.sleep(server.delay)
                if fault == "timeout":
                    time.sleep(0.6)
                    return self.send(200, _completion("too late"))
                if fault in ("500", "400"):
                    return self.send(int(fault), b'{"error": "scripted"}')
                if fault == "429":
                    return self.send(429, b"{}", {"Retry-After": server.retry_after})
                if fault == "bad_json":
                    return self.send(200, b"{not json")
                if fault == "no_choices":
                    return self.send(200, json.dumps({"choices": []}).encode())
                text = server.answer(body)
                if text is None:  # scripted: this request gets an empty choice list
                    return self.send(200, json.dumps({"choices": []}).encode())
                self.send(200, _completion(text))

            def send(self, status, payload: bytes, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout)
                    self.wfile.write(payload)

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text: str) -> bytes:
    return json.dumps(
        {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": text}, "finish_reason": "stop"}]}
    ).encode()  # fmt: skip


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def client_for(server, **kwargs) -> OpenAIClient:
    args = dict(timeout_s=0.3, max_retries=3, backoff_s=0.01, concurrency=4)
    client = OpenAIClient(server.url, "scripted-model", **{**args, **kwargs})
    client.slept = []
    client._sleep = client.slept.append  # record the backoff instead of waiting
    return client


def test_answer_request_and_key_in_the_header_only(server, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    client = client_for(server)
    out = client.chat(user_message("describe"), max_tokens=12, temperature=0.0)
    assert out == "a scripted caption of a small red circle"
    body = server.bodies[0]
    assert body["model"] == "scripted-model" and body["max_tokens"] == 12
    assert server.auth == [f"Bearer {SECRET}"]
    assert SECRET not in repr(client) and SECRET not in caplog.text


def test_no_key_no_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client_for(server).chat(user_message("x"))
    assert server.auth == [None]


def test_500_is_retried(server):
    server.faults = ["500", "500"]
    client = client_for(server)
    assert client.chat(user_message("x")).startswith("a scripted")
    assert server.counts == {"500": 2, "ok": 1}
    assert client.counters.retries == 2 and len(client.slept) == 2


def test_429_honours_retry_after(server):
    server.faults, server.retry_after = ["429"], "7"
    client = client_for(server, max_backoff_s=30)
    assert client.chat(user_message("x")).startswith("a scripted")
    assert server.counts == {"429": 1, "ok": 1}
    assert client.slept == [7.0]


def test_timeout_is_retried(server):
    server.faults = ["timeout"]
    client = client_for(server)
    assert client.chat(user_message("x")).startswith("a scripted")
    assert server.counts == {"timeout": 1, "ok": 1} and client.counters.retries == 1


def test_persistent_5xx_fails_after_the_retries(server, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.faults = ["500"] * 10
    client = client_for(server, max_retries=2)
    with pytest.raises(RequestError) as info:
        client.chat(user_message("x"))
    assert info.value.reason == "http_5xx" and server.counts == {"500": 3}
    assert SECRET not in str(info.value) and SECRET not in caplog.text


@pytest.mark.parametrize("fault", ["bad_json", "no_choices", "400"])
def test_bad_answers_are_per_request_errors_not_retried(server, fault):
    server.faults = [fault]
    client = client_for(server)
    out = client.chat_many([user_message("a"), user_message("b")])
    errors = [o for o in out if isinstance(o, RequestError)]
    assert len(errors) == 1
    assert errors[0].reason == {"bad_json": "bad_json", "no_choices": "no_choices"}.get(
        fault, "http_4xx"
    )
    assert server.counts == {fault: 1, "ok": 1}  # the fault was not retried


def test_concurrency_is_capped(server):
    server.delay = 0.05
    client = client_for(server, concurrency=4)
    out = client.chat_many([user_message(str(i)) for i in range(12)])
    assert len(out) == 12 and all(isinstance(o, str) for o in out)
    assert 1 < server.max_in_flight <= 4


def test_frames_go_as_base64_jpeg_data_urls(server):
    frames = [np.full((24, 32, 3), 200, np.uint8), np.zeros((24, 32, 3), np.uint8)]
    client_for(server).chat(user_message("what does the image describe?", frames))
    parts = server.bodies[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (32, 24)


def test_retry_after_forms():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a past date
    assert parse_retry_after("soon") is None
