"""vidal as an installed package, not a checkout: the wheel carries pipelines/, their prompts
and manifests/, and a vidal installed from it builds with the shipped demo pipeline and makes
search terms from the shipped vocabularies, run from a folder that is not the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "vidal", "pipelines", "manifests")


def _run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (cmd, (proc.stdout + proc.stderr)[-3000:])
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the sources (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*pip, "-w", dist, src], cwd=src)
    (built,) = dist.glob("vidal-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this venv (a .pth line,
    so nothing is downloaded). Returns the venv's bin/."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "vidal_test_deps.pth").write_text("\n".join(sorted(shared)))
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    _run([*pip, wheel], cwd=venv)
    return venv / "bin"


def _clean_env() -> dict:
    """No PYTHONPATH: the test runs with the checkout on it, the installed vidal must not."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_wheel_holds_pipelines_prompts_and_manifests_as_files(wheel):
    with zipfile.ZipFile(wheel) as whl:
        infos = {i.filename: i for i in whl.infolist()}
    for shipped in (ROOT / "pipelines", ROOT / "manifests"):
        for path in shipped.rglob("*"):
            if path.is_file():
                name = f"vidal/{path.relative_to(ROOT)}"
                assert name in infos, f"{name} is not in the wheel"
                assert infos[name].file_size == path.stat().st_size  # a copy, not a link
    assert "vidal/pipelines/prompts/video_caption.txt" in infos
    metadata = next(n for n in infos if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as whl:
        assert "License-Expression: Apache-2.0" in whl.read(metadata).decode()


@pytest.mark.slow
def test_installed_wheel_builds_from_another_folder(installed, clip_bank, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    source = elsewhere / "videos"
    source.mkdir(parents=True)
    for clip in sorted(clip_bank.glob("*.mp4"))[:2]:
        shutil.copy(clip, source)
        shutil.copy(clip.with_suffix(".json"), source)
    probe = [installed / "python", "-c", "import vidal; print(vidal.__file__)"]
    where = _run(probe, elsewhere, _clean_env())
    assert where.stdout.strip().startswith(str(installed.parent)), where.stdout
    # the demo pipeline, every stage (captions and enhance read the shipped prompt files)
    build = [installed / "vidal", "build", "--source", "videos", "--out", "out", "--local"]
    _run([*build, "--quiet", "--pipeline", "demo", "--shards", "1"], elsewhere, _clean_env())
    dataset = json.loads((elsewhere / "out" / "dataset.json").read_text())
    assert dataset["status"] == "ok" and dataset["totals"]["kept"] == 2
    assert "enhance" in dataset["stages"]
    with tarfile.open(elsewhere / "out" / "shards" / "vidal-00000.tar") as tar:
        assert sum(m.name.endswith(".mp4") for m in tar.getmembers()) == 2
    # the crawl's search terms come from the shipped vocabularies (manifests/vocab)
    _run([installed / "vidal", "terms", "--out", "terms.csv"], elsewhere, _clean_env())
    assert len((elsewhere / "terms.csv").read_text().splitlines()) > 100
