"""What every wizard step shares: the context it is given, the message it posts, field editing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from textual import on
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Select, Static

from sftwizard.core.config import ConfigError, RunConfig, apply_overrides

from .fields import ConfigField, get_path


@dataclass
class WizardContext:
    """Everything a step shows: the draft, and what the workers found out about it."""

    config: RunConfig
    preset_path: str | None = None
    saved_equal: bool = False  # the preset at preset_path holds exactly this draft
    hardware: Any = None
    hardware_error: str | None = None
    facts: Any = None
    facts_error: str | None = None
    cached_models: list = field(default_factory=list)
    model_choices: list | None = None  # the Model step's rows with fit badges (core.model_catalog.ModelChoice)
    data_report: Any = None
    data_error: str | None = None
    data_progress: tuple | None = None  # (rows done, total) while the token audit runs
    preview: Any = None
    preview_error: str | None = None
    preview_row: int = 0
    estimate: Any = None
    estimate_error: str | None = None
    doctor: list | None = None  # the pre-launch doctor's warnings (dicts), for the whole draft
    busy: frozenset = frozenset()  # worker groups now running
    unavailable: dict = field(default_factory=dict)  # worker group -> why the engine cannot answer yet

    def but(self, **changes: Any) -> "WizardContext":
        return replace(self, **changes)


def problem_severity(problem: Any) -> str:
    if isinstance(problem, dict):
        return str(problem.get("severity") or "error")
    return str(getattr(problem, "severity", "error") or "error")


def problem_text(problem: Any) -> str:
    """One line for a problem given as a string, a dict or an object (line/row, field, message)."""
    if isinstance(problem, str):
        return problem
    get = problem.get if isinstance(problem, dict) else (lambda k, d=None: getattr(problem, k, d))
    where = []
    if get("line") is not None:
        where.append(f"line {get('line')}")
    elif get("row") is not None:
        where.append(f"row {get('row')}")
    if get("field"):
        where.append(str(get("field")))
    msg = get("message") or get("text") or str(problem)
    return (", ".join(where) + ": " if where else "") + str(msg)


class Step(VerticalScroll, can_focus=False):
    """A wizard step. Subclasses set ``title``/``needs``, compose fields, and render ``context``."""

    title: ClassVar[str] = "Step"
    doctor_section: ClassVar[str | None] = None  # which doctor warnings this step shows ("*": all)
    needs: ClassVar[str] = ""
    step_id: ClassVar[str] = "step"

    class Changed(Message):
        """The step made a new draft config."""

        def __init__(self, config: RunConfig) -> None:
            super().__init__()
            self.config = config

    class ValidityChanged(Message):
        """A field became invalid or valid again (the wizard re-checks Next)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(id=kwargs.pop("id", self.step_id), **kwargs)
        self.invalid: dict[str, str] = {}
        self._wizard_context: WizardContext | None = None

    # ------------------------------------------------------------------ attributes down
    # A plain attribute rather than a reactive: steps are created up front but mounted only
    # when first shown (a faster first frame), and an unmounted step just keeps the value.
    @property
    def context(self) -> WizardContext | None:
        return self._wizard_context

    @context.setter
    def context(self, context: WizardContext | None) -> None:
        self._wizard_context = context
        if self.is_mounted:
            self.render_context()

    def on_mount(self) -> None:
        if self.doctor_section and not self.query(".doctor-notes"):
            self.mount(Static("", classes="doctor-notes"))
        self.render_context()

    def render_context(self) -> None:
        context = self._wizard_context
        if context is None:
            return
        for f in self.query(ConfigField):
            f.show_value(get_path(context.config, f.path))
            if not f.error:
                self.invalid.pop(f.path, None)
        self.show_context(context)
        if self.doctor_section:
            self.show_doctor(context)

    def doctor_warnings(self, context: WizardContext) -> list:
        section = self.doctor_section
        return [w for w in (context.doctor or [])
                if section == "*" or str(w.get("setting", "")).split(".", 1)[0] == section]

    def show_doctor(self, context: WizardContext) -> None:
        from textual.markup import escape

        notes = self.query(".doctor-notes")
        if not notes:
            return
        lines = []
        for w in self.doctor_warnings(context):
            line = f"[$warning]⚠[/] {escape(str(w.get('message')))}"
            if w.get("suggested") is not None:
                line += f" [dim]→ {escape(str(w.get('setting')))}: {escape(str(w.get('suggested')))}[/dim]"
            lines.append(line)
        notes.first().update(("[b]Doctor[/b]\n" + "\n".join(lines)) if lines else "")
        notes.first().display = bool(lines)

    def show_context(self, context: WizardContext) -> None:
        """Render what the workers found. Subclasses override."""

    def blocking_reason(self) -> str | None:
        """Why Next is refused right now, or None."""
        if self.invalid:
            path, msg = next(iter(self.invalid.items()))
            return f"{path}: {msg}"
        return None

    def first_focus(self):
        """The widget to focus when the step is shown (None: the Next button)."""
        return None

    # ------------------------------------------------------------------ messages up
    def draft_config(self) -> RunConfig:
        """The newest draft to edit: the wizard's, counting edits posted but not yet handled there, so
        keys typed faster than the messages travel (in one field or across fields) lose nothing."""
        try:
            latest = getattr(self.screen, "latest_draft", None)
        except Exception:  # not on a screen (a step tested alone)
            latest = None
        return latest if latest is not None else self.context.config

    def post_config(self, config: RunConfig) -> None:
        try:
            if hasattr(self.screen, "latest_draft"):
                self.screen.latest_draft = config  # at once: the next key builds on it
        except Exception:
            pass
        self.post_message(self.Changed(config))

    def apply(self, path: str, raw_yaml: str, field_widget: ConfigField | None = None) -> RunConfig | None:
        """Validate one edit through the core schema; show the reason inline or post the new config."""
        if self.context is None:
            return None
        try:
            cfg = apply_overrides(self.draft_config(), [f"{path}={raw_yaml}"])
        except ConfigError as exc:
            # The field's own problems without its path; another field's (a cross-field check) with it.
            message = "; ".join(p.split(": ", 1)[1] if p.startswith(path + ": ") else p for p in exc.problems)
            self.invalid[path] = message
            if field_widget is not None:
                field_widget.error = message
            self.post_message(self.ValidityChanged())
            return None
        if self.invalid.pop(path, None) is not None:
            self.post_message(self.ValidityChanged())
        if field_widget is not None:
            field_widget.error = ""
            field_widget.sent(get_path(cfg, path))
        cfg = self._retry_refused(cfg, path)
        self.post_config(cfg)
        return cfg

    def _retry_refused(self, cfg: RunConfig, edited: str) -> RunConfig:
        """Fields refused only because of another setting (a cross-field check) keep their text; once
        an edit elsewhere makes them valid, they apply too (and their error goes)."""
        cleared = False
        for other in [p for p in self.invalid if p != edited]:
            widget = next((f for f in self.query(ConfigField) if f.path == other), None)
            if widget is None:
                continue
            try:
                raw = widget.raw_value()
                if raw is None:
                    continue
                cfg = apply_overrides(cfg, [f"{other}={raw}"])
            except (ValueError, ConfigError):
                continue
            self.invalid.pop(other, None)
            widget.error = ""
            widget.sent(get_path(cfg, other))
            cleared = True
        if cleared:
            self.post_message(self.ValidityChanged())
        return cfg

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _field_edited(self, event: Message) -> None:
        control = getattr(event, "control", None)
        owner = control.parent if control is not None else None
        while owner is not None and not isinstance(owner, (ConfigField, Step)):
            owner = owner.parent
        if not isinstance(owner, ConfigField) or owner.syncing:
            return
        event.stop()
        try:
            raw = owner.raw_value()
        except ValueError as exc:
            self.invalid[owner.path] = str(exc)
            owner.error = str(exc)
            self.post_message(self.ValidityChanged())
            return
        if raw is None:
            return
        self.apply(owner.path, raw, owner)


def yaml_str(text: str) -> str:
    return json.dumps(text)
