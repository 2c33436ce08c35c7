"""Which earlier frames each frame of an H.264 stream may refer to, read from slice headers.

Exact keyframe sampling decodes from a keyframe to each wanted frame. Frames nothing refers
to (nal_ref_idc 0) are skipped already; on x264's long GOPs that still leaves the reference
B-frames of its B-pyramid, which (on its default presets) only the B-frames around them use.
Knowing each frame's reference lists tells which of them the wanted frames need, so the
others can be skipped with the wanted frames still bit-identical to a full decode.

Only what the slice headers state is used: the sliding-window and MMCO-1 bookkeeping of the
short-term references, picture order counts (types 0 and 2), and each slice's lists (P by
frame number, B by display order) after their modifications, truncated to their active
counts. Anything else (fields, long-term references, MMCO 2-6, frame number gaps, slice
groups, Annex B streams) gives None, and the caller decodes as before.

A skip is only taken where a replay of libavcodec's own bookkeeping under it (the made-up
frames it inserts for skipped reference frames, with their display order, stale ones
dropped) gives every needed frame the very references it has in a full decode.
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


def _sps_head(bits: _Bits) -> tuple[int, int, int]:
    """(seq_parameter_set_id, chroma format, luma bit depth), the SPS read up to
    log2_max_frame_num; separate colour planes count as chroma format 0 (no chroma weights)."""
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps_id, chroma_format, depth = bits.ue(), 1, 8
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3 and bits.u(1):
            chroma_format = 0
        depth = bits.ue() + 8
        bits.ue(), bits.u(1)  # chroma bit depth, qpprime bypass
        if bits.u(1):
            _skip_scaling_matrices(bits, 12 if chroma_format == 3 else 8)
    return sps_id, chroma_format, depth


def _parse_sps(bits: _Bits) -> tuple[int, dict]:
    sps_id, chroma_format, _ = _sps_head(bits)
    sps = {"chroma": chroma_format, "log2_frame_num": _at_most(bits.ue(), 12) + 4}
    sps["poc_type"] = bits.ue()
    if sps["poc_type"] == 0:
        sps["log2_poc_lsb"] = _at_most(bits.ue(), 12) + 4
    elif sps["poc_type"] != 2:
        raise Unsupported(f"picture order count type {sps['poc_type']}")
    sps["max_refs"] = max(1, _at_most(bits.ue(), 16))
    if bits.u(1):
        raise Unsupported("gaps in frame_num allowed")
    bits.ue(), bits.ue()  # size in macroblocks
    if not bits.u(1):
        raise Unsupported("field or MBAFF coding")
    return sps_id, sps


def _at_most(value: int, limit: int) -> int:
    """`value`, checked against the standard's limit (a corrupt header can code anything)."""
    if value > limit:
        raise Unsupported(f"a header value of {value}, over {limit}")
    return value


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
    pps["refs_l0"], pps["refs_l1"] = _at_most(bits.ue(), 31) + 1, _at_most(bits.ue(), 31) + 1
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
    refs_l1: int = 0
    changes_l1: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class _Picture:
    idr: bool
    is_reference: bool
    frame_num: int
    max_frame_num: int
    max_refs: int  # the SPS's max_num_ref_frames (at least 1): the sliding window's size
    poc_type: int  # 0 (lsb coded) or 2 (from frame_num)
    poc_lsb: tuple[int, int, int]  # (lsb, its modulus, delta to the bottom field's)
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
            ref_idc = (nal[0] >> 5) & 3
            head, piece = _parse_slice(_Bits(_rbsp(nal[:HEADER_BYTES])), kind, ref_idc, params)
            heads.append(head)
            slices.append(piece)
    if not heads or heads[0]["first_mb"] != 0 or any(h["first_mb"] == 0 for h in heads[1:]):
        raise Unsupported("a packet that is not one whole frame")
    h = heads[0]
    facts = h["max_frame_num"], h["max_refs"], h["poc_type"], h["poc_lsb"]
    return _Picture(h["idr"], h["ref"], h["frame_num"], *facts, tuple(slices), h["unmark"])


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
    head["poc_type"], head["poc_lsb"] = sps["poc_type"], (0, 1, 0)
    if sps["poc_type"] == 0:
        lsb = bits.u(sps["log2_poc_lsb"])
        delta = bits.se() if pps["bottom_poc"] else 0
        head["poc_lsb"] = (lsb, 1 << sps["log2_poc_lsb"], delta)
    if pps["redundant"] and bits.ue():
        raise Unsupported("redundant pictures")
    if kind == _B:
        bits.u(1)  # direct_spatial_mv_pred_flag
    refs_l0, refs_l1 = pps["refs_l0"], pps["refs_l1"]
    if kind in (_P, _SP, _B) and bits.u(1):
        refs_l0 = _at_most(bits.ue(), 31) + 1
        refs_l1 = _at_most(bits.ue(), 31) + 1 if kind == _B else refs_l1
    changes = _list_changes(bits) if kind not in (_I, _SI) else ()
    changes_l1 = _list_changes(bits) if kind == _B else ()
    weighted = pps["weighted_p"] if kind in (_P, _SP) else kind == _B and pps["weighted_b"] == 1
    if weighted:
        _skip_weights(bits, sps["chroma"], refs_l0, refs_l1 if kind == _B else 0)
    head["unmark"] = _marking(bits, head["idr"]) if ref_idc else None
    if kind != _B:
        refs_l1 = 0
    return head, _Slice(kind, refs_l0, changes, refs_l1, changes_l1)


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


