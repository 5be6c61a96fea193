"""Runs side by side: loss curves overlaid, results in columns, the settings that differ.

Opened from the Runs screen with two or more runs marked (space, then ``o``). Reads files only
(core/compare.py, in a worker thread); ``t`` switches the chart between steps and trained tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from sftwizard.core.metrics import format_duration

from .. import services
from ..widgets.compare_chart import LETTERS, CompareChart

if TYPE_CHECKING:
    from sftwizard.core.compare import Comparison


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


class CompareScreen(Screen):
    BINDINGS = [
        Binding("t", "toggle_axis", "Steps/tokens", id="toggle-axis"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__(id="compare-screen")
        self.run_dirs = [Path(d) for d in run_dirs]
        self.comparison: Comparison | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Compare {len(self.run_dirs)} runs[/b] — t: steps/tokens · Esc: back", id="compare-title")
        yield CompareChart(id="compare-chart")
        with Horizontal(id="compare-bottom"):
            yield DataTable(id="compare-table", cursor_type="none", zebra_stripes=True)
            with VerticalScroll(id="compare-diff-box"):
                yield Static("reading the runs…", id="compare-diff")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(lambda: services.compare_runs(self.run_dirs), name="compare", group="compare",
                        thread=True, exclusive=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            self.query_one("#compare-diff", Static).update(f"[$error]cannot compare: {escape(str(event.worker.error))}[/]")
            return
        self.comparison = event.worker.result
        self.query_one(CompareChart).show(self.comparison.runs)
        self._fill_table()
        self._fill_diff()

    def _fill_table(self) -> None:
        runs = self.comparison.runs
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_column("", key="label")
        for letter, run in zip(LETTERS, runs):
            table.add_column(letter, key=letter)
        rows = [
            ("run", [r.name for r in runs]),
            ("status", [r.status for r in runs]),
            ("steps", [_fmt(r.steps, "d") for r in runs]),
            ("final eval", [_fmt(r.final_eval_loss, ".4f") for r in runs]),
            ("best eval", [_fmt(r.best_eval_loss, ".4f") + (f" @{r.best_step}" if r.best_step is not None else "")
                           for r in runs]),
            ("final train", [_fmt(r.final_train_loss, ".4f") for r in runs]),
            ("tokens/s", [_fmt(r.tokens_per_s, ",.0f") for r in runs]),
            ("duration", [format_duration(r.duration_s) for r in runs]),
        ]
        for label, values in rows:
            table.add_row(label, *values)

    def _fill_diff(self) -> None:
        runs = self.comparison.runs
        lines = ["[b]runs[/b]"] + [f"{letter}: {escape(r.id)}" for letter, r in zip(LETTERS, runs)]
        diff = self.comparison.config_diff
        lines.append("")
        if diff:
            lines.append("[b]settings that differ[/b]")
            for d in diff:
                values = " · ".join(f"{letter} {escape(str(v))}" for letter, v in zip(LETTERS, d["values"]))
                lines.append(f"{escape(d['key'])}: {values}")
        else:
            lines.append("the same settings in every run")
        self.query_one("#compare-diff", Static).update("\n".join(lines))

    def action_toggle_axis(self) -> None:
        chart = self.query_one(CompareChart)
        chart.show(chart.runs, by_tokens=not chart.by_tokens)
