"""Progress for long commands: a rich bar with count, rate and ETA, or a spinner with elapsed time, on
stderr; silent when stderr is not a terminal or with ``--quiet``.

Library functions never print: they take an optional ``progress`` callback, called as
``progress(done, total)`` after each unit of work (:data:`ProgressCallback`). The CLI passes the
callback that :func:`progress_bar` yields.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` of ``total`` units of work finished."""


def enabled(quiet: bool = False) -> bool:
    """Whether to draw progress: not with ``--quiet``, and only when stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def _noop(done: int, total: Optional[int] = None, description: Optional[str] = None) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A bar for one phase of work; yields ``update(done, total=None, description=None)``, usable as a
    :data:`ProgressCallback`. Shows done/total, rate (units/s), elapsed time and the estimated time left."""
    if not enabled(quiet):
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("- /s", style="progress.data.speed")
            return Text(f"{speed:.2f}/s" if speed >= 0.1 else f"{1 / speed:.0f} s each", style="progress.data.speed")

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: Optional[int] = None, description: Optional[str] = None) -> None:
            kwargs = {"completed": done}
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            bar.update(task, **kwargs)

        yield update


@contextmanager
def status(description: str, *, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time for work that cannot be counted (loading a model, one long call);
    yields ``say(message)``, which replaces the description (e.g. a model loader's messages)."""
    if not enabled(quiet):
        yield lambda message: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda message: bar.update(task, description=f"{description}: {message}")
