"""Streaming the shards: URL patterns (local and fsspec), shard splits across processes and
workers, per-epoch deterministic reshuffles, resampling, and bad data skipped with a
rate-limited warning, never a crash or an endless loop."""

from __future__ import annotations

import itertools
import logging
from collections import Counter

import fsspec
import pytest

from tests.train.conftest import depth_data, depth_sample, small_config, write_tar
from vidal.train import data
from vidal.train.data import RateLimitedWarning, ShardList, expand_urls, make_loader


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def test_expand_urls_braces_lists_globs(tmp_path):
    for name in ("a-000.tar", "a-001.tar", "a-002.tar"):
        (tmp_path / name).write_bytes(b"")
    braces = expand_urls(f"{tmp_path}/a-{{000..002}}.tar")
    assert braces == [str(tmp_path / f"a-{i:03d}.tar") for i in range(3)]
    assert expand_urls(f"{tmp_path}/a-*.tar") == braces
    assert expand_urls(f"{braces[0]}::{braces[2]}") == [braces[0], braces[2]]
    listed = expand_urls([braces[1], f"{tmp_path}/a-00{{0,2}}.tar"])
    assert listed == [braces[1], braces[0], braces[2]]
    # remote URLs are expanded, never globbed locally
    assert expand_urls("s3://bucket/x-{0..1}.tar") == ["s3://bucket/x-0.tar", "s3://bucket/x-1.tar"]
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_urls(f"{tmp_path}/missing-*.tar")


def test_reads_local_brace_pattern_and_fsspec_urls(depth_shards, tmp_path):
    pattern, keys = depth_shards
    loader, _ = make_loader(pattern, depth_data(), train=False)
    assert keys_of(loader) == keys  # eval: shard order, sample order, nothing dropped
    memory = fsspec.filesystem("memory")
    for shard in sorted((tmp_path / "shards").glob("*.tar")):
        memory.pipe(f"/vidal-test/{shard.name}", shard.read_bytes())
    try:
        remote, _ = make_loader("memory://vidal-test/d-{00000..00003}.tar", depth_data(), False)
        assert keys_of(remote) == keys
        file_url, _ = make_loader(f"file://{tmp_path}/shards/d-00001.tar", depth_data(), False)
        assert keys_of(file_url) == keys[6:12]
    finally:
        memory.rm("/vidal-test", recursive=True)


def test_processes_and_workers_split_shards_without_duplicates_or_losses(monkeypatch):
    urls = [f"shard-{i}" for i in range(10)]
    for epoch in range(2):
        seen = []
        for rank, worker in itertools.product(range(2), range(3)):
            monkeypatch.setattr(data, "process_info", lambda r=rank, w=worker: (r, 2, w, 3))
            shards = ShardList(urls, seed=5, shuffle=True, resampled=False)
            shards.epoch = epoch
            seen += [item["url"] for item in shards]
        assert sorted(seen) == sorted(urls)  # every shard once per epoch, over 6 readers


def test_dataloader_workers_deliver_every_sample_once(depth_shards):
    pattern, keys = depth_shards
    cfg = depth_data(workers=2, batch_size=4)
    loader, shards = make_loader(pattern, cfg, train=True, drop_last=False)
    assert loader.num_workers == 2
    for epoch in range(2):
        shards.epoch = epoch
        got = keys_of(loader)
        assert sorted(got) == sorted(keys), Counter(got).most_common(3)


def epoch_orders(pattern: str, seed: int, epochs: int = 3, workers: int = 0) -> list[list[str]]:
    loader, shards = make_loader(pattern, depth_data(seed=seed, workers=workers), train=True)
    orders = []
    for epoch in range(epochs):
        shards.epoch = epoch
        orders.append(keys_of(loader))
    return orders


def test_each_epoch_reshuffles_and_a_rerun_repeats_it(depth_shards):
    pattern, keys = depth_shards
    first = epoch_orders(pattern, seed=0)
    assert all(sorted(order) == sorted(keys) for order in first)  # 24 samples, batches of 4
    assert first[0] != first[1] and first[1] != first[2] and first[0] != keys
    assert epoch_orders(pattern, seed=0) == first  # same seed, same orders
    assert epoch_orders(pattern, seed=1) != first
    with_workers = epoch_orders(pattern, seed=0, epochs=2, workers=2)
    assert with_workers == epoch_orders(pattern, seed=0, epochs=2, workers=2)
    assert with_workers[0] != with_workers[1]


