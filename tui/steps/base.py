"""What every wizard step shares: the context it is given, the message it posts, field editing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Select, Static

from sftwizard.core.config import ConfigError, RunConfig, apply_overrides

from .fields import ConfigField, get_path

if TYPE_CHECKING:  # the engine's own types; imported for the checker only (start-up stays light)
    from sftwizard.core.data import DataReport
    from sftwizard.core.data_formats import Problem
    from sftwizard.core.estimator import Estimate
    from sftwizard.core.hardware import HardwareReport
    from sftwizard.core.model_catalog import CachedModel, ModelChoice
    from sftwizard.core.models import ModelFacts
    from sftwizard.core.preview import Preview
    from sftwizard.core.recommend import Recommendations


@dataclass
class WizardContext:
    """Everything a step shows: the draft, and what the workers found out about it."""

    config: RunConfig
    preset_path: str | None = None
    saved_equal: bool = False  # the preset at preset_path holds exactly this draft
    hardware: HardwareReport | None = None
    hardware_error: str | None = None
    facts: ModelFacts | None = None
    facts_error: str | None = None
    cached_models: list[CachedModel] = field(default_factory=list)
    model_choices: list[ModelChoice] | None = None  # the Model step's rows with fit badges
    data_report: DataReport | None = None
    data_error: str | None = None
    data_progress: tuple | None = None  # (rows done, total) while the token audit runs
    preview: Preview | None = None
    preview_error: str | None = None
    preview_row: int = 0
    estimate: Estimate | None = None
    estimate_error: str | None = None
    doctor: list | None = None  # the pre-launch doctor's warnings (dicts), for the whole draft
    recommended: tuple[RunConfig, Recommendations] | None = None  # (the draft it was made for, the advice)
    recommend_error: str | None = None
    busy: frozenset = frozenset()  # worker groups now running
    unavailable: dict = field(default_factory=dict)  # worker group -> why the engine cannot answer yet

    def but(self, **changes: Any) -> "WizardContext":
        return replace(self, **changes)

    @property
    def audit(self) -> dict | None:
        """The token audit of the data, once it ran."""
        return self.data_report.audit if self.data_report is not None else None

    @property
    def typed_folder(self) -> str | None:
        """The model id when it names a folder here (the Model step lists it with a badge)."""
        from pathlib import Path

        return self.config.model.id if Path(self.config.model.id).expanduser().is_dir() else None


def _located(message: str, line: int | None, row: int | None, field: str | None) -> str:
    where = [f"line {line}" if line is not None else f"row {row}"] if (line is not None or row is not None) else []
    if field:
        where.append(str(field))
    return (", ".join(where) + ": " if where else "") + message


def row_problem_text(problem: Problem) -> str:
    """One line for a bad row of the data (core's ``data_formats.Problem``): line/row, field, message."""
    return _located(problem.message, problem.line, problem.row, problem.field)


def finding_text(finding: dict[str, Any]) -> str:
    """One line for a finding as the preview writes it (``Finding.to_dict()``: code, message,
    severity, and the row/field an audit finding names)."""
    return _located(str(finding["message"]), finding.get("line"), finding.get("row"), finding.get("field"))


def with_changes(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """``config`` with each dotted path set to its value, validated by core (raises ConfigError)."""
    return apply_overrides(config, [f"{path}={json.dumps(value)}" for path, value in changes.items()])


def owns(edits: tuple[str, ...], setting: str) -> bool:
    """Whether a step editing ``edits`` owns ``setting``: one of them is it, lies under it
    (``data.sources`` holds ``data.sources.0.path``) or holds it."""
    return any(e == setting or e.startswith(setting + ".") or setting.startswith(e + ".") for e in edits)


class Step(VerticalScroll, can_focus=False):
    """A wizard step. Subclasses set ``title``/``needs``/``edits``, compose fields, and render ``context``.

    The edit loop: a field's edit is validated here through core and posted up as
    ``Step.Changed(changes)``; the wizard folds it into its draft. Fields are written only by
    ``show_values``, which the wizard calls when someone else changed a setting (a preset, an
    applied tip or recommendation, the same setting edited on another step) — never with the echo
    of an edit made here, so a field never has to tell its own echo from news.
    """

    title: ClassVar[str] = "Step"
    # The settings this step's fields edit: the doctor's warnings about them are shown here.
    edits: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[str] = ""
    step_id: ClassVar[str] = "step"

    class Changed(Message):
        """The step changed settings: ``changes`` maps dotted paths to values core accepted.
        ``typed`` are the paths whose fields on this step already show them (the user typed them)."""

        def __init__(self, step: "Step", changes: dict[str, Any], typed: frozenset[str] = frozenset()) -> None:
            super().__init__()
            self.step = step
            self.changes = changes
            self.typed = typed

    class ValidityChanged(Message):
        """A field became invalid or valid again (the wizard re-checks Next)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(id=kwargs.pop("id", self.step_id), **kwargs)
        self.invalid: dict[str, str] = {}
        self._wizard_context: WizardContext | None = None
        self.doctor: list = []  # the doctor's warnings routed to this step (the wizard routes them)
        self._mounted_fields = False  # set in on_mount, when is_mounted is not yet

    # ------------------------------------------------------------------ attributes down
    # A plain attribute rather than a reactive: steps are created up front but mounted only
    # when first shown (a faster first frame), and an unmounted step just keeps the value.
    @property
    def context(self) -> WizardContext | None:
        return self._wizard_context

    @context.setter
    def context(self, context: WizardContext | None) -> None:
        first = self._wizard_context is None
        self._wizard_context = context
        if first and context is not None:
            self.show_values(context.config)  # the fields start from the draft (once mounted)
        if self.is_mounted:
            self.render_context()

    def on_mount(self) -> None:
        if self.edits and not self.query(".doctor-notes"):
            self.mount(Static("", classes="doctor-notes"))
        self._mounted_fields = True
        if self._wizard_context is not None:
            self.show_values(self._wizard_context.config)
        self.render_context()

    def render_context(self) -> None:
        """Show what the workers found. Fields are not touched: they hold what the user typed."""
        context = self._wizard_context
        if context is None:
            return
        self.show_context(context)
        self.show_doctor()

    def show_values(self, config: RunConfig, paths: set[str] | None = None) -> None:
        """Put ``config``'s values into the fields showing ``paths`` (None: every field), replacing
        what was typed there; their errors go. Only for settings someone else changed."""
        if not self._mounted_fields:
            return  # a step fills its fields from its context when it mounts
        for f in self.query(ConfigField):
            if paths is None or f.path in paths:
                f.show_value(get_path(config, f.path))
                self.invalid.pop(f.path, None)

    def show_doctor(self) -> None:
        from textual.markup import escape

        notes = self.query(".doctor-notes")
        if not notes:
            return
        lines = []
        for w in self.doctor:
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
    def field_for(self, path: str) -> ConfigField | None:
        return next((f for f in self.query(ConfigField) if f.path == path), None)

    def refuse(self, path: str, message: str) -> None:
        """Show why the edit of ``path`` was refused, next to its field; Next waits for a fix."""
        self.invalid[path] = message
        widget = self.field_for(path)
        if widget is not None:
            widget.error = message
        self.post_message(self.ValidityChanged())

    def accept(self, path: str) -> None:
        widget = self.field_for(path)
        if widget is not None:
            widget.error = ""
        if self.invalid.pop(path, None) is not None:
            self.post_message(self.ValidityChanged())

    def apply(self, path: str, raw_yaml: str, typed: bool = True) -> RunConfig | None:
        """Validate one edit through the core schema; show the reason inline or post the change.

        It is checked against the draft as this step last saw it; the wizard folds the change into
        its own draft (edits posted faster than it handles them all land, in order)."""
        if self.context is None:
            return None
        try:
            cfg = apply_overrides(self.context.config, [f"{path}={raw_yaml}"])
        except ConfigError as exc:
            # The field's own problems without its path; another field's (a cross-field check) with it.
            self.refuse(path, "; ".join(p.split(": ", 1)[1] if p.startswith(path + ": ") else p
                                        for p in exc.problems))
            return None
        self.accept(path)
        changes = {path: get_path(cfg, path)}
        cfg = self._retry_refused(cfg, path, changes)
        self.post_message(self.Changed(self, changes, frozenset(changes) if typed else frozenset()))
        return cfg

    def _retry_refused(self, cfg: RunConfig, edited: str, changes: dict[str, Any]) -> RunConfig:
        """Fields refused only because of another setting (a cross-field check) keep their text; once
        an edit elsewhere makes them valid, they apply too (and their error goes)."""
        for other in [p for p in self.invalid if p != edited]:
            widget = self.field_for(other)
            if widget is None:
                continue
            try:
                raw = widget.raw_value()
                if raw is None:
                    continue
                cfg = apply_overrides(cfg, [f"{other}={raw}"])
            except (ValueError, ConfigError):
                continue
            self.accept(other)
            changes[other] = get_path(cfg, other)
        return cfg

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _field_edited(self, event: Message) -> None:
        control = getattr(event, "control", None)
        owner = control.parent if control is not None else None
        while owner is not None and not isinstance(owner, (ConfigField, Step)):
            owner = owner.parent
        if not isinstance(owner, ConfigField):
            return
        event.stop()
        try:
            raw = owner.raw_value()
        except ValueError as exc:
            self.refuse(owner.path, str(exc))
            return
        if raw is None:
            return
        self.apply(owner.path, raw)

