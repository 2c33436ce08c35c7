"""The images and the KubeRay cluster. Statically, without an engine: the Dockerfiles'
instructions and the RayCluster YAML are parsed and checked against pyproject.toml (torch
and Ray pins, Python version, the package installed from the repo) and against each other
(image tags, non-root user, GPU limits vs Ray's num-gpus). Then for real (slow): the CPU image
is built with podman and runs `vidal demo`, whose shards are read outside it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pin(name: str) -> str:
    for dep in pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == name:
            (spec,) = req.specifier
            assert spec.operator == "==", f"pyproject must pin {name} exactly: {dep}"
            return spec.version
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return out


class Image:
    def __init__(self, name: str):
        self.path = DOCKER / f"Dockerfile.{name}"
        self.ins = instructions(self.path)
        self.args = {}
        for word, rest in self.ins:
            if word == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                self.args[key] = value
        self.env = {}
        for word, rest in self.ins:
            if word == "ENV":
                for item in shlex.split(rest):
                    if "=" in item:
                        key, value = item.split("=", 1)
                        self.env[key] = value

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), text)

    def all(self, word: str) -> list[str]:
        return [self.expand(rest) for w, rest in self.ins if w == word]

    def runs(self) -> list[str]:
        return self.all("RUN")

    @property
    def base(self) -> str:
        return self.all("FROM")[-1].split()[0]  # the final stage's

    def installs(self) -> list[str]:
        """Every requirement given to pip / uv pip install, options dropped."""
        reqs = []
        for run in self.runs():
            for part in run.split("&&"):
                words = shlex.split(part)
                if "install" not in words or not {"pip", "uv"} & set(words):
                    continue
                args = words[words.index("install") + 1 :]
                skip = False
                for word in args:
                    if skip:
                        skip = False
                        continue
                    if word in (
                        "--index-url",
                        "--extra-index-url",
                        "--index-strategy",
                        "--find-links",
                    ):
                        skip = True
                    elif not word.startswith("-"):
                        reqs.append(word)
        return reqs

    def python_version(self) -> str:
        if self.base.startswith("python:"):
            return self.base.split(":")[1].split("-")[0]
        return self.args["PYTHON_VERSION"]

    def tag(self) -> str:
        """The tag the header comment builds (`docker build ... -t TAG .`)."""
        match = re.search(r"-t (\S+) \.", self.path.read_text())
        assert match, f"{self.path.name}: the header shows no `docker build -t TAG .`"
        return match.group(1)


def is_package(req: str) -> bool:
    """`.` or `.[extra]`: vidal itself, from the build context."""
    return re.fullmatch(r"\.(\[[\w,]+\])?", req) is not None


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def image(request) -> Image:
    return Image(request.param)


def test_base_images_and_versions_are_pinned(image):
    base = image.base
    assert ":" in base and not base.endswith(":latest"), base
    assert re.search(r":\d+\.\d+\.\d+", base), f"{base}: pin a full version"
    for req in image.installs():
        if is_package(req) or req.startswith("torch==") or req.startswith("ray["):
            continue
        assert "==" in req, f"{image.path.name}: unpinned install {req!r}"
    for run in image.runs():
        if "apt-get install" in run:
            pkgs = [w for w in shlex.split(run.split("apt-get install", 1)[1].split("&&")[0])]
            pkgs = [p for p in pkgs if not p.startswith("-")]
            assert pkgs and all("=" in p for p in pkgs), f"unpinned apt packages: {pkgs}"
            assert "rm -rf /var/lib/apt/lists/*" in run, "apt lists left in the layer"
    # no pip cache in any layer
    assert image.env.get("PIP_NO_CACHE_DIR") == "1" or image.env.get("UV_NO_CACHE") == "1"


def test_bases_and_indexes_are_build_args(image):
    """No registry or index is hard-wired: a machine that reaches neither passes its own."""
    raw = [rest for word, rest in image.ins if word == "FROM"]
    assert raw[-1].split()[0] == "${BASE_IMAGE}", raw
    assert all(r.split()[0].startswith("${") for r in raw), raw
    assert not any(
        "--from=" in c and "/" in c.split("--from=")[1].split()[0] for c in image.all("COPY")
    ), "COPY --from names a registry image"
    assert "TORCH_INDEX" in image.args and '"${TORCH_INDEX}"' in image.path.read_text()
    if image.path.name.endswith("cpu"):
        # a torch wheel on disk, mounted for the install only (never a layer)
        torch_run = next(r for r in image.runs() if "torch==" in r and "/wheels" in r)
        assert "--mount=type=bind,source=docker/wheels" in torch_run
        assert (ROOT / "docker" / "wheels").is_dir()
    else:
        assert "PYPI_INDEX" in image.args and "UV_IMAGE" in image.args


def test_python_matches_pyproject_and_both_images_agree(image):
    version = image.python_version()
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(version), version
    # Ray needs one Python (major.minor) on every node of a cluster
    other = Image("gpu" if image.path.name.endswith("cpu") else "cpu")
    assert version.rsplit(".", 1)[0] == other.python_version().rsplit(".", 1)[0]


def test_torch_and_ray_pins_match_pyproject(image):
    torch, ray = pin("torch"), pin("ray")
    assert image.args["TORCH_VERSION"] == torch
    assert image.args["RAY_VERSION"] == ray
    reqs = image.installs()
    assert f"torch=={torch}" in reqs
    assert any(r.startswith("ray[") and r.endswith(f"=={ray}") for r in reqs), reqs
    ray_req = next(Requirement(r) for r in reqs if r.startswith("ray["))
    assert {"default", "data"} <= ray_req.extras  # data: the runner; default: KubeRay probes
    text = " ".join(image.runs())
    if image.path.name.endswith("cpu"):
        assert "https://download.pytorch.org/whl/cpu" in text
    else:
        assert image.base.startswith("nvidia/cuda:")
        cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)", image.base).groups()
        index = image.args["TORCH_INDEX"]
        assert index == f"https://download.pytorch.org/whl/cu{''.join(cuda)}", (index, cuda)
        assert "runtime" in image.base  # not the devel image: smaller


def test_package_installed_from_the_repo_as_non_root(image):
    copies = " ".join(image.all("COPY"))
    assert "pyproject.toml" in copies and re.search(r"\bvidal \./vidal\b", copies)
    assert "pipelines ./pipelines" in copies  # the config finds pipelines/ beside the package
    assert not re.search(r"(^|\s)\. \.(\s|$)", copies), "COPY . . puts the whole repo in a layer"
    reqs = image.installs()
    assert any(is_package(r) for r in reqs)  # the package, from the repo
    # installed as a wheel is (not editable): its pipelines/ and manifests/ are package data
    assert not any(" -e ." in r for r in image.runs())
    assert any("vidal.doctor" in r for r in image.runs())
    users = image.all("USER")
    assert users and users[-1] not in ("root", "0"), users
    assert any("useradd" in r and users[-1] in r for r in image.runs())
    uid = re.search(r"useradd .*--uid (\d+)", " ".join(image.runs())).group(1)
    assert uid == "1000"
    # the dependency layer comes before the package's code, so code changes rebuild little
    order = [w + " " + r for w, r in image.ins]
    first_code = next(i for i, line in enumerate(order) if line.startswith("COPY vidal"))
    deps = next(
        i
        for i, line in enumerate(order)
        if "pip install" in line and re.search(r"""\s"?\.(\[\w+\])?"?\s""", line + " ")
    )
    assert deps < first_code


# -- the KubeRay cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())


def _pods(cluster: dict):
    spec = cluster["spec"]
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


def _qty(v) -> float:
    return float(str(v).rstrip("m")) / (1000 if str(v).endswith("m") else 1)


def test_raycluster_is_coherent_with_the_images(cluster):
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    ray, version = pin("ray"), pyproject()["project"]["version"]
    assert cluster["spec"]["rayVersion"] == ray
    tags = {"cpu": Image("cpu").tag(), "gpu": Image("gpu").tag()}
    for kind, tag in tags.items():
        assert tag == f"vidal:{version}-ray{ray}-{kind}", tag
    gpu_groups = 0
    for name, group in _pods(cluster):
        params = {k: str(v) for k, v in group["rayStartParams"].items()}
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000  # the images' user
        (container,) = pod["containers"]
        limits = container["resources"]["limits"]
        gpus = int(limits.get("nvidia.com/gpu", 0))
        assert int(float(params.get("num-gpus", 0))) == gpus, (name, params, limits)
        assert _qty(params.get("num-cpus", limits["cpu"])) <= _qty(limits["cpu"])
        assert container["image"] == tags["gpu" if gpus else "cpu"], (name, container["image"])
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/data" in mounts  # shared storage for the stage store and shards
        if gpus:
            gpu_groups += 1
            custom = json.loads(json.loads(params["resources"]))
            assert custom.get("vidal_model", 0) >= 1
            assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
        else:
            assert "resources" not in params  # model stages cannot land on CPU nodes
    assert gpu_groups == 1
    head = dict(_pods(cluster))["head"]
    assert str(head["rayStartParams"]["num-cpus"]) == "0"  # no stage on the head


# -- the CPU image, built and run (podman) ----------------------------------------------------

PODMAN_SH = DOCKER / "podman.sh"


def _podman(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(PODMAN_SH), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def podman_ready() -> None:
    """Skip where podman cannot run; under VIDAL_REQUIRE_IMAGE=1 (CI) that is a failure."""
    check = _podman("check", timeout=120)
    if check.returncode != 0:
        why = check.stderr.strip() or "docker/podman.sh check failed"
        if os.environ.get("VIDAL_REQUIRE_IMAGE") == "1":
            pytest.fail(f"VIDAL_REQUIRE_IMAGE=1 but {why}")
        pytest.skip(why)


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_cpu_image_runs_the_demo_and_its_shards_read_outside(podman_ready, tmp_path):
    import webdataset as wds

    build = _podman("build", timeout=2400)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    tag = Image("cpu").tag()
    out = tmp_path / "demo"
    out.mkdir()
    out.chmod(0o777)  # the image runs as its user vidal (uid 1000)
    run = _podman(
        "podman", "run", "--rm", "--network", "none", "--shm-size", "1g",
        "-v", f"{out}:/out", tag, "demo", "--out", "/out", "--synthetic", "8",
        timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    dataset = json.loads((out / "dataset" / "dataset.json").read_text())
    assert dataset["status"] == "ok" and dataset["totals"]["kept"] > 0
    urls = sorted(str(p) for p in (out / "dataset" / "shards").glob("vidal-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert len(samples) == dataset["totals"]["kept"]
    for sample in samples:
        assert sample["mp4"][4:8] == b"ftyp" and sample["txt"]
        assert sample["json"]["lineage"]["clip"]["ffmpeg"] == dataset["ffmpeg"]
    assert "read back with plain webdataset" in run.stdout
