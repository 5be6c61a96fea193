"""The memory estimate as a bar against the GPU's memory, with a breakdown and a verdict.

It draws an ``Estimate`` as ``estimator.estimate_for`` made it, memory to fit in included (the
GPU the launch lands on), so the bar and `sft-wizard estimate` cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

if TYPE_CHECKING:
    from sftwizard.core.estimator import Estimate

BAR_STYLES = ["memory-bar--c0", "memory-bar--c1", "memory-bar--c2", "memory-bar--c3", "memory-bar--c4"]


class MemoryBar(Static):
    DEFAULT_CSS = """
    MemoryBar { height: auto; padding: 0 1; border: round $primary-muted; border-title-color: $text; }
    MemoryBar > .memory-bar--c0 { color: $primary; }
    MemoryBar > .memory-bar--c1 { color: $secondary; }
    MemoryBar > .memory-bar--c2 { color: $accent; }
    MemoryBar > .memory-bar--c3 { color: $warning; }
    MemoryBar > .memory-bar--c4 { color: $success; }
    MemoryBar > .memory-bar--free { color: $panel-lighten-2; }
    MemoryBar > .memory-bar--fits { color: $success; text-style: bold; }
    MemoryBar > .memory-bar--over { color: $error; text-style: bold; }
    """
    COMPONENT_CLASSES = set(BAR_STYLES) | {"memory-bar--free", "memory-bar--fits", "memory-bar--over"}

    estimate: reactive[Estimate | None] = reactive(None, always_update=True)
    message: reactive[str] = reactive("")
    apply_key: bool = True  # the first suggestion can be applied with ctrl+t (the wizard's binding)

    def on_mount(self) -> None:
        self.border_title = "Memory estimate"

    def watch_estimate(self) -> None:
        self.refresh_text()

    def watch_message(self) -> None:
        self.refresh_text()

    def on_resize(self) -> None:
        self.refresh_text()

    @property
    def total_gib(self) -> float | None:
        return None if self.estimate is None else self.estimate.total_gib

    def refresh_text(self) -> None:
        self.update(self.as_text())

    def as_text(self) -> Text:
        est = self.estimate
        if est is None:
            return Text(self.message or "estimating…", style="dim")
        total = est.total_gib
        capacity = est.gpu_memory_gib or None
        width = max(10, (self.size.width or 60) - 4)
        scale = max(total, capacity or 0.0) or 1.0
        out = Text()
        parts = sorted(((k, v) for k, v in est.components.items() if v >= 0.005), key=lambda kv: -kv[1])
        used = 0
        for i, (name, gib) in enumerate(parts):
            cells = int(round(gib / scale * width))
            if cells <= 0:
                continue
            style = self.get_component_rich_style(BAR_STYLES[i % len(BAR_STYLES)])
            out.append("█" * cells, style=style)
            used += cells
        if capacity and used < width:
            out.append("░" * (width - used), style=self.get_component_rich_style("memory-bar--free"))
        out.append("\n")
        for i, (name, gib) in enumerate(parts):
            if i:
                out.append("  ")
            out.append("■ ", style=self.get_component_rich_style(BAR_STYLES[i % len(BAR_STYLES)]))
            out.append(f"{name.replace('_', ' ')} {gib:.2f}")
        out.append("\n")
        fits = est.fits
        verdict = f"total {total:.2f} GiB"
        if capacity:
            verdict += f" of {capacity:.1f} GiB"
            if est.headroom_gib is not None:
                verdict += f" · headroom {est.headroom_gib:.2f} GiB"
        if fits is None or not capacity:
            out.append(verdict + " · no GPU: training runs on the CPU (RAM)")
        elif fits:
            out.append("fits  ", style=self.get_component_rich_style("memory-bar--fits"))
            out.append(verdict)
        else:
            out.append("does not fit  ", style=self.get_component_rich_style("memory-bar--over"))
            out.append(verdict)
        assumptions = est.assumptions
        for note in assumptions[:2]:  # what the estimate took as given (a grown vocabulary, a guessed dtype…)
            out.append(f"\nassumed: {note}", style="dim")
        if len(assumptions) > 2:
            out.append(f" (+{len(assumptions) - 2} more: sft-wizard estimate --json)", style="dim")
        for i, suggestion in enumerate(est.suggestions[:3]):
            key = "ctrl+t: " if i == 0 and self.apply_key else ""
            out.append(f"\n• {key}{suggestion.text} → {suggestion.total_gib:.2f} GiB", style="italic")
        return out
