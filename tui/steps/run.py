"""Step 8 — launch the training process and follow it: log, loss chart, lr, tokens/s, ETA, stop."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Static

from .base import Step, WizardContext


class RunStep(Step):
    title = "Run"
    step_id = "run"
    needs = "Training runs as its own process: it goes on if you quit or lose SSH (see ctrl+r Runs)."

    class Changed(Step.Changed):
        pass

    class LaunchRequested(Message):
        pass

    def compose(self) -> ComposeResult:
        yield Static("", id="run-summary")
        with Horizontal(classes="row", id="launch-row"):
            yield Button("Launch training", id="launch", variant="primary", compact=True)
        yield Static("", id="run-placeholder")

    def first_focus(self):
        button = self.query_one("#launch", Button)
        return button if not button.disabled else None

    def show_context(self, context: WizardContext) -> None:
        from textual.markup import escape

        cfg = context.config
        t = cfg.training
        length = f"{t.max_steps} steps" if t.max_steps and t.max_steps > 0 else f"{t.num_train_epochs:g} epoch(s)"
        self.query_one("#run-summary", Static).update(
            f"Ready: [b]{escape(cfg.model.id)}[/b] · {cfg.method.type} · {length} · "
            f"batch {t.per_device_train_batch_size}×{t.gradient_accumulation_steps}. Press Enter to launch.")

    @property
    def monitor(self):
        from ..widgets.run_monitor import RunMonitor

        found = self.query(RunMonitor)
        return found.first() if found else None

    async def show_run(self, run_dir, process=None):
        """Mount the monitor (plotext loads only now, not at start-up) and follow the run."""
        from ..widgets.run_monitor import RunMonitor

        monitor = self.monitor
        if monitor is None:
            monitor = RunMonitor(id="run-monitor")
            await self.query_one("#run-placeholder").remove()
            await self.mount(monitor)
        self.query_one("#launch", Button).disabled = True
        self.query_one("#run-summary", Static).update(f"Run [b]{run_dir.name}[/b] — s: stop · u: resume · ctrl+r: all runs")
        monitor.follow(run_dir, process)
        return monitor

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            event.stop()
            self.post_message(self.LaunchRequested())

    def action_stop(self) -> None:
        monitor = self.monitor
        if monitor is None or not monitor.request_stop():
            self.notify("No run to stop.", severity="warning")

    def action_resume(self) -> None:
        monitor = self.monitor
        if monitor is None or not monitor.request_resume():
            self.notify("No stopped, failed or lost run to resume here.", severity="warning")

    def on_run_monitor_resumed(self, event) -> None:
        self.query_one("#launch", Button).disabled = True

    def on_run_monitor_ended(self, event) -> None:
        self.query_one("#launch", Button).disabled = False
        self.query_one("#launch", Button).label = "Launch again"
