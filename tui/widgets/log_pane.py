"""A bounded log, written in batches (never one call per line)."""

from __future__ import annotations

from textual.widgets import Log


class LogPane(Log):
    DEFAULT_CSS = """
    LogPane { height: 1fr; border: round $primary-muted; }
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_lines", 5000)
        super().__init__(**kwargs)

    def add_lines(self, lines: list[str]) -> None:
        if lines:
            self.write_lines(lines)
