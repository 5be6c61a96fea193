"""The phase a run is in (download, load, tokenize, train …) as a progress bar with rate and ETA.

Fed with the latest ``phase`` event; every number comes from the event (the runner's own rate
and ETA), so a run rebuilt from its history shows what it showed live.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from sftwizard.core.event_lines import phase_progress_text


class PhaseBar(Horizontal):
    DEFAULT_CSS = """
    PhaseBar { height: 1; padding: 0 1; display: none; }
    PhaseBar.-active { display: block; }
    PhaseBar > #phase-name { width: 10; text-style: bold; }
    PhaseBar > ProgressBar { width: auto; margin-right: 1; }
    PhaseBar > #phase-detail { width: 1fr; color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.phase: dict | None = None

    def compose(self) -> ComposeResult:
        yield Label("", id="phase-name")
        yield ProgressBar(total=None, show_eta=False, id="phase-progress")
        yield Label("", id="phase-detail")

    def show(self, ev: dict | None) -> None:
        """The phase event to show, or None to hide the bar (no phase is running)."""
        self.phase = ev
        self.set_class(ev is not None, "-active")
        if ev is None:
            return
        total = ev.get("total") if isinstance(ev.get("total"), (int, float)) and ev.get("total") else None
        done = ev.get("done") if isinstance(ev.get("done"), (int, float)) else 0
        self.query_one("#phase-name", Label).update(str(ev.get("phase") or "?"))
        self.query_one(ProgressBar).update(total=total, progress=done)
        self.query_one("#phase-detail", Label).update(phase_progress_text(ev))
