"""`python -m vidal.doctor`: checks the environment `make setup` built, in one line each."""

from __future__ import annotations

import importlib.util
import sys


def checks() -> list[tuple[str, bool, str]]:
    results = []
    from vidal.media.ffmpeg import MediaError, ffmpeg_exe, ffmpeg_version

    try:
        exe, version = ffmpeg_exe(), ffmpeg_version()
        results.append(("ffmpeg", not version.startswith("unavailable"), f"{exe} ({version})"))
    except MediaError as exc:
        results.append(("ffmpeg", False, str(exc)))
    for module in ("av", "decord", "ray", "webdataset", "torch", "transformers"):
        found = importlib.util.find_spec(module) is not None
        results.append((module, found, "importable" if found else "missing: run make setup"))
    for module in ("torchvision", "timm"):
        # beside the pinned torch, torchvision breaks transformers' model imports (README)
        present = importlib.util.find_spec(module) is not None
        results.append(
            (
                f"no {module}",
                not present,
                f"{module} is installed: pip uninstall -y {module}" if present else "absent",
            )
        )
    return results


def main() -> int:
    failed = 0
    for name, ok, detail in checks():
        failed += not ok
        print(f"{'ok ' if ok else 'BAD'} {name:14} {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
