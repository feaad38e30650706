"""Progress reporting: a small protocol the pipeline calls, and a rich implementation for the CLI."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID


class Progress(Protocol):
    def begin(self, step: str, total: int) -> None: ...

    def advance(self, step: str, amount: int = 1) -> None: ...

    def end(self, step: str) -> None: ...


class Silent:
    """Progress that reports nothing (library use, tests)."""

    def begin(self, step: str, total: int) -> None:
        pass

    def advance(self, step: str, amount: int = 1) -> None:
        pass

    def end(self, step: str) -> None:
        pass


class RichBars:
    """One rich progress bar per long step, drawn on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichBars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def begin(self, step: str, total: int) -> None:
        self._tasks[step] = self._progress.add_task(step, total=total)

    def advance(self, step: str, amount: int = 1) -> None:
        if step in self._tasks:
            self._progress.advance(self._tasks[step], amount)

    def end(self, step: str) -> None:
        if step in self._tasks:
            task = self._tasks[step]
            total = next(t.total for t in self._progress.tasks if t.id == task)
            self._progress.update(task, completed=total or 0)
