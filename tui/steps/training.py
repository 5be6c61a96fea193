"""Step 6 — the training hyper-parameters (TRL SFTConfig names), validated as typed."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import Button, Static

from sftwizard.core.config import INTERVAL_STRATEGIES, SCHEDULERS, ConfigError

from .. import services
from ..widgets.memory_bar import MemoryBar
from .base import Step, WizardContext, with_changes
from .fields import ConfigField, get_path
from .method import show_estimate

# Common optimizers (training.optim takes any name TrainingArguments knows; a preset's own is added).
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"]
LR_HINTS = {"full": "typical: 1e-5 – 5e-5 for full fine-tunes of real models",
            "lora": "typical: 1e-4 – 3e-4 for LoRA", "qlora": "typical: 1e-4 – 3e-4 for QLoRA"}


def format_value(value: Any) -> str:
    """A recommended value as the user would write it in a preset."""
    return value if isinstance(value, str) else json.dumps(value)


def recommendation_lines(recs: Any) -> list[str]:
    """One markup line per recommended change ("setting → value — reason"), then the notes."""
    lines = [f"{escape(r.setting)} → [b]{escape(format_value(r.value))}[/b] [dim]— {escape(r.reason)}[/dim]"
             for r in recs.items if r.changed]
    lines += [f"[$warning]note:[/] {escape(n)}" for n in recs.notes]
    return lines


class TrainingStep(Step):
    title = "Training"
    step_id = "training"
    edits = tuple(f"training.{name}" for name in (
        "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
        "lr_scheduler_type", "warmup_ratio", "max_length", "packing", "gradient_checkpointing", "optim",
        "logging_steps", "eval_strategy", "eval_steps", "save_strategy", "save_steps", "load_best_model_at_end",
        "seed", "report_to"))
    needs = "Hyper-parameters. Each is checked as you type; the memory bar follows batch size and length."

    BINDINGS = [
        # priority: a focused Input on this step must not eat the key
        Binding("ctrl+e", "apply_recommended", "Apply recommended", id="apply-recommended", priority=True),
    ]

    class Changed(Step.Changed):
        pass

    def compose(self) -> ComposeResult:
        yield Static("[b]Recommended[/b] [dim]waiting for the hardware and the model…[/dim]", id="recs-text")
        yield Button("Apply recommended (ctrl+e)", id="apply-recommended", compact=True, disabled=True)
        yield ConfigField("training.num_train_epochs", "Epochs", "number")
        yield ConfigField("training.max_steps", "Max steps", "number", placeholder="-1: use epochs")
        yield ConfigField("training.per_device_train_batch_size", "Batch size / device", "number")
        yield ConfigField("training.gradient_accumulation_steps", "Grad accumulation", "number")
        yield ConfigField("training.learning_rate", "Learning rate", "number")
        yield Static("", id="lr-hint", classes="field-hint")
        yield ConfigField("training.lr_scheduler_type", "LR scheduler", "select", options=SCHEDULERS)
        yield ConfigField("training.warmup_ratio", "Warmup ratio", "number")
        yield ConfigField("training.max_length", "Max length", "number", placeholder="tokens (empty: no limit)")
        yield ConfigField("training.packing", "Packing", "switch", hint="pack short rows into full sequences")
        yield ConfigField("training.gradient_checkpointing", "Grad checkpointing", "switch",
                          hint="less activation memory, ~30% slower")
        yield ConfigField("training.optim", "Optimizer", "select", options=OPTIMIZERS)
        yield ConfigField("training.logging_steps", "Log every N steps", "number")
        yield ConfigField("training.eval_strategy", "Evaluate", "select", options=INTERVAL_STRATEGIES)
        yield ConfigField("training.eval_steps", "Eval every N steps", "number")
        yield ConfigField("training.save_strategy", "Save", "select", options=INTERVAL_STRATEGIES)
        yield ConfigField("training.save_steps", "Save every N steps", "number")
        yield ConfigField("training.load_best_model_at_end", "Best at end", "switch",
                          hint="the final model is the checkpoint with the lowest eval loss")
        yield ConfigField("training.seed", "Seed", "number")
        yield ConfigField("training.report_to", "Report to", "select", options=services.available_trackers(),
                          hint="an extra copy of the metrics (events.jsonl is always written)")
        yield MemoryBar(id="memory-bar")

    def first_focus(self):
        # A field, not the Next button: this step's keys (ctrl+e) show in the footer, and Enter
        # in a field still goes on.
        return self.query_one("#f-training-num-train-epochs #control")

    def show_values(self, config, paths=None) -> None:
        if self._mounted_fields:
            for path in ("training.optim", "training.report_to"):
                field = self.field_for(path)
                value = get_path(config, path)
                if (paths is None or path in paths) and isinstance(value, str) and value not in field.options:
                    # a preset may name any optimizer TRL knows, or a tracker not installed here (the doctor says so)
                    field.options = field.options + [value]
                    field.control.set_options(field.pairs)
        super().show_values(config, paths)

    def show_context(self, context: WizardContext) -> None:
        self.query_one("#lr-hint", Static).update(LR_HINTS.get(context.config.method.type, ""))
        show_estimate(self.query_one(MemoryBar), context)
        self.show_recommendations(context)

    # ------------------------------------------------------------------ recommended settings
    @property
    def recommendations(self) -> Any:
        """Core's Recommendations for the draft they were made for (the wizard's recommend job)."""
        found = self.context.recommended if self.context is not None else None
        return found[1] if found else None

    def pending_changes(self) -> dict[str, Any]:
        """What applying the recommendations would change in the current draft (empty when stale)."""
        found = self.context.recommended if self.context is not None else None
        if not found or found[0] != self.context.config:
            return {}
        return found[1].changes()

    def show_recommendations(self, context: WizardContext) -> None:
        text = self.query_one("#recs-text", Static)
        button = self.query_one("#apply-recommended", Button)
        if context.recommend_error:
            text.update(f"[b]Recommended[/b] [$error]{escape(context.recommend_error)}[/]")
            button.disabled = True
            self.screen.refresh_bindings()
            return
        recs = self.recommendations
        if recs is None:
            return
        stale = context.recommended[0] != context.config
        lines = recommendation_lines(recs)
        head = "[b]Recommended[/b]" + (" [dim](updating…)[/dim]" if stale else "")
        if not any(r.changed for r in recs.items):
            lines.insert(0, "[dim]the draft already follows every recommendation[/dim]")
        text.update("\n".join([head, *lines]))
        # one line each (the terminal's width cuts a long reason); the tooltip has them whole
        text.styles.text_wrap = "nowrap"
        text.styles.text_overflow = "ellipsis"
        text.tooltip = "\n".join(f"{r.setting} → {format_value(r.value)} — {r.reason}"
                                  for r in recs.items if r.changed) or None
        button.disabled = not self.pending_changes()
        self.screen.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "apply_recommended":
            return bool(self.pending_changes())
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply-recommended":
            event.stop()
            self.action_apply_recommended()

    def action_apply_recommended(self) -> None:
        """Apply every recommended change to the draft (validated like any edit) and post it."""
        changes = self.pending_changes()
        if not changes:
            return
        try:
            with_changes(self.context.config, changes)
        except ConfigError as exc:
            self.notify("; ".join(exc.problems), title="Cannot apply the recommendations", severity="error")
            return
        self.post_message(self.Changed(self, changes))  # typed nowhere: the wizard shows them in the fields
        self.notify(f"{len(changes)} setting(s) changed.", title="Applied recommended")
