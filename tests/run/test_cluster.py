"""A real two-node Ray cluster on this machine: a head node (CPU only) and a worker node that
offers the custom resource `vidal_model`. The CLI builds against it with `--ray-address`; the
depth stage (a model stage) declares `depth.resources={vidal_model: 1}` and must run only on the
worker node. A second test kills the worker node mid-build; rerunning the same command after
the node is back (resume is the designed recovery) must end with exactly the samples of a
local reference build, none lost, none duplicated.

Both nodes share one host, so they are told apart by Ray node id: each model load writes
`OUT/work/<stage>/loads/*.json` with the `node` it ran on.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidal.config import load_config
from vidal.media.synth import make_clip_set
from vidal.run.jobs import build

BIN = Path(sys.executable).parent
RESOURCE = "vidal_model"
SHARDS = 2
OVERRIDES = [
    "stages=[probe,keyframes,depth]",
    "keyframes.short_side=64",
    "depth.model=tiny:glpn",
    "depth.inference_size=64",
    "depth.batch_size=4",
]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIDAL_KEEP_RAY")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    return env


def _process_tree(root: int) -> list[int]:
    """root and every descendant (Ray workers get their own process groups, so killpg alone
    would leave them behind)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything under it, by process id."""
    for pid in _process_tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


class Cluster:
    """`ray start --head` and one `ray start --address=...` worker node, each `--block`ing in
    a process this test owns and kills (with every process under it) at the end."""

    def __init__(self, root: Path):
        self.root = root
        self.temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # short: Ray's socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head = self._start(
            "head",
            "--head",
            f"--port={self.port}",
            "--num-cpus=1",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-port={_free_port()}",
            "--include-dashboard=false",
            f"--temp-dir={self.temp}",
        )
        self.worker = None
        self.workers_started = 0

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        argv = [str(BIN / "ray"), "start", *args, "--node-ip-address=127.0.0.1"]
        argv += ["--object-store-memory=100000000", "--disable-usage-stats", "--block"]
        with open(log, "wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                _kill_tree(proc)
                raise RuntimeError(f"ray start {name} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        return proc

    def start_worker(self) -> None:
        self.workers_started += 1
        self.worker = self._start(
            f"worker{self.workers_started}",
            f"--address={self.address}",
            "--num-cpus=2",
            f"--resources={json.dumps({RESOURCE: 1})}",
        )

    def kill_worker(self) -> None:
        if self.worker is not None:
            _kill_tree(self.worker)
            self.worker = None

    def nodes(self) -> dict[str, dict]:
        """Alive node id -> resources, asked of the cluster from a separate driver."""
        code = (
            "import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, self.address],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
        assert done.returncode == 0, done.stderr[-2000:]
        nodes = json.loads(done.stdout.strip().splitlines()[-1])
        heads = [n for n, res in nodes.items() if not res.get(RESOURCE)]
        if len(heads) == 1:
            self._head_id = heads[0]
        return nodes

    def head_node(self) -> str:
        """The head's node id (it has no custom resource), asked once."""
        if not hasattr(self, "_head_id"):
            (self._head_id,) = [n for n, res in self.nodes().items() if not res.get(RESOURCE)]
        return self._head_id

    def stop(self) -> None:
        try:
            self.kill_worker()
            _kill_tree(self.head)
        finally:
            shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    c = Cluster(root)
    try:
        c.start_worker()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cluster_source")
    make_clip_set(folder, 4, seed=5, duration=(1.0, 1.5), size=(96, 64))
    return folder


@pytest.fixture(scope="module")
def reference(cluster_source, tmp_path_factory) -> dict[str, str]:
    """The same build with the local runner: key -> status."""
    out = tmp_path_factory.mktemp("reference")
    config = load_config(
        "demo", ["runner.kind=local", "runner.progress=false", f"shards={SHARDS}", *OVERRIDES]
    )
    outcome = build(config, str(cluster_source), str(out), quiet=True)
    assert outcome.failure is None
    return shard_rows(out)


def shard_rows(out: Path) -> dict[str, str]:
    rows = [r for p in sorted(out.glob("shards/*.parquet")) for r in pq.read_table(p).to_pylist()]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a sample is in two shard rows"
    return {r["key"]: r["status"] for r in rows}


def tar_keys(out: Path) -> list[str]:
    keys = []
    for path in sorted(out.glob("shards/*.tar")):
        with tarfile.open(path) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return keys


