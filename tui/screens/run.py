"""One run, attached: its whole history rebuilt from the run directory, then followed live."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from sftwizard.core.run_model import Status

from ..widgets.run_monitor import RunMonitor
from ..widgets.samples_view import SamplesView


class RunScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop run", id="stop-run"),
        Binding("u", "resume", "Resume", id="resume-run"),
        Binding("a", "toggle_samples", "Samples/Monitor", id="toggle-samples"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, run_dir: Path, process=None, *, resume: bool = False) -> None:
        super().__init__(id="run-screen")
        self.run_dir = Path(run_dir)
        self.process = process
        self.resume_on_mount = resume

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Run {self.run_dir.name}[/b]", id="run-title")
        with TabbedContent(id="run-tabs"):
            with TabPane("Monitor", id="tab-monitor"):
                yield RunMonitor(id="run-monitor")
            with TabPane("Samples", id="tab-samples"):
                yield SamplesView(id="samples-view")
        yield Footer()

    def on_run_monitor_samples_arrived(self, message: RunMonitor.SamplesArrived) -> None:
        self.query_one(SamplesView).add(message.events)

    def action_toggle_samples(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "tab-monitor" if tabs.active == "tab-samples" else "tab-samples"
        if tabs.active == "tab-samples":
            self.query_one(SamplesView).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-samples":
            self.query_one(SamplesView).focus()

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
            what = "already finished" if monitor.status == Status.FINISHED else "still running"
            self.notify(f"This run is {what}: only a stopped, failed or lost run can be resumed.",
                        severity="warning")
