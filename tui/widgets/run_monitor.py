"""Follows one run directory: status line, loss chart, live log, stop.

The run is a separate process; this widget asks a ``RunFollower`` (core/follower.py, the same
follow loop as ``sft-wizard run`` and ``attach``) for new events on a timer, in batches
(coalesced: one chart redraw and one log write per tick, however many lines arrived). Everything
the status line shows is the follower's fold of the events (``RunState``), never the clock.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from sftwizard.core.event_lines import as_float, event_line, gpu_text
from sftwizard.core.metrics import format_duration
from sftwizard.core.run_model import FINAL_STATUSES, RESUMABLE_STATUSES, Kind, RunState, Status

from .. import services
from .log_pane import LogPane
from .loss_chart import LossChart
from .phase_bar import PhaseBar

TICK_S = 0.25
STOPPING = "stopping"  # asked to stop, not ended yet (this viewer's own status)


def efficiency_parts(s: RunState) -> list[str]:
    """Trained tokens/s, padding share and MFU, for the fields the run's log events carried."""
    parts = []
    if s.trained_tokens_per_s is not None:
        parts.append(f"trained {s.trained_tokens_per_s:,.0f} tok/s")
    if s.padding_share is not None:
        parts.append(f"padding {s.padding_share * 100:.1f}%")
    if s.mfu is not None:
        parts.append(f"MFU {s.mfu * 100:.1f}%")
    elif s.has_mfu:
        parts.append("MFU n/a" + ("" if s.gpu else " on CPU"))
    return parts


