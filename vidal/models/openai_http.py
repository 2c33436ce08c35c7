"""A client for OpenAI-compatible chat completion servers (vLLM, SGLang, Ollama, llama.cpp
server, hosted APIs), standard library only.

- `POST {base_url}/chat/completions`; images as base64 data URLs in `image_url` content parts.
- Concurrency: `chat_many` runs at most `concurrency` requests at a time (threads).
- Timeouts per request; retries with exponential backoff and jitter on timeouts, connection
  errors, 429 and 5xx, honouring `Retry-After` (seconds or an HTTP date, capped at
  `max_backoff_s`). Other 4xx, malformed JSON and a response without a choice are not
  retried: they are that request's error (`RequestError.reason`).
- The API key comes from the environment variable named by `api_key_env`; it is sent in the
  Authorization header and nowhere else: not in `repr`, logs, errors or any record.
- Requests go through vidal.net: http(s) only, to the configured server alone. A redirect is
  never followed (the key would go with it): it is that request's error (`redirect_refused`).
  The server itself is the user's choice, so private and loopback addresses are allowed
  (a vLLM on localhost is the usual case).
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vidal import net

log = logging.getLogger(__name__)

# the user's own server: any address, but no redirect (credentials never follow one)
SERVER_POLICY = net.UrlPolicy(allow_private=True, max_redirects=0)
RETRYABLE_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


class RequestError(RuntimeError):
    """One request that failed for good: `reason` is a slug (http_4xx, http_5xx, timeout,
    connection, bad_json, no_choices), the message a detail without secrets."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Counters:
    """What the client did, for accounting and benchmarks (thread-safe increments)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class OpenAIClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        concurrency: int = 8,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.concurrency = max(1, int(concurrency))
        self.counters = Counters()
        self._sleep = time.sleep  # tests may replace it

    def __repr__(self) -> str:  # never the key
        return f"OpenAIClient(url={net.redact(self.url)!r}, model={self.model!r})"

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def chat(self, messages: list[dict], **decoding) -> str:
        """The first choice's message content of one chat completion (retried as above)."""
        body = json.dumps({"model": self.model, "messages": messages, **decoding}).encode()
        attempt = 0
        while True:
            self.counters.add("requests")
            try:
                return self._once(body)
            except _Retry as exc:
                if attempt >= self.max_retries:
                    self.counters.add("failures")
                    raise RequestError(exc.reason, exc.detail) from None
                delay = self._delay(attempt, exc.retry_after)
                log.debug("retrying %s in %.2fs: %s", net.redact(self.url), delay, exc.reason)
                self.counters.add("retries")
                attempt += 1
                self._sleep(delay)
            except RequestError:
                self.counters.add("failures")
                raise

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)  # jitter: 50-100% of the step

    def _once(self, body: bytes) -> str:
        try:
            with net.open_url(
                self.url, SERVER_POLICY, self.timeout_s, headers=self._headers(), data=body
            ) as response:
                raw = response.read()
        except net.UrlRefused as exc:
            raise RequestError("redirect_refused", exc.detail) from None
        except net.FetchError as exc:
            if exc.status is None:
                raise _transport_failure(exc.__cause__ or exc, self.timeout_s) from None
            status, retry_after = exc.status, parse_retry_after(exc.headers.get("Retry-After"))
            kind = f"http_{status // 100}xx"
            if status in RETRYABLE_STATUS:
                raise _Retry(kind, f"HTTP {status}", retry_after) from None
            raise RequestError(kind, f"HTTP {status}") from None
        except (OSError, http_client_errors()) as exc:  # while reading the body
            raise _transport_failure(exc, self.timeout_s) from None
        return parse_completion(raw)

    def chat_many(self, conversations: list[list[dict]], **decoding) -> list[str | RequestError]:
        """Each conversation's answer (or its RequestError), in order, `concurrency` at a time."""

        def one(messages):
            try:
                return self.chat(messages, **decoding)
            except RequestError as exc:
                return exc

        if len(conversations) <= 1 or self.concurrency == 1:
            return [one(m) for m in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(one, conversations))


def _transport_failure(exc: BaseException, timeout_s: float) -> _Retry:
    if isinstance(exc, TimeoutError):
        return _Retry("timeout", f"no answer in {timeout_s:g}s")
    return _Retry("connection", f"{type(exc).__name__}: {exc}")


class _Retry(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def http_client_errors():
    import http.client

    return http.client.HTTPException


def parse_completion(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("bad_json", f"the response is not JSON ({len(raw)} bytes)") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list):
        raise RequestError("no_choices", "the response has no choice")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        raise RequestError("no_choices", "the first choice has no message content")
    return str(content)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def image_part(frame: np.ndarray, quality: int = 90) -> dict:
    """An RGB uint8 (H, W, 3) frame as an `image_url` content part with a JPEG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def user_message(text: str, frames: list[np.ndarray] = ()) -> list[dict]:
    """A one-message conversation: the images first, then the text."""
    if not frames:
        return [{"role": "user", "content": text}]
    parts = [image_part(f) for f in frames]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]
