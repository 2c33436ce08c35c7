"""Writing big files that nobody reads back soon, around the page cache (O_DIRECT).

A crawl writes gigabytes of media that the build reads much later. Through the page cache every
new page costs the kernel an allocation (on the 2-core VM this was measured on, ~2-3 ms of
system CPU per 1.4 MB clip: more than fetching the clip) and pushes out pages other work
needs. With O_DIRECT the bytes go from an aligned buffer straight to the disk. The buffer is
filled in place (`space()`, then `filled(n)`: a socket's `readinto` needs no extra copy) and
written a whole chunk at a time; the tail of under a block goes through the page cache.
Where O_DIRECT is refused (tmpfs, some network file systems: at open, or at the first write)
the same calls write through the page cache. Durability stays the caller's fsync.

Chosen by measurement against buffered writes made durable by the batch's parallel fsync
(`Store.commit_local`), on the shared 2-core VM: 64 files of 1.41 MB from 8 threads took 174 ms
to write + 18 ms to commit direct, 85 + 107 ms buffered (load ~19); a whole `crawl --urls` of 64
loopback links 446 ms direct, 2,559 ms buffered (load ~25, medians of 5). Direct writes wait
for the disk while other threads read their sockets; buffered ones cost page allocations up
front and leave the whole batch's I/O to the commit, when no download runs. The cost: a build
right after a crawl reads its clips from disk, not from the page cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading

BLOCK = 4096  # O_DIRECT alignment of buffer address, file offset and length (512 or 4096)
CHUNK = 1 << 20  # bytes per write; a multiple of BLOCK

_FREE: list[mmap.mmap] = []  # page-aligned buffers of finished writers, reused
_FREE_LOCK = threading.Lock()


def _take_buffer() -> mmap.mmap:
    with _FREE_LOCK:
        if _FREE:
            return _FREE.pop()
    return mmap.mmap(-1, CHUNK)  # anonymous memory: page-aligned


def _give_back(buf: mmap.mmap) -> None:
    with _FREE_LOCK:
        if len(_FREE) < 64:
            _FREE.append(buf)
            return
    buf.close()


class UncachedWriter:
    """A new file at `path` (truncated if it exists), written around the page cache where the
    file system allows it. Use as a context manager; `size` is what was written."""

    def __init__(self, path: str, keep: int = 0):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        mode = 0o666  # as open() creates files: the umask applies
        self.direct = hasattr(os, "O_DIRECT")
        try:
            self.fd = os.open(path, flags | (os.O_DIRECT if self.direct else 0), mode)
        except OSError as exc:
            if not self.direct or exc.errno != errno.EINVAL:
                raise
            self.direct = False
            self.fd = os.open(path, flags, mode)
        self._buf = _take_buffer()
        self._view = memoryview(self._buf)
        self._fill = 0
        self.size = 0
        self.keep = keep  # the first and last `keep` bytes written stay in memory:
        self.first, self.last = bytearray(), b""  # for a header read without a disk read

    def space(self) -> memoryview:
        """Where the next bytes go (fill it, then call `filled`)."""
        return self._view[self._fill :]

    def filled(self, n: int) -> None:
        self._fill += n
        self.size += n
        if self._fill == CHUNK:
            self._flush(CHUNK)

    def write(self, data: bytes) -> None:
        data = memoryview(data)
        while data:
            room = self.space()
            n = min(len(room), len(data))
            room[:n] = data[:n]
            self.filled(n)
            data = data[n:]

    def _flush(self, length: int) -> None:
        view = self._view[:length]
        self._kept(view)
        while view:
            view = view[self._write(view) :]
        self._fill = 0

    def _kept(self, data: memoryview) -> None:
        """`first` and `last` updated with the next bytes written."""
        if not self.keep:
            return
        if len(self.first) < self.keep:
            self.first += data[: self.keep - len(self.first)]
        if len(data) >= self.keep:
            self.last = bytes(data[-self.keep :])
        else:
            self.last = (self.last + data)[-self.keep :]

    def _write(self, view: memoryview) -> int:
        try:
            return os.write(self.fd, view)
        except OSError as exc:
            if not self.direct or exc.errno != errno.EINVAL:
                raise
        self.direct = False  # the file system takes O_DIRECT at open but not this write
        self._buffered()
        return os.write(self.fd, view)

    def _buffered(self) -> None:
        """Writes from here on go through the page cache."""
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)

    def close(self) -> None:
        """The last bytes written (the whole blocks directly, the tail of under a block
        through the page cache: a padded direct write would need the file cut back after,
        which costs more) and the file closed."""
        if self._buf is None:
            return
        try:
            fill = self._fill
            whole = fill // BLOCK * BLOCK if self.direct else fill
            if whole:
                self._flush(whole)
            if fill > whole:
                self._buffered()
                view = self._view[whole:fill]
                self._kept(view)
                while view:
                    view = view[os.write(self.fd, view) :]
        finally:
            self._release()

    def _release(self) -> None:
        if self._buf is None:
            return
        os.close(self.fd)
        self._view.release()
        _give_back(self._buf)
        self._buf = None

    def __enter__(self) -> UncachedWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller discards the file: nothing more is written
            self._release()
