"""`python -m vidal.doctor`: checks the environment `make setup` built, in one line each."""

from __future__ import annotations

import importlib.util
import subprocess
import sys


def checks() -> list[tuple[str, bool, str]]:
    results = []
    from vidal.media.ffmpeg import MediaError, ffmpeg_exe

    try:
        exe = ffmpeg_exe()
        version = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
        results.append(
            ("ffmpeg", version.returncode == 0, f"{exe} ({version.stdout.split(' ')[2]})")
        )
    except (MediaError, OSError, IndexError) as exc:
        results.append(("ffmpeg", False, str(exc)))
    for module in ("av", "decord", "ray", "webdataset", "torch", "transformers"):
        found = importlib.util.find_spec(module) is not None
        results.append((module, found, "importable" if found else "missing: run make setup"))
    for module in ("torchvision", "timm"):
        # beside the pinned torch, torchvision breaks transformers' model imports (DESIGN.md)
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