def build_argv(cluster: Cluster, source: Path, out: Path) -> list[str]:
    return [
        str(BIN / "vidal"),
        "build",
        "--source",
        str(source),
        "--out",
        str(out),
        "--pipeline",
        "demo",
        "--shards",
        str(SHARDS),
        "--quiet",
        "--ray-address",
        cluster.address,
        *OVERRIDES,
        f"depth.resources={{{RESOURCE}: 1}}",
    ]


def run_build(argv, out: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())


def load_nodes(out: Path) -> list[str]:
    return [json.loads(p.read_text())["node"] for p in out.glob("work/depth/loads/*.json")]


def test_model_stage_runs_only_on_the_node_with_its_resource(
    cluster, cluster_source, reference, tmp_path
):
    nodes = cluster.nodes()
    assert len(nodes) == 2, nodes
    model_nodes = {n for n, res in nodes.items() if res.get(RESOURCE)}
    assert len(model_nodes) == 1, nodes
    assert cluster.head_node() not in model_nodes

    out = tmp_path / "out"
    done = run_build(build_argv(cluster, cluster_source, out), out)
    assert done.returncode == 0, done.stderr[-3000:]

    loads = load_nodes(out)
    assert loads, "the depth stage recorded no model load"
    assert set(loads) == model_nodes, (loads, nodes)  # never on the head node
    assert shard_rows(out) == reference
    assert sorted(tar_keys(out)) == sorted(k for k, s in reference.items() if s == "ok")


def test_build_survives_killing_the_worker_node(cluster, cluster_source, reference, tmp_path):
    """SIGKILL every process of the model node while the build runs, then bring a node with
    the resource back (as an autoscaler or a restarted pod would). Ray restarts the actor
    there and retries its tasks; should the run still fail, the same command again resumes
    it. Either way the dataset ends equal to the local reference."""
    out = tmp_path / "out"
    argv = build_argv(cluster, cluster_source, out)
    first = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), start_new_session=True
    )
    killed_node = False
    try:
        deadline = time.monotonic() + 150
        while first.poll() is None and time.monotonic() < deadline:
            if not killed_node and load_nodes(out):  # the model is loaded: mid-build
                cluster.kill_worker()
                killed_node = True
                cluster.start_worker()  # a new node (new id) with the same resource
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            _kill_tree(first)  # the first run could not finish: resume below
        first.wait(timeout=30)
    assert killed_node, "the build ended before the model loaded"
    if cluster.worker is None:
        cluster.start_worker()

    resumed = first.returncode != 0 or not (out / "dataset.json").exists()
    print(f"first run after the node kill: exit {first.returncode}; resumed: {resumed}")
    if resumed:
        second = run_build(argv, out)  # resume: the same command again
        assert second.returncode == 0, second.stderr[-3000:]

    assert shard_rows(out) == reference
    keys = tar_keys(out)
    assert len(keys) == len(set(keys)), "a sample was packed twice"
    assert sorted(keys) == sorted(k for k, s in reference.items() if s == "ok")
    assert json.loads((out / "dataset.json").read_text())["status"] == "ok"
    # every model load, before and after the kill, was on a model node, never on the head
    loads = load_nodes(out)
    assert loads and None not in loads
    assert cluster.head_node() not in loads


def test_stage_resources_reach_ray_and_never_invalidate_results():
    """`resources` goes to Ray with the stage's operator (model and CPU stages alike) and, like
    num_gpus, is not part of the stage's config hash."""
    import ray

    from vidal.run.ray_runner import RayRunner
    from vidal.run.stream import Plan, StageStep

    calls = []

    class FakeDataset:
        def map_batches(self, fn, **kwargs):
            calls.append(kwargs)
            return self

    runner = RayRunner.__new__(RayRunner)  # no Ray: only the operator arguments are looked at
    runner.has_gpus, runner.ray = False, ray
    config = load_config("demo", [f"depth.resources={{{RESOURCE}: 1}}", "probe.resources={x: 2}"])
    for name in ("depth", "probe", "keyframes"):
        runner._map(FakeDataset(), StageStep(Plan([config.stage(name)], {}, {}), range(1), None))
    depth, probe, keyframes = calls
    assert depth["resources"] == {RESOURCE: 1.0} and "fn_constructor_kwargs" in depth
    assert probe["resources"] == {"x": 2.0}
    assert "resources" not in keyframes
    plain = load_config("demo")
    assert config.depth.config_hash() == plain.depth.config_hash()
