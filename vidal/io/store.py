"""The output tree, local or any fsspec URL, with atomic writes.

Every file lands by temp-file + fsync + rename (or, on object stores, upload to a temp name +
move), so a killed worker never leaves a file that looks finished. Temp names start with a
dot and end in `.tmp-<id>`, so no reader's `*.tar` or `*.parquet` pattern matches them.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem


class UnsafePathError(ValueError):
    """A relative path that would leave the output folder."""


def temp_name(name: str) -> str:
    return f".{name}.tmp-{uuid.uuid4().hex[:10]}"


def is_temp(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


class Store:
    def __init__(self, url: str):
        self.url = str(url).rstrip("/") or "/"
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self._made: set[str] = set()  # local folders `local_temp` made (or found) already

    def __reduce__(self):
        return (Store, (self.url,))

    def path(self, rel: str) -> str:
        """Absolute path of `rel` inside the store; refuses anything that escapes it."""
        norm = posixpath.normpath(rel.replace("\\", "/"))
        if norm.startswith(("/", "..")) or norm == "." or "\x00" in norm:
            raise UnsafePathError(f"refusing path outside the output folder: {rel!r}")
        return (
            posixpath.join(self.root, norm) if not self.is_local else os.path.join(self.root, norm)
        )

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as f:
            return f.read()

    def sync(self) -> None:
        """What was written without fsync (`durable=False`) on disk before what vouches for
        it: one `syncfs` of the store's file system for a batch of files, where an fsync each
        waits for a journal commit each. An object store's writes are durable when they
        return: nothing to do."""
        if self.is_local:
            _syncfs(self.root)

    def write_bytes(self, rel: str, data: bytes, durable: bool = True) -> None:
        with self.staging(rel, durable) as tmp, open(tmp, "wb") as f:
            f.write(data)

    def read_json(self, rel: str) -> dict | None:
        try:
            return json.loads(self.read_bytes(rel))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a marker that does not parse is treated as absent: the work reruns

    def write_json(self, rel: str, obj, durable: bool = True) -> None:
        text = json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str)
        self.write_bytes(rel, text.encode("utf-8"), durable)

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(rel)))

    def write_table(self, rel: str, table: pa.Table, durable: bool = True) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue(), durable)

    def remove(self, rel: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=recursive)

    def glob(self, pattern: str) -> list[str]:
        """Store-relative paths matching `pattern`, sorted; temp files excluded."""
        found = self.fs.glob(self.path(pattern))
        base = self.root.rstrip("/") + "/"
        rels = [p[len(base) :] if p.startswith(base) else p for p in found]
        return sorted(r for r in rels if not is_temp(posixpath.basename(r)))

    def sweep_temp(self, rel_dir: str, prefix: str = ".") -> int:
        """Remove temp files a killed run left in `rel_dir` whose names start with `prefix`
        (so a task sweeps its own leftovers, never a concurrent task's); returns how many.
        A local folder is read as a stream: one of millions of files costs no list of them."""
        try:
            if self.is_local:
                with os.scandir(self.path(rel_dir)) as found:
                    names = [e.path for e in found if is_temp(e.name) and e.name.startswith(prefix)]
            else:
                names = self.fs.ls(self.path(rel_dir), detail=False)
        except FileNotFoundError:
            return 0
        stale = [n for n in names if is_temp(b := posixpath.basename(n)) and b.startswith(prefix)]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(name)
        return len(stale)

    @contextlib.contextmanager
    def staging(self, rel: str, durable: bool = True) -> Iterator[str]:
        """A local temp path to write `rel` into; it becomes `rel` atomically on success
        (and durably, fsynced, unless `durable` is false: for files a crash may lose)."""
        final = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = os.path.join(os.path.dirname(final), temp_name(os.path.basename(final)))
            try:
                yield tmp
                if durable:
                    _fsync_file(tmp)
                os.replace(tmp, final)
                if durable:
                    _fsync_dir(os.path.dirname(final))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return
        with tempfile.TemporaryDirectory(prefix="vidal-") as tmpdir:
            tmp = os.path.join(tmpdir, os.path.basename(final))
            yield tmp
            remote_tmp = posixpath.join(
                posixpath.dirname(final), temp_name(posixpath.basename(final))
            )
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.fs.put_file(tmp, remote_tmp)
            self.fs.mv(remote_tmp, final)

    def local_temp(self, rel: str) -> str:
        """A temp path beside `rel` in a local store (its folder made): a file written there
        directly (no copy) becomes `rel` through `commit_local`; until then it is a temp file
        (`sweep_temp` removes it), never a finished-looking one."""
        if not self.is_local:
            raise ValueError("local_temp needs a local store")
        final = self.path(rel)
        folder = os.path.dirname(final)
        if folder not in self._made:  # once, not a mkdir and a stat per downloaded file
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        return os.path.join(folder, temp_name(os.path.basename(final)))

    def commit_local(self, moves: list[tuple[str, str]], map_fn=map) -> list[OSError | None]:
        """Temp files (`local_temp`) renamed to their `rel`s durably, as a batch: each fsynced
        (through `map_fn`, a thread pool's map say: the journal then commits them together,
        where one fsync per file waits for one commit each), renamed, then each folder fsynced
        once. Per move: None, or the OSError that stopped it (its temp file removed)."""

        def land(move: tuple[str, str]) -> OSError | None:
            tmp, rel = move
            try:
                _fsync_file(tmp)
                os.replace(tmp, self.path(rel))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                return exc
            return None

        errors = list(map_fn(land, moves))
        for folder in sorted({os.path.dirname(self.path(rel)) for _, rel in moves}):
            _fsync_dir(folder)
        return errors

    @contextlib.contextmanager
    def local_copy(self, rel: str) -> Iterator[str]:
        """A local file path holding `rel` (the file itself when the store is local)."""
        if self.is_local:
            yield self.path(rel)
            return
        with tempfile.TemporaryDirectory(prefix="vidal-") as tmpdir:
            tmp = os.path.join(tmpdir, posixpath.basename(rel))
            self.fs.get_file(self.path(rel), tmp)
            yield tmp

    def copy_in(self, local_src: str, rel: str) -> None:
        with self.staging(rel) as tmp:
            shutil.copyfile(local_src, tmp)


def _syncfs(path: str) -> None:
    """syncfs(2) on the file system that holds `path`: its dirty pages only, not every
    mount's as `os.sync` flushes them (the fallback where the C library has no syncfs)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # nothing written there yet: nothing to sync
        return
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is not None and syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
