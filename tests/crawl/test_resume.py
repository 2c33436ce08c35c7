"""A crawl killed mid-way (SIGKILL of the CLI's process group) resumes per shard: finished
shards are not downloaded again, nor are the downloads a cut-short shard checkpointed, and the
result is the crawl an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from vidal.io.sources import shard_of
from vidal.run.crawl import candidates_from_urls

SHARDS = 4


def crawl_command(urls, out) -> list[str]:
    command = [sys.executable, "-m", "vidal.cli", "crawl", "--urls", str(urls), "--out", str(out)]
    command += ["--local", "--quiet", "source.allow_private_addresses=true"]
    command += [f"crawl.shards={SHARDS}", "crawl.wave=1", "crawl.download.rate_per_s=0"]
    return command + ["crawl.download.threads=4", "crawl.download.attempts=1"]


def finished_shards(out) -> set[int]:
    return {int(p.name.split(".")[0]) for p in (out / "work/candidates").glob("*.done.json")}


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the crawl did not get there in time"
        time.sleep(0.1)


def manifest(out) -> list[dict]:
    return sorted(pq.read_table(out / "crawl.parquet").to_pylist(), key=lambda r: r["id"])


def test_killed_crawl_resumes_per_shard(server, tmp_path):
    urls = [server.url(f"/m/ok-{i}.mp4") for i in range(16)] + [server.url("/m/hold-x.mp4")]
    listed = tmp_path / "urls.csv"
    listed.write_text("url\n" + "".join(u + "\n" for u in urls))
    shard = {c.source: shard_of(c.key, SHARDS) for c in candidates_from_urls(str(listed), False)}
    held = shard[server.url("/m/hold-x.mp4")]
    others = set(shard.values()) - {held}
    assert others, "the list should spread over several shards"

    out = tmp_path / "out"
    server.release.clear()  # hold-x answers only once released: its shard cannot finish
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    crawl = subprocess.Popen(crawl_command(listed, out), env=env, start_new_session=True)
    try:
        wait_for(lambda: finished_shards(out) >= others and server.counts["/m/hold-x.mp4"], 120)
    finally:
        os.killpg(crawl.pid, signal.SIGKILL)
        crawl.wait()
    assert held not in finished_shards(out)
    before = {u for u in urls if server.counts[u.removeprefix(server.base)]}

    server.reset()  # hold-x is served now
    assert subprocess.run(crawl_command(listed, out), env=env, timeout=300).returncode == 0
    again = {u for u in urls if server.counts[u.removeprefix(server.base)]}
    assert again and all(shard[u] == held for u in again)  # finished shards: not one request
    checkpointed = before - {server.url("/m/hold-x.mp4")}
    assert not again & checkpointed  # nor the downloads the held shard had finished

    fresh = tmp_path / "fresh"
    assert subprocess.run(crawl_command(listed, fresh), env=env, timeout=300).returncode == 0
    assert manifest(out) == manifest(fresh) and len(manifest(out)) == len(urls)


def test_a_crawl_from_before_the_sharded_store_resumes(server, crawl_config, tmp_path):
    """Its state (work/crawl/candidates.parquet, one table of records) moves into the shards:
    nothing is downloaded again and the outputs stay what they were."""
    import shutil

    import pyarrow as pa

    from vidal.run.crawl import run_crawl

    listed = tmp_path / "urls.csv"
    listed.write_text("url\n" + "".join(server.url(f"/m/ok-{i}.mp4") + "\n" for i in range(3)))
    out = tmp_path / "out"
    assert run_crawl(crawl_config(), str(out), urls_file=str(listed), quiet=True).exit_code == 0
    first = manifest(out)
    rows = [pq.read_table(p) for p in sorted((out / "work/candidates").glob("*.parquet"))]
    old = pa.concat_tables(rows).select(["key", "record"])
    for name in ("candidates", "found", "crawl"):
        shutil.rmtree(out / "work" / name, ignore_errors=True)
    (out / "work/crawl").mkdir()
    pq.write_table(old, out / "work/crawl/candidates.parquet")

    server.reset()
    outcome = run_crawl(crawl_config(), str(out), urls_file=str(listed), quiet=True)
    assert outcome.counts["downloaded"] == 3 and not server.counts
    assert manifest(out) == first and not (out / "work/crawl/candidates.parquet").exists()


def test_a_lost_ingest_note_only_rereads_the_list(server, crawl_config, tmp_path):
    """A crawl that lost work/crawl/ingested.json reads the list again, and its rows merge
    into the candidates they are: nothing is downloaded again and the outputs stay what they
    were."""
    from vidal.run.crawl import INGESTED, run_crawl

    listed = tmp_path / "urls.csv"
    listed.write_text("url\n" + "".join(server.url(f"/m/ok-{i}.mp4") + "\n" for i in range(3)))
    out = tmp_path / "out"
    assert run_crawl(crawl_config(), str(out), urls_file=str(listed), quiet=True).exit_code == 0
    first = manifest(out)
    (out / INGESTED).unlink()
    server.reset()
    outcome = run_crawl(crawl_config(), str(out), urls_file=str(listed), quiet=True)
    assert outcome.counts["downloaded"] == 3 and not server.counts
    assert manifest(out) == first and (out / INGESTED).exists()


def test_the_ingest_note_is_written_after_its_rows_are_on_disk(
    server, crawl_config, tmp_path, monkeypatch
):
    """The inbox's part files skip fsync; the note that makes later runs skip the list must
    not reach the disk before them (a power loss would keep the note and lose the rows)."""
    from vidal.io.store import Store
    from vidal.run.crawl import INGESTED, run_crawl

    events = []
    write_bytes, sync = Store.write_bytes, Store.sync

    def record_write(self, rel, data, durable=True):
        if rel.startswith("work/found/") or rel == INGESTED:
            events.append(("note" if rel == INGESTED else "part", durable))
        return write_bytes(self, rel, data, durable)

    def record_sync(self):
        events.append(("sync", True))
        return sync(self)

    monkeypatch.setattr(Store, "write_bytes", record_write)
    monkeypatch.setattr(Store, "sync", record_sync)
    listed = tmp_path / "urls.csv"
    listed.write_text("url\n" + "".join(server.url(f"/m/ok-{i}.mp4") + "\n" for i in range(3)))
    out = tmp_path / "out"
    assert run_crawl(crawl_config(), str(out), urls_file=str(listed), quiet=True).exit_code == 0
    kinds = [kind for kind, _ in events]
    assert "part" in kinds and kinds.count("note") == 1, events
    note = kinds.index("note")
    last_part = max(i for i, kind in enumerate(kinds[:note]) if kind == "part")
    assert "sync" in kinds[last_part:note], events  # the parts, a sync, then the note
    assert events[note] == ("note", True)  # itself written durably
