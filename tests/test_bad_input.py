"""Bad input, through real builds (local runner) mixed with good clips: every bad file becomes a
row with a status and a reason, the build goes on and says what happened, and nothing is
written outside the output folder. A build where everything fails says so, in one sentence.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from vidal import cli
from vidal.media import synth
from vidal.media.ffmpeg import ffmpeg_exe
from vidal.run.jobs import build

MAX_TITLE = 300
ARABIC, HEBREW = "مرحبا بالعالم", "שלום עולם"
# Unicode's Bidi_Control characters: marks, embeddings, overrides, isolates (and U+061C,
# the Arabic letter mark, checked on its own below)
BIDI_CONTROLS = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
ARABIC_LETTER_MARK = "\u061c"
HOSTILE_TITLE = (
    "Cats\x00 and\x07 dogs\x1b[31m \u202eevil\u202c \u2066isolated\u2069 \u200fmarks\u200e"
    f"\u061c {ARABIC} \u202b{HEBREW}\u202c\r\nsecond line\ttab "
)
HOSTILE_TITLE += "lorem ipsum dolor " * ((10_000 - len(HOSTILE_TITLE)) // 18 + 1)
HOSTILE_TITLE = HOSTILE_TITLE[:10_000]
WEIRD_NAME = "weird name \u202egpj.exe \u0007"


def _snapshot(root: Path, exclude: Path) -> dict:
    """Every path under `root` (but not under `exclude`) with its size and mtime."""
    found = {}
    for path in root.rglob("*"):
        if path == exclude or exclude in path.parents:
            continue
        st = path.lstat()
        found[path.relative_to(root).as_posix()] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return found


def _rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "shards").glob("vidal-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _tar_members(out: Path) -> dict[str, bytes]:
    members = {}
    for path in sorted((out / "shards").glob("vidal-*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                members[m.name] = tar.extractfile(m).read()
    return members


def _cli_build(src: Path, out: Path, *overrides: str) -> tuple[int, str, str]:
    """`vidal build ... --local`, with its stdout and stderr captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        mp.setenv("COLUMNS", "200")
        argv = ["build", "--source", str(src), "--out", str(out), "--pipeline", "demo"]
        code = cli.main([*argv, "--local", "--shards", "3", *overrides])
    return code, stdout.getvalue(), stderr.getvalue()


# --- a folder of good clips and every kind of bad file -------------------------------------


