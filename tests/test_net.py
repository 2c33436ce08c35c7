"""Kept-alive connections in `vidal.net`: a connection is reused across requests to one
server, and never lets a URL or a redirect hop skip its vetting. Loopback servers only."""

from __future__ import annotations

import socket

import pytest

from tests.security.loopback import Loopback, only_127_0_0_1_is_public, rebinding_name
from vidal import net

PRIVATE_OK = net.UrlPolicy(allow_private=True)


@pytest.fixture
def site():
    server = Loopback("127.0.0.1", keep_alive=True)
    yield server
    server.close()


@pytest.fixture
def internal():
    server = Loopback("127.0.0.2", keep_alive=True)
    yield server
    server.close()


def fetch(url: str, policy: net.UrlPolicy = PRIVATE_OK) -> bytes:
    with net.open_url(url, policy, timeout=5) as answer:
        return answer.read()


def test_two_downloads_from_one_server_share_a_connection(site):
    site.serve("/a.mp4", b"first clip")
    site.serve("/b.mp4", b"second clip")
    assert fetch(site.url("/a.mp4")) == b"first clip"
    assert fetch(site.url("/b.mp4")) == b"second clip"
    assert site.connections == 1
    assert site.hits == {"/a.mp4": 1, "/b.mp4": 1}


def test_an_answer_closed_before_its_end_takes_its_connection_along(site):
    """Its unread bytes would be read as the next answer: the connection is not reused."""
    site.serve("/big.mp4", b"x" * 200_000)
    site.serve("/b.mp4", b"second clip")
    with net.open_url(site.url("/big.mp4"), PRIVATE_OK, timeout=5) as answer:
        assert answer.read(10) == b"x" * 10
    assert fetch(site.url("/b.mp4")) == b"second clip"
    assert site.connections == 2


def test_a_connection_the_server_dropped_while_idle_is_replaced(site):
    site.hang_up = True  # announces keep-alive, then closes: the next request finds it dead
    site.serve("/a.mp4", b"first clip")
    site.serve("/b.mp4", b"second clip")
    assert fetch(site.url("/a.mp4")) == b"first clip"
    assert fetch(site.url("/b.mp4")) == b"second clip"  # no network error for the user
    assert site.connections == 2
    assert site.hits == {"/a.mp4": 1, "/b.mp4": 1}


def test_a_redirect_to_an_internal_host_is_refused_on_a_reused_connection(
    site, internal, monkeypatch
):
    only_127_0_0_1_is_public(monkeypatch)
    internal.serve("/meta", b"credentials", "text/plain")
    site.serve("/a.mp4", b"first clip")
    site.redirect("/hop.mp4", internal.url("/meta"))
    assert fetch(site.url("/a.mp4"), net.UrlPolicy()) == b"first clip"
    with pytest.raises(net.UrlRefused, match="loopback address 127.0.0.2"):
        fetch(site.url("/hop.mp4"), net.UrlPolicy())
    assert site.connections == 1  # the redirect came over the kept connection
    assert internal.hits["/meta"] == 0 and internal.connections == 0


def test_a_kept_connection_never_skips_the_vetting_of_the_next_url(site, monkeypatch):
    """A name that rebinds to an internal address after its first fetch: the next URL of the
    same host and port is refused, though a connection to the checked address is idle."""
    only_127_0_0_1_is_public(monkeypatch)
    site.serve("/a.mp4", b"first clip")
    site.serve("/b.mp4", b"second clip")
    rebinding_name(monkeypatch, "rebind.test", ["127.0.0.1", "127.0.0.2"])
    assert fetch(f"http://rebind.test:{site.port}/a.mp4", net.UrlPolicy()) == b"first clip"
    with pytest.raises(net.UrlRefused, match="loopback address 127.0.0.2"):
        fetch(f"http://rebind.test:{site.port}/b.mp4", net.UrlPolicy())
    assert site.hits["/b.mp4"] == 0


def test_a_vetted_url_is_not_resolved_again(site, monkeypatch):
    """The caller's `vet` answer is the one the connection uses: one lookup per URL."""
    site.serve("/a.mp4", b"first clip")
    lookups = []
    real = socket.getaddrinfo

    def counted(host, port, *args, **kwargs):
        if host != "clips.test":  # the connect's own call, on the numeric address
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", counted)
    url = f"http://clips.test:{site.port}/a.mp4"
    vetted = net.vet(url, PRIVATE_OK)
    with net.open_url(url, PRIVATE_OK, timeout=5, vetted=vetted) as answer:
        assert answer.read() == b"first clip"
    assert lookups == ["clips.test"]
