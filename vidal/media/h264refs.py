"""Which earlier frames each frame of an H.264 stream may refer to, read from slice headers.

Exact keyframe sampling decodes from a keyframe to each wanted frame. Frames nothing refers
to (nal_ref_idc 0) are skipped already; on x264's long GOPs that still leaves the reference
B-frames of its B-pyramid, which (on its default presets) only the B-frames around them use.
Knowing each frame's reference lists tells which of them the wanted frames need, so the
others can be skipped with the wanted frames still bit-identical to a full decode.

Only what the slice headers state is used: the sliding-window and MMCO-1 bookkeeping of the
short-term references, each P slice's list after its modifications, truncated to its active
count, and for B slices every short-term reference held (their default order needs picture
order counts, and they are few). Anything else (fields, long-term references, MMCO 5, frame
number gaps, slice groups, Annex B streams) gives None, and the caller decodes as before.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_BYTES = 512  # a slice header, its weight table and its marking fit well inside
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_P, _B, _I, _SP, _SI = range(5)


class Unsupported(Exception):
    """A stream feature this reader does not follow: the caller decodes without its help."""


@dataclass(frozen=True)
class FrameRefs:
    refs: tuple[int, ...]  # positions (decode order) of the frames it may refer to
    skip: str  # the decoder's skip_frame level that drops it alone ("DEFAULT": none does)


class _Bits:
    """MSB-first bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes):
        self.value, self.size, self.pos = int.from_bytes(data, "big"), len(data) * 8, 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise Unsupported("header runs past the bytes read")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise Unsupported("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL payload after its header byte, emulation prevention bytes (00 00 03) removed."""
    return bytes(nal[1:]).replace(b"\x00\x00\x03", b"\x00\x00")


def _parse_sps(bits: _Bits) -> tuple[int, dict]:
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps_id, chroma_format = bits.ue(), 1
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3 and bits.u(1):
            chroma_format = 0  # separate colour planes: no chroma weights
        bits.ue(), bits.ue(), bits.u(1)  # bit depths, qpprime bypass
        if bits.u(1):
            _skip_scaling_matrices(bits, 12 if chroma_format == 3 else 8)
    sps = {"chroma": chroma_format, "log2_frame_num": bits.ue() + 4, "poc_type": bits.ue()}
    if sps["poc_type"] == 0:
        sps["log2_poc_lsb"] = bits.ue() + 4
    elif sps["poc_type"] == 1:
        raise Unsupported("picture order count type 1")
    sps["max_refs"] = max(1, bits.ue())
    if bits.u(1):
        raise Unsupported("gaps in frame_num allowed")
    bits.ue(), bits.ue()  # size in macroblocks
    if not bits.u(1):
        raise Unsupported("field or MBAFF coding")
    return sps_id, sps


def _skip_scaling_matrices(bits: _Bits, count: int) -> None:
    for i in range(count):
        if bits.u(1):
            last = nxt = 8
            for _ in range(16 if i < 6 else 64):
                if nxt:
                    nxt = (last + bits.se() + 256) % 256
                last = nxt or last


def _parse_pps(bits: _Bits) -> tuple[int, dict]:
    pps_id, sps_id = bits.ue(), bits.ue()
    bits.u(1)  # entropy coding
    pps = {"sps": sps_id, "bottom_poc": bits.u(1)}
    if bits.ue():
        raise Unsupported("slice groups")
    pps["refs_l0"], pps["refs_l1"] = bits.ue() + 1, bits.ue() + 1
    pps["weighted_p"], pps["weighted_b"] = bits.u(1), bits.u(2)
    bits.se(), bits.se(), bits.se()  # qp, qs, chroma qp offset
    bits.u(1), bits.u(1)  # deblocking control, constrained intra
    pps["redundant"] = bits.u(1)
    return pps_id, pps


@dataclass(frozen=True)
class _Slice:
    kind: int  # _P, _B, _I, _SP, _SI
    refs_l0: int  # active entries of list 0
    changes: tuple[tuple[int, int], ...]  # list 0 modifications: (idc, value)


@dataclass(frozen=True)
class _Picture:
    idr: bool
    is_reference: bool
    frame_num: int
    max_frame_num: int
    max_refs: int  # the SPS's max_num_ref_frames (at least 1): the sliding window's size
    slices: tuple[_Slice, ...]
    unmark: tuple[int, ...] | None  # MMCO 1 differences; None: sliding window


class _Params:
    """The stream's parameter sets, from the avcC record and from in-band NAL units."""

    def __init__(self, extradata: bytes):
        if len(extradata) < 7 or extradata[0] != 1:
            raise Unsupported("not an avcC stream (Annex B)")
        self.length_size, self.sps, self.pps = (extradata[4] & 3) + 1, {}, {}
        pos = 5
        for mask in (0x1F, 0xFF):  # the SPS count shares its byte with reserved bits
            count, pos = extradata[pos] & mask, pos + 1
            for _ in range(count):
                size = int.from_bytes(extradata[pos : pos + 2], "big")
                self.read(extradata[pos + 2 : pos + 2 + size])
                pos += 2 + size

    def read(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == 7:
            sps_id, sps = _parse_sps(_Bits(_rbsp(nal[:HEADER_BYTES])))
            self.sps[sps_id] = sps
        elif kind == 8:
            pps_id, pps = _parse_pps(_Bits(_rbsp(nal[:HEADER_BYTES])))
            self.pps[pps_id] = pps

    def nal_units(self, data: memoryview):
        pos, n = 0, self.length_size
        while pos + n <= len(data):
            size = int.from_bytes(data[pos : pos + n], "big")
            yield data[pos + n : pos + n + size]
            pos += n + size


def _parse_picture(params: _Params, packet: memoryview) -> _Picture:
    """The reference facts of one access unit (one packet: one frame)."""
    heads, slices = [], []
    for nal in params.nal_units(packet):
        kind = nal[0] & 0x1F if len(nal) else 0
        if kind in (7, 8):
            params.read(nal)
        elif kind in (2, 3, 4):
            raise Unsupported("data partitioning")
        elif kind in (1, 5):
            head, piece = _parse_slice(_Bits(_rbsp(nal[:HEADER_BYTES])), kind, nal[0] >> 5, params)
            heads.append(head)
            slices.append(piece)
    if not heads or heads[0]["first_mb"] != 0 or any(h["first_mb"] == 0 for h in heads[1:]):
        raise Unsupported("a packet that is not one whole frame")
    h = heads[0]
    limits = h["max_frame_num"], h["max_refs"]
    return _Picture(h["idr"], h["ref"], h["frame_num"], *limits, tuple(slices), h["unmark"])


def _parse_slice(bits: _Bits, nal_type: int, ref_idc: int, params: _Params):
    """(facts of the picture, the slice's reference list rules) from a slice header."""
    first_mb, kind = bits.ue(), bits.ue() % 5
    pps = params.pps[bits.ue()]
    sps = params.sps[pps["sps"]]
    head = {"first_mb": first_mb, "idr": nal_type == 5, "ref": ref_idc != 0}
    head["frame_num"] = bits.u(sps["log2_frame_num"])
    head["max_frame_num"], head["max_refs"] = 1 << sps["log2_frame_num"], sps["max_refs"]
    if head["idr"]:
        bits.ue()  # idr_pic_id
    if sps["poc_type"] == 0:
        bits.u(sps["log2_poc_lsb"])
        if pps["bottom_poc"]:
            bits.se()
    if pps["redundant"] and bits.ue():
        raise Unsupported("redundant pictures")
    if kind == _B:
        bits.u(1)  # direct_spatial_mv_pred_flag
    refs_l0, refs_l1 = pps["refs_l0"], pps["refs_l1"]
    if kind in (_P, _SP, _B) and bits.u(1):
        refs_l0 = bits.ue() + 1
        refs_l1 = bits.ue() + 1 if kind == _B else refs_l1
    changes = _list_changes(bits) if kind not in (_I, _SI) else ()
    if kind == _B:
        _list_changes(bits)  # B slices are taken to use every reference held
    weighted = pps["weighted_p"] if kind in (_P, _SP) else kind == _B and pps["weighted_b"] == 1
    if weighted:
        _skip_weights(bits, sps["chroma"], refs_l0, refs_l1 if kind == _B else 0)
    head["unmark"] = _marking(bits, head["idr"]) if ref_idc else None
    return head, _Slice(kind, refs_l0, changes)


def _list_changes(bits: _Bits) -> tuple[tuple[int, int], ...]:
    changes = []
    if bits.u(1):
        while (idc := bits.ue()) != 3:
            if idc not in (0, 1):
                raise Unsupported("long-term reference in a list")
            changes.append((idc, bits.ue()))
    return tuple(changes)


def _skip_weights(bits: _Bits, chroma: int, refs_l0: int, refs_l1: int) -> None:
    bits.ue()  # luma_log2_weight_denom
    if chroma:
        bits.ue()
    for _ in range(refs_l0 + refs_l1):
        if bits.u(1):
            bits.se(), bits.se()
        if chroma and bits.u(1):
            bits.se(), bits.se(), bits.se(), bits.se()


def _marking(bits: _Bits, idr: bool) -> tuple[int, ...] | None:
    """MMCO 1 differences (None: sliding window); other operations are not followed."""
    if idr:
        bits.u(1)  # no_output_of_prior_pics
        if bits.u(1):
            raise Unsupported("long-term reference")
        return None
    if not bits.u(1):
        return None
    unmark = []
    while (op := bits.ue()) != 0:
        if op != 1:
            raise Unsupported(f"memory management operation {op}")
        unmark.append(bits.ue())
    return tuple(unmark)


def _skip_level(pic: _Picture) -> str:
    """The lowest skip_frame that drops `pic` (libavcodec looks at its first slice)."""
    if not pic.is_reference:
        return "NONREF"
    kind = pic.slices[0].kind
    return "BIDIR" if kind == _B else "NONINTRA" if kind in (_P, _SP) else "DEFAULT"


GAP = -1  # the position of a frame libavcodec makes up for a skipped reference frame


class _Dpb:
    """The short-term reference frames held, as (frame_num, position), oldest first."""

    def __init__(self):
        self.held: list[tuple[int, int]] = []

    def refs(self, pic: _Picture) -> list[int]:
        """Positions of what `pic` may refer to: each P slice's active list 0, every frame held
        for B slices (GAP where a made-up frame would stand)."""
        found: list[int] = []
        for piece in pic.slices:
            if piece.kind == _B:
                found += [pos for _, pos in self.held]
            elif piece.kind in (_P, _SP):
                found += self._list0(pic, piece)
        return found

    def _list0(self, pic: _Picture, piece: _Slice) -> list[int]:
        def pic_num(entry) -> int:  # FrameNumWrap: frames before a frame_num wrap count < 0
            return entry[0] - (pic.max_frame_num if entry[0] > pic.frame_num else 0)

        order = sorted(self.held, key=pic_num, reverse=True)
        predicted = pic.frame_num
        for i, (idc, diff) in enumerate(piece.changes):
            step = -(diff + 1) if idc == 0 else diff + 1
            predicted = (predicted + step) % pic.max_frame_num
            wanted = predicted - (pic.max_frame_num if predicted > pic.frame_num else 0)
            match = [e for e in order if pic_num(e) == wanted]
            if not match:
                raise Unsupported("a list names a frame not held")
            order = [*order[:i], match[0], *(e for e in order[i:] if e != match[0])]
        return [pos for _, pos in order[: piece.refs_l0]]

    def mark(self, pic: _Picture, position: int) -> None:
        """Hold `pic` as a reference frame, as its marking (or the sliding window) says."""
        if pic.idr:
            self.held = []
        elif pic.unmark is not None:
            for diff in pic.unmark:
                gone = (pic.frame_num - diff - 1) % pic.max_frame_num
                if not any(fn == gone for fn, _ in self.held):
                    raise Unsupported("a marking names a frame not held")
                self.held = [e for e in self.held if e[0] != gone]
        elif len(self.held) >= pic.max_refs:
            self.held = self.held[1:]
        self.held.append((pic.frame_num, position))

    def fill_gap(self, pic: _Picture, last_frame_num: int) -> None:
        """libavcodec's frame_num gap: a made-up frame per missing number, sliding window."""
        missing = (pic.frame_num - last_frame_num - 1) % pic.max_frame_num
        if pic.frame_num == last_frame_num or missing == 0:
            return
        if missing > pic.max_refs:
            raise Unsupported("a gap wider than the window")
        for k in range(1, missing + 1):
            if len(self.held) >= pic.max_refs:
                self.held = self.held[1:]
            self.held.append(((last_frame_num + k) % pic.max_frame_num, GAP))


class H264Refs:
    """Reference facts of every frame of a stream (packets in decode order)."""

    def __init__(self, pictures: list[_Picture]):
        self.pictures, dpb, last_ref = pictures, _Dpb(), 0
        self.frames: list[FrameRefs] = []
        for pos, pic in enumerate(pictures):
            if not pic.idr and pic.frame_num != (last_ref + 1) % pic.max_frame_num:
                raise Unsupported("a gap in frame_num")
            refs = () if pic.idr else tuple(dpb.refs(pic))
            self.frames.append(FrameRefs(refs, _skip_level(pic)))
            if pic.is_reference:
                dpb.mark(pic, pos)
                last_ref = pic.frame_num

    def skip_levels(self, start: int, stop: int, targets: set[int]) -> list[str] | None:
        """skip_frame per packet of [start, stop) so that only what the `targets` (positions)
        need is decoded; None where that cannot be shown to leave them as a full decode has
        them (a run that does not start at an IDR frame, or skips that would change a needed
        frame's references in libavcodec's decoder)."""
        needed, todo = set(), list(targets)
        while todo:
            pos = todo.pop()
            if pos not in needed:
                needed.add(pos)
                todo += self.frames[pos].refs
        if min(needed) < start or not self.pictures[start].idr:
            return None
        levels = [
            "DEFAULT" if pos in needed else self.frames[pos].skip for pos in range(start, stop)
        ]
        return levels if self._decodes_alike(start, levels, needed) else None

    def _decodes_alike(self, start: int, levels: list[str], needed: set[int]) -> bool:
        """Replay the decoder's reference bookkeeping with the skips: each needed frame must
        find the very frames it refers to in a full decode."""
        dpb, last = _Dpb(), None
        try:
            for pos, level in enumerate(levels, start):
                pic = self.pictures[pos]
                if level != "DEFAULT":
                    continue
                if not pic.idr:
                    dpb.fill_gap(pic, last)
                    if pos in needed and tuple(dpb.refs(pic)) != self.frames[pos].refs:
                        return False
                if pic.is_reference:
                    dpb.mark(pic, pos)
                last = pic.frame_num
        except Unsupported:
            return False
        return True

    @classmethod
    def read(cls, extradata: bytes | None, packets: list) -> H264Refs | None:
        """The facts of `packets` (av.Packet, decode order); None if the stream is beyond what
        this reader follows."""
        try:
            params = _Params(bytes(extradata or b""))
            return cls([_parse_picture(params, memoryview(p)) for p in packets])
        except (Unsupported, KeyError, IndexError):
            return None