class _Poc:
    """Picture order counts (display order) as the decoder derives them, frame by frame."""

    def __init__(self):
        self.msb = self.lsb = self.offset = self.last_frame_num = 0

    def count(self, pic: _Picture) -> int:
        if pic.idr:
            self.msb = self.lsb = self.offset = 0
        if pic.poc_type == 2:
            if not pic.idr and self.last_frame_num > pic.frame_num:
                self.offset += pic.max_frame_num
            self.last_frame_num = pic.frame_num
            return 2 * (self.offset + pic.frame_num) - (0 if pic.is_reference else 1)
        lsb, modulus, bottom_delta = pic.poc_lsb
        msb = self.msb
        if lsb < self.lsb and self.lsb - lsb >= modulus // 2:
            msb += modulus
        elif lsb > self.lsb and lsb - self.lsb > modulus // 2:
            msb -= modulus
        if pic.is_reference:
            self.msb, self.lsb = msb, lsb
        return msb + lsb + min(0, bottom_delta)


class _Dpb:
    """The short-term reference frames held, as (frame_num, position, poc), oldest first."""

    def __init__(self):
        self.held: list[tuple[int, int, int | None]] = []

    def refs(self, pic: _Picture, poc: int) -> list[int]:
        """Positions of what `pic` may refer to: every slice's active lists, as libavcodec
        builds them (GAP where a made-up frame would stand)."""
        found: list[int] = []
        for piece in pic.slices:
            if piece.kind == _B:
                if any(poc is None for _, _, poc in self.held):
                    raise Unsupported("a made-up frame with no display order")
                before, after = self._by_poc(poc, down=True), self._by_poc(poc, down=False)
                list1 = after + before
                if len(list1) > 1 and list1 == before + after:
                    list1[0], list1[1] = list1[1], list1[0]
                found += self._modified(pic, before + after, piece.changes, piece.refs_l0)
                found += self._modified(pic, list1, piece.changes_l1, piece.refs_l1)
            elif piece.kind in (_P, _SP):
                order = sorted(self.held, key=lambda e: self._pic_num(pic, e), reverse=True)
                found += self._modified(pic, order, piece.changes, piece.refs_l0)
        return found

    def _by_poc(self, limit: int, down: bool) -> list:
        """libavcodec's add_sorted: frames shown up to `limit` nearest first (`down`), or
        after it; of frames with equal counts (made-up ones) only one is taken."""
        found, newest_first = [], self.held[::-1]
        while True:
            best = None
            for entry in newest_first:
                poc = entry[2]
                fits = poc <= limit if down else poc > limit
                if fits and (best is None or (poc >= best[2] if down else poc < best[2])):
                    best = entry
            if best is None:
                return found
            found.append(best)
            limit = best[2] - 1 if down else best[2]

    @staticmethod
    def _pic_num(pic: _Picture, entry) -> int:
        """FrameNumWrap: frames from before a frame_num wrap count below zero."""
        return entry[0] - (pic.max_frame_num if entry[0] > pic.frame_num else 0)

    def _modified(self, pic: _Picture, order: list, changes, count: int) -> list[int]:
        """The active entries of a list after its ref_pic_list_modification."""
        predicted = pic.frame_num
        for i, (idc, diff) in enumerate(changes):
            step = -(diff + 1) if idc == 0 else diff + 1
            predicted = (predicted + step) % pic.max_frame_num
            wanted = predicted - (pic.max_frame_num if predicted > pic.frame_num else 0)
            match = [e for e in self.held if self._pic_num(pic, e) == wanted]
            if not match:
                raise Unsupported("a list names a frame not held")
            order = [*order[:i], match[0], *(e for e in order[i:] if e != match[0])]
        return [pos for _, pos, _ in order[:count]]

    def mark(self, pic: _Picture, position: int, poc: int, strict: bool = True) -> None:
        """Hold `pic` as a reference frame, as its marking (or the sliding window) says.
        Not `strict`: as libavcodec does on a stream missing frames, a marking naming a
        frame not held is passed over, and a window overflowing drops the oldest frame."""
        if pic.idr:
            self.held = []
        elif pic.unmark is not None:
            for diff in pic.unmark:
                gone = (pic.frame_num - diff - 1) % pic.max_frame_num
                if strict and not any(e[0] == gone for e in self.held):
                    raise Unsupported("a marking names a frame not held")
                self.held = [e for e in self.held if e[0] != gone]
        elif len(self.held) >= pic.max_refs:
            self.held = self.held[1:]
        self.held.append((pic.frame_num, position, poc))
        if len(self.held) > pic.max_refs:
            if strict:
                raise Unsupported("more reference frames than the stream allows")
            self.held = self.held[1:]
        self._drop_stale_gaps(pic, pic.frame_num)

    def _drop_stale_gaps(self, pic: _Picture, frame_num: int) -> None:
        """libavcodec drops a made-up frame once more frames than the window holds came
        after it (by frame_num), at every marking."""
        self.held = [
            (fn, pos, poc)
            for fn, pos, poc in self.held
            if pos != GAP or (frame_num - fn) % pic.max_frame_num <= pic.max_refs
        ]

    def fill_gap(self, pic: _Picture, last_frame_num: int) -> None:
        """libavcodec's frame_num gap: a made-up frame per missing number, sliding window."""
        missing = (pic.frame_num - last_frame_num - 1) % pic.max_frame_num
        if pic.frame_num == last_frame_num or missing == 0:
            return
        if missing > pic.max_refs:
            raise Unsupported("a gap wider than the window")
        for k in range(1, missing + 1):
            # it copies the newest frame held and shows 2 after it (None: no frame to copy)
            poc = self.held[-1][2] + 2 if self.held and self.held[-1][2] is not None else None
            if len(self.held) >= pic.max_refs:
                self.held = self.held[1:]
            frame_num = (last_frame_num + k) % pic.max_frame_num
            self.held.append((frame_num, GAP, poc))
            self._drop_stale_gaps(pic, frame_num)


