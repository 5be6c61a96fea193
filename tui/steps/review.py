"""Step 7 — the preset as YAML, the equivalent command lines, and save as preset."""

from __future__ import annotations

import shlex
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Static

from .. import services
from .base import Step, WizardContext


def preset_argument(preset: str) -> str:
    """How to name a preset on the command line: by name when a shipped/user one, else its path."""
    name = Path(preset).stem
    try:
        if Path(services.find_preset(name)).resolve() == Path(preset).resolve():
            return name
    except Exception:  # an unreadable presets folder: fall back to the path
        pass
    return shlex.quote(preset)


def command_lines(context: WizardContext) -> list[str]:
    """What runs this draft without the wizard."""
    preset = context.preset_path
    name = Path(preset).stem if preset else "my-preset"
    target = preset_argument(preset) if preset and context.saved_equal else name
    lines = [f"sft-wizard run {target}", f"sft-wizard run {target} --detach    # survives the terminal"]
    lines.append(f"sft-wizard export {target} --to trl trl-{name}.yaml && trl sft --config trl-{name}.yaml"
                 "    # plain TRL, same rows")
    from sftwizard.core.hardware import visible_gpus

    d = context.config.distributed
    gpus = len(visible_gpus(context.hardware))
    if (d.num_processes or 0) > 1 or d.num_machines > 1 or gpus > 1:
        lines.append(f"sft-wizard accelerate {target}    # the accelerate launch command(s), multi-GPU / multi-node")
    if not context.saved_equal:
        lines.insert(0, f"# save first (ctrl+s) as {name}, then:")
    return lines


class ReviewStep(Step):
    title = "Review"
    step_id = "review"
    needs = "Everything in one preset. Save it (ctrl+s) to rerun it headless, then go on to Run."

    class Changed(Step.Changed):
        pass

    def compose(self) -> ComposeResult:
        yield Static("", id="review-summary")
        yield Static("", classes="doctor-notes")
        yield Static("[b]Command line[/b]", classes="section")
        yield Static("", id="review-commands")
        with Horizontal(classes="row"):
            yield Button("Save as preset (ctrl+s)", id="save-preset", compact=True)
        yield Static("[b]Preset YAML[/b]", classes="section")
        yield Static("", id="review-yaml")

    def show_context(self, context: WizardContext) -> None:
        from rich.syntax import Syntax
        from textual.markup import escape

        cfg = context.config
        data = cfg.data.sources[0].path if cfg.data.sources else "?"
        summary = (f"[b]{escape(cfg.model.id)}[/b] · {cfg.method.type} · data {escape(data)} · "
                   f"batch {cfg.training.per_device_train_batch_size}×{cfg.training.gradient_accumulation_steps} · "
                   f"lr {cfg.training.learning_rate:g} · max_length {cfg.training.max_length}")
        if context.estimate is not None:
            summary += f" · ~{context.estimate.total_gib:.1f} GiB"
        self.query_one("#review-summary", Static).update(summary)
        self.query_one("#review-commands", Static).update(escape("\n".join(command_lines(context))))
        text = self.yaml_text = services.dump_preset(cfg)
        self.query_one("#review-yaml", Static).update(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-preset":
            event.stop()
            self.screen.action_save_preset()
