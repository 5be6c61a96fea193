"""Phases of a training process as ``phase`` events: what it is doing before (and after) steps.

A run spends minutes before its first step on a fresh box — downloading weights, loading and
quantizing them, tokenizing the data — and after its last one saving (and merging). Each of
those is a phase: ``begin``, ``progress`` events while it moves, and ``end`` with its duration.
Progress is rate-limited: one event per ``interval`` at most (2 a second by default), and one at
least every ``interval`` while the count moves, so viewers see it move without the file growing
by a line per row. ``durations()`` gives the seconds per phase for the ``summary`` and ``end``.

Event fields (README's event table): ``phase`` (a name of PHASES), ``state`` (begin | progress |
end), ``done``, ``total`` (None when unknown), ``unit`` (a name of UNITS), ``rate`` (units per
second over the phase so far), ``eta_s`` and, on ``end``, ``duration_s``.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Literal, get_args

from .run_model import Kind

PhaseName = Literal["download", "load", "quantize", "tokenize", "pack", "train", "save", "merge"]
PHASES: tuple[str, ...] = get_args(PhaseName)
Unit = Literal["bytes", "files", "shards", "rows", "steps"]
UNITS: tuple[str, ...] = get_args(Unit)
STATES = ("begin", "progress", "end")

PROGRESS_INTERVAL_S = 0.5  # at most 2 progress events a second per phase


class Phase:
    """One phase in progress. ``update(done)`` from any thread; ``end()`` once."""

    def __init__(self, reporter: "PhaseReporter", name: str, total: int | None, unit: str,
                 what: str | None = None) -> None:
        self.reporter = reporter
        self.name = name
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self.initial = 0  # what was done before this process (a resumed run's steps): not in the rate
        self.started = reporter.clock()
        self.ended: float | None = None
        self._last_emit = self.started
        self._lock = threading.Lock()

    def fields(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.done - self.initial) / elapsed if self.done > self.initial else 0.0
        eta = None
        if self.total and rate > 0 and self.done <= self.total:
            eta = round((self.total - self.done) / rate, 1)
        return {"phase": self.name, "done": self.done, "total": self.total, "unit": self.unit,
                "rate": round(rate, 3), "eta_s": eta, "elapsed_s": round(now - self.started, 3),
                **({"what": self.what} if self.what else {})}

    def update(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """The count so far (never goes back: a smaller number is ignored)."""
        with self._lock:
            if self.ended is not None:
                return
            if total is not None:
                self.total = total
            if done <= self.done and not force:
                return
            self.done = max(self.done, int(done))
            now = self.reporter.clock()
            if not force and now - self._last_emit < self.reporter.interval:
                return
            self._last_emit = now
            self.reporter.emit(state="progress", **self.fields(now))

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def end(self) -> float:
        """Close the phase (its count to total when known); returns its duration in seconds."""
        with self._lock:
            if self.ended is not None:
                return self.ended - self.started
            now = self.reporter.clock()
            self.ended = now
            if self.total is not None and self.done < self.total:
                self.done = self.total
            duration = round(now - self.started, 3)
            self.reporter.finished(self, duration)
            self.reporter.emit(state="end", duration_s=duration, **self.fields(now))
            return duration

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end()


class PhaseReporter:
    """Writes ``phase`` events through ``emit(event, step=None, **fields)`` (an EventWriter)."""

    def __init__(self, emit: Callable[..., Any] | None, *, interval: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._emit = emit
        self.interval = interval
        self.clock = clock
        self._durations: dict[str, float] = {}
        self._open: dict[str, Phase] = {}

    def begin(self, name: str, total: int | None = None, unit: str = "steps", what: str | None = None,
              done: int = 0) -> Phase:
        """Open a phase; ``what`` names its object when a run has several (the dataset downloaded);
        ``done`` is where it starts (a resumed run's steps)."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r} (one of {', '.join(PHASES)})")
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} (one of {', '.join(UNITS)})")
        phase = Phase(self, name, total, unit, what)
        phase.done = phase.initial = int(done)
        self._open[name] = phase
        self.emit(state="begin", **phase.fields(phase.started))
        return phase

    def emit(self, **fields: Any) -> None:
        if self._emit is not None:
            self._emit(Kind.PHASE, step=None, **fields)

    @contextmanager
    def active(self):
        """Make this the reporter that code deep in the call (a Hub dataset's reader) reports to."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def finished(self, phase: Phase, duration: float) -> None:
        self._open.pop(phase.name, None)
        self._durations[phase.name] = round(self._durations.get(phase.name, 0.0) + duration, 3)

    def durations(self) -> dict[str, float]:
        """Seconds per phase, in the order they ran; a phase still open counts up to now."""
        out = dict(self._durations)
        now = self.clock()
        for name, phase in self._open.items():
            out[name] = round(out.get(name, 0.0) + now - phase.started, 3)
        return out


_ACTIVE: ContextVar[PhaseReporter | None] = ContextVar("sftwizard_phases", default=None)


def active_reporter() -> PhaseReporter | None:
    """The reporter of the training process in this context (None in the TUI, the CLI's inspect…)."""
    return _ACTIVE.get()


def current_phase(events: list[dict]) -> dict | None:
    """The latest ``phase`` event of a phase not yet ended (what a viewer shows now), or None."""
    for ev in reversed(events):
        if ev.get("event") in (Kind.START, Kind.RESUME, Kind.END):
            return None
        if ev.get("event") == Kind.PHASE:
            return ev if ev.get("state") != "end" else None
    return None
