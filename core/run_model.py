"""The run model: what a run's events are (the schema) and what they say about the run (the fold).

The schema: every event ``kind`` (:class:`Kind`), the fields readers compute with and their
types (``FIELD_TYPES``), the statuses a run can be in (:class:`Status`, ``FINAL_STATUSES``), the
failure reason codes (:class:`Reason`) and the kinds that must survive a crash (``DURABLE``).
Every writer (runner, supervisor, ``runs``) and every reader (``runs``, ``report``,
``compare``, the CLI, the TUI) uses these names instead of string literals.

The fold: :class:`RunState` turns a sequence of events into the run's state — status, step,
losses, throughput, phase, the last message and reason — one event at a time (``feed``), so a
viewer on a timer feeds only what was appended. ``fold(events)`` is the pure function over a
whole history. ``sft-wizard runs`` (``RunInfo``), ``attach``/``run``'s outcome lines,
``report``, ``compare`` and the TUI's Run and Runs screens all read it.

Meanings kept apart everywhere: ``reason`` is a short code (``oom``, ``nan``, ``stopped``…),
``message`` one sentence for a person. (``adapt`` events are the one exception the file format
keeps: their ``reason`` is the sentence saying why the fix was chosen.)

This module imports nothing from the engine: anything may import it.
"""

from __future__ import annotations

from typing import Any, Iterable


class Kind:
    """Event kinds (the ``event`` field)."""

    START = "start"  # a fresh training process: pid, run_dir, model, method, fingerprint
    RESUME = "resume"  # a training process continuing from a checkpoint: same fields + resume_from
    PHASE = "phase"  # download, load, tokenize … train, save: phase, state, done, total, unit, rate, eta_s
    PREPARED = "prepared"  # data and model ready: train_rows, eval_rows, template_source, params
    TRAIN_BEGIN = "train_begin"  # max_steps, samples_per_step, world_size
    LOG = "log"  # a training step's numbers: loss, learning_rate, grad_norm, rates, GPU samples
    EVAL = "eval"  # eval_loss and the trainer's other eval_* metrics
    GPU = "gpu"  # NVML samples between logs
    SAMPLE = "sample"  # an answer to a held-out prompt: prompt_id, text, stopped, new_tokens
    CHECKPOINT = "checkpoint"  # path
    ADAPT = "adapt"  # run.on_oom: adapt changed the config: attempt, old, new, reason (a sentence)
    WARNING = "warning"  # source, code, message, suggested
    SUMMARY = "summary"  # the trainer's final metrics and phase_durations_s
    ERROR = "error"  # reason, message (and returncode, exception)
    END = "end"  # status, reason, message; finished: final_dir, best_checkpoint

    ALL = (START, RESUME, PHASE, PREPARED, TRAIN_BEGIN, LOG, EVAL, GPU, SAMPLE, CHECKPOINT, ADAPT,
           WARNING, SUMMARY, ERROR, END)


class Status:
    """A run's status. ``end`` events carry FINISHED, STOPPED or FAILED; RUNNING and LOST are
    what ``runs`` adds from whether the process lives."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"  # the processes vanished without writing an end (reboot, kill -9 of the group)

    ALL = (RUNNING, FINISHED, STOPPED, FAILED, LOST)


FINAL_STATUSES = frozenset({Status.FINISHED, Status.STOPPED, Status.FAILED, Status.LOST})
RESUMABLE_STATUSES = frozenset({Status.STOPPED, Status.FAILED, Status.LOST})


class Reason:
    """Why a run ended other than finished (``reason`` of ``error`` and ``end`` events)."""

    OOM = "oom"
    NAN = "nan"
    DATA = "data"
    CONFIG = "config"
    MISSING_DEPENDENCY = "missing_dependency"
    KILLED = "killed"
    DISK_FULL = "disk_full"
    CRASH = "crash"
    STOPPED = "stopped"  # stopped on request (graceful)
    LOST = "lost"  # never written: what the fold says of a run gone without an end

    ALL = (OOM, NAN, DATA, CONFIG, MISSING_DEPENDENCY, KILLED, DISK_FULL, CRASH, STOPPED, LOST)


# Failures that are the user's input, not a crash: the CLI exits with code 2 as for any bad input.
USER_REASONS = frozenset({Reason.CONFIG, Reason.DATA})
# A new training process (a segment of the run's life) begins with one of these.
SEGMENT_STARTS = frozenset({Kind.START, Kind.RESUME})
# Written before the trainer knows its step: their step says nothing about progress.
PLACEHOLDER_STEPS = frozenset({Kind.START, Kind.PREPARED})
# Events after which a crash must not lose the line (fsync).
DURABLE = frozenset({Kind.START, Kind.CHECKPOINT, Kind.END, Kind.ERROR, Kind.RESUME})

# What readers rely on, by field: the writers keep to it (core/events.py skips lines that don't).
_INT = (int,)
_NUMBER_OR_TEXT = (int, float, str)  # a non-finite value is written as "nan" / "inf" / "-inf"
_TEXT = (str,)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("step", "max_steps", "pid", "returncode", "train_rows", "eval_rows", "samples_per_step",
                     "trainable_params", "total_params", "prompt_id", "new_tokens", "attempt", "max_attempts"),
                    _INT),
    **dict.fromkeys(("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "num_tokens", "tokens_per_s",
                     "samples_per_s", "steps_per_s", "eta_s", "gpu_mem_gib", "gpu_mem_total_gib", "gpu_util_pct",
                     "gpu_power_w", "cuda_max_allocated_gib", "trained_tokens_per_s", "padding_share", "mfu",
                     "best_eval_loss", "duration_s", "generation_s"), _NUMBER_OR_TEXT),
    **dict.fromkeys(("status", "reason", "message", "path", "model", "method", "resume_from", "best_checkpoint",
                     "final_dir", "template_source", "code", "source", "text", "prompt"), _TEXT),
}


def as_float(value: Any) -> float | None:
    """A number from an event field (``"nan"`` included), or None when it holds none."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_time(ev: dict | None) -> float | None:
    t = ev.get("time") if ev is not None else None
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def segments(events: Iterable[dict]) -> list[list[dict]]:
    """Events grouped per training process (a ``start`` or ``resume`` opens a segment)."""
    out: list[list[dict]] = []
    for ev in events:
        if ev.get("event") in SEGMENT_STARTS or not out:
            out.append([])
        out[-1].append(ev)
    return out


