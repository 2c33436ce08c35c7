"""Progress bars on the driver (rich), or nothing in quiet mode."""

from __future__ import annotations

from collections.abc import Callable


def _rate_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Samples per second over rich's recent window."""

        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="progress.data.speed")

    return RateColumn()


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
            _rate_column(),
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

    def add(self, label: str, total: int) -> Callable[..., None]:
        """A task; its updater takes (samples done, of which failed) and shows the failures."""
        task = self.progress.add_task(label, total=total)
        failures = [0]

        def update(n: int, failed: int = 0) -> None:
            failures[0] += failed
            text = f"{label} [red]({failures[0]} failed)" if failures[0] else label
            self.progress.update(task, advance=n, description=text)

        return update


class QuietProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add(self, label: str, total: int) -> Callable[..., None]:
        return lambda n, failed=0: None
