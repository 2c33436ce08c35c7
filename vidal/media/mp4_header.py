"""An MP4/MOV file's duration, size and frame rate read from its `moov` box, without PyAV.

Opening a container with PyAV (libavformat's open and stream-info pass) costs milliseconds of
CPU per file; a crawl that only needs the duration cap and the width/height/fps columns of a
freshly downloaded MP4 reads the few boxes that carry them instead: `mvhd`, and per track
`tkhd`/`mdhd`/`hdlr`, the first `stsd` entry and `stts`. The numbers are the ones libavformat
derives from the same boxes (duration from the video track's `mdhd`, shortened by a one-entry
edit list; fps = frames x timescale / the `stts` total). Where the boxes settle them, it also
gives the pix_fmt (an H.264 track's SPS, in its `avcC`) and the first audio track's codec, rate
and channels (an AAC-LC `esds`): with those, the probe stage needs no PyAV open at all.
Anything this reader does not handle plainly — fragmented files, no video track, several
sample descriptions, a `moov` it cannot find or parse — gives None, and the caller opens the
file with PyAV (`vidal.media.probe`).
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction

from vidal.media import h264refs

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


_VISUAL_ENTRY_BYTES = 86  # a visual sample entry's fixed fields, its boxes follow
_AUDIO_KEYS = ("audio_codec", "audio_sample_rate", "audio_channels")
_AAC_OBJECT_TYPES = {0x40, 0x66, 0x67, 0x68}  # MPEG-4 AAC, MPEG-2 AAC main/LC/SSR
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class _Unreadable(Exception):
    """The header holds something this reader leaves to PyAV."""


def read_header(
    path: str | os.PathLike, first: bytes = b"", last: bytes = b"", size: int | None = None
) -> dict | None:
    """duration, fps, width, height, num_frames, video_codec, has_audio, container and
    size_bytes (the keys `ProbeResult.to_dict()` shares; pix_fmt and the audio_* keys too where
    the header settles them) of an MP4/MOV file; None when the
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
    sounds = [t for t in tracks if t["handler"] == b"soun"]
    return {
        "duration": round(_duration(video, movie_scale), 4),
        "fps": round(float(Fraction(frames * video["timescale"], ticks)), 4),
        "width": width,
        "height": height,
        "num_frames": frames,
        "video_codec": codec,
        **(_picture(entry, width, height) if codec == "h264" else {}),
        "has_audio": bool(sounds),
        **(_sound(sounds[0]["entry"]) if sounds else dict.fromkeys(_AUDIO_KEYS)),
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "size_bytes": size,
    }


def _picture(entry: bytes, width: int, height: int) -> dict:
    """{"pix_fmt": ...} where the avcC's SPS settles it as libavcodec would, else {}. A sample
    entry whose size is not its SPS's is not described: the decoder goes by the SPS."""
    children = dict(_boxes(entry[_VISUAL_ENTRY_BYTES:]))
    try:
        sps_width, sps_height, pix_fmt = h264refs.sps_picture(children[b"avcC"])
    except (h264refs.Unsupported, KeyError):
        return {}
    if (sps_width, sps_height) != (width, height):
        raise _Unreadable(f"sample entry {width}x{height}, SPS {sps_width}x{sps_height}")
    colr = children.get(b"colr", b"")
    if colr[:4] == b"nclx" and len(colr) > 10 and colr[10] & 0x80:
        return {}  # full range by the container: libavcodec reports yuvj420p
    return {"pix_fmt": pix_fmt}


def _sound(entry: bytes) -> dict:
    """audio_codec, audio_sample_rate and audio_channels of an AAC-LC sample entry, as
    libavcodec reports them; {} for anything else. AAC-LC at 24 kHz or less may carry SBR
    that only a decode reveals (the rate then doubles): left to PyAV too."""
    version = struct.unpack_from(">H", entry, 16)[0]
    offset = {0: 36, 1: 52, 2: 72}.get(version)
    if entry[4:8] != b"mp4a" or offset is None:
        return {}
    esds = dict(_boxes(entry[offset:])).get(b"esds")
    config = _aac_config(esds[4:]) if esds else None
    if config is None:
        return {}
    object_type, rate, channels = config
    if object_type != 2 or rate <= 24000 or not 1 <= channels <= 7:
        return {}
    channels = 8 if channels == 7 else channels
    return {"audio_codec": "aac", "audio_sample_rate": rate, "audio_channels": channels}


def _aac_config(descriptors: bytes) -> tuple[int, int, int] | None:
    """(audio object type, sampling rate, channel configuration) of an esds's
    AudioSpecificConfig; None when it holds something else."""
    es = _descriptor(descriptors, 3)
    if es is None or len(es) < 3:
        return None
    flags, at = es[2], 3
    at += 2 if flags & 0x80 else 0  # depends on another stream
    at += 1 + es[at] if flags & 0x40 else 0  # a URL
    at += 2 if flags & 0x20 else 0  # OCR stream
    config = _descriptor(es[at:], 4)
    if config is None or len(config) < 13 or config[0] not in _AAC_OBJECT_TYPES:
        return None
    specific = _descriptor(config[13:], 5)
    if specific is None or len(specific) < 2:
        return None
    bits = int.from_bytes(specific[:5].ljust(5, b"\0"), "big")
    object_type, index = bits >> 35, (bits >> 31) & 0xF
    if object_type == 31 or index >= len(_AAC_RATES):
        return None  # escaped object types and explicit rates: PyAV's
    return object_type, _AAC_RATES[index], (bits >> 27) & 0xF


def _descriptor(data: bytes, tag: int) -> bytes | None:
    """The body of the MPEG-4 descriptor at the start of `data` when it has `tag`."""
    if not data or data[0] != tag:
        return None
    size, at = 0, 1
    for at in range(1, 5):  # up to 4 bytes of 7 bits, high bit: more follow
        size = size << 7 | data[at] & 0x7F
        if not data[at] & 0x80:
            break
    body = data[at + 1 : at + 1 + size]
    return body if len(body) == size else None


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