class RunMonitor(Vertical):
    """Give it a run directory with ``follow``; it shows the run until its ``end`` event."""

    DEFAULT_CSS = """
    RunMonitor { height: 1fr; }
    RunMonitor > #run-stats { height: auto; padding: 0 1; background: $boost; }
    RunMonitor > #run-panes { height: 1fr; }
    """

    class Resumed(Message):
        """The run was resumed from a checkpoint: a new process now writes its events."""

        def __init__(self, monitor: "RunMonitor") -> None:
            super().__init__()
            self.monitor = monitor

    class Ended(Message):
        """The run reached its end (finished, stopped, failed or lost)."""

        def __init__(self, monitor: "RunMonitor", status: str) -> None:
            super().__init__()
            self.monitor = monitor
            self.status = status

    class SamplesArrived(Message):
        """``sample`` events (answers to held-out prompts) read in this tick, for the Samples tab."""

        def __init__(self, monitor: "RunMonitor", events: list[dict]) -> None:
            super().__init__()
            self.monitor = monitor
            self.events = events

    status: reactive[str] = reactive("idle")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_dir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._follower = None  # core.follower.RunFollower
        self._timer = None
        self._resuming = False  # a resume is being checked and started (one at a time)
        self._stop_asked = False
        self._shown: str | None = None
        self._ended_phases: dict[str, float] = {}  # phases ended before training, for one log line

    @property
    def stats(self) -> RunState:
        """The run's state: the fold of the events read so far."""
        return self._follower.state if self._follower is not None else RunState()

    def compose(self) -> ComposeResult:
        yield Static("no run yet", id="run-stats")
        yield PhaseBar(id="run-phase")
        with Vertical(id="run-panes"):
            yield LossChart(id="loss-chart")
            yield LogPane(id="run-log")

    def follow(self, run_dir: Path, process: subprocess.Popen | None = None, *, resumed: bool = False) -> None:
        """Rebuild the run's history from its directory, then follow it live. ``resumed``: ``process``
        continues it, so the history's last end is not the run's (until the process says or exits)."""
        self.run_dir = Path(run_dir)
        self.process = process
        self._follower = services.follow_run(self.run_dir, process, resumed=resumed)
        self._stop_asked = False
        self._shown = None  # the follower's status last drawn
        self._ended_phases = {}
        self.query_one(LossChart).clear_points()
        self.query_one(LogPane).clear()
        self.status = "starting"
        self.tick()
        if self._timer is None:
            self._timer = self.set_interval(TICK_S, self.tick)
        else:
            self._timer.resume()

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def request_stop(self) -> bool:
        if self.run_dir is None or self.finished:
            return False
        services.stop_run(self.run_dir)
        self.query_one(LogPane).add_lines(["stop requested: finishing the step and saving a checkpoint…"])
        self._stop_asked = True
        self.status = STOPPING
        self.refresh_stats()
        return True

    def request_resume(self) -> bool:
        """Continue a stopped, failed or lost run from its newest checkpoint (in a thread: it checks
        the model and the fingerprint, then starts the process). False when there is nothing to do."""
        if self._resuming:
            return True  # already on its way
        if self.run_dir is None or self.status not in RESUMABLE_STATUSES:
            return False
        self._resuming = True
        self.query_one(LogPane).add_lines(["resume requested: checking the newest checkpoint…"])
        self.run_worker(lambda run_dir=self.run_dir: services.resume_run(run_dir), name="resume",
                        group="resume", thread=True, exit_on_error=False)
        return True

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        if event.worker.group != "resume" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        event.stop()
        self._resuming = False
        if event.state == WorkerState.SUCCESS:
            launched = event.worker.result
            self.follow(launched.run_dir, launched.process, resumed=True)  # the history, then the new process
            self.post_message(self.Resumed(self))
            return
        error = event.worker.error
        message = str(error) if isinstance(error, services.user_error_types()) else f"resume failed: {error!r}"
        self.query_one(LogPane).add_lines([f"cannot resume: {message}"])
        self.notify(message, severity="error", timeout=8)

    def tick(self) -> None:
        follower = self._follower
        if follower is None:
            return
        events = follower.poll()
        if events or follower.status != self._shown:
            self._shown = follower.status
            self.apply_events(events)
        if follower.done and self._timer is not None and (self.process is None or self.process.poll() is not None):
            self._timer.pause()  # (our child, once reaped)

    def apply_events(self, events: list[dict]) -> None:
        """Draw what ``events`` add (chart points, log lines, samples) and the follower's status."""
        train, evals, lines, samples = [], [], [], []
        for ev in events:
            kind = ev.get("event")
            if kind == Kind.SAMPLE:
                samples.append(ev)
            elif kind == Kind.PHASE:
                line = self._phase_log_line(ev)
                if line:
                    lines.append(line)
                continue  # the bar shows the phase under way; the log one line of what came before training
            elif kind in (Kind.START, Kind.RESUME):
                self._ended_phases = {}
            elif kind == Kind.LOG:
                loss = as_float(ev.get("loss"))
                if loss is not None and math.isfinite(loss):  # a NaN is told in the log and the status, not drawn
                    train.append((float(ev.get("step") or 0), loss))
            elif kind == Kind.EVAL:
                loss = as_float(ev.get("eval_loss"))
                if loss is not None and math.isfinite(loss):
                    evals.append((float(ev.get("step") or 0), loss))
            elif kind == Kind.END and ev.get("final_dir"):
                lines.append(f"model saved: {ev['final_dir']}")
            line = event_line(ev, live_stats=False)
            if line:
                lines.append(line)
        if train or evals:
            chart = self.query_one(LossChart)
            chart.add(train, evals)
            chart.replot()
        if lines:
            self.query_one(LogPane).add_lines(lines)
        if samples:
            self.post_message(self.SamplesArrived(self, samples))
        status = self._follower.status if self._follower is not None else self.status
        if status in FINAL_STATUSES:
            if status != self.status:
                self._set_end(status)
        else:
            self.status = STOPPING if self._stop_asked and status == Status.RUNNING else status
        self.refresh_stats()

    def _phase_log_line(self, ev: dict) -> str | None:
        """"ready to train after download 3m12s · tokenize 4s · load 41s" when training begins
        (one line however many phases came first); None for every other phase event."""
        if ev.get("state") == "end" and isinstance(ev.get("duration_s"), (int, float)):
            self._ended_phases[str(ev.get("phase"))] = float(ev["duration_s"])
        if ev.get("state") != "begin" or ev.get("phase") != "train" or not self._ended_phases:
            return None
        parts = " · ".join(f"{name} {format_duration(sec)}" for name, sec in self._ended_phases.items())
        self._ended_phases = {}
        return f"ready to train after {parts}"

    def _set_end(self, status: str) -> None:
        self.status = status
        message = self._follower.message if self._follower is not None else None
        if message:
            self.query_one(LogPane).add_lines([f"{status}: {message}"])
        self.post_message(self.Ended(self, status))

    def refresh_stats(self) -> None:
        s = self.stats
        gpu = gpu_text(s.gpu) if s.gpu else None
        parts = [f"[b]{self.status}[/b]", f"step {s.step or 0}/{s.max_steps or '?'}"]
        if s.loss is not None:
            parts.append(f"loss {s.loss:.4f}")
        if s.eval_loss is not None:
            parts.append(f"eval {s.eval_loss:.4f}")
        if s.learning_rate is not None:
            parts.append(f"lr {s.learning_rate:.2e}")
        if s.tokens_per_s:
            parts.append(f"{s.tokens_per_s:,.0f} tok/s")
        elif s.samples_per_s:
            parts.append(f"{s.samples_per_s:,.1f} samples/s")
        parts += efficiency_parts(s)
        if not self.finished:
            parts.append(f"ETA {format_duration(s.eta_s)}")
        parts.append(f"GPU {gpu}" if gpu else "CPU")
        text = " · ".join(parts)
        warning = s.warning.get("message") if s.warning and self.status != "starting" else None
        if warning:
            text += f"\n[$warning]⚠ {escape(str(warning))}[/]"
        message = self._follower.message if self._follower is not None else None
        if message and self.finished and self.status != Status.FINISHED:
            text += f"\n[$error]{escape(message)}[/]"
        self.query_one("#run-stats", Static).update(text)
        self.query_one(PhaseBar).show(None if self.finished or self.status == "starting" else s.phase)
