"""An MP4/MOV file's duration, size and frame rate read from its `moov` box, without PyAV.

Opening a container with PyAV (libavformat's open and stream-info pass) costs milliseconds of
CPU per file; a crawl that only needs the duration cap and the width/height/fps columns of a
freshly downloaded MP4 reads the few boxes that carry them instead: `mvhd`, and per track
`tkhd`/`mdhd`/`hdlr`, the first `stsd` entry and `stts`. The numbers are the ones libavformat
derives from the same boxes (duration from the video track's `mdhd`, shortened by a one-entry
edit list; fps = frames x timescale / the `stts` total). Anything this reader does not handle
plainly — fragmented files, no video track, several sample descriptions, a `moov` it cannot
find or parse — gives None, and the caller opens the file with PyAV (`vidal.media.probe`).
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction

MAX_MOOV_BYTES = 64 * 1024**2  # a moov this big (hours of samples) is left to PyAV
MAX_TOP_BOXES = 64  # top-level boxes looked at before giving up on finding moov
_CONTAINERS = {b"trak", b"mdia", b"minf", b"stbl", b"edts"}
_VIDEO_CODECS = {  # sample entry -> libavcodec's name, as PyAV reports it
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
}


class _Unreadable(Exception):
    """The header holds something this reader leaves to PyAV."""


def read_header(
    path: str | os.PathLike, first: bytes = b"", last: bytes = b"", size: int | None = None
) -> dict | None:
    """duration, fps, width, height, num_frames, video_codec, has_audio, container and
    size_bytes (the keys `ProbeResult.to_dict()` shares) of an MP4/MOV file; None when the
    file is not one this reader describes with confidence. `first` and `last`: the file's
    first and last bytes where the caller still holds them (a download just written): boxes
    inside them are not read from the file again; `size`: the file's, when the caller knows."""
    path = os.fspath(path)
    try:
        with _Reader(path, first, last, size) as f:
            moov = _find_moov(f)
            if moov is None:
                return None
            tracks = [_track(body) for kind, body in _boxes(moov) if kind == b"trak"]
            return _described(_only(moov, b"mvhd"), tracks, f.size)
    except (_Unreadable, struct.error, ValueError, IndexError, KeyError, ZeroDivisionError):
        return None  # a box missing, short or odd: PyAV decides
    except (OSError, RecursionError):  # unreadable file, boxes nested without end
        return None


class _Reader:
    """Byte ranges of the file, from `first`/`last` when they hold the range, else read from
    the file (opened on the first such read)."""

    def __init__(self, path: str, first: bytes, last: bytes, size: int | None = None):
        self.path, self.first, self.last = path, first, last
        self.size = os.path.getsize(path) if size is None else size
        self._file = None

    def read_at(self, offset: int, n: int) -> bytes:
        end = min(offset + n, self.size)
        if end <= len(self.first):
            return bytes(self.first[offset:end])  # bytes: box types are looked up in sets
        tail_start = self.size - len(self.last)
        if offset >= tail_start:
            return bytes(self.last[offset - tail_start : end - tail_start])
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed by __exit__)
        self._file.seek(offset)
        return self._file.read(end - offset)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


def _find_moov(f: _Reader) -> bytes | None:
    """The body of the top-level moov box (before or after the media data)."""
    offset, size = 0, f.size
    for _ in range(MAX_TOP_BOXES):
        if offset + 8 > size:
            return None
        head = f.read_at(offset, 16)
        box_size, kind = struct.unpack(">I4s", head[:8])
        header = 8
        if box_size == 1:
            box_size, header = struct.unpack(">Q", head[8:16])[0], 16
        elif box_size == 0:
            box_size = size - offset
        if box_size < header or offset + box_size > size:
            return None  # truncated or corrupt: PyAV decides
        if kind == b"moof":
            raise _Unreadable("fragmented")
        if kind == b"moov":
            if box_size > MAX_MOOV_BYTES:
                return None
            return f.read_at(offset + header, box_size - header)
        offset += box_size
    return None


def _boxes(data: bytes):
    """(type, body) of each box in `data`."""
    offset = 0
    while offset + 8 <= len(data):
        box_size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if box_size == 1:
            box_size, header = struct.unpack_from(">Q", data, offset + 8)[0], 16
        elif box_size == 0:
            box_size = len(data) - offset
        if box_size < header or offset + box_size > len(data):
            raise _Unreadable(f"box {kind!r} overruns its parent")
        yield kind, data[offset + header : offset + box_size]
        offset += box_size


