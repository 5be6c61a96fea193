"""One run, attached: its whole history rebuilt from the run directory, then followed live."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from sftwizard.tui.widgets.run_monitor import RunMonitor


class RunScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop run", id="stop-run"),
        Binding("u", "resume", "Resume", id="resume-run"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, run_dir: Path, process=None, *, resume: bool = False) -> None:
        super().__init__(id="run-screen")
        self.run_dir = Path(run_dir)
        self.process = process
        self.resume_on_mount = resume

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Run {self.run_dir.name}[/b]", id="run-title")
        yield RunMonitor(id="run-monitor")
        yield Footer()

    def on_mount(self) -> None:
        monitor = self.query_one(RunMonitor)
        monitor.follow(self.run_dir, self.process)
        if self.resume_on_mount:
            self.action_resume()

    def action_stop(self) -> None:
        if not self.query_one(RunMonitor).request_stop():
            self.notify("This run is not running.", severity="warning")

    def action_resume(self) -> None:
        monitor = self.query_one(RunMonitor)
        if not monitor.request_resume():
            what = "already finished" if monitor.status == "finished" else "still running"
            self.notify(f"This run is {what}: only a stopped, failed or lost run can be resumed.",
                        severity="warning")
