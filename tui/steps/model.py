"""Step 2 — which model: the builtin demo, one in the local Hugging Face cache, a folder, a hub id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.markup import escape
from textual.suggester import SuggestFromList
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from sftwizard.core.config import BUILTIN_MODEL
from sftwizard.core.model_catalog import format_params as _count

from .base import Step, WizardContext
from .fields import ConfigField

if TYPE_CHECKING:
    from sftwizard.core.model_catalog import ModelChoice


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


WHERE = {"builtin": "builtin demo", "cache": "HF cache", "local": "folder", "known": "on the Hub"}
BADGES = {"fits": ("✓ fits", "$success"), "tight": ("~ tight", "$warning"), "does not fit": ("✗ too big", "$error")}
BADGE_WIDTH = 16


def fit_text(choice: ModelChoice) -> str:
    """The fit badge for the draft's method on the detected GPU (or why there is none), padded."""
    if choice.fit is not None:
        word, style = BADGES[choice.fit]
        text, gib = word, f" {choice.total_gib:.1f} GiB"
        return f"[{style}]{text}[/][dim]{gib}[/]" + " " * max(0, BADGE_WIDTH - len(text + gib))
    if choice.problem:
        text, style = ("? no config", "dim") if choice.source == "known" else ("✗ unreadable", "$error")
    else:
        text, style = "no GPU", "dim"
    return f"[{style}]{text}[/]" + " " * max(0, BADGE_WIDTH - len(text))


def choice_label(choice: ModelChoice) -> str:
    """One row (Textual markup): the fit badge first (it survives a narrow terminal), the id,
    then parameters and size on disk (or where the model is)."""
    size = _size(choice.size_bytes) if choice.size_bytes else WHERE.get(choice.source, choice.source)
    return f"{fit_text(choice)} {escape(choice.id)}  [dim]{_count(choice.params)} · {size}[/]"


def fit_basis(context: WizardContext) -> str:
    """What the badges assume: the draft's method and sizes, on which GPU."""
    if context.model_choices is None:
        return "[dim]sizing each model against this machine's GPU…[/dim]"
    from sftwizard.core.placement import placement

    gpu = placement(context.config, context.hardware).gpu  # the one estimate_for sizes against
    t = context.config.training
    what = f"{context.config.method.type}, max_length {t.max_length}, micro-batch {t.per_device_train_batch_size}"
    if gpu is None:
        return f"[dim]no GPU here: no fit badges ({what})[/dim]"
    free = gpu.usable_memory_mib / 1024
    return f"[dim]fit for {escape(what)} on {escape(gpu.name)} ({free:.1f} GiB free) — memory estimator[/dim]"


class ModelStep(Step):
    title = "Model"
    step_id = "model"
    edits = ("model.id",)
    needs = "A model id: the builtin demo, a model in your Hugging Face cache, a local folder, or a hub id."

    class Changed(Step.Changed):
        pass

    _shown: list = []  # the rows the list holds: rebuilt only when they change

    def compose(self) -> ComposeResult:
        yield ConfigField("model.id", "Model", "text", placeholder="builtin:tiny-chat, org/name or /path/to/folder",
                          hint="Type to filter the list below; Enter goes on.")
        yield Static("", id="model-fit-basis")
        yield OptionList(id="model-choices")
        yield Static("[b]Model facts[/b]", classes="section")
        yield Static("", id="model-facts")

    def first_focus(self):
        return self.query_one(ConfigField).control

    def _choices(self, context: WizardContext) -> list[tuple[str, str]]:
        if context.model_choices is not None:
            return [(c.id, choice_label(c)) for c in context.model_choices]
        out = [(BUILTIN_MODEL, f"{BUILTIN_MODEL}  (builtin demo, ~2M params, CPU-friendly)")]
        out += [(m.id, f"{m.id}  ({_size(m.size_bytes)} in the HF cache)") for m in context.cached_models]
        return out

    def show_context(self, context: WizardContext) -> None:
        control = self.query_one(ConfigField).control
        choices = self._choices(context)
        control.suggester = SuggestFromList([c for c, _ in choices], case_sensitive=False)
        needle = control.value.strip().lower()
        if any(c.lower() == needle for c, _ in choices):
            needle = ""  # a whole id (the draft's model) is not a filter: the list shows what else there is
        shown = [(c, label) for c, label in choices if not needle or needle in c.lower() or c == context.config.model.id]
        options = self.query_one("#model-choices", OptionList)
        if self._shown != shown:
            self._shown = shown
            options.set_options([Option(label, id=c) for c, label in shown])
        self.query_one("#model-facts", Static).update(self._facts_text(context))
        self.query_one("#model-fit-basis", Static).update(fit_basis(context))

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