def _only(data: bytes, kind: bytes) -> bytes:
    found = [body for k, body in _boxes(data) if k == kind]
    if len(found) != 1:
        raise _Unreadable(f"{len(found)} {kind!r} boxes")
    return found[0]


def _flat(data: bytes) -> dict[bytes, bytes]:
    """The boxes of a track, containers opened, by type (the first of each type)."""
    found: dict[bytes, bytes] = {}
    for kind, body in _boxes(data):
        if kind in _CONTAINERS:
            for inner, inner_body in _flat(body).items():
                found.setdefault(inner, inner_body)
        found.setdefault(kind, body)
    return found


def _timescale_duration(body: bytes) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd box."""
    if body[0] == 1:
        return struct.unpack_from(">IQ", body, 20)
    return struct.unpack_from(">II", body, 12)


def _track(data: bytes) -> dict:
    boxes = _flat(data)
    handler = boxes[b"hdlr"][8:12]
    timescale, duration = _timescale_duration(boxes[b"mdhd"])
    track = {"handler": handler, "timescale": timescale, "duration": duration}
    track["edits"] = _edits(boxes.get(b"elst"))
    stsd = boxes[b"stsd"]
    if struct.unpack_from(">I", stsd, 4)[0] != 1:
        raise _Unreadable("not one sample description")
    track["entry"] = stsd[8:]
    track["stts"] = _stts(boxes[b"stts"]) if handler == b"vide" else (0, 0)
    return track


def _edits(body: bytes | None) -> list[tuple[int, int]]:
    """(segment duration in the movie timescale, media time) of each edit list entry."""
    if body is None:
        return []
    count = struct.unpack_from(">I", body, 4)[0]
    wide = body[0] == 1
    step, layout = (20, ">Qq") if wide else (12, ">Ii")
    if 8 + count * step > len(body):
        raise _Unreadable("elst overruns its box")
    return [struct.unpack_from(layout, body, 8 + i * step) for i in range(count)]


def _stts(body: bytes) -> tuple[int, int]:
    """(frames, their total duration in the track's timescale)."""
    count = struct.unpack_from(">I", body, 4)[0]
    if 8 + count * 8 > len(body):
        raise _Unreadable("stts overruns its box")
    frames = total = 0
    for i in range(count):
        samples, delta = struct.unpack_from(">II", body, 8 + i * 8)
        frames += samples
        total += samples * delta
    return frames, total


def _described(mvhd: bytes, tracks: list[dict], size: int) -> dict:
    videos = [t for t in tracks if t["handler"] == b"vide"]
    if not videos:
        raise _Unreadable("no video track")
    video = videos[0]
    movie_scale = _timescale_duration(mvhd)[0]
    frames, ticks = video["stts"]
    if not (video["timescale"] and movie_scale and frames and ticks):
        raise _Unreadable("no timing")
    entry = video["entry"]
    codec = _VIDEO_CODECS.get(entry[4:8])
    if codec is None:  # mp4v, say, names MPEG-4 Part 2 or MJPEG (its esds decides): PyAV's
        raise _Unreadable(f"sample entry {entry[4:8]!r}")
    width, height = struct.unpack_from(">HH", entry, 32)
    return {
        "duration": round(_duration(video, movie_scale), 4),
        "fps": round(float(Fraction(frames * video["timescale"], ticks)), 4),
        "width": width,
        "height": height,
        "num_frames": frames,
        "video_codec": codec,
        "has_audio": any(t["handler"] == b"soun" for t in tracks),
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "size_bytes": size,
    }


def _duration(track: dict, movie_scale: int) -> float:
    """The track's media duration, cut to its edit when one edit plays it (as libavformat
    does for the stream's duration); other edit lists are left to PyAV."""
    seconds = track["duration"] / track["timescale"]
    edits = [e for e in track["edits"] if e[1] != -1]  # -1: an empty edit (a start delay)
    if len(track["edits"]) > 2 or len(edits) > 1:
        raise _Unreadable("edit list of several segments")
    if edits and edits[0][0]:
        seconds = min(seconds, edits[0][0] / movie_scale)
    return seconds
