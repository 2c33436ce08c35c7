"""Opening untrusted media: the one place where a file (or bytes from a shard) reaches a demuxer.

Left to itself, ffmpeg picks a demuxer by probing the bytes and the name, and some demuxers
open other files: HLS and DASH manifests follow their segments (`file://`, `../`), concat
lists and image2 patterns read other paths. A stranger's `.m3u8` named `x.mp4` would then pull
another local video into a published shard. So the container is recognised here from its
first bytes, refused unless it is a plain media container, and the demuxer is then forced to
that container (PyAV `format=`, ffmpeg `-f`) with only the `file` protocol allowed: nothing
ffmpeg would probe later can switch it to a demuxer that opens other files.
"""

from __future__ import annotations

import io
import os
import stat

from vidal.media.ffmpeg import MediaError

# how many leading bytes decide the container (every magic below sits in the first 400)
SNIFF_BYTES = 4096
# ffmpeg probes at most this much; decord, which cannot be told a format, is vetted over it
PROBE_WINDOW = 1 << 20

# demuxers that read one file and never open another (mov's external data references stay
# off: `enable_drefs` is forced to 0 below, as ffmpeg's default)
MEDIA_DEMUXERS = frozenset(
    {"mov", "matroska", "avi", "flv", "mpegts", "ogg", "flac", "wav", "mp3", "aac", "asf"}
    | {"mpeg", "mpegvideo"}
)
# the names ffmpeg reports for a probed (not forced) demuxer, as earlier runs recorded them
_REPORTED_NAMES = {"mov": "mov,mp4,m4a,3gp,3g2,mj2", "matroska": "matroska,webm"}
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
# text that makes a demuxer open other files, lower-cased: what it is, for the error
_REFUSED_TEXT = (
    (b"#extm3u", "hls playlist"),
    (b"ffconcat", "ffconcat list"),
    (b"<mpd", "dash manifest"),
    (b"#ext-x-", "hls playlist"),
    (b"[playlist]", "pls playlist"),
    (b"<smil", "smil playlist"),
    (b"<asx", "asx playlist"),
    (b"<?xml", "xml document"),
    (b"[script info]", "ass subtitles"),
    (b"webvtt", "webvtt subtitles"),
)
_IMAGES = (
    (b"\xff\xd8\xff", "jpeg image"),
    (b"\x89PNG", "png image"),
    (b"GIF8", "gif image"),
    (b"BM", "bmp image"),
)


def sniff(head: bytes) -> str:
    """The demuxer for a file starting with `head`; MediaError `not_media` for anything else."""
    found = _media_magic(head)
    if found:
        return found
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for marker, what in _REFUSED_TEXT:
        # playlist tags and XML roots may follow a preamble; the others open the file
        anywhere = marker.startswith((b"#", b"<")) and marker != b"<?xml"
        if text.startswith(marker) or (anywhere and marker in text[:1024]):
            raise MediaError("not_media", f"{what} refused")
    for magic, what in _IMAGES:
        if head.startswith(magic):
            raise MediaError("not_media", f"{what} refused (image sequences are not read)")
    raise MediaError("not_media", "not a media container this tool reads")


def _media_magic(head: bytes) -> str | None:
    if head[4:8] in _MOV_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith((b"RIFF", b"RF64")):
        return {b"AVI ": "avi", b"WAVE": "wav"}.get(head[8:12])
    if head.startswith(b"FLV\x01"):
        return "flv"
    if _is_mpegts(head):
        return "mpegts"
    starts = {b"OggS": "ogg", b"fLaC": "flac", b"ID3": "mp3", b"\x00\x00\x01\xba": "mpeg"}
    for magic, name in starts.items():
        if head.startswith(magic):
            return name
    if head.startswith(b"\x00\x00\x01\xb3"):
        return "mpegvideo"
    if head.startswith(_ASF_GUID):
        return "asf"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "aac" if head[1] & 0x06 == 0 else "mp3"  # ADTS has layer bits 00
    return None


