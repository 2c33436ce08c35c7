"""Local media disclosure: a playlist, manifest or pattern in a source must never pull another
local video into the output. Each hostile input is built here, next to a "private" video of one
distinctive colour that they all reference; builds must fail those samples with a reason and
no frame of that colour may appear anywhere in the output. Also: the open helper itself, and
frames cut to the probed duration (an MKV whose header says less than it holds)."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vidal.media.audio import extract_audio
from vidal.media.container import ffmpeg_input, media_format, open_media, sniff, vet_for_decord
from vidal.media.ffmpeg import MediaError, run_ffmpeg
from vidal.media.frames import sample_keyframes
from vidal.run.jobs import build

SECRET_RGB = (17, 230, 201)  # the private video's colour: no output frame may show it
SECRET_HEX = "0x11E6C9"


def _looks_secret(rgb: np.ndarray) -> bool:
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return bool(np.abs(mean - np.array(SECRET_RGB)).max() < 30)


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> Path:
    """A folder outside every source: the local video an attacker wants to publish."""
    folder = tmp_path_factory.mktemp("private")
    colour = ["-f", "lavfi", "-i", f"color=c={SECRET_HEX}:s=64x48:r=10:d=1"]
    run_ffmpeg([*colour, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "secret.mp4")])
    run_ffmpeg([*colour, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(folder / "secret.ts")])
    for i in range(10):  # an image sequence for the image2 pattern
        run_ffmpeg([*colour, "-frames:v", "1", str(folder / f"img{i:03d}.jpg")])
    return folder


def _hls(private: Path) -> str:
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:1.0,\nfile://{private}/secret.ts\n"
        f"#EXTINF:1.0,\n../../{private.name}/secret.ts\n#EXT-X-ENDLIST\n"
    )


def _mpd(private: Path) -> str:
    return (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" mediaPresentationDuration="PT1S">'
        f"<Period><AdaptationSet><Representation id='1' bandwidth='1000' mimeType='video/mp4'>"
        f"<BaseURL>file://{private}/secret.mp4</BaseURL></Representation></AdaptationSet>"
        "</Period></MPD>\n"
    )


def _hostile_files(folder: Path, private: Path) -> dict[str, Path]:
    """name -> file: each references the private video its own way."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "hls": folder / "evil.m3u8",
        "hls_as_mp4": folder / "evil_hls.mp4",
        "ffconcat": folder / "list.ffconcat",
        "dash_as_flac": folder / "track.flac",
        "image2": folder / "img%03d.jpg",
    }
    files["hls"].write_text(_hls(private))
    files["hls_as_mp4"].write_text(_hls(private))
    files["ffconcat"].write_text(f"ffconcat version 1.0\nfile '{private}/secret.mp4'\n")
    files["dash_as_flac"].write_text(_mpd(private))
    for i in range(10):  # the pattern's own files sit next to it, as image2 expects
        shutil.copy(private / f"img{i:03d}.jpg", folder / f"img{i:03d}.jpg")
    shutil.copy(private / "img000.jpg", files["image2"])
    return files


def test_the_hostile_files_really_leak_without_the_helper(private, tmp_path):
    """The threat is real: a plain av.open follows the playlist to the private video."""
    files = _hostile_files(tmp_path / "a" / "b", private)
    with av.open(str(files["hls"])) as container:
        frame = next(container.decode(video=0))
        assert _looks_secret(frame.to_ndarray(format="rgb24"))


@pytest.mark.parametrize("kind", ["hls", "hls_as_mp4", "ffconcat", "dash_as_flac", "image2"])
def test_open_helper_refuses(kind, private, tmp_path):
    path = _hostile_files(tmp_path / "a" / "b", private)[kind]
    with pytest.raises(MediaError) as info:
        open_media(path)
    assert info.value.reason == "not_media"
    assert "refused" in info.value.detail
    with pytest.raises(MediaError):
        ffmpeg_input(path)
    with pytest.raises(MediaError):
        open_media(io.BytesIO(path.read_bytes()))  # bytes from a shard: the same rule
    with pytest.raises(MediaError):
        extract_audio(path, tmp_path / "out.flac")


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"\xef\xbb\xbf  #EXTM3U\n#EXTINF:1,\nx.ts\n", "hls playlist"),
        (b"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nx.m3u8\n", "hls playlist"),
        (b"ffconcat version 1.0\nfile a.mp4\n", "ffconcat"),
        (b'<?xml version="1.0"?>\n<MPD profiles="x"></MPD>', "dash manifest"),
        (b'<?xml version="1.0"?><smil/>', "smil playlist"),
        (b'<?xml version="1.0"?><svg/>', "xml document"),
        (b"<MPD></MPD>", "dash manifest"),
        (b"[Script Info]\nTitle: x\n", "ass subtitles"),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n", "webvtt"),
        (b"[playlist]\nFile1=/etc/passwd\n", "pls playlist"),
        (b"\x89PNG\r\n\x1a\n....", "png image"),
        (b"plain text, whatever the name says", "not a media container"),
    ],
)
def test_sniff_refuses_what_is_not_a_media_container(head, what):
    with pytest.raises(MediaError) as info:
        sniff(head)
    assert info.value.reason == "not_media" and what in info.value.detail