class RunState:
    """A run's state, kept up to date one event at a time: ``feed(events)`` as they are read.
    Holds a few events, never the history, so a run of a million lines folds in one pass in
    constant memory. Whether the process lives is not in the events: ``status(alive)`` and
    ``runs.RunInfo`` take it as an argument."""

    def __init__(self) -> None:
        self.first: dict | None = None  # the first event (start time, model, method)
        self.step: int | None = None  # the last step trained (not the placeholders of start/prepared)
        self.top_step = 0  # the furthest step any event named
        self.max_steps: int | None = None
        self.log: dict | None = None  # the last log with a loss
        self.eval: dict | None = None  # the last eval with an eval loss
        self.checkpoint: dict | None = None
        self.resumes = 0
        self.segments = 0  # training processes so far
        self.closed_duration = 0.0  # seconds of the segments before the current one
        self.seg_first: float | None = None  # the current segment: its first event's time, its last
        self.seg_last: float | None = None
        self.seg_end: dict | None = None  # … its end, when written
        self.seg_error: dict | None = None  # … its last error
        self.seg_log: dict | None = None  # … its last log (the live rates)
        self.seg_first_log: tuple[float, int] | None = None  # … its first log (time, step): the ETA's rate
        self.warning: dict | None = None  # … its last warning
        self.phase: dict | None = None  # … the phase under way (its latest event), None once ended
        self.last_time: float | None = None
        # the latest value of each throughput figure a log carried (a log without one keeps the last)
        self.learning_rate: float | None = None
        self.tokens_per_s: float | None = None
        self.samples_per_s: float | None = None
        self.trained_tokens_per_s: float | None = None
        self.padding_share: float | None = None
        self.mfu: float | None = None
        self.has_mfu = False  # a log reported MFU (None there: no known peak, e.g. on CPU)
        self.gpu: dict | None = None  # the last log with NVML samples
        self.skipped = 0  # complete lines that were not events (core/events.py)

    # ------------------------------------------------------------------ the fold

    def feed(self, events: Iterable[dict]) -> "RunState":
        self.skipped += getattr(events, "skipped", 0)
        for ev in events:
            self._apply(ev)
        return self

    def _apply(self, ev: dict) -> None:
        kind, t = ev.get("event"), event_time(ev)
        if kind in SEGMENT_STARTS or self.segments == 0:
            if self.segments:
                self.closed_duration += self.segment_duration(alive=False, now=0.0)
            self.segments += 1
            self.seg_first, self.seg_end, self.seg_error, self.seg_log = t, None, None, None
            self.seg_first_log, self.warning, self.phase = None, None, None
        if self.first is None:
            self.first = ev
        if self.seg_first is None:
            self.seg_first = t
        if t is not None:
            self.seg_last = self.last_time = t
        step = _int(ev.get("step"))
        if step is not None:
            self.top_step = max(self.top_step, step)
            if kind not in PLACEHOLDER_STEPS:
                self.step = step
        m = _int(ev.get("max_steps"))
        if m is not None and m > 0:
            self.max_steps = m
        if kind == Kind.RESUME:
            self.resumes += 1
        elif kind == Kind.END:
            self.seg_end = ev
            self.phase = None
        elif kind == Kind.ERROR:
            self.seg_error = ev
        elif kind == Kind.WARNING and ev.get("message"):
            self.warning = ev
        elif kind == Kind.PHASE:
            self.phase = ev if ev.get("state") != "end" else None
        elif kind == Kind.LOG:
            self._apply_log(ev, t, step)
        elif kind == Kind.EVAL and as_float(ev.get("eval_loss")) is not None:
            self.eval = ev
        elif kind == Kind.CHECKPOINT:
            self.checkpoint = ev

    def _apply_log(self, ev: dict, t: float | None, step: int | None) -> None:
        self.seg_log = ev
        if ev.get("loss") is not None:
            self.log = ev
        if self.seg_first_log is None and t is not None:
            self.seg_first_log = (t, step or 0)
        if ev.get("learning_rate") is not None:
            self.learning_rate = as_float(ev["learning_rate"])
        for name in ("tokens_per_s", "samples_per_s"):
            if ev.get(name):
                setattr(self, name, as_float(ev[name]))
        for name in ("trained_tokens_per_s", "padding_share"):
            if ev.get(name) is not None:
                setattr(self, name, as_float(ev[name]))
        if "mfu" in ev:
            self.has_mfu, self.mfu = True, as_float(ev["mfu"])
        if ev.get("gpu_mem_gib") is not None:
            self.gpu = ev

    # ------------------------------------------------------------------ what it says

    @property
    def started(self) -> bool:
        """A process wrote at least one event."""
        return self.segments > 0

    @property
    def ended(self) -> bool:
        """The current training process wrote its ``end``."""
        return self.seg_end is not None

    @property
    def end_status(self) -> str | None:
        """The status the current segment's ``end`` recorded (``failed`` for one that names
        none it knows), None while it has written none."""
        if self.seg_end is None:
            return None
        status = self.seg_end.get("status")
        return status if status in FINAL_STATUSES else Status.FAILED

    def status(self, alive: bool) -> str:
        """running while a process of the run lives, else what the current process's end says,
        else lost. (``alive`` is the caller's: a process that wrote its end and is exiting is
        not alive; ``runs.is_alive`` and ``follower.RunFollower`` decide it.)"""
        if alive:
            return Status.RUNNING
        return self.end_status or Status.LOST

    def reason(self, alive: bool) -> str | None:
        """The outcome's reason code (None while running, and for a finished run)."""
        status = self.status(alive)
        if status == Status.RUNNING:
            return None
        if status == Status.LOST:
            return Reason.LOST
        return self.seg_end.get("reason") if self.seg_end is not None else None

    def message(self, alive: bool) -> str | None:
        """One sentence on the outcome: the end's message, or why the run is lost (None while
        running: ``seg_error`` holds an error written meanwhile)."""
        status = self.status(alive)
        if status == Status.RUNNING:
            return None
        if status == Status.LOST:
            return self.lost_message()
        return self.seg_end.get("message") if self.seg_end is not None else None

    def lost_message(self) -> str:
        """Why a run whose processes are gone without an end is lost, in one sentence."""
        where = f"at step {self.step}" if self.step is not None else "before its first step"
        return (f"the training process vanished {where} without an end event "
                "(machine restart, or the whole process group killed)")

    @property
    def last_loss(self) -> float | None:
        """The last logged training loss as written (a float, NaN included; None for "nan" text)."""
        return _number(self.log.get("loss")) if self.log else None

    @property
    def loss(self) -> float | None:
        """The last logged training loss as a float ("nan" text read as NaN)."""
        return as_float(self.log.get("loss")) if self.log else None

    @property
    def eval_loss(self) -> float | None:
        return as_float(self.eval.get("eval_loss")) if self.eval else None

    @property
    def eta_s(self) -> float | None:
        """The current process's ETA: the runner's own, else from its step rate so far."""
        reported = as_float(self.seg_log.get("eta_s")) if self.seg_log is not None else None
        if reported is not None:
            return reported
        if not (self.seg_first_log and self.last_time and self.max_steps and self.step is not None
                and self.step > self.seg_first_log[1]):
            return None
        rate = (self.step - self.seg_first_log[1]) / max(1e-9, self.last_time - self.seg_first_log[0])
        return (self.max_steps - self.step) / rate if rate > 0 else None

    def segment_duration(self, alive: bool, now: float) -> float:
        """Seconds the current process has run: to its end, to ``now`` while alive, else to its
        last event."""
        if self.seg_first is None:
            return 0.0
        end_time = event_time(self.seg_end)
        stop = end_time if end_time is not None else (now if alive else (self.seg_last or self.seg_first))
        return max(0.0, stop - self.seg_first)

    def duration(self, alive: bool, now: float) -> float:
        """Seconds spent in training processes, over all resumes."""
        return self.closed_duration + self.segment_duration(alive, now)

    def current_phase(self) -> dict | None:
        """The phase the process is in, unless it is training (its step says that):
        ``{name, done, total, unit, eta_s}``."""
        ev = self.phase
        if ev is None or ev.get("phase") == "train":
            return None
        return {"name": ev.get("phase"), "done": ev.get("done"), "total": ev.get("total"), "unit": ev.get("unit"),
                "eta_s": ev.get("eta_s")}


def fold(events: Iterable[dict]) -> RunState:
    """The run's state after ``events`` (oldest first)."""
    return RunState().feed(events)
