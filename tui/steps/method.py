"""Step 5 — full fine-tune, LoRA or QLoRA, with the memory it will take."""

from __future__ import annotations

import json

from textual import on
from textual.app import ComposeResult
from textual.widgets import RadioButton, RadioSet, Static

from sftwizard.core.config import ATTN_IMPLEMENTATIONS, DTYPES, METHOD_TYPES

from ..widgets.gpu_panel import has_cuda
from ..widgets.memory_bar import MemoryBar
from .base import Step, WizardContext
from .fields import ConfigField

METHOD_LABELS = {
    "full": "Full fine-tune — every weight trains; most memory",
    "lora": "LoRA — small adapters on frozen weights",
    "qlora": "QLoRA — LoRA on 4-bit weights; least memory",
}


def show_estimate(bar: MemoryBar, context: WizardContext) -> None:
    """Shared by the Method and Training steps: the bar follows every input on both."""
    if context.estimate_error:
        bar.message = f"cannot estimate: {context.estimate_error}"
        bar.estimate = None
    elif context.estimate is None:
        bar.message = "waiting for the model's facts…" if context.facts is None else "estimating…"
        bar.estimate = None
    else:
        bar.estimate = context.estimate


class MethodStep(Step):
    title = "Method"
    step_id = "method"
    edits = ("method.type", "method.lora_r", "method.lora_alpha", "method.lora_dropout", "method.lora_target_modules",
             "method.use_dora", "model.dtype", "model.attn_implementation")
    needs = "How to train. The bar shows the memory the run will need against this machine's GPU."

    class Changed(Step.Changed):
        pass

    def compose(self) -> ComposeResult:
        with RadioSet(id="method-type", compact=True):
            for value in METHOD_TYPES:
                yield RadioButton(METHOD_LABELS.get(value, value), id=f"method-{value}")
        yield Static("", id="method-note", classes="muted")
        yield ConfigField("method.lora_r", "LoRA rank (r)", "number")
        yield ConfigField("method.lora_alpha", "LoRA alpha", "number")
        yield ConfigField("method.lora_dropout", "LoRA dropout", "number")
        yield ConfigField("method.lora_target_modules", "Target modules", "list",
                          placeholder="all-linear, or q_proj, v_proj, …")
        yield ConfigField("method.use_dora", "DoRA", "switch", hint="weight-decomposed LoRA")
        yield ConfigField("model.dtype", "Weights dtype", "select", options=DTYPES)
        yield ConfigField("model.attn_implementation", "Attention", "select",
                          options=ATTN_IMPLEMENTATIONS)
        yield MemoryBar(id="memory-bar")
        yield Static("", id="runnable-note")

    def first_focus(self):
        return None

    def show_context(self, context: WizardContext) -> None:
        from textual.markup import escape

        method = context.config.method.type
        from sftwizard.core.runnable import BNB_CPU_VERSION, QLORA_ON_CPU, bnb_has_cpu_backend

        cuda = has_cuda(context.hardware)
        on_cpu = not cuda and bnb_has_cpu_backend()
        qlora = self.query_one("#method-qlora", RadioButton)
        qlora.disabled = not cuda and not on_cpu and method != "qlora"
        note = "" if cuda else f"{QLORA_ON_CPU}." if on_cpu else (
            f"QLoRA needs a CUDA GPU or bitsandbytes >= {BNB_CPU_VERSION} (its CPU backend): neither is here.")
        self.query_one("#method-note", Static).update(note)
        self.query_one("#method-note", Static).display = bool(note)
        lora = method in ("lora", "qlora")
        for path in ("lora-r", "lora-alpha", "lora-dropout", "lora-target-modules", "use-dora"):
            self.query_one(f"#f-method-{path}").display = lora
        show_estimate(self.query_one(MemoryBar), context)
        problem = self.runnable_problem()
        self.query_one("#runnable-note", Static).update(f"[$error]✗ {escape(problem)}[/]" if problem else "")

    def show_values(self, config, paths=None) -> None:
        super().show_values(config, paths)
        if self._mounted_fields and (paths is None or "method.type" in paths):
            radios = self.query_one(RadioSet)
            button = self.query_one(f"#method-{config.method.type}", RadioButton)
            # the button's own Changed goes on (the set turns the others off); the set's is not an edit
            with radios.prevent(RadioSet.Changed):
                button.value = True

    def runnable_problem(self) -> str | None:
        """What this machine cannot run in the draft (the runner's own pre-flight check)."""
        ctx = self.context
        if ctx is None or ctx.hardware is None:
            return None
        from sftwizard.core.runnable import Environment, runnable_problems

        problems = runnable_problems(ctx.config, Environment.from_hardware(ctx.hardware))
        return problems[0] if problems else None

    def blocking_reason(self) -> str | None:
        return super().blocking_reason() or self.runnable_problem()

    @on(RadioSet.Changed, "#method-type")
    def _method_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        value = (event.pressed.id or "").removeprefix("method-")
        if value:
            self.apply("method.type", json.dumps(value))
