"""Following a run: tail its ``events.jsonl``, fold what arrives, and watch its processes.

:class:`RunFollower` is the one follow loop: ``sft-wizard run`` and ``resume`` (following the
process they started), ``attach`` and the TUI's Run screen all call ``poll()`` on a timer and
read ``status``, ``reason``, ``message`` and ``state`` (a :class:`~.run_model.RunState`).

Liveness: the caller's own child process when it has one (``Popen.poll``, which also reaps it),
else the run's lock (``runs.is_alive``). Whether it lives is asked *before* the file is read, so
an ``end`` written just before the process went is always seen. A process gone without an
``end`` makes the run ``failed`` (its exit code known: a crash) or ``lost``.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Callable, Iterator

from .events import EventTail
from .run_model import Reason, RunState, Status
from .rundir import RunDir

STARTING = "starting"  # a viewer's status before the run's (new) process has written anything


class RunFollower:
    """``poll()`` returns the events appended since the last call, folded into ``state``;
    ``done`` once the process wrote its ``end`` or is gone.

    ``process``: the run's supervisor when this caller started it. ``from_start``: False to
    return only events written from now on (the history is still folded into ``state``).
    ``resumed``: ``process`` continues a run whose history ends with an ``end``; that end is not
    this process's outcome, which is awaited."""

    def __init__(self, run_dir: str | os.PathLike, process: subprocess.Popen | None = None, *,
                 from_start: bool = True, resumed: bool = False) -> None:
        self.run = RunDir(run_dir)
        self.process = process
        self.state = RunState()
        self.tail = EventTail(self.run.events)
        self.gone = False  # the processes are gone without the end of the current one
        self.returncode: int | None = None
        history = self.tail.poll()  # what was written before: folded now, returned by the first poll
        self.state.feed(history)
        self._pending = list(history) if from_start else []
        # A resumed process opens a segment after the history's (it writes its `start`/`resume`
        # only once torch and the config are loaded: seconds after this is made).
        self._segments_before = self.state.segments
        self.awaiting_start = resumed

    # ------------------------------------------------------------------ reading

    def alive(self) -> bool:
        """Whether the run's processes live (our child's exit code is kept when it has gone)."""
        if self.process is not None:
            self.returncode = self.process.poll()
            return self.returncode is None
        from .runs import is_alive

        return is_alive(self.run.path)

    def poll(self) -> list[dict]:
        """The events not returned yet (the history first, with ``from_start``); marks the run
        gone when its processes are gone without its end."""
        if self.done:
            batch, self._pending = self._pending, []  # a run that had ended before: its history
            return batch
        alive = self.alive()  # before reading: an end written meanwhile is then seen
        new = self.tail.poll()
        self.state.feed(new)
        batch, self._pending = self._pending + new, []
        if self.awaiting_start and self.state.segments > self._segments_before:
            self.awaiting_start = False
        if not alive and not self.ended:
            self.gone = True
        return batch

    # ------------------------------------------------------------------ what it says

    @property
    def ended(self) -> bool:
        """The process being followed wrote its ``end``."""
        return self.state.ended and not self.awaiting_start

    @property
    def done(self) -> bool:
        return self.ended or self.gone

    @property
    def crashed(self) -> bool:
        """Gone without an end, with an exit code that says it failed."""
        return self.gone and self.returncode not in (None, 0)

    @property
    def status(self) -> str:
        """starting, running, or the outcome: finished / stopped / failed / lost."""
        if self.gone:
            return Status.FAILED if self.crashed else Status.LOST
        if self.ended:
            return self.state.end_status or Status.FAILED
        if self.awaiting_start or not self.state.started:
            return STARTING
        return Status.RUNNING

    @property
    def reason(self) -> str | None:
        """The outcome's reason code (None while it runs, and for a finished run)."""
        if self.gone:
            return Reason.CRASH if self.crashed else Reason.LOST
        return self.state.seg_end.get("reason") if self.ended else None

    @property
    def message(self) -> str | None:
        """One sentence: the outcome, or while it runs the last error of its process."""
        if self.crashed:
            return f"the training process exited (code {self.returncode}) without an end event"
        if self.gone:
            return self.state.lost_message()
        if self.ended:
            return self.state.seg_end.get("message")
        error = self.state.seg_error if not self.awaiting_start else None
        return error.get("message") if error else None

    @property
    def end(self) -> dict | None:
        """The ``end`` event of the process followed, when written."""
        return self.state.seg_end if self.ended else None


def follow(ref: str | os.PathLike, interval: float = 0.5,
           stop: Callable[[], bool] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Batches of events: the whole history first, then new ones as they are written, until the
    run writes its end or its processes are gone (or ``stop()`` says so). A loop over
    :class:`RunFollower`, for scripts; a viewer on a timer calls its ``poll()`` itself."""
    from .runs import find_run

    follower = RunFollower(find_run(ref))
    while True:
        batch = follower.poll()
        if batch:
            yield batch
        if follower.done or (stop is not None and stop()):
            return
        time.sleep(interval)
