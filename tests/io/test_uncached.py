"""vidal.io.uncached: a file written around the page cache holds exactly the bytes given, at
every size around its block and chunk boundaries, and where O_DIRECT is refused (at open or at
a write) it is written through the page cache instead."""

from __future__ import annotations

import errno
import os
import random

import pytest

from vidal.io import uncached
from vidal.io.uncached import BLOCK, CHUNK, UncachedWriter

SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]


def fill_like_a_socket(writer: UncachedWriter, data: bytes, seed: int) -> None:
    """Reads of random lengths into the writer's buffer, as `readinto` from a socket does."""
    rng, done = random.Random(seed), 0
    while done < len(data):
        room = writer.space()
        n = min(len(room), rng.randint(1, 300_000), len(data) - done)
        room[:n] = data[done : done + n]
        writer.filled(n)
        done += n


@pytest.mark.parametrize("size", SIZES)
def test_written_file_holds_exactly_the_bytes(tmp_path, size):
    data = os.urandom(size)
    with UncachedWriter(str(tmp_path / "a.bin"), keep=5000) as writer:
        fill_like_a_socket(writer, data, size)
    assert bytes(writer.first) == data[:5000]  # the ends, kept for a header read
    assert writer.last == (data[-5000:] if size else b"")
    with UncachedWriter(str(tmp_path / "b.bin")) as other:  # `write` too, with a reused buffer
        other.write(data[: size // 3])
        other.write(data[size // 3 :])
    assert (tmp_path / "a.bin").read_bytes() == data and writer.size == size
    assert (tmp_path / "b.bin").read_bytes() == data


def test_open_refusing_o_direct_writes_through_the_cache(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, mode=0o777):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_open(path, flags, mode)

    monkeypatch.setattr(uncached.os, "open", no_direct)
    data = os.urandom(CHUNK + 777)
    with UncachedWriter(str(tmp_path / "a.bin")) as writer:
        writer.write(data)
    assert not writer.direct and (tmp_path / "a.bin").read_bytes() == data


def test_a_write_refusing_o_direct_falls_back(tmp_path, monkeypatch):
    real_write = os.write

    def refuse_direct(fd, view):
        if uncached.fcntl.fcntl(fd, uncached.fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "unaligned for this file system")
        return real_write(fd, view)

    monkeypatch.setattr(uncached.os, "write", refuse_direct)
    data = os.urandom(2 * CHUNK + 5)
    with UncachedWriter(str(tmp_path / "a.bin")) as writer:
        writer.write(data)
    assert not writer.direct and (tmp_path / "a.bin").read_bytes() == data


def test_other_write_errors_are_raised(tmp_path, monkeypatch):
    def disk_full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uncached.os, "write", disk_full)
    with pytest.raises(OSError, match="No space"), UncachedWriter(str(tmp_path / "a")) as w:
        w.write(os.urandom(CHUNK))
