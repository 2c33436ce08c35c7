"""Issue 11, item 4: one URL policy for every fetch. Hostile URLs are built here and served
on loopback only: numeric IP spellings, metadata and private addresses, redirects to other
schemes, to an "internal" host (127.0.0.2) or in long chains; secrets in URLs."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from tests.security.loopback import Loopback, only_127_0_0_1_is_public, rebinding_name
from vidal import net
from vidal.media.synth import make_clip
from vidal.run.jobs import build

SECRET = "s3cr3t-do-not-publish"


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("urlclip") / "clip.mp4"
    make_clip(path, duration=1.0, width=96, height=64, fps=10, audio=False)
    return path.read_bytes()


@pytest.fixture
def site():
    server = Loopback("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def internal():
    """The host nothing may reach: a redirect or a link to it must be refused unrequested."""
    server = Loopback("127.0.0.2")
    yield server
    server.close()


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://0x7f.1/x.mp4", "loopback address 127.0.0.1"),
        ("http://2130706433/x.mp4", "loopback address 127.0.0.1"),
        ("http://017700000001/x.mp4", "loopback address 127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://[::ffff:169.254.169.254]/", "link-local address 169.254.169.254"),
        ("http://[::ffff:a00:1]/", "private address 10.0.0.1"),
        ("http://10.0.0.1/x.mp4", "private address 10.0.0.1"),
        ("http://192.168.1.1:8080/x.mp4", "private address 192.168.1.1"),
        ("http://[::1]/x.mp4", "loopback address ::1"),
        ("http://0.0.0.0/x.mp4", "unspecified address 0.0.0.0"),
        ("http://224.0.0.1/x.mp4", "multicast address 224.0.0.1"),
        ("http://localhost/x.mp4", "loopback address"),
        ("ftp://example.com/x.mp4", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://example.com/", "scheme 'gopher' is not allowed"),
    ],
)
def test_hostile_urls_are_refused_before_any_connection(url, why):
    with pytest.raises(net.UrlRefused) as refused:
        net.open_url(url, net.UrlPolicy(), timeout=2)
    assert str(refused.value).startswith("url_refused: ")
    assert why in str(refused.value)


def test_the_switch_allows_private_addresses(site):
    site.serve("/ok", b"fine", "text/plain")
    with pytest.raises(net.UrlRefused, match="loopback address 127.0.0.1"):
        net.open_url(site.url("/ok"), net.UrlPolicy(), timeout=2)
    assert site.hits["/ok"] == 0
    with net.open_url(site.url("/ok"), net.UrlPolicy(allow_private=True), timeout=2) as answer:
        assert answer.read() == b"fine"


def test_every_redirect_hop_is_vetted_and_capped(site, internal, monkeypatch):
    only_127_0_0_1_is_public(monkeypatch)
    internal.serve("/meta", b"credentials", "text/plain")
    site.serve("/end", b"the end", "text/plain")
    policy = net.UrlPolicy()
    hops = {
        "/to-internal": internal.url("/meta"),
        "/to-ftp": "ftp://127.0.0.1/x",
        "/to-file": "file:///etc/passwd",
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    }
    for path, target in hops.items():
        with pytest.raises(net.UrlRefused):
            net.open_url(site.redirect(path, target), policy, timeout=2)
    assert internal.hits["/meta"] == 0  # refused before the request, not after the answer
    for i in range(7):  # /chain-6 -> /chain-5 -> ... -> /chain-0 -> /end
        site.redirect(f"/chain-{i}", site.url(f"/chain-{i - 1}" if i else "/end"))
    with net.open_url(site.url("/chain-4"), policy, timeout=2) as answer:  # 5 redirects: fine
        assert answer.read() == b"the end"
    with pytest.raises(net.UrlRefused, match="more than 5 redirects"):
        net.open_url(site.url("/chain-6"), policy, timeout=2)


def test_credentials_never_follow_a_redirect_to_another_origin(site, internal):
    internal.serve("/other", b"x", "text/plain")
    site.redirect("/go", internal.url("/other"))
    policy = net.UrlPolicy(allow_private=True)
    url = site.url("/go").replace("http://", "http://user:pw@")
    with net.open_url(url, policy, timeout=2, headers={"Cookie": "c=1"}) as answer:
        assert answer.read() == b"x"
    assert site.auth[0][1].startswith("Basic ")  # basic auth from the URL, to its own host
    assert internal.auth == [("/other", None)]


def _manifest(tmp_path, urls: list[str], **extra) -> str:
    path = tmp_path / "manifest.jsonl"
    rows = [{"url": u, "title": f"clip number {i}", **extra} for i, u in enumerate(urls)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _published(out) -> bytes:
    """Every byte a build publishes: everything under OUT but its private work/ store."""
    files = [p for p in out.rglob("*") if p.is_file() and "work" not in p.relative_to(out).parts]
    return b"".join(p.read_bytes() for p in files)


def test_manifest_urls_to_private_addresses_fail_per_sample(
    site, clip_bytes, local_config, tmp_path
):
    url = site.serve("/clip.mp4", clip_bytes)
    source = _manifest(tmp_path, [url, "http://0x7f.1:1/x.mp4", "http://169.254.169.254/v.mp4"])
    config = local_config("stages=[probe,clip]", "shards=1")
    outcome = build(config, source, str(tmp_path / "out"))
    rows = pq.read_table(tmp_path / "out/shards/vidal-00000.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["failed"] * 3
    errors = sorted(r["error"] for r in rows)
    assert errors == [
        "probe: url_refused: link-local address 169.254.169.254",
        "probe: url_refused: loopback address 127.0.0.1",
        "probe: url_refused: loopback address 127.0.0.1 (from 0x7f.1)",
    ]
    assert site.hits["/clip.mp4"] == 0 and outcome.total["kept"] == 0


def test_secrets_in_urls_are_redacted_in_everything_published(
    site, clip_bytes, local_config, tmp_path
):
    site.serve("/clip.mp4", clip_bytes)
    signed = site.url(f"/clip.mp4?X-Amz-Credential={SECRET}&X-Amz-Signature={SECRET}&w=1")
    signed = signed.replace("http://", f"http://user:{SECRET}@")
    missing = site.url(f"/gone.mp4?token={SECRET}&sig={SECRET}")
    config = local_config("stages=[probe,clip]", "shards=1", "source.allow_private_addresses=true")
    out = tmp_path / "out"
    thumb = f"https://cdn.example/t.jpg?X-Goog-Signature={SECRET}"  # an extra column
    outcome = build(config, _manifest(tmp_path, [signed, missing], thumbnail=thumb), str(out))
    assert outcome.total["kept"] == 1  # the real URL was used for the fetch
    assert SECRET.encode() not in _published(out)
    with tarfile.open(out / "shards/vidal-00000.tar") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        source = json.loads(tar.extractfile(member).read())["source"]
    query = "X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&w=1"
    assert source == f"http://REDACTED@127.0.0.1:{site.port}/clip.mp4?{query}"
    rows = pq.read_table(out / "shards/vidal-00000.parquet").to_pylist()
    failed = next(r for r in rows if r["status"] == "failed")
    assert "token=REDACTED&sig=REDACTED" in failed["error"] and "HTTP 404" in failed["error"]


def test_redact_rules():
    url = f"https://bob:{SECRET}@h.example/v.mp4?Signature={SECRET}&api_key={SECRET}&keep=1"
    assert net.redact(url) == (
        "https://REDACTED@h.example/v.mp4?Signature=REDACTED&api_key=REDACTED&keep=1"
    )
    assert net.redact("/local/path/v.mp4?token=x") == "/local/path/v.mp4?token=x"
    text = f"network: cannot fetch {url}: HTTP 403"
    assert SECRET not in net.redact_text(text) and "HTTP 403" in net.redact_text(text)


def _crawl(tmp_path, urls: list[str], *overrides: str) -> dict:
    from vidal.config import load_config
    from vidal.run.crawl import run_crawl

    tmp_path.mkdir()
    path = tmp_path / "urls.jsonl"
    path.write_text("".join(json.dumps({"url": u, "title": "two words"}) + "\n" for u in urls))
    config = load_config(
        "crawl",
        ["runner.kind=local", "runner.progress=false", "crawl.search.check_url=",
         "crawl.download.rate_per_s=0", "crawl.download.attempts=1", *overrides],
    )  # fmt: skip
    run_crawl(config, str(tmp_path / "out"), urls_file=str(path), quiet=True)
    rows = pq.read_table(tmp_path / "out" / "candidates.parquet").to_pylist()
    return {r["url"].rsplit("/", 1)[-1]: r for r in rows}


def _page(video_url: str) -> bytes:
    return f'<html><title>two words</title><video src="{video_url}"></video></html>'.encode()


def test_crawl_downloads_go_through_the_policy(site, internal, clip_bytes, tmp_path, monkeypatch):
    internal.serve("/m.mp4", clip_bytes)
    site.serve("/ok.mp4", clip_bytes)
    urls = [
        site.url("/ok.mp4"),
        site.serve("/links-inside.html", _page(internal.url("/m.mp4")), "text/html"),
        site.redirect("/hop.mp4", internal.url("/m.mp4")),
    ]
    rows = _crawl(tmp_path / "default", urls)  # loopback is private: nothing is requested
    assert {r["reason"] for r in rows.values()} == {"url_refused"}
    assert sum(site.hits.values()) == 0
    only_127_0_0_1_is_public(monkeypatch)  # now 127.0.0.1 plays a public site
    rows = _crawl(tmp_path / "public", urls)
    assert rows["ok.mp4"]["status"] == "downloaded"
    for name in ("links-inside.html", "hop.mp4"):  # the page's link, the redirect hop
        assert rows[name]["reason"] == "url_refused", rows[name]
        assert "loopback address 127.0.0.2" in rows[name]["error"]
    assert internal.hits["/m.mp4"] == 0


def test_the_connection_goes_to_the_vetted_address(site, monkeypatch):
    """DNS rebinding: a name that resolves to a public address for the check and to an internal
    one a moment later must still be fetched from the address that was checked."""

    only_127_0_0_1_is_public(monkeypatch)
    site.serve("/v.mp4", b"from the vetted address", "text/plain")
    internal = Loopback("127.0.0.2", site.port)  # same port: only the address differs
    internal.serve("/v.mp4", b"from the internal host", "text/plain")
    rebinding_name(monkeypatch, "rebind.test", ["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    url = f"http://rebind.test:{site.port}/v.mp4"
    try:
        with net.open_url(url, net.UrlPolicy(), timeout=2) as answer:
            assert answer.read() == b"from the vetted address"
        assert internal.hits["/v.mp4"] == 0
    finally:
        internal.close()


def test_model_references_are_never_urls():
    from vidal.models.resolve import check_reference

    for ref in ("http://169.254.169.254/model", "https://example.com/clip.bin", "file:///etc"):
        assert check_reference(ref) is not None  # only tiny:, local folders and hub ids


def test_hls_segments_are_vetted_one_by_one(site, internal, clip_bytes, tmp_path, monkeypatch):
    """A public HLS playlist whose segments are on the internal host, or local files: yt-dlp's
    own HLS downloader fetches each segment through the policy (ffmpeg, which would fetch them
    itself, never does), so nothing is requested there and nothing local is read."""
    only_127_0_0_1_is_public(monkeypatch)
    internal.serve("/seg0.ts", b"G" + bytes(187), "video/mp2t")
    for name, segment in (
        ("internal", internal.url("/seg0.ts")),
        ("local", "file:///etc/hostname"),
    ):
        playlist = (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
            f"#EXTINF:1.0,\n{segment}\n#EXT-X-ENDLIST\n"
        )
        site.serve(f"/{name}.m3u8", playlist.encode(), "application/vnd.apple.mpegurl")
    urls = [site.url("/internal.m3u8"), site.url("/local.m3u8")]
    rows = _crawl(tmp_path / "hls", urls, "crawl.download.allow_local=true")
    assert rows["internal.m3u8"]["error"] == "url_refused: loopback address 127.0.0.2"
    assert rows["local.m3u8"]["error"] == "url_refused: a file:// URL named by a remote page"
    assert internal.hits["/seg0.ts"] == 0
    assert site.hits["/internal.m3u8"] >= 1  # the playlist itself was fetched (it is public)
