"""Step 6 — the training hyper-parameters (TRL SFTConfig names), validated as typed."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from sftwizard.tui.steps.base import Step, WizardContext
from sftwizard.tui.steps.fields import ConfigField
from sftwizard.tui.steps.method import show_estimate
from sftwizard.tui.widgets.memory_bar import MemoryBar

SCHEDULERS = ["linear", "cosine", "cosine_with_min_lr", "constant", "constant_with_warmup", "warmup_stable_decay",
              "inverse_sqrt", "polynomial", "cosine_with_restarts", "reduce_lr_on_plateau"]
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "adafactor", "sgd"]

LR_HINTS = {"full": "typical: 1e-5 – 5e-5 for full fine-tunes of real models",
            "lora": "typical: 1e-4 – 3e-4 for LoRA", "qlora": "typical: 1e-4 – 3e-4 for QLoRA"}


class TrainingStep(Step):
    title = "Training"
    step_id = "training"
    doctor_section = "training"
    needs = "Hyper-parameters. Each is checked as you type; the memory bar follows batch size and length."

    class Changed(Step.Changed):
        pass

    def compose(self) -> ComposeResult:
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
        yield ConfigField("training.save_steps", "Save every N steps", "number")
        yield ConfigField("training.seed", "Seed", "number")
        yield MemoryBar(id="memory-bar")

    def first_focus(self):
        return None

    def show_context(self, context: WizardContext) -> None:
        opt = context.config.training.optim
        field = self.query_one("#f-training-optim", ConfigField)
        if opt not in field.options:  # a preset may name any optimizer TRL knows
            field.options = field.options + [opt]
            field.control.set_options(field.pairs)
            field.committed = object()
            field.show_value(opt)
        self.query_one("#lr-hint", Static).update(LR_HINTS.get(context.config.method.type, ""))
        show_estimate(self.query_one(MemoryBar), context)
