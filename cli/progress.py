"""How `run` and `attach` print a run's events: a line per event, and one updating line per phase.

On a terminal each ``phase`` (download, load, tokenize, …) is a Rich progress bar that updates
in place, with the other lines printed above it; otherwise (a pipe, a log file, nohup) a phase
prints its begin, a progress line at most every ``PLAIN_EVERY_S`` seconds of the run's time, and
its end. The training phase's progress is left to the ``log`` lines, which carry the step.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from sftwizard.core.event_lines import phase_line, phase_progress_text
from sftwizard.core.run_model import Kind

PLAIN_EVERY_S = 5.0


class EventPrinter:
    """Call with each event, in order; ``close()`` when done (stops the live display)."""

    def __init__(self, format_event: Callable[[dict], str | None], stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.format_event = format_event
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._last_plain: dict[str, float] = {}

    def __call__(self, ev: dict) -> None:
        if ev.get("event") == Kind.PHASE:
            (self._live_phase if self.live else self._plain_phase)(ev)
            return
        line = self.format_event(ev)
        if line:
            self._write(line)

    def _write(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def _plain_phase(self, ev: dict) -> None:
        name, state = ev.get("phase"), ev.get("state")
        if state == "progress":
            when = ev.get("time") or 0.0
            if name == "train" or when - self._last_plain.get(name, float("-inf")) < PLAIN_EVERY_S:
                return
            self._last_plain[name] = when
        elif name == "train" and state == "begin":
            return
        line = phase_line(ev)
        if line:
            self._write(line)

    def _live_phase(self, ev: dict) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description:<9}"), BarColumn(bar_width=30),
                                      TextColumn("{task.fields[detail]}"),
                                      console=Console(file=self.stream), transient=False)
            self._progress.start()
        name = str(ev.get("phase"))
        total = ev.get("total") if isinstance(ev.get("total"), (int, float)) and ev.get("total") else None
        task = self._tasks.get(name)
        if task is None or ev.get("state") == "begin":
            task = self._progress.add_task(name, total=total, detail="")
            self._tasks[name] = task
        detail = (f"done in {phase_line(ev).rsplit(' in ', 1)[-1]}" if ev.get("state") == "end"
                  else phase_progress_text(ev))
        done = ev.get("done") if isinstance(ev.get("done"), (int, float)) else 0
        self._progress.update(task, completed=done, total=total, detail=detail)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