def test_resampled_draws_shards_with_replacement(depth_shards, monkeypatch):
    pattern, keys = depth_shards
    shards = ShardList(expand_urls(pattern), seed=0, shuffle=True, resampled=True)
    draws = [item["url"] for item in itertools.islice(iter(shards), 40)]
    assert set(draws) == set(shards.urls) and len(set(draws)) < len(draws)
    loader, _ = make_loader(pattern, depth_data(resampled=True, batch_size=4), train=True)
    got = keys_of(itertools.islice(iter(loader), 15))  # 60 samples from 24: it never ends
    assert len(got) == 60 and set(got) <= set(keys) and max(Counter(got).values()) > 1
    # resampled only in training: eval reads each shard once
    assert keys_of(make_loader(pattern, depth_data(resampled=True), train=False)[0]) == keys


def corrupt_shards(folder) -> tuple[str, list[str]]:
    """Good samples around a PNG that is not one, a sample with no depth member, and a tar
    cut off in the middle of a member."""
    good = [depth_sample(f"good-{i}", f"good {i}") for i in range(9)]
    broken = depth_sample("broken-png", "broken")
    broken["depth.png"] = b"\x89PNG but not really"
    missing = depth_sample("no-depth", "no depth")
    del missing["depth.png"]
    write_tar(folder / "s-00000.tar", [good[0], broken, good[1], missing, good[2]])
    cut = write_tar(folder / "s-00001.tar", good[3:6])
    half_png = 512 * 3 + len(good[3]["depth.png"]) // 2  # json header + data, png header
    cut.write_bytes(cut.read_bytes()[:half_png])
    write_tar(folder / "s-00002.tar", good[6:])
    return str(folder / "s-{00000..00002}.tar"), [s["__key__"] for s in good]


def test_bad_samples_are_skipped_with_one_rate_limited_warning(tmp_path, caplog):
    pattern, good = corrupt_shards(tmp_path)
    loader, _ = make_loader(pattern, depth_data(batch_size=2), train=False)
    with caplog.at_level(logging.WARNING, logger="vidal.train.data"):
        got = keys_of(loader)
    assert sorted(got) == sorted(k for k in good if k not in ("good-3", "good-4", "good-5"))
    assert got[:3] == ["good-0", "good-1", "good-2"] and got[3:] == ["good-6", "good-7", "good-8"]
    warnings = [r.getMessage() for r in caplog.records if "skipping a sample" in r.getMessage()]
    assert len(warnings) == 1, warnings  # three bad samples, one line within 10 s
    assert "(1 so far)" in warnings[0]


def test_rate_limited_warning_counts_everything_and_logs_rarely(caplog, monkeypatch):
    clock = iter([100.0, 100.0, 101.0, 105.0, 111.0, 111.0, 112.0])
    monkeypatch.setattr(data.time, "monotonic", lambda: next(clock))
    warn = RateLimitedWarning(every=10.0)
    with caplog.at_level(logging.WARNING, logger="vidal.train.data"):
        for _ in range(4):
            assert warn(ValueError("bad")) is True
    assert warn.skipped == 4
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "skipping a sample that does not decode (1 so far)",
        "skipping a sample that does not decode (4 so far)",
    ]


def test_all_bad_data_raises_a_clear_error_instead_of_looping(tmp_path, shared_text):
    from vidal.train.loop import Trainer

    samples = [depth_sample(f"k{i}", "x") for i in range(4)]  # depth only: no video member
    write_tar(tmp_path / "s-00000.tar", samples)
    trainer = Trainer(small_config(str(tmp_path / "s-00000.tar"), tmp_path / "out"))
    with pytest.raises(RuntimeError, match="gave no batch of 8 video samples"):
        next(trainer.batches())


def test_unknown_modality_is_refused(depth_shards):
    with pytest.raises(ValueError, match="modality must be one of"):
        make_loader(depth_shards[0], depth_data(modality="smell"), train=True)
