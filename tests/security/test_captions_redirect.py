"""Issue 11, item 5: the captions/LLM client never follows a redirect with the API key. A
server on 127.0.0.1 answers 302 to another loopback port; that port records whether an
Authorization header ever arrived, and the client's answer must not come from it."""

from __future__ import annotations

import json

import pytest

from tests.security.loopback import Loopback
from vidal.models.openai_http import OpenAIClient, RequestError

KEY = "sk-test-never-leaves-its-origin"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_key_goes_nowhere(status, monkeypatch):
    monkeypatch.setenv("VIDAL_TEST_KEY", KEY)
    server, elsewhere = Loopback("127.0.0.1"), Loopback("127.0.0.1")
    try:
        answer = {"choices": [{"message": {"content": "an answer from the wrong host"}}]}
        elsewhere.routes["/v1/chat/completions"] = (200, {}, json.dumps(answer).encode())
        server.redirect("/v1/chat/completions", elsewhere.url("/v1/chat/completions"), status)
        client = OpenAIClient(server.url("/v1"), "m", api_key_env="VIDAL_TEST_KEY", max_retries=0)
        with pytest.raises(RequestError) as failed:
            client.chat([{"role": "user", "content": "hi"}])
        assert failed.value.reason == "redirect_refused"
        assert KEY not in str(failed.value)
        assert server.auth == [("/v1/chat/completions", f"Bearer {KEY}")]  # its own server only
        assert sum(elsewhere.hits.values()) == 0
    finally:
        server.close()
        elsewhere.close()


def test_the_base_url_must_be_http():
    with pytest.raises(ValueError, match="http"):
        OpenAIClient("file:///etc/passwd", "m")