class H264Refs:
    """Reference facts of every frame of a stream (packets in decode order)."""

    def __init__(self, pictures: list[_Picture]):
        self.pictures, dpb, counter, last_ref = pictures, _Dpb(), _Poc(), 0
        self.frames: list[FrameRefs] = []
        self.pocs: list[int] = []
        for pos, pic in enumerate(pictures):
            if not pic.idr and pic.frame_num != (last_ref + 1) % pic.max_frame_num:
                raise Unsupported("a gap in frame_num")
            self.pocs.append(counter.count(pic))
            refs = () if pic.idr else tuple(dpb.refs(pic, self.pocs[-1]))
            self.frames.append(FrameRefs(refs, _skip_level(pic)))
            if pic.is_reference:
                dpb.mark(pic, pos, self.pocs[-1])
                last_ref = pic.frame_num

    def skip_levels(self, start: int, stop: int, targets: set[int]) -> list[str] | None:
        """skip_frame per packet of [start, stop) so that only what the `targets` (positions)
        need is decoded; None where that cannot be shown to leave them as a full decode has
        them (a run that does not start at an IDR frame, or skips that change a needed
        frame's references in libavcodec's decoder even with every reference frame decoded
        in the frames before it).

        Skipped reference frames leave made-up stand-ins in the decoder, whose display order
        may put them into a needed B-frame's lists. Decoding the frames they stand in for
        fixes that; those frames' own pixels matter to nothing needed (the needed set holds
        everything a needed frame refers to), only their place in the bookkeeping does.
        """
        needed = self._closure(targets)
        if min(needed) < start or not self.pictures[start].idr:
            return None
        extra: set[int] = set()  # decoded for the bookkeeping only
        tries, last_bad = 0, None
        while True:
            levels = [
                "DEFAULT" if pos in needed or pos in extra else self.frames[pos].skip
                for pos in range(start, stop)
            ]
            found = self._first_mismatch(start, levels, needed)
            if found is None:
                return levels
            bad, held = found
            tries = tries + 1 if bad == last_bad else 0
            more = self._stood_in(start, bad, held) - needed - extra if tries == 0 else set()
            if not more:
                # else every reference frame shortly before: their markings bring the
                # decoder's bookkeeping back in line with the stream's
                window = 4 << tries
                if window > 2 * (bad - start):
                    return None
                near = range(max(start, bad - window), bad)
                more = {p for p in near if self.pictures[p].is_reference}
            extra |= more
            last_bad = bad

    def _stood_in(self, start: int, before: int, held: list) -> set[int]:
        """Positions of the skipped frames that made-up frames in `held` stand in for."""
        gaps = {frame_num for frame_num, pos, _ in held if pos == GAP}
        found = {}
        for pos in range(before - 1, start - 1, -1):
            pic = self.pictures[pos]
            if pic.is_reference and pic.frame_num in gaps:
                found.setdefault(pic.frame_num, pos)
        return set(found.values())

    def _closure(self, targets) -> set[int]:
        needed, todo = set(), list(targets)
        while todo:
            pos = todo.pop()
            if pos not in needed:
                needed.add(pos)
                todo += self.frames[pos].refs
        return needed

    def _first_mismatch(self, start: int, levels: list[str], needed: set[int]):
        """Replay the decoder's reference bookkeeping with the skips: the first needed frame
        that would not find the very frames it refers to in a full decode, and what the
        decoder would hold then (None: none)."""
        dpb, counter, last = _Dpb(), _Poc(), None
        for pos, level in enumerate(levels, start):
            pic = self.pictures[pos]
            if level != "DEFAULT":
                continue
            poc = counter.count(pic)
            try:
                if not pic.idr:
                    dpb.fill_gap(pic, last)
                    refs = tuple(dpb.refs(pic, poc)) if pos in needed else self.frames[pos].refs
                    if refs != self.frames[pos].refs or poc != self.pocs[pos]:
                        return pos, dpb.held
                if pic.is_reference:
                    dpb.mark(pic, pos, poc, strict=False)
            except Unsupported:
                return pos, dpb.held
            last = pic.frame_num
        return None

    @classmethod
    def read(cls, extradata: bytes | None, packets: list) -> H264Refs | None:
        """The facts of `packets` (av.Packet, decode order); None if the stream is beyond what
        this reader follows."""
        try:
            params = _Params(bytes(extradata or b""))
            return cls([_parse_picture(params, memoryview(p)) for p in packets])
        except (Unsupported, KeyError, IndexError):
            return None


