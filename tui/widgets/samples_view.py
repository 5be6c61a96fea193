"""The Run screen's Samples tab: one held-out prompt at a time, the reference answer beside the
model's answer at a chosen step, and every step's answer below (``sample`` events, core/samples.py).

←/→ moves between the steps sampled so far, ↑/↓ between prompts. New samples arrive in batches
through ``add``; the view follows the newest step unless the user moved away from it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widgets import Static

from sftwizard.core.samples import PromptSamples, samples_by_prompt

EMPTY = ("No samples yet. The run answers a few held-out prompts before its first step and after "
         "every evaluation (run.samples; 0 turns it off, and a run without eval data has none).")


class SamplesView(Vertical, can_focus=True):
    DEFAULT_CSS = """
    SamplesView { height: 1fr; padding: 0 1; }
    SamplesView > #samples-head { height: auto; color: $text-muted; }
    SamplesView > #samples-prompt { height: auto; max-height: 5; border: round $primary; }
    SamplesView > #samples-pair { height: auto; max-height: 12; }
    SamplesView > #samples-pair > Static { width: 1fr; height: auto; max-height: 12; border: round $secondary; }
    SamplesView > #samples-steps { height: 1fr; border: round $panel; }
    """

    BINDINGS = [
        Binding("left", "step(-1)", "Earlier step", id="sample-earlier"),
        Binding("right", "step(1)", "Later step", id="sample-later"),
        Binding("up", "prompt(-1)", "Prev prompt", id="sample-prev-prompt"),
        Binding("down", "prompt(1)", "Next prompt", id="sample-next-prompt"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._events: list[dict] = []
        self.prompts: list[PromptSamples] = []
        self.prompt_index = 0
        self.step_index: int | None = None  # None: follow the newest step

    def compose(self) -> ComposeResult:
        yield Static(EMPTY, id="samples-head")
        yield Static("", id="samples-prompt")
        with Horizontal(id="samples-pair"):
            yield Static("", id="samples-reference")
            yield Static("", id="samples-answer")
        yield Static("", id="samples-steps")

    def on_mount(self) -> None:
        self.redraw()

    def add(self, events: list[dict]) -> None:
        """A batch of ``sample`` events (a history replay may repeat some: the last one wins)."""
        if not events:
            return
        self._events = self._events + list(events)
        self.prompts = samples_by_prompt(self._events)
        self.redraw()

    def clear(self) -> None:
        self._events, self.prompts, self.prompt_index, self.step_index = [], [], 0, None
        self.redraw()

    @property
    def current(self) -> PromptSamples | None:
        return self.prompts[self.prompt_index] if self.prompts else None

    def _step_at(self) -> int:
        answers = self.current.answers if self.current else []
        if self.step_index is None:
            return max(0, len(answers) - 1)
        return min(self.step_index, max(0, len(answers) - 1))

    def action_step(self, delta: int) -> None:
        if not self.current:
            return
        last = len(self.current.answers) - 1
        at = min(max(0, self._step_at() + delta), last)
        self.step_index = None if at == last else at  # back at the newest: follow new ones again
        self.redraw()

    def action_prompt(self, delta: int) -> None:
        if not self.prompts:
            return
        step = self._chosen_step()
        self.prompt_index = (self.prompt_index + delta) % len(self.prompts)
        if step is not None and self.step_index is not None:  # stay at the same training step
            steps = [a["step"] for a in self.current.answers]
            self.step_index = steps.index(step) if step in steps else self.step_index
        self.redraw()

    def _chosen_step(self) -> int | None:
        if not self.current or not self.current.answers:
            return None
        return self.current.answers[self._step_at()]["step"]

    def redraw(self) -> None:
        if not self.is_mounted:
            return
        head = self.query_one("#samples-head", Static)
        prompt_w = self.query_one("#samples-prompt", Static)
        reference_w = self.query_one("#samples-reference", Static)
        answer_w = self.query_one("#samples-answer", Static)
        steps_w = self.query_one("#samples-steps", Static)
        entry = self.current
        for w in (prompt_w, self.query_one("#samples-pair"), steps_w):
            w.display = entry is not None
        if entry is None:
            head.update(EMPTY)
            return
        at = self._step_at()
        answer = entry.answers[at]
        head.update(f"prompt {self.prompt_index + 1}/{len(self.prompts)} · step {answer['step']} "
                    f"({at + 1} of {len(entry.answers)} sampled) · ←/→ step · ↑/↓ prompt")
        prompt_w.border_title = "prompt"
        prompt_w.update(escape(entry.prompt))
        reference_w.border_title = "reference"
        reference_w.update(escape(str(entry.reference or "")))
        answer_w.border_title = "base model (step 0)" if answer["step"] == 0 else f"model at step {answer['step']}"
        answer_w.update(escape(str(answer.get("text") or "")) + "\n" + _how(answer))
        steps_w.border_title = "every step"
        lines = []
        for i, a in enumerate(entry.answers):
            text = " ".join(str(a.get("text") or "").split()) or "∅"
            mark = "✓" if a.get("stopped") else "…"
            line = f"{'▶' if i == at else ' '} {a['step']:>6} {mark} {escape(text[:200])}"
            lines.append(f"[b]{line}[/b]" if i == at else line)
        steps_w.update("\n".join(lines))


def _how(answer: dict) -> str:
    stopped = "[$success]stopped[/]" if answer.get("stopped") else "[$warning]did not stop[/]"
    took = f", {answer['generation_s']:.1f} s" if isinstance(answer.get("generation_s"), (int, float)) else ""
    return f"[dim]({stopped}, {answer.get('new_tokens')} tokens{took})[/dim]"
