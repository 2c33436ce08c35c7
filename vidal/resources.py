"""Where the files vidal ships beside its code are: pipelines/ (with prompts/) and manifests/.

They are top-level folders of the repository, where people edit them; `vidal/pipelines` and
`vidal/manifests` are symlinks to them, and a wheel holds copies of the files at the same
place (package data). So a source checkout, an editable install and an installed wheel all
find them here, and nothing else in vidal computes these paths.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PIPELINES_DIR = PACKAGE_DIR / "pipelines"
PROMPTS_DIR = PIPELINES_DIR / "prompts"
MANIFESTS_DIR = PACKAGE_DIR / "manifests"


def shipped_path(path: str | Path) -> Path:
    """A path as a config writes it (`manifests/stopwords.txt`): absolute paths stay as they
    are; relative ones resolve against the folder that holds pipelines/ and manifests/."""
    p = Path(path)
    return p if p.is_absolute() else PACKAGE_DIR / p