def sps_picture(avcc: bytes) -> tuple[int, int, str]:
    """(width, height, pix_fmt) that libavcodec's H.264 decoder reports for a stream whose
    avcC record holds exactly one SPS: the cropped picture size, and "yuv420p" for 8-bit
    4:2:0 in limited range. Other formats (full range, 4:2:2/4:4:4, high bit depth, mono),
    several SPS or fields raise Unsupported: their pix_fmt depends on more than the SPS."""
    if len(avcc) < 8 or avcc[0] != 1 or avcc[5] & 0x1F != 1:
        raise Unsupported("not an avcC record with one SPS")
    size = int.from_bytes(avcc[6:8], "big")
    nal = avcc[8 : 8 + size]
    if len(nal) != size or not nal or nal[0] & 0x1F != 7:
        raise Unsupported("avcC's SPS is cut short")
    bits = _Bits(_rbsp(nal))
    chroma, depth = _sps_format(bits)
    if (chroma, depth) != (1, 8):
        raise Unsupported(f"chroma format {chroma}, {depth}-bit")
    width, height = _sps_size(bits)
    if _vui_full_range(bits):
        raise Unsupported("full range (yuvj420p)")
    return width, height, "yuv420p"


def _sps_format(bits: _Bits) -> tuple[int, int]:
    """(chroma format, luma bit depth), the SPS read up to max_num_ref_frames."""
    _, chroma, depth = _sps_head(bits)
    bits.ue()  # log2_max_frame_num
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1), bits.se(), bits.se()
        for _ in range(_at_most(bits.ue(), 255)):
            bits.se()
    bits.ue(), bits.u(1)  # max_num_ref_frames, gaps allowed
    return chroma, depth


def _sps_size(bits: _Bits) -> tuple[int, int]:
    """The cropped 4:2:0 picture size, from pic_width_in_mbs on."""
    width, height = (bits.ue() + 1) * 16, (bits.ue() + 1) * 16
    if not bits.u(1):
        raise Unsupported("field or MBAFF coding")
    bits.u(1)  # direct_8x8_inference
    if bits.u(1):
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        width, height = width - 2 * (left + right), height - 2 * (top + bottom)
    if width <= 0 or height <= 0:
        raise Unsupported("cropped to nothing")
    return width, height


def _vui_full_range(bits: _Bits) -> bool:
    if not bits.u(1):  # no VUI
        return False
    if bits.u(1) and bits.u(8) == 255:  # aspect ratio: extended SAR
        bits.u(32)
    if bits.u(1):  # overscan info
        bits.u(1)
    return bool(bits.u(1) and (bits.u(3), bits.u(1))[1])  # video_signal_type: full range
