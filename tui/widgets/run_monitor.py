"""Follows one run directory: status line, loss chart, live log, stop.

The run is a separate process; this widget only reads ``events.jsonl`` on a timer, in
batches (coalesced: one chart redraw and one log write per tick, however many lines arrived).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static

from sftwizard.core.event_lines import as_float, event_line, gpu_text
from sftwizard.core.metrics import format_duration

from .. import services
from .log_pane import LogPane
from .loss_chart import LossChart
from .phase_bar import PhaseBar

TICK_S = 0.25


@dataclass
class RunStats:
    """What the events say so far (every field comes from the file, never the clock)."""

    status: str = "starting"
    step: int = 0
    max_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    # efficiency fields of log events (docs/efficiency.md), when the runner sends them
    trained_tokens_per_s: float | None = None
    padding_share: float | None = None
    mfu: float | None = None
    has_mfu: bool = False  # the runner reported MFU (None there: no known peak, e.g. on CPU)
    gpu_mem: str | None = None
    samples_per_s: float | None = None
    reported_eta_s: float | None = None  # the runner's own ETA, when it sends one
    reason: str | None = None
    warning: str | None = None  # the curve doctor's latest warning
    first_log: tuple[float, int] | None = None  # (time, step)
    last_time: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    phase: dict | None = None  # the latest event of the phase under way (download, load … train)
    phase_times: dict[str, float] = field(default_factory=dict)  # phases ended before training, in seconds

    @property
    def eta_s(self) -> float | None:
        if self.reported_eta_s is not None:
            return self.reported_eta_s
        if not (self.first_log and self.last_time and self.max_steps and self.step > self.first_log[1]):
            return None
        rate = (self.step - self.first_log[1]) / max(1e-9, self.last_time - self.first_log[0])
        return (self.max_steps - self.step) / rate if rate > 0 else None


def efficiency_parts(s: RunStats) -> list[str]:
    """Trained tokens/s, padding share and MFU, for the fields the run's log events carried."""
    parts = []
    if s.trained_tokens_per_s is not None:
        parts.append(f"trained {s.trained_tokens_per_s:,.0f} tok/s")
    if s.padding_share is not None:
        parts.append(f"padding {s.padding_share * 100:.1f}%")
    if s.mfu is not None:
        parts.append(f"MFU {s.mfu * 100:.1f}%")
    elif s.has_mfu:
        parts.append("MFU n/a" + ("" if s.gpu_mem else " on CPU"))
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
        self.stats = RunStats()
        self._tail = None
        self._timer = None
        self._resuming = False  # a resume is being checked and started (one at a time)
        self._replaying = False  # rebuilding a resumed run's history: its old end is not news

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
        self.stats = RunStats()
        self.query_one(LossChart).clear_points()
        self.query_one(LogPane).clear()
        self._tail = services.new_tail(self.run_dir)
        self.status = "starting"
        self._replaying = resumed
        try:
            self.tick()
        finally:
            self._replaying = False
        if resumed and self.finished:  # the old segment's end: the new process has not spoken yet
            self.stats.status, self.stats.reason, self.stats.warning = "starting", None, None
            self.status = "starting"
            self.refresh_stats()
        if self._timer is None:
            self._timer = self.set_interval(TICK_S, self.tick)
        else:
            self._timer.resume()

    @property
    def finished(self) -> bool:
        return self.status in ("finished", "stopped", "failed", "lost")

    def request_stop(self) -> bool:
        if self.run_dir is None or self.finished:
            return False
        services.stop_run(self.run_dir)
        self.query_one(LogPane).add_lines(["stop requested: finishing the step and saving a checkpoint…"])
        self.status = "stopping"
        self.refresh_stats()
        return True

    def request_resume(self) -> bool:
        """Continue a stopped, failed or lost run from its newest checkpoint (in a thread: it checks
        the model and the fingerprint, then starts the process). False when there is nothing to do."""
        if self._resuming:
            return True  # already on its way
        if self.run_dir is None or not self.finished or self.status == "finished":
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
        if self._tail is None:
            return
        events = self._tail.poll()
        if events:
            self.apply_events(events)
        if not self.finished and self._process_gone():
            for_late = self._tail.poll()  # the end event may have landed just now
            if for_late:
                self.apply_events(for_late)
            if not self.finished:
                code = self.process.returncode if self.process is not None else None
                self.stats.reason = (f"the training process exited (code {code}) without an end event; see train.log"
                                     if code is not None else "the training process is gone without an end event")
                self._set_end("failed" if code else "lost")
        if self.finished and self._timer is not None:
            if self.process is not None and self.process.poll() is None:
                return  # a resumed run: its history ends "stopped" until the new process speaks
            late = self._tail.poll()
            if late:
                self.apply_events(late)
            if self.finished:
                self._timer.pause()

    def _process_gone(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None  # our child: this also reaps it
        if self.run_dir is None:
            return False
        try:
            return not services.run_alive(self.run_dir)
        except Exception:  # an engine without run management: assume alive until the end event
            return False

    def apply_events(self, events: list[dict]) -> None:
        s = self.stats
        train, evals, lines, samples = [], [], [], []
        for ev in events:
            kind = ev.get("event")
            if kind == "sample":
                samples.append(ev)
            if ev.get("time") is not None:
                s.last_time = float(ev["time"])
            if ev.get("step") is not None:
                s.step = int(ev["step"])
            if ev.get("max_steps"):
                s.max_steps = int(ev["max_steps"])
            if kind == "phase":
                s.phase = None if ev.get("state") == "end" else ev
                line = self._phase_log_line(ev)
                if line:
                    lines.append(line)
                continue  # the bar shows the phase under way; the log one line of what came before training
            if kind in ("start", "resume"):  # a new process: whatever ended before is history
                s.status, s.reason, s.warning = "running", None, None
                s.phase, s.phase_times = None, {}
                s.first_log = None  # the ETA's rate starts again with the new process
            elif kind in ("prepared", "train_begin") and s.status in ("starting", "idle"):
                s.status = "running"
            elif kind == "log":
                s.status = "running" if s.status != "stopping" else s.status
                loss = as_float(ev.get("loss"))
                if loss is not None:
                    s.loss = loss
                    if math.isfinite(loss):  # a NaN is told in the log and the status, not drawn
                        train.append((float(ev.get("step") or 0), loss))
                if ev.get("learning_rate") is not None:
                    s.learning_rate = as_float(ev["learning_rate"])
                if ev.get("tokens_per_s"):
                    s.tokens_per_s = as_float(ev["tokens_per_s"])
                if ev.get("trained_tokens_per_s") is not None:
                    s.trained_tokens_per_s = as_float(ev["trained_tokens_per_s"])
                if ev.get("padding_share") is not None:
                    s.padding_share = as_float(ev["padding_share"])
                if "mfu" in ev:
                    s.has_mfu = True
                    s.mfu = as_float(ev["mfu"])
                if s.first_log is None and ev.get("time") is not None:
                    s.first_log = (float(ev["time"]), int(ev.get("step") or 0))
                if ev.get("samples_per_s"):
                    s.samples_per_s = as_float(ev["samples_per_s"])
                if "eta_s" in ev:
                    s.reported_eta_s = as_float(ev["eta_s"])
                s.gpu_mem = gpu_text(ev) or s.gpu_mem  # sampled through NVML by the runner
            elif kind == "eval" and as_float(ev.get("eval_loss")) is not None:
                s.eval_loss = as_float(ev["eval_loss"])
                if math.isfinite(s.eval_loss):
                    evals.append((float(ev.get("step") or 0), s.eval_loss))
            elif kind == "warning" and ev.get("message"):
                s.warning = str(ev["message"])
            elif kind == "error":
                s.reason = ev.get("message") or ev.get("reason")
            elif kind == "end":
                s.phase = None
                if ev.get("message"):
                    s.reason = ev["message"]
                if ev.get("final_dir"):
                    lines.append(f"model saved: {ev['final_dir']}")
                s.status = str(ev.get("status") or "finished")
            line = event_line(ev, live_stats=False)
            if line:
                lines.append(line)
        chart = self.query_one(LossChart)
        chart.add(train, evals)
        chart.replot()
        self.query_one(LogPane).add_lines(lines)
        if samples:
            self.post_message(self.SamplesArrived(self, samples))
        if s.status != self.status:
            if s.status in ("finished", "stopped", "failed", "lost"):
                self._set_end(s.status)
            else:
                self.status = s.status
        self.refresh_stats()

    def _phase_log_line(self, ev: dict) -> str | None:
        """"ready to train after download 3m12s · tokenize 4s · load 41s" when training begins
        (one line however many phases came first); None for every other phase event."""
        s = self.stats
        if ev.get("state") == "end" and isinstance(ev.get("duration_s"), (int, float)):
            s.phase_times[str(ev.get("phase"))] = float(ev["duration_s"])
        if ev.get("state") != "begin" or ev.get("phase") != "train" or not s.phase_times:
            return None
        parts = " · ".join(f"{name} {format_duration(sec)}" for name, sec in s.phase_times.items())
        s.phase_times = {}
        return f"ready to train after {parts}"

    def _set_end(self, status: str) -> None:
        self.stats.status = status
        self.status = status
        self.refresh_stats()
        if self._replaying:
            return  # a resumed run's earlier end, met while rebuilding its history
        if self.stats.reason:
            self.query_one(LogPane).add_lines([f"{status}: {self.stats.reason}"])
        self.post_message(self.Ended(self, status))

    def refresh_stats(self) -> None:
        s = self.stats
        parts = [f"[b]{s.status}[/b]", f"step {s.step}/{s.max_steps or '?'}"]
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
        parts.append(f"GPU {s.gpu_mem}" if s.gpu_mem else "CPU")
        text = " · ".join(parts)
        if s.warning:
            text += f"\n[$warning]⚠ {escape(s.warning)}[/]"
        if s.reason and self.finished and s.status != "finished":
            text += f"\n[$error]{escape(s.reason)}[/]"
        self.query_one("#run-stats", Static).update(text)
        self.query_one(PhaseBar).show(None if self.finished else s.phase)