def _is_mpegts(head: bytes) -> bool:
    """188-byte packets (or 192, as in .m2ts/.mts) each starting with the sync byte 0x47."""
    for size, first in ((188, 0), (192, 4)):
        marks = range(first, min(len(head), first + 3 * size), size)
        if len(marks) >= 2 and all(head[i] == 0x47 for i in marks):
            return True
    return False


def read_head(path: str | os.PathLike, size: int = SNIFF_BYTES) -> bytes:
    """The first `size` bytes of a regular file (a FIFO or a device would block or never end)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise MediaError("not_media", f"{_shown(path)} is not a regular file")
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise MediaError("missing_file", f"{_shown(path)}: {exc.strerror}") from exc


def media_format(path: str | os.PathLike) -> str:
    """The vetted demuxer name of the file at `path` (MediaError when refused)."""
    return sniff(read_head(path))


def open_media(source, expect: str | None = None, **kwargs):
    """av.open for reading a path or bytes (a BytesIO or similar) with the demuxer forced to
    the vetted container and only the `file` protocol allowed; `expect` (a demuxer name)
    refuses anything else. Raises MediaError for refused or unreadable input."""
    import av

    if isinstance(source, (str, os.PathLike)):
        fmt, target = media_format(source), _file_url(source)
    else:
        fmt, target = sniff(_peek(source)), source
    if expect is not None and fmt != expect:
        raise MediaError("not_media", f"expected {expect}, found {fmt}")
    options = {"protocol_whitelist": "file", **_demuxer_options(fmt)}
    try:
        return av.open(target, mode="r", format=fmt, options=options, **kwargs)
    except av.error.InvalidDataError as exc:
        raise MediaError("not_media", f"{_shown(source)} is not a valid {fmt} file") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError("corrupt", f"cannot open {_shown(source)} as {fmt}: {exc}") from exc


def container_name(container) -> str:
    """ffmpeg's full name of an open container's demuxer (`mov,mp4,...`, not just `mov`)."""
    name = container.format.name
    return _REPORTED_NAMES.get(name, name)


def ffmpeg_input(path: str | os.PathLike) -> list[str]:
    """ffmpeg CLI arguments that open `path` (and nothing else) as its vetted container."""
    fmt = media_format(path)
    options = [x for k, v in _demuxer_options(fmt).items() for x in (f"-{k}", v)]
    return ["-protocol_whitelist", "file", *options, "-f", fmt, "-i", _file_url(path)]


def vet_for_decord(path: str | os.PathLike) -> None:
    """decord probes on its own and cannot be told a format: the file must be a plain media
    container and hold, in ffmpeg's probe window, no text that a manifest demuxer scores on
    (ffmpeg reads those markers up to the first NUL byte)."""
    media_format(path)
    window = read_head(path, PROBE_WINDOW).split(b"\0", 1)[0].lower()
    for marker, what in _REFUSED_TEXT:
        if marker in window:
            raise MediaError("not_media", f"{what} markers in the file refused")


def _demuxer_options(fmt: str) -> dict[str, str]:
    # mov can follow "data references" to other files; ffmpeg defaults to off, keep it so
    return {"enable_drefs": "0", "use_absolute_path": "0"} if fmt == "mov" else {}


def _file_url(path: str | os.PathLike) -> str:
    """`file:` plus the absolute path: no name is read as another protocol (`concat:`,
    `subfile,`), an option (`-x`) or a pattern."""
    return "file:" + os.path.abspath(os.fspath(path))


def _peek(stream) -> bytes:
    if isinstance(stream, (bytes, bytearray, memoryview)):
        raise TypeError("open_media takes a path or a file object; wrap bytes in io.BytesIO")
    at = stream.tell()
    head = stream.read(SNIFF_BYTES)
    stream.seek(at)
    return bytes(head)


def _shown(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return ascii(os.path.basename(os.fspath(source)))[1:-1]
    return "the data" if isinstance(source, io.IOBase) else type(source).__name__
