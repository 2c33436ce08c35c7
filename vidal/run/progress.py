"""Progress bars on the driver (rich), or nothing in quiet mode."""

from __future__ import annotations

from collections.abc import Callable


class RichProgress:
    def __init__(self, console=None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def add(self, label: str, total: int) -> Callable[[int], None]:
        task = self.progress.add_task(label, total=total)
        return lambda n: self.progress.advance(task, n)


class QuietProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add(self, label: str, total: int) -> Callable[[int], None]:
        return lambda n: None