@pytest.mark.parametrize(
    ("suffix", "codec", "fmt"),
    [
        ("mp4", "libx264", "mov"),
        ("mkv", "libx264", "matroska"),
        ("avi", "mpeg4", "avi"),
        ("ts", "libx264", "mpegts"),
        ("flv", "flv", "flv"),
        ("webm", "libvpx", "matroska"),
        ("mpg", "mpeg2video", "mpeg"),
        ("wmv", "wmv2", "asf"),
    ],
)
def test_real_containers_open_with_their_demuxer_forced(suffix, codec, fmt, tmp_path):
    path = tmp_path / f"clip.{suffix}"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=1", "-c:v", codec, str(path)])
    assert media_format(path) == fmt
    with open_media(path) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 9
    args = ffmpeg_input(path)
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert args[args.index("-f") + 1] == fmt
    assert args[-2:] == ["-i", f"file:{path}"]
    with open_media(io.BytesIO(path.read_bytes())) as container:
        assert container.streams.video


def test_odd_names_reach_ffmpeg_as_file_paths(clip_bank, tmp_path):
    """A name that looks like an option or a protocol is still just this one file."""
    odd = tmp_path / "-i concat:x.mp4|y.mp4"
    shutil.copy(clip_bank / "synth-000.mp4", odd)
    assert ffmpeg_input(odd)[-1] == f"file:{odd}"
    with open_media(odd) as container:
        assert container.streams.video


def test_decord_is_refused_a_file_carrying_manifest_markers(tmp_path, private):
    """decord cannot be told a format: a file that sniffs as MPEG-TS but carries DASH text
    before any NUL byte (what ffmpeg's DASH probe scores on) is refused before decord sees it."""
    packet = b"\x47" + b"A" * 187
    body = packet * 3 + _mpd(private).encode()
    path = tmp_path / "mixed.ts"
    path.write_bytes(body)
    assert media_format(path) == "mpegts"
    with pytest.raises(MediaError, match="dash manifest markers"):
        vet_for_decord(path)
    with pytest.raises(MediaError, match="not_media"):
        sample_keyframes(path, 4, backend="decord")


def test_fifos_and_devices_are_not_opened(tmp_path):
    with pytest.raises(MediaError, match="not a regular file"):
        open_media("/dev/zero")


# --- builds --------------------------------------------------------------------------------


def _frames_in(out: Path) -> list[np.ndarray]:
    """Every image and every video frame the build wrote, anywhere under `out`."""
    found = []
    for path in out.rglob("*"):
        if path.suffix in (".jpg", ".png"):
            found.append(np.asarray(Image.open(path).convert("RGB")))
        elif path.suffix in (".mp4", ".ts", ".mkv") or path.suffix.startswith(".m3u"):
            try:
                with av.open(str(path)) as container:
                    found += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            except (av.error.FFmpegError, IndexError):
                pass
    return found


