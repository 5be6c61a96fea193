"""Ask for a preset name; returns it (or None when cancelled)."""

from __future__ import annotations

import re

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from .. import services

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def name_problem(name: str) -> str | None:
    if not name:
        return "a name is needed"
    if not NAME.match(name):
        return "use letters, digits, '.', '_' or '-' (no spaces or slashes)"
    return None


class SavePresetModal(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel")]

    def __init__(self, name: str) -> None:
        super().__init__(id="save-preset-modal")
        self.initial = name

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("[b]Save as preset[/b]")
            yield Static(f"into {services.user_presets_dir().name}/ in your config folder", classes="muted")
            yield Input(self.initial, placeholder="preset name", id="preset-name", compact=True)
            yield Static("", id="name-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._check(self.initial)

    def _check(self, name: str) -> str | None:
        problem = name_problem(name.strip())
        note = ""
        if problem:
            note = f"[$error]✗ {problem}[/]"
        elif (services.user_presets_dir() / f"{name.strip()}.yaml").exists():
            note = "[$warning]exists: saving replaces it[/]"
        self.query_one("#name-error", Static).update(note)
        self.query_one("#save", Button).disabled = problem is not None
        return problem

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self._save()
        else:
            self.dismiss(None)

    def _save(self) -> None:
        name = self.query_one(Input).value.strip()
        if self._check(name) is None:
            self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
