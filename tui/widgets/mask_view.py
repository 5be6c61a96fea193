"""A conversation as tokens: trained ones highlighted, masked ones dimmed."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


def _field(token: Any, name: str, default: Any = None) -> Any:
    return token.get(name, default) if isinstance(token, dict) else getattr(token, name, default)


class MaskView(Static):
    """Shows ``tokens`` (each with ``text`` and ``trained``) as running text."""

    DEFAULT_CSS = """
    MaskView { height: auto; padding: 0 1; }
    MaskView > .mask-view--trained { color: $success; text-style: bold underline; }
    MaskView > .mask-view--masked { color: $text-muted; }
    """
    COMPONENT_CLASSES = {"mask-view--trained", "mask-view--masked"}

    tokens: reactive[list] = reactive(list, always_update=True)

    def watch_tokens(self) -> None:
        self.update(self.as_text())

    @property
    def trained_count(self) -> int:
        return sum(1 for t in self.tokens if _field(t, "trained"))

    def as_text(self) -> Text:
        if not self.tokens:
            return Text("(nothing to show)", style="dim")
        trained = self.get_component_rich_style("mask-view--trained")
        masked = self.get_component_rich_style("mask-view--masked")
        out = Text()
        for token in self.tokens:
            piece = str(_field(token, "text", ""))
            piece = piece.replace("\n", "↵\n")
            out.append(piece, style=trained if _field(token, "trained") else masked)
        return out
