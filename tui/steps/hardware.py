"""Step 1 — the machine, and where to start from (a shipped or saved preset)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Label, Select, Static

from .. import services
from ..widgets.gpu_panel import GpuPanel
from .base import Step, WizardContext


class HardwareStep(Step):
    title = "Hardware"
    step_id = "hardware"
    needs = "What this machine can train with. Start from a preset, or press Enter to go on with the CPU demo."

    class Changed(Step.Changed):
        pass

    class PresetChosen(Message):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    def compose(self) -> ComposeResult:
        with Horizontal(id="preset-row", classes="row"):
            yield Label("Start from preset", classes="row-label")
            yield Select(self._preset_options(), prompt="choose a preset", compact=True, id="preset-select")
        yield Static("", id="preset-note", classes="muted")
        yield Static("[b]This machine[/b]", classes="section")
        yield GpuPanel(id="gpu-panel")

    def _preset_options(self) -> list[tuple[str, str]]:
        try:
            presets = services.list_presets()
        except Exception:  # an unreadable presets folder must not stop the wizard
            self._preset_paths = []
            return []
        out = []
        self._preset_paths = [p.path for p in presets]
        for p in presets:
            label = f"{p.name} ({p.origin}, {p.method})"
            if not p.valid:
                label += " — invalid"
            out.append((label, p.path))
        return out

    def refresh_presets(self) -> None:
        select = self.query_one("#preset-select", Select)
        with select.prevent(Select.Changed):
            select.set_options(self._preset_options())
        if self.context is not None:
            self.show_context(self.context)

    def show_context(self, context: WizardContext) -> None:
        select = self.query_one("#preset-select", Select)
        if context.preset_path and context.preset_path != select.value:
            if context.preset_path in self._preset_paths:
                with select.prevent(Select.Changed):
                    select.value = context.preset_path
        desc = ""
        if context.preset_path:
            from pathlib import Path

            desc = f"Loaded: {Path(context.preset_path).stem} — {context.config.model.id}, {context.config.method.type}"
        self.query_one("#preset-note", Static).update(desc)
        panel = self.query_one(GpuPanel)
        panel.error = context.hardware_error or ""
        panel.report = context.hardware

    @on(Select.Changed, "#preset-select")
    def _preset_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL and event.value != (self.context and self.context.preset_path):
            self.post_message(self.PresetChosen(str(event.value)))
