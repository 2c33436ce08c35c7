"""Live progress: every stage reports samples done and failures, on every runner."""

from __future__ import annotations

import collections

import pytest

from vidal.run.build import Builder
from vidal.run.ray_runner import make_runner


class Recorder:
    def __init__(self):
        self.done = collections.Counter()
        self.failed = collections.Counter()

    def add(self, label, total):
        def update(n, failed=0):
            self.done[label] += n
            self.failed[label] += failed

        return update


@pytest.fixture
def source_with_bad_file(good_source):
    (good_source / "broken.mp4").write_bytes(b"not a video")
    return good_source


@pytest.mark.parametrize("kind", ["local", "processes", "auto", "ray"])
def test_each_stage_reports_done_and_failed(
    kind, source_with_bad_file, local_config, tmp_path, request
):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    config = local_config("shards=2", "stages=[probe,keyframes]", f"runner.kind={kind}")
    runner = make_runner(config.runner)
    recorder = Recorder()
    builder = Builder(config, str(source_with_bad_file), str(tmp_path / "out"), runner, recorder)
    try:
        builder.run_stages()
    finally:
        if kind != "ray":  # the shared Ray stays up for the other tests
            runner.shutdown()
    inputs = sum(1 for _ in source_with_bad_file.glob("*.mp4"))
    assert recorder.done["probe"] == inputs  # every sample passes every stage, failed or not
    assert recorder.done["keyframes"] == inputs
    assert recorder.failed["probe"] == 1  # the broken file, counted where it failed
    assert recorder.failed["keyframes"] == 0  # later stages skip it; they do not fail it again