def _rows(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("shards/*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_build_refuses_every_playlist_and_publishes_no_private_frame(
    clip_bank, private, tmp_path, local_config
):
    base = tmp_path / "data" / "in"
    files = _hostile_files(base, private)
    shutil.copy(clip_bank / "synth-000.mp4", base / "good.mp4")
    rows = [{"path": str(p.relative_to(base)), "title": kind} for kind, p in files.items()]
    rows.append({"path": "good.mp4", "title": "good"})
    manifest = base / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    config = local_config("shards=1", "stages=[probe,keyframes,audio,clip]")
    outcome = build(config, str(manifest), str(out), quiet=True)
    assert outcome.failure is None
    by_title = {r["title"]: r for r in _rows(out)}
    assert by_title["good"]["status"] == "ok"
    for kind in files:
        row = by_title[kind]
        assert row["status"] == "failed", row
        assert row["error_reason"] == "probe: not_media", row
        assert "refused" in row["error"], row
    frames = _frames_in(out)
    assert frames  # the good clip's keyframes and clip are there to look at
    assert not [f for f in frames if _looks_secret(f)]


def test_folder_build_refuses_a_playlist_named_like_a_video(
    clip_bank, private, tmp_path, local_config
):
    src = tmp_path / "a" / "src"
    src.mkdir(parents=True)
    shutil.copy(clip_bank / "synth-001.mp4", src / "good.mp4")
    (src / "evil.mp4").write_text(_hls(private))
    (src / "evil2.mkv").write_text(f"ffconcat version 1.0\nfile '{private}/secret.mp4'\n")
    out = tmp_path / "out"
    outcome = build(local_config("shards=1"), str(src), str(out), quiet=True)
    assert outcome.failure is None
    status = {r["title"]: (r["status"], r["error_reason"]) for r in _rows(out)}
    assert status == {
        "good": ("ok", None),
        "evil": ("failed", "probe: not_media"),
        "evil2": ("failed", "probe: not_media"),
    }
    assert not [f for f in _frames_in(out) if _looks_secret(f)]


# --- the clip's time range -----------------------------------------------------------------


def _lying_mkv(path: Path, claims: float, holds_red: float, then_blue: float) -> Path:
    """An MKV whose Segment Duration claims `claims` s; it holds red frames for `holds_red` s,
    then blue ones, and a tone all along."""
    total = holds_red + then_blue
    run_ffmpeg(
        ["-f", "lavfi", "-i", f"color=c=red:s=64x48:r=10:d={holds_red}"]
        + ["-f", "lavfi", "-i", f"color=c=blue:s=64x48:r=10:d={then_blue}"]
        + ["-f", "lavfi", "-i", f"sine=d={total}", "-filter_complex"]
        + ["[0][1]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a"]
        + ["-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-c:a", "flac", str(path)]
    )
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration, an 8-byte float in TimecodeScale units (ms)
    assert at > 0 and struct.unpack(">d", data[at + 3 : at + 11])[0] == pytest.approx(total * 1e3)
    data[at + 3 : at + 11] = struct.pack(">d", claims * 1e3)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("mode", ["exact", "snap"])
def test_frames_stay_inside_the_probed_duration(tmp_path, backend, mode):
    path = _lying_mkv(tmp_path / "lying.mkv", claims=2.0, holds_red=2.0, then_blue=10.0)
    kf = sample_keyframes(path, 8, mode, backend=backend, max_seconds=2.0)
    assert max(kf.timestamps) < 2.0
    assert all(_mean(f)[0] > 200 and _mean(f)[2] < 60 for f in kf.frames)  # red, never blue


def _mean(frame: np.ndarray) -> np.ndarray:
    return frame.reshape(-1, 3).mean(axis=0)


def test_build_takes_frames_audio_and_clip_from_one_range(tmp_path, local_config):
    src = tmp_path / "src"
    src.mkdir()
    _lying_mkv(src / "lying.mkv", claims=2.0, holds_red=2.0, then_blue=10.0)
    out = tmp_path / "out"
    config = local_config("shards=1", "stages=[probe,keyframes,audio,clip]")
    assert build(config, str(src), str(out), quiet=True).failure is None
    (row,) = _rows(out)
    assert row["status"] == "ok", row
    (tar,) = out.glob("shards/*.tar")
    members = _tar_members(tar)
    meta = json.loads(members[f"{row['key']}.json"])
    assert meta["source_video"]["duration"] == pytest.approx(2.0)
    assert max(meta["frames"]["timestamps"]) < 2.0, meta["frames"]
    with av.open(io.BytesIO(members[f"{row['key']}.mp4"])) as container:
        clip = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(clip) <= 21 and all(_mean(f)[2] < 60 for f in clip)  # 2 s at 10 fps, no blue
    assert meta["audio"]["duration"] <= 2.05


def _tar_members(path: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_probe_max_bytes_holds_for_local_files(clip_bank, tmp_path, local_config):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", src / "big.mp4")
    out = tmp_path / "out"
    config = local_config("shards=1", "stages=[probe]", "probe.max_bytes=1000")
    build(config, str(src), str(out), quiet=True)
    (row,) = _rows(out)
    assert row["status"] == "failed" and row["error_reason"] == "probe: too_large", row


# --- a playlist fetched from a URL ---------------------------------------------------------


@pytest.fixture
def playlist_server(private, tmp_path):
    """127.0.0.1 serving an HLS playlist (segments: the private file and a relative ../ one)
    and a real clip, the way a manifest URL would reach them."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    (root / "hls").mkdir(parents=True)
    (root / "hls" / "evil.m3u8").write_text(_hls(private))
    shutil.copy(private / "secret.ts", tmp_path / "secret.ts")  # what ../secret.ts reaches
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _loopback_overrides() -> list[str]:
    """Fetching from 127.0.0.1 needs the private-address switch where a URL policy has one."""
    from vidal.config import SourceConfig

    switch = "allow_private_addresses"
    return [f"source.{switch}=true"] if switch in SourceConfig.__dataclass_fields__ else []


def test_fetched_playlist_is_refused_not_followed(
    playlist_server, clip_bank, tmp_path, local_config
):
    base, root = playlist_server
    shutil.copy(clip_bank / "synth-000.mp4", root / "good.mp4")
    rows = [{"url": f"{base}/hls/evil.m3u8", "title": "hls"}]
    rows.append({"url": f"{base}/good.mp4", "title": "good"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    overrides = ["shards=1", "stages=[probe,keyframes,audio,clip]", *_loopback_overrides()]
    assert build(local_config(*overrides), str(manifest), str(out), quiet=True).failure is None
    by_title = {r["title"]: r for r in _rows(out)}
    assert by_title["good"]["status"] == "ok", by_title["good"]
    assert by_title["hls"]["status"] == "failed"
    assert by_title["hls"]["error_reason"] in ("probe: not_media", "source: bad_url")
    assert not list(out.rglob("*.m3u8"))  # the fetched playlist is not kept
    assert not [f for f in _frames_in(out) if _looks_secret(f)]
