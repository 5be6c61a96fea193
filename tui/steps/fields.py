"""Form fields bound to a dotted config path, with the reason shown next to the field."""

from __future__ import annotations

import json
from typing import Any, Literal

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

Kind = Literal["text", "number", "list", "mapping", "select", "switch"]


def get_path(obj: Any, path: str) -> Any:
    """``get_path(cfg, "data.sources.0.path")``."""
    for part in path.split("."):
        if obj is None:
            return None
        if isinstance(obj, (list, tuple)) and part.isdigit():
            obj = obj[int(part)] if int(part) < len(obj) else None
        else:
            obj = getattr(obj, part, None)
    return obj


def to_text(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "list":
        return ", ".join(value) if isinstance(value, list) else str(value)
    if kind == "mapping":
        return ", ".join(f"{k}={v}" for k, v in dict(value).items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ConfigField(Widget):
    """Label, control and inline error for one config path."""

    DEFAULT_CSS = """
    ConfigField { height: auto; layout: vertical; }
    ConfigField > #row { height: auto; }
    ConfigField > #row > Label { width: 24; padding: 0 1 0 0; color: $text-muted; }
    ConfigField > #row > Input, ConfigField > #row > Select { width: 1fr; }
    ConfigField > #row > Checkbox { width: auto; }
    ConfigField > .field-error { display: none; color: $error; padding: 0 0 0 24; height: auto; }
    ConfigField.-invalid > .field-error { display: block; }
    ConfigField.-invalid > #row > Label { color: $error; }
    ConfigField > .field-hint { color: $text-muted; padding: 0 0 0 24; height: auto; }
    """

    error: reactive[str] = reactive("")

    def __init__(self, path: str, label: str, kind: Kind = "number", *, options: list | tuple | None = None,
                 hint: str = "", placeholder: str = "", suggester=None, id: str | None = None) -> None:
        super().__init__(id=id or "f-" + path.replace(".", "-").replace("_", "-"))
        self.path = path
        self.label = label
        self.kind = kind
        self.options = list(options or [])
        self.hint = hint
        self.placeholder = placeholder
        self.suggester = suggester

    def compose(self) -> ComposeResult:
        with Horizontal(id="row"):
            yield Label(self.label)
            if self.kind == "select":
                yield Select(self.pairs, allow_blank=False, compact=True, id="control")
            elif self.kind == "switch":
                yield Checkbox(self.hint or "", compact=True, id="control")
            else:
                yield Input(placeholder=self.placeholder, compact=True, suggester=self.suggester, id="control")
        yield Static("", classes="field-error")
        if self.hint and self.kind != "switch":
            yield Static(self.hint, classes="field-hint")

    @property
    def pairs(self) -> list[tuple[str, Any]]:
        return [o if isinstance(o, tuple) else (str(o), o) for o in self.options]

    @property
    def control(self) -> Widget:
        return self.query_one("#control")

    def watch_error(self, error: str) -> None:
        self.set_class(bool(error), "-invalid")
        if self.is_mounted:
            self.query_one(".field-error", Static).update(f"✗ {error}" if error else "")

    def raw_value(self) -> str | None:
        """The control's value as a YAML scalar for ``apply_overrides``."""
        control = self.control
        if isinstance(control, Select):
            return None if control.value is Select.NULL else json.dumps(control.value)
        if isinstance(control, Checkbox):
            return "true" if control.value else "false"
        text = control.value.strip()
        if self.kind == "text":
            return json.dumps(text)
        if self.kind == "mapping":
            pairs = {}
            for item in filter(None, (t.strip() for t in text.split(","))):
                key, sep, val = item.partition("=")
                if not sep or not key.strip() or not val.strip():
                    raise ValueError(f"expected ours=theirs pairs separated by commas, got {item!r}")
                pairs[key.strip()] = val.strip()
            return json.dumps(pairs)
        if self.kind == "list":
            items = [t.strip() for t in text.split(",") if t.strip()]
            return json.dumps(items[0] if len(items) == 1 else items)
        return text if text else "null"

    def show_value(self, value: Any) -> None:
        """Show ``value``, which someone else put in the config (a preset, an applied tip): the
        wizard calls this only then, never with the echo of an edit made here. Posts no Changed."""
        self.error = ""
        control = self.control
        if isinstance(control, Select):
            if value in [v for _, v in self.pairs]:
                with control.prevent(Select.Changed):
                    control.value = value
        elif isinstance(control, Checkbox):
            with control.prevent(Checkbox.Changed):
                control.value = bool(value)
        else:
            with control.prevent(Input.Changed):
                control.value = to_text(value, self.kind)
