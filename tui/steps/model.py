"""Step 2 — which model: the builtin demo, one in the local Hugging Face cache, a folder, a hub id."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.markup import escape
from textual.suggester import SuggestFromList
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from sftwizard.core.config import BUILTIN_MODEL
from sftwizard.core.model_catalog import format_params as _count
from sftwizard.tui.steps.base import Step, WizardContext
from sftwizard.tui.steps.fields import ConfigField


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


WHERE = {"builtin": "builtin demo", "cache": "HF cache", "local": "folder", "known": "on the Hub"}
BADGES = {"fits": "[$success]✓ fits[/]", "tight": "[$warning]~ tight[/]", "does not fit": "[$error]✗ does not fit[/]"}


def fit_text(choice) -> str:
    """The fit badge for the draft's method on the detected GPU, or why there is none."""
    if choice.fit is not None:
        return BADGES[choice.fit] + f" [dim]{choice.total_gib:.1f} GiB[/]"
    if choice.problem:
        return "[dim]? no config here[/]" if choice.source == "known" else "[$error]✗ unreadable[/]"
    return "[dim]no GPU[/]"


def choice_label(choice, width: int) -> str:
    """One row (Textual markup): id, parameters, size on disk (or where it is), and the fit badge."""
    size = _size(choice.size_bytes) if choice.size_bytes else WHERE.get(choice.source, choice.source)
    return f"{escape(choice.id.ljust(width))}  {_count(choice.params):>6}  {size:>11}  {fit_text(choice)}"


class ModelStep(Step):
    title = "Model"
    step_id = "model"
    doctor_section = "model"
    needs = "A model id: the builtin demo, a model in your Hugging Face cache, a local folder, or a hub id."

    class Changed(Step.Changed):
        pass

    _shown: list = []  # the rows the list holds: rebuilt only when they change

    def compose(self) -> ComposeResult:
        yield ConfigField("model.id", "Model", "text", placeholder="builtin:tiny-chat, org/name or /path/to/folder",
                          hint="Type to filter the list below; Enter goes on.")
        yield OptionList(id="model-choices")
        yield Static("[b]Model facts[/b]", classes="section")
        yield Static("", id="model-facts")

    def first_focus(self):
        return self.query_one(ConfigField).control

    def _choices(self, context: WizardContext) -> list[tuple[str, str]]:
        if context.model_choices is not None:
            width = max(len(c.id) for c in context.model_choices)
            return [(c.id, choice_label(c, width)) for c in context.model_choices]
        out = [(BUILTIN_MODEL, f"{BUILTIN_MODEL}  (builtin demo, ~2M params, CPU-friendly)")]
        out += [(m.id, f"{m.id}  ({_size(m.size_bytes)} in the HF cache)") for m in context.cached_models]
        return out

    def show_context(self, context: WizardContext) -> None:
        control = self.query_one(ConfigField).control
        choices = self._choices(context)
        control.suggester = SuggestFromList([c for c, _ in choices], case_sensitive=False)
        needle = control.value.strip().lower()
        shown = [(c, label) for c, label in choices if not needle or needle in c.lower() or c == context.config.model.id]
        options = self.query_one("#model-choices", OptionList)
        if self._shown != shown:
            self._shown = shown
            options.set_options([Option(label, id=c) for c, label in shown])
        self.query_one("#model-facts", Static).update(self._facts_text(context))

    def _facts_text(self, context: WizardContext) -> str:
        from textual.markup import escape

        if context.facts_error:
            return f"[$error]✗ {escape(context.facts_error)}[/]"
        if "facts" in context.busy and context.facts is None:
            return "[dim]reading the model's config…[/dim]"
        f = context.facts
        if f is None:
            return "[dim]—[/dim]"
        template = "[$success]yes[/]" if f.has_chat_template else "[$warning]no — a template will be applied (see Template step)[/]"
        where = f.source if f.source == "builtin" else f"{f.source}: {escape(str(f.path))}"
        lines = [
            f"{escape(f.architecture)} ({escape(f.model_type)}) · {_count(f.total_params)} parameters · {where}",
            f"layers {f.num_layers} · hidden {f.hidden_size} · heads {f.num_heads} (KV {f.num_kv_heads}) · "
            f"intermediate {f.intermediate_size}",
            f"vocab {f.vocab_size} · max positions {f.max_position_embeddings or '?'} · "
            f"tied embeddings {'yes' if f.tie_word_embeddings else 'no'} · dtype {f.torch_dtype or '?'}",
            f"chat template: {template}",
        ]
        return "\n".join(lines)

    def blocking_reason(self) -> str | None:
        reason = super().blocking_reason()
        if reason:
            return reason
        ctx = self.context
        if ctx is None:
            return None
        if ctx.facts_error:
            return ctx.facts_error
        if ctx.facts is None and "facts" in ctx.busy:
            return "still reading the model's config — a moment"
        return None

    @on(OptionList.OptionSelected, "#model-choices")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        field = self.query_one(ConfigField)
        field.control.value = event.option.id  # posts Input.Changed → validated like typing