@pytest.fixture(scope="module")
def mixed(clip_bank, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    src = root / "source"
    shutil.copytree(clip_bank, src)
    good = sorted(p.name for p in src.glob("*.mp4"))
    synth.make_empty_file(src / "empty.mp4")
    synth.make_truncated_mp4(src / "truncated_no_header.mp4", src / "synth-000.mp4")
    synth.make_truncated_mp4(
        src / "truncated_with_header.mp4", src / "synth-000.mp4", keep_header=True
    )
    synth.make_text_as_mp4(src / "text.mp4")
    synth.make_clip(src / "no_audio.mp4", duration=1.0, width=160, height=120, audio=False)
    synth.make_audio_only(src / "audio_only.mp4", duration=1.0)
    synth.make_tiny_video(src / "tiny_1x1.mp4")
    synth.make_huge_video(src / "huge_8000.mp4")
    synth.make_long_clip(src / "long.mp4", duration=25.0)
    synth.make_clip(
        src / "hostile.mp4", duration=1.0, width=160, height=120, audio=True, colour="blue"
    )  # not a copy of no_audio.mp4: dedup would rightly drop one of two identical clips
    (src / "hostile.json").write_text(
        json.dumps({"title": HOSTILE_TITLE, "hashtags": ["#cats\u202e", "#\x00dogs"]}),
        encoding="utf-8",
    )
    synth.make_clip(src / "bad_sidecar.mp4", duration=1.0, width=160, height=120, audio=False)
    (src / "bad_sidecar.json").write_text("{'title': 'not json',", encoding="utf-8")
    synth.make_clip(src / "list_sidecar.mp4", duration=1.0, width=160, height=120, audio=False)
    (src / "list_sidecar.json").write_text('["a", "list"]', encoding="utf-8")
    synth.make_clip(src / f"{WEIRD_NAME}.mp4", duration=1.0, width=160, height=120, audio=False)

    out = root / "out"
    before = _snapshot(root, out)
    code, stdout, stderr = _cli_build(src, out, f"source.max_title_chars={MAX_TITLE}")
    after = _snapshot(root, out)
    rows = _rows(out)
    return SimpleNamespace(
        root=root,
        src=src,
        out=out,
        good=good,
        code=code,
        stdout=stdout,
        stderr=stderr,
        before=before,
        after=after,
        rows=rows,
        by_name={os.path.basename(r["source"]): r for r in rows},
        dataset=json.loads((out / "dataset.json").read_text("utf-8")),
        members=_tar_members(out),
    )


# name -> (status, error_reason or drop reason prefix); error reasons are "stage: reason"
EXPECTED = {
    "empty.mp4": ("failed", {"probe: empty_file"}),
    "truncated_no_header.mp4": ("failed", {"probe: not_media", "probe: corrupt"}),
    "text.mp4": ("failed", {"probe: not_media"}),
    "audio_only.mp4": ("failed", {"probe: no_video_stream"}),
    "bad_sidecar.mp4": ("failed", {"source: bad_sidecar"}),
    "list_sidecar.mp4": ("failed", {"source: bad_sidecar"}),
    "tiny_1x1.mp4": ("dropped", {"too_small"}),
    "huge_8000.mp4": ("dropped", {"too_large"}),
    "long.mp4": ("dropped", {"too_long"}),
    "no_audio.mp4": ("ok", None),
    "hostile.mp4": ("ok", None),
    f"{WEIRD_NAME}.mp4": ("ok", None),
}


def test_build_succeeds_with_bad_input(mixed):
    assert mixed.code == 0, mixed.stderr
    assert mixed.dataset["status"] == "ok"
    assert mixed.dataset["failure"] is None
    assert "failed:" not in mixed.stderr


def test_every_input_has_a_row(mixed):
    names = sorted(mixed.by_name)
    assert len(mixed.rows) == len(names)  # one row per input, no duplicates
    assert names == sorted([*mixed.good, *EXPECTED, "truncated_with_header.mp4"])
    for row in mixed.rows:
        assert row["status"] in ("ok", "dropped", "failed"), row
        assert re.fullmatch(r"[A-Za-z0-9_-]+", row["key"]), row["key"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_row(mixed, name):
    row = mixed.by_name[name]
    status, reasons = EXPECTED[name]
    assert row["status"] == status, row
    if status == "failed":
        assert row["error_reason"] in reasons, row
        # "stage: reason: detail", the detail saying what was wrong
        assert row["error"].startswith(row["error_reason"] + ": "), row["error"]
        assert len(row["error"]) > len(row["error_reason"]) + 2
        assert row["dropped"] is None
    elif status == "dropped":
        assert row["dropped"].split(":")[0] in reasons, row
        assert len(row["dropped"].split(": ", 1)) == 2, row["dropped"]
        assert row["error"] is None
    else:
        assert row["error"] is None and row["dropped"] is None, row


def test_truncated_file_with_its_header_is_not_kept(mixed):
    """An interrupted download whose moov atom survived opens, but most of its frames are
    missing: it must be a per-sample error, not a short clip passed off as the whole one."""
    row = mixed.by_name["truncated_with_header.mp4"]
    assert row["status"] == "failed", row
    assert re.fullmatch(r"[a-z]+: [a-z_]+", row["error_reason"]), row
    assert row["error"].startswith(row["error_reason"] + ": ")


def test_good_clips_are_kept(mixed):
    for name in mixed.good:
        assert mixed.by_name[name]["status"] == "ok", mixed.by_name[name]


def test_drop_reasons_say_why(mixed):
    assert mixed.by_name["tiny_1x1.mp4"]["dropped"].startswith("too_small: 1x1")
    assert mixed.by_name["huge_8000.mp4"]["dropped"].startswith("too_large: 8000x8000")
    long_row = mixed.by_name["long.mp4"]
    assert long_row["dropped"].startswith("too_long: 25.0s > 20s")
    assert long_row["duration"] == pytest.approx(25.0, abs=0.3)


def test_totals_count_every_row(mixed):
    total = mixed.dataset["totals"]
    status = collections.Counter(r["status"] for r in mixed.rows)
    assert total["samples_in"] == len(mixed.rows)
    assert (total["kept"], total["dropped"], total["failed"]) == (
        status["ok"],
        status["dropped"],
        status["failed"],
    )
    assert total["errors"] == dict(
        collections.Counter(r["error_reason"] for r in mixed.rows if r["error_reason"])
    )
    assert total["drops"] == dict(
        collections.Counter(r["dropped"].split(":")[0] for r in mixed.rows if r["dropped"])
    )
    stats = [json.loads(p.read_text()) for p in (mixed.out / "shards").glob("*.stats.json")]
    assert sum(s["samples_in"] for s in stats) == len(mixed.rows)


def test_summary_names_the_failures(mixed):
    assert str(len(mixed.rows)) in mixed.stdout
    for reason in mixed.dataset["totals"]["errors"]:
        assert reason in mixed.stdout, reason
    for reason in mixed.dataset["totals"]["drops"]:
        assert reason in mixed.stdout, reason


def test_only_kept_samples_are_in_the_tars(mixed):
    keys = {name.split(".", 1)[0] for name in mixed.members}
    assert keys == {r["key"] for r in mixed.rows if r["status"] == "ok"}
    for name in mixed.members:
        assert "/" not in name and ".." not in name and name.isprintable(), name


def test_no_audio_clip_is_kept_without_audio(mixed):
    key = mixed.by_name["no_audio.mp4"]["key"]
    assert mixed.by_name["no_audio.mp4"]["has_audio"] is False
    assert f"{key}.mp4" in mixed.members
    assert f"{key}.flac" not in mixed.members
    meta = json.loads(mixed.members[f"{key}.json"])
    assert meta["audio"]["present"] is False
    assert meta["source_video"]["has_audio"] is False
    assert meta["errors"] == {}
    # and a clip with audio does get its flac
    with_audio = mixed.by_name["hostile.mp4"]["key"]
    assert f"{with_audio}.flac" in mixed.members
    assert json.loads(mixed.members[f"{with_audio}.json"])["audio"]["present"] is True


def _assert_clean(text: str) -> None:
    assert not [c for c in text if unicodedata.category(c) == "Cc"], repr(text[:80])
    assert not [c for c in text if ord(c) in BIDI_CONTROLS], repr(text[:80])


def test_hostile_title_is_cleaned_kept_and_truncated(mixed):
    row = mixed.by_name["hostile.mp4"]
    key = row["key"]
    meta = json.loads(mixed.members[f"{key}.json"])
    caption = mixed.members[f"{key}.txt"].decode("utf-8")
    for title in (row["title"], meta["title"], caption):
        _assert_clean(title)
        assert ARABIC in title and HEBREW in title  # right-to-left text stays readable
        assert title.startswith("Cats and dogs")
        assert "evil" in title and "isolated" in title and "second line tab" in title
    assert MAX_TITLE - 50 <= len(row["title"]) <= MAX_TITLE
    assert meta["title"] == row["title"]
    assert meta["hashtags"] == ["#cats", "#dogs"]
    assert len(caption) <= MAX_TITLE + sum(len(t) + 1 for t in meta["hashtags"])


def test_arabic_letter_mark_is_removed_too(mixed):
    """U+061C is a bidi control like U+200E/U+200F (which are removed) and spoofs text alike."""
    row = mixed.by_name["hostile.mp4"]
    assert ARABIC_LETTER_MARK not in row["title"], repr(row["title"][:80])


def test_hostile_file_name_gives_a_safe_key(mixed):
    row = mixed.by_name[f"{WEIRD_NAME}.mp4"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", row["key"])
    _assert_clean(row["title"])
    assert "weird name" in row["title"]


def test_nothing_written_outside_the_output(mixed):
    assert mixed.after == mixed.before
    assert (mixed.out / "dataset.json").is_file()


# --- a manifest with hostile ids, paths and urls -------------------------------------------


@pytest.fixture(scope="module")
def manifest_build(clip_bank, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_manifest")
    clips = root / "m" / "n" / "clips"
    clips.mkdir(parents=True)
    bank = sorted(clip_bank.glob("*.mp4"))
    for path in bank[:3]:
        shutil.copyfile(path, clips / path.name)
    rows = [
        {"id": "../../etc/x", "path": f"clips/{bank[0].name}", "title": "escape by id"},
        {"id": "../" * 12 + "tmp/evil", "path": f"clips/{bank[1].name}", "title": "deeper"},
        {"id": "/etc/cron.d/x", "path": str(clips / bank[2].name), "title": "absolute id"},
        {"id": "passwd", "path": "../../etc/passwd", "title": "traversal"},
        {"id": "file_url", "url": "file:///etc/passwd", "title": "file url"},
        {"id": "ftp_url", "url": "ftp://example.com/video.mp4", "title": "ftp url"},
        {"id": "data_url", "url": "data:video/mp4;base64,AAAA", "title": "data url"},
        {"id": "no_path", "title": "no path or url"},
    ]
    manifest = root / "m" / "n" / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = root / "out"
    before = _snapshot(root, out)
    code, stdout, stderr = _cli_build(manifest, out)
    after = _snapshot(root, out)
    built = _rows(out)
    return SimpleNamespace(
        code=code,
        stderr=stderr,
        before=before,
        after=after,
        rows=built,
        by_title={r["title"]: r for r in built},
        members=_tar_members(out),
        dataset=json.loads((out / "dataset.json").read_text("utf-8")),
    )


def test_manifest_build_succeeds(manifest_build):
    assert manifest_build.code == 0, manifest_build.stderr
    assert manifest_build.dataset["totals"]["samples_in"] == 8
    assert len(manifest_build.rows) == 8


@pytest.mark.parametrize("title", ["escape by id", "deeper", "absolute id"])
def test_hostile_ids_are_kept_with_safe_keys(manifest_build, title):
    row = manifest_build.by_title[title]
    assert row["status"] == "ok", row
    assert re.fullmatch(r"[A-Za-z0-9_-]+", row["key"]), row["key"]
    assert f"{row['key']}.mp4" in manifest_build.members


@pytest.mark.parametrize(
    ("title", "reasons"),
    [
        ("traversal", {"probe: missing_file"}),
        ("file url", {"source: bad_url"}),
        ("ftp url", {"source: bad_url"}),
        ("data url", {"source: bad_url"}),
        ("no path or url", {"source: bad_url"}),
    ],
)
def test_bad_paths_and_urls_fail_with_a_reason(manifest_build, title, reasons):
    row = manifest_build.by_title[title]
    assert row["status"] == "failed", row
    assert row["error_reason"] in reasons, row
    assert row["error"].startswith(row["error_reason"] + ": ")


def test_manifest_build_writes_nothing_outside_the_output(manifest_build):
    assert manifest_build.after == manifest_build.before
    for name in manifest_build.members:
        assert "/" not in name and ".." not in name, name


# --- builds that fail as a whole -----------------------------------------------------------


def _one_sentence(text: str) -> bool:
    body = text.strip().rstrip(".")
    return bool(body) and "\n" not in body and not re.search(r"[.!?]\s+[A-Z]", body)


def test_all_bad_same_error_fails_naming_it(tmp_path, local_config, capsys):
    src = tmp_path / "src"
    for i in range(3):
        synth.make_text_as_mp4(src / f"text{i}.mp4")
    outcome = build(local_config(), str(src), str(tmp_path / "out"), quiet=True)
    assert outcome.exit_code != 0
    assert outcome.total["samples_in"] == 3 and outcome.total["kept"] == 0
    assert _one_sentence(outcome.failure), outcome.failure
    assert "not_media" in outcome.failure and "probe" in outcome.failure
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text("utf-8"))
    assert dataset["status"] == "failed"
    assert dataset["failure"] == outcome.failure

    code = cli.main(
        ["build", "--source", str(src), "--out", str(tmp_path / "out2"), "--pipeline", "demo"]
        + ["--local", "--quiet"]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "not_media" in err


def test_all_bad_mixed_errors_fails_naming_the_commonest(tmp_path, local_config):
    src = tmp_path / "src"
    synth.make_text_as_mp4(src / "text0.mp4")
    synth.make_text_as_mp4(src / "text1.mp4")
    synth.make_empty_file(src / "empty.mp4")
    synth.make_audio_only(src / "audio.mp4", duration=0.5)
    outcome = build(local_config(), str(src), str(tmp_path / "out"), quiet=True)
    assert outcome.exit_code != 0
    assert outcome.total["kept"] == 0 and outcome.total["failed"] == 4
    assert _one_sentence(outcome.failure), outcome.failure
    assert "not_media" in outcome.failure  # the most common error
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text("utf-8"))
    assert dataset["status"] == "failed"


@pytest.fixture
def no_ffmpeg(monkeypatch):
    ffmpeg_exe.cache_clear()
    monkeypatch.setenv("VIDAL_FFMPEG", "/nonexistent/ffmpeg")
    yield
    monkeypatch.delenv("VIDAL_FFMPEG")
    ffmpeg_exe.cache_clear()


def test_missing_ffmpeg_is_not_a_result_and_a_plain_rerun_redoes_it(
    good_source, tmp_path, local_config, monkeypatch
):
    """ffmpeg gone mid-build is the machine's fault, not the samples': nothing is stored as a
    failure, the build fails naming stage and cause, and the same command redoes the work once
    ffmpeg is back (no --retry-failed needed)."""
    out = tmp_path / "out"
    config = local_config("stages=[probe,keyframes,clip]")
    ffmpeg_exe.cache_clear()
    monkeypatch.setenv("VIDAL_FFMPEG", "/nonexistent/ffmpeg")
    outcome = build(config, str(good_source), str(out), quiet=True)
    assert outcome.exit_code != 0
    assert _one_sentence(outcome.failure), outcome.failure
    assert "clip: ffmpeg_missing in 6 samples" in outcome.failure
    assert "rerun the same command" in outcome.failure
    assert _rows(out) == []  # no shard was packed with the failure in it
    finished = [json.loads(p.read_text()) for p in out.glob("work/clip/*.done.json")]
    assert all(m["samples"] == 0 for m in finished)  # only empty shards count as done
    dataset = json.loads((out / "dataset.json").read_text("utf-8"))
    assert dataset["status"] == "failed"
    assert dataset["failure"] == outcome.failure

    monkeypatch.delenv("VIDAL_FFMPEG")
    ffmpeg_exe.cache_clear()
    again = build(config, str(good_source), str(out), quiet=True)
    assert again.failure is None
    assert {r["status"] for r in _rows(out)} == {"ok"} and len(_rows(out)) == 6


def test_missing_ffmpeg_fails_the_full_pipeline_too(good_source, tmp_path, local_config, no_ffmpeg):
    out = tmp_path / "out"
    outcome = build(local_config(), str(good_source), str(out), quiet=True)
    assert outcome.exit_code != 0
    assert _one_sentence(outcome.failure), outcome.failure
    assert "ffmpeg_missing" in outcome.failure
    assert _rows(out) == []
    dataset = json.loads((out / "dataset.json").read_text("utf-8"))
    assert dataset["status"] == "failed"
