"""The stage store: atomic writes (temp file + rename) and paths that cannot leave the output."""

from __future__ import annotations

import fnmatch
import glob
import os
import uuid

import pyarrow as pa
import pytest

from vidal.io.store import Store, UnsafePathError, is_temp, temp_name

FINISHED_PATTERNS = ("*.tar", "*.parquet", "*.json", "*.mp4", "*.flac", "vidal-*")


def _all_files(root) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


class Boom(RuntimeError):
    pass


def test_write_bytes_lands_whole(tmp_path):
    store = Store(str(tmp_path))
    store.write_bytes("shards/a.tar", b"x" * 1000)
    assert (tmp_path / "shards" / "a.tar").read_bytes() == b"x" * 1000
    assert _all_files(tmp_path) == ["shards/a.tar"]


def test_writer_that_raises_midway_leaves_nothing(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(Boom), store.staging("shards/vidal-00000.tar") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half a tar")
        assert os.path.exists(tmp)
        raise Boom
    assert _all_files(tmp_path) == []


def test_failed_rewrite_keeps_the_previous_file(tmp_path):
    store = Store(str(tmp_path))
    store.write_json("work/clip/00000.done.json", {"fingerprint": "old"})
    with pytest.raises(Boom), store.staging("work/clip/00000.done.json") as tmp:
        with open(tmp, "w") as f:
            f.write('{"fingerp')
        raise Boom
    assert store.read_json("work/clip/00000.done.json") == {"fingerprint": "old"}
    assert _all_files(tmp_path) == ["work/clip/00000.done.json"]


def test_write_table_that_fails_leaves_nothing(tmp_path, monkeypatch):
    store = Store(str(tmp_path))
    real_open = open

    class Failing:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])  # half the bytes, then the disk "fills up"
            raise OSError(28, "No space left on device")

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Failing(f) if "w" in mode and is_temp(os.path.basename(str(path))) else f

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(OSError, match="No space"):
        store.write_table("shards/vidal-00001.parquet", pa.table({"key": ["a", "b"]}))
    monkeypatch.undo()
    assert _all_files(tmp_path) == []


def test_temp_file_is_invisible_to_finished_file_globs_while_writing(tmp_path):
    store = Store(str(tmp_path))
    finished: list[str] = []
    for name in ("vidal-00003.tar", "vidal-00003.parquet", "vidal-00003.stats.json"):
        with store.staging(f"shards/{name}") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            base = os.path.basename(tmp)
            assert is_temp(base)
            for pattern in FINISHED_PATTERNS:
                assert not fnmatch.fnmatch(base, pattern), (base, pattern)
                found = glob.glob(str(tmp_path / "shards" / pattern))
                assert sorted(os.path.basename(p) for p in found) == sorted(
                    n for n in finished if fnmatch.fnmatch(n, pattern)
                )
            # pathlib's glob also lists dotfiles: the temp name still does not match
            assert sorted(p.name for p in (tmp_path / "shards").glob("vidal-*")) == sorted(finished)
            assert store.glob("shards/*") == sorted(f"shards/{n}" for n in finished)
        finished.append(name)
    assert store.glob("shards/*") == [
        "shards/vidal-00003.parquet",
        "shards/vidal-00003.stats.json",
        "shards/vidal-00003.tar",
    ]


@pytest.mark.parametrize(
    "name", ["vidal-00000.tar", "vidal-00000.parquet", "x.stats.json", "a.b.c.mp4", "KEY.flac"]
)
def test_temp_names_never_match_finished_patterns(name):
    for _ in range(20):
        tmp = temp_name(name)
        assert is_temp(tmp)
        assert tmp.startswith(".")
        assert not tmp.endswith(os.path.splitext(name)[1])
        for pattern in FINISHED_PATTERNS:
            assert not fnmatch.fnmatch(tmp, pattern)
    assert not is_temp(name)


def test_sweep_temp_removes_leftovers_only(tmp_path):
    store = Store(str(tmp_path))
    store.write_bytes("work/clip/00000/a.mp4", b"done")
    leftover = tmp_path / "work" / "clip" / "00000" / temp_name("b.mp4")
    leftover.write_bytes(b"half")
    assert store.sweep_temp("work/clip/00000") == 1
    assert _all_files(tmp_path) == ["work/clip/00000/a.mp4"]
    assert store.sweep_temp("work/clip/missing") == 0


@pytest.mark.parametrize(
    "rel",
    [
        "../x",
        "../../etc/passwd",
        "a/../../x",
        "..",
        ".",
        "",
        "/etc/passwd",
        "/tmp/x",
        "a\x00b",
        "work/\x00",
        "..\\x",
        "a\\..\\..\\x",
    ],
)
def test_path_refuses_escapes(tmp_path, rel):
    store = Store(str(tmp_path / "out"))
    with pytest.raises(UnsafePathError):
        store.path(rel)
    with pytest.raises(UnsafePathError):
        store.write_bytes(rel, b"x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("rel", ["a", "a/b.tar", "work/clip/00001/k-1.mp4", "a/../b", "./c"])
def test_path_accepts_inside_paths(tmp_path, rel):
    root = tmp_path / "out"
    path = Store(str(root)).path(rel)
    assert os.path.commonpath([path, str(root)]) == str(root)
    assert path != str(root)


def test_memory_store_atomic_and_confined():
    url = f"memory://vidal-test-{uuid.uuid4().hex[:8]}/out"
    store = Store(url)
    store.write_bytes("shards/a.tar", b"abc")
    with pytest.raises(Boom), store.staging("shards/b.tar") as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise Boom
    assert store.glob("shards/*") == ["shards/a.tar"]
    assert store.fs.ls(store.path("shards"), detail=False) == [store.path("shards/a.tar")]
    assert store.read_bytes("shards/a.tar") == b"abc"
    with pytest.raises(UnsafePathError):
        store.path("../escape")
    store.remove("shards", recursive=True)


def test_json_round_trip_and_corrupt_marker_reads_as_absent(tmp_path):
    store = Store(str(tmp_path))
    store.write_json("m.json", {"a": 1, "b": "é"})
    assert store.read_json("m.json") == {"a": 1, "b": "é"}
    assert store.read_json("missing.json") is None
    (tmp_path / "bad.json").write_text('{"half":')
    assert store.read_json("bad.json") is None


def test_commit_local_lands_a_batch_and_reports_each_failure(tmp_path):
    store = Store(str(tmp_path))
    moves = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        tmp = store.local_temp(f"raw/{name}")
        with open(tmp, "wb") as f:
            f.write(name.encode())
        moves.append((tmp, f"raw/{name}"))
    (tmp_path / "raw" / "b.mp4").mkdir()  # b cannot land: a folder holds its name
    errors = store.commit_local(moves)
    assert errors[0] is None and errors[2] is None and isinstance(errors[1], OSError)
    assert _all_files(tmp_path) == ["raw/a.mp4", "raw/c.mp4"]  # b's temp file removed
    assert (tmp_path / "raw" / "c.mp4").read_bytes() == b"c.mp4"
