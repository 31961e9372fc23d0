"""A run's progress on a terminal: one live line per phase (pull, reconcile, push of each provider).

Each line shows what is done so far and the rate. Drawn with rich on stderr,
only when stderr is a terminal; otherwise the engine gets nothing to report to.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from syncd.sync.progress import Progress as EngineProgress

__all__ = ["TerminalProgress", "terminal_progress"]


class _Rate(ProgressColumn):
    """Items per second over the last moments (rich keeps the samples)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


class TerminalProgress:
    """The engine's :class:`~syncd.sync.progress.Progress`, drawn live on stderr."""

    def __init__(self, console: Console | None = None) -> None:
        self._bar = Progress(SpinnerColumn(), TextColumn("{task.description:<24}"),
                             TextColumn("{task.completed:>10,.0f} done"), _Rate(), TimeElapsedColumn(),
                             console=console or Console(stderr=True), transient=False)
        self._tasks: dict[str, TaskID] = {}
        self._bar.start()

    def update(self, phase: str, done: int) -> None:
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._bar.add_task(phase, total=None)
        self._bar.update(task, completed=done)

    def close(self) -> None:
        for task in self._tasks.values():
            self._bar.stop_task(task)
        self._bar.stop()


def terminal_progress() -> EngineProgress | None:
    """Live progress when a person watches stderr, else None (the engine stays silent)."""
    return TerminalProgress() if sys.stderr.isatty() else None
