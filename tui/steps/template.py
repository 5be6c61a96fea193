"""Step 4 — the rendered conversation with the tokens that carry loss highlighted."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Static

from sftwizard.core.config import TEMPLATE_SOURCES
from sftwizard.core.template_probe import REASONING_MODES

from ..widgets.mask_view import MaskView
from .base import Step, WizardContext, finding_text
from .dataset import PathSuggester
from .fields import ConfigField

SOURCE_LABELS = {
    "auto": "auto (tokenizer's, else TRL's, else inferred)",
    "tokenizer": "tokenizer's own",
    "trl-training": "TRL training template",
    "file": "a Jinja file",
    "inferred": "inferred masks (any template)",
    "chatml": "apply ChatML",
}
SOURCES = [(SOURCE_LABELS.get(source, source), source) for source in TEMPLATE_SOURCES]

# template.reasoning: each value with its one-line meaning (the problems list says what the template does)
REASONING = [(f"{mode}: {meaning}", mode) for mode, meaning in REASONING_MODES.items()]


class TemplateStep(Step):
    title = "Template & masks"
    step_id = "template"
    edits = ("template.source", "template.path", "template.reasoning", "training.max_length",
             "training.assistant_only_loss")
    needs = "What will be trained: trained tokens are highlighted, masked ones dimmed. Check the end-of-turn token."

    token_view = False  # the mask view shows one cell per token (kept across rows)

    class Changed(Step.Changed):
        pass

    class RowChanged(Message):
        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def compose(self) -> ComposeResult:
        yield ConfigField("template.source", "Template", "select", options=SOURCES)
        yield ConfigField("template.path", "Template file", "text", suggester=PathSuggester(),
                          placeholder="path/to/template.jinja (source: file)")
        yield ConfigField("template.reasoning", "Reasoning", "select", options=REASONING)
        yield ConfigField("training.max_length", "Max length", "number", placeholder="tokens (empty: no limit)")
        yield ConfigField("training.assistant_only_loss", "Assistant-only loss", "select",
                          options=[("auto (yes for conversations)", None), ("on", True), ("off", False)])
        with Horizontal(id="row-nav", classes="row"):
            yield Button("◀ Prev row", id="prev-row", compact=True)
            yield Static("row 1", id="row-label")
            yield Button("Next row ▶", id="next-row", compact=True)
        yield Static("", id="preview-summary")
        yield Static("", id="preview-problems")
        view = MaskView(id="mask-view")
        view.set_reactive(MaskView.token_view, self.token_view)
        view.hint = "⇧↓/⇧↑ next/prev trained span · F3/⇧F3 next/prev problem"
        yield view

    def action_row(self, delta: int) -> None:
        if self.context is None:
            return
        self.post_message(self.RowChanged(max(0, self.context.preview_row + delta)))

    def action_toggle_tokens(self) -> None:
        """Switch the mask view between running text and one cell per token (text│id)."""
        self.token_view = not self.token_view
        for view in self.query(MaskView):  # none yet when the palette comes here before the step is shown
            view.token_view = self.token_view

    def action_jump(self, kind: str, direction: int) -> None:
        """Move the mask view to the next/previous trained span (``turn``) or located ``problem``."""
        view = next(iter(self.query(MaskView)), None)
        if view is not None and view.jump(kind, direction) is None:
            what = "trained token" if kind == "turn" else "problem with a place in the tokens"
            self.notify(f"This row has no {what}.", timeout=3)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("prev-row", "next-row"):
            event.stop()
            self.action_row(-1 if event.button.id == "prev-row" else 1)

    def show_context(self, context: WizardContext) -> None:
        from textual.markup import escape

        self.query_one("#f-template-path").display = context.config.template.source == "file"
        self.query_one("#row-label", Static).update(f" row {context.preview_row + 1} ")
        summary = self.query_one("#preview-summary", Static)
        problems = self.query_one("#preview-problems", Static)
        view = self.query_one(MaskView)
        if context.preview_error:
            summary.update(f"[$error]✗ {escape(context.preview_error)}[/]")
            view.show([])
            problems.update("")
            return
        preview = context.preview
        if preview is None:
            summary.update("[dim]rendering…[/dim]")
            view.show([])
            problems.update("")
            return
        tokens, items = preview.tokens, preview.problems
        if tokens != view.tokens or items != view.problems:
            view.show(tokens, items)
        trained = sum(1 for t in tokens if t["trained"])
        busy = " [dim](updating…)[/dim]" if "preview" in context.busy else ""
        described = preview.template.get("description")
        summary.update(
            f"template: [b]{escape(preview.template_source)}[/b]"
            + (f" ({escape(str(described))})" if described else "") + f" · {len(tokens)} tokens · "
            f"[$success]{trained} trained[/] · {len(tokens) - trained} masked{busy}"
        )
        marks = {"error": "[$error]✗[/]", "warning": "[$warning]⚠[/]", "info": "[$primary]i[/]"}
        lines = [f"{marks.get(p['severity'], marks['warning'])} {escape(finding_text(p))}" for p in items]
        if not any(p["severity"] in ("error", "warning") for p in items):
            lines.append("[$success]no problems found in this row[/]")
        problems.update("\n".join(lines))

    def blocking_reason(self) -> str | None:
        reason = super().blocking_reason()
        if reason or self.context is None:
            return reason
        if self.context.preview_error:
            return self.context.preview_error
        return None
