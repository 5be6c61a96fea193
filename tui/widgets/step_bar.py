"""The wizard's breadcrumb: every step, the current one highlighted, visited ones marked."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class StepBar(Static):
    DEFAULT_CSS = """
    StepBar { height: 1; padding: 0 1; background: $boost; }
    """
    COMPONENT_CLASSES = {"step-bar--current", "step-bar--done", "step-bar--todo"}

    current: reactive[int] = reactive(0)

    def __init__(self, titles: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.titles = titles

    def render(self) -> Text:
        compact = self.size.width and self.size.width < 100
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, title in enumerate(self.titles):
            if i:
                text.append(" › ", style="dim")
            if i == self.current:
                style = self.get_component_rich_style("step-bar--current")
                label = f"{i + 1} {title}"
            elif i < self.current:
                style = self.get_component_rich_style("step-bar--done")
                label = f"{i + 1}" if compact else f"{i + 1} {title}"
            else:
                style = self.get_component_rich_style("step-bar--todo")
                label = f"{i + 1}" if compact else f"{i + 1} {title}"
            text.append(label, style=style)
        return text
