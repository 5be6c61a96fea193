"""Step 6 — the training hyper-parameters (TRL SFTConfig names), validated as typed."""

from __future__ import annotations

import json
import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import Button, Static
from textual.worker import Worker, WorkerState, get_current_worker

from sftwizard.core.config import ConfigError, apply_overrides

from .. import services
from ..widgets.memory_bar import MemoryBar
from .base import Step, WizardContext
from .fields import ConfigField
from .method import show_estimate

SCHEDULERS = ["linear", "cosine", "cosine_with_min_lr", "constant", "constant_with_warmup", "warmup_stable_decay",
              "inverse_sqrt", "polynomial", "cosine_with_restarts", "reduce_lr_on_plateau"]
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"]

LR_HINTS = {"full": "typical: 1e-5 – 5e-5 for full fine-tunes of real models",
            "lora": "typical: 1e-4 – 3e-4 for LoRA", "qlora": "typical: 1e-4 – 3e-4 for QLoRA"}
RECOMMEND_DEBOUNCE_S = 0.3  # typing in a field recomputes once the keys stop


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
    doctor_section = "training"
    needs = "Hyper-parameters. Each is checked as you type; the memory bar follows batch size and length."

    BINDINGS = [
        # priority: a focused Input on this step must not eat the key
        Binding("ctrl+e", "apply_recommended", "Apply recommended", id="apply-recommended", priority=True),
    ]

    class Changed(Step.Changed):
        pass

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recommendations: Any = None  # core's Recommendations for ``_recs_config``
        self._recs_config: Any = None
        self._recs_key: Any = None
        self._recs_worker: Worker | None = None

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
        yield ConfigField("training.eval_strategy", "Evaluate", "select", options=["no", "steps", "epoch"])
        yield ConfigField("training.eval_steps", "Eval every N steps", "number")
        yield ConfigField("training.save_strategy", "Save", "select", options=["steps", "epoch", "no"])
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

    def show_context(self, context: WizardContext) -> None:
        for path, value in (("training.optim", context.config.training.optim),
                            ("training.report_to", context.config.training.report_to)):
            field = self.query_one("#f-" + path.replace(".", "-").replace("_", "-"), ConfigField)
            if isinstance(value, str) and value not in field.options:
                # a preset may name any optimizer TRL knows, or a tracker not installed here (the doctor says so)
                field.options = field.options + [value]
                field.control.set_options(field.pairs)
                field.show_value(value, force=True)
        self.query_one("#lr-hint", Static).update(LR_HINTS.get(context.config.method.type, ""))
        show_estimate(self.query_one(MemoryBar), context)
        self.show_recommendations()
        self.refresh_recommendations(context)

    # ------------------------------------------------------------------ recommended settings
    def _recommend_inputs(self, context: WizardContext) -> tuple | None:
        """(hardware, facts, audit) once the workers found them, else None."""
        if context.facts is None or (context.hardware is None and context.hardware_error is None):
            return None
        report = context.data_report
        audit = getattr(report, "audit", None) if report is not None else None
        return context.hardware, context.facts, audit if isinstance(audit, dict) else None

    def refresh_recommendations(self, context: WizardContext) -> None:
        """Recompute when the draft or what is known about it changed (debounced in the worker)."""
        inputs = self._recommend_inputs(context)
        if inputs is None:
            return
        key = (repr(context.config), id(inputs[0]), id(inputs[1]), id(inputs[2]))
        if key == self._recs_key:
            return
        self._recs_key = key
        cfg = context.config

        def compute():
            time.sleep(RECOMMEND_DEBOUNCE_S)  # a newer draft cancels this one (exclusive group)
            if get_current_worker().is_cancelled:
                return None
            return cfg, services.recommend_settings(cfg, *inputs)

        # The thread only calls the engine and returns; the result lands in on_worker_state_changed.
        self._recs_worker = self.run_worker(compute, name="recommend", group="recommend", thread=True,
                                            exclusive=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "recommend":
            return
        event.stop()  # the wizard's handler is for its own groups
        if event.worker is not self._recs_worker or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.SUCCESS:
            if event.worker.result is None:
                return
            self._recs_config, self.recommendations = event.worker.result
            self.show_recommendations()
            return
        error = event.worker.error
        self.recommendations = self._recs_config = None
        if isinstance(error, services.user_error_types()):
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
        else:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            self.notify(message, title="recommend failed", severity="error")
            self.log.error("worker recommend failed", error)
        self.query_one("#recs-text", Static).update(f"[b]Recommended[/b] [$error]{escape(message)}[/]")
        self.query_one("#apply-recommended", Button).disabled = True
        self.screen.refresh_bindings()

    def pending_changes(self) -> dict[str, Any]:
        """What applying the recommendations would change in the current draft (empty when stale)."""
        if self.recommendations is None or self.context is None or self._recs_config != self.context.config:
            return {}
        return self.recommendations.changes()

    def show_recommendations(self) -> None:
        if self.recommendations is None or not self.is_mounted:
            return
        stale = self.context is not None and self._recs_config != self.context.config
        lines = recommendation_lines(self.recommendations)
        head = "[b]Recommended[/b]" + (" [dim](updating…)[/dim]" if stale else "")
        if not any(r.changed for r in self.recommendations.items):
            lines.insert(0, "[dim]the draft already follows every recommendation[/dim]")
        text = self.query_one("#recs-text", Static)
        text.update("\n".join([head, *lines]))
        # one line each (the terminal's width cuts a long reason); the tooltip has them whole
        text.styles.text_wrap = "nowrap"
        text.styles.text_overflow = "ellipsis"
        text.tooltip = "\n".join(f"{r.setting} → {format_value(r.value)} — {r.reason}"
                                  for r in self.recommendations.items if r.changed) or None
        self.query_one("#apply-recommended", Button).disabled = not self.pending_changes()
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
            cfg = apply_overrides(self.draft_config(), [f"{k}={json.dumps(v)}" for k, v in changes.items()])
        except ConfigError as exc:
            self.notify("; ".join(exc.problems), title="Cannot apply the recommendations", severity="error")
            return
        self.post_config(cfg)
        self.notify(f"{len(changes)} setting(s) changed.", title="Applied recommended")
