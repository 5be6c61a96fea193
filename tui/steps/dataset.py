"""Step 3 — the data: a file or hub dataset, its detected format, a column mapping, its problems."""

from __future__ import annotations

import json
import os

from textual.app import ComposeResult
from textual.suggester import Suggester
from textual.widgets import Static

from sftwizard.core.config import DATA_FORMATS, ON_BAD_ROWS

from .base import Step, WizardContext, row_problem_text
from .fields import ConfigField

ON_BAD_ROWS_LABELS = {"stop": "stop (fix the data first)", "drop": "drop them (reported)"}
MAX_PROBLEMS_SHOWN = 12


class PathSuggester(Suggester):
    """Completes file system paths (and the builtin data names)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if value.startswith("b") and "builtin:demo".startswith(value):
            return "builtin:demo"
        if not value or not (value.startswith(("/", ".", "~")) or os.sep in value):
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(n for n in os.listdir(folder or ".") if n.startswith(prefix) and not n.startswith("."))
        except OSError:
            return None
        if not names:
            return None
        full = os.path.join(folder, names[0])
        suffix = "/" if os.path.isdir(full) else ""
        return value + names[0][len(prefix):] + suffix


class DatasetStep(Step):
    title = "Dataset"
    step_id = "dataset"
    edits = ("data.sources.0.path", "data.sources.0.format", "data.sources.0.columns", "data.sources.0.roles",
             "data.sources.0.max_rows", "data.on_bad_rows", "data.eval_source.path")
    needs = "A JSONL/JSON/Parquet/CSV file or a hub dataset id. The format is detected; problems are shown by line."

    class Changed(Step.Changed):
        pass

    def compose(self) -> ComposeResult:
        yield ConfigField("data.sources.0.path", "Training data", "text", suggester=PathSuggester(),
                          placeholder="builtin:demo, data/train.jsonl or org/dataset")
        yield ConfigField("data.sources.0.format", "Format", "select", options=DATA_FORMATS)
        yield ConfigField("data.sources.0.columns", "Column mapping", "mapping",
                          placeholder="prompt=question, completion=answer",
                          hint="Only when the format is not detected: our field = your column.")
        yield ConfigField("data.sources.0.roles", "Role mapping", "mapping", placeholder="human=user, gpt=assistant",
                          hint="Their role = ours (user, assistant, system, tool), when the names differ.")
        yield ConfigField("data.sources.0.max_rows", "Max rows", "number", placeholder="all (empty) or a number",
                          hint="Use only the first N rows — a quick trial run.")
        yield ConfigField("data.on_bad_rows", "On bad rows", "select",
                          options=[(ON_BAD_ROWS_LABELS.get(v, v), v) for v in ON_BAD_ROWS])
        yield ConfigField("data.eval_source.path", "Eval data", "text", suggester=PathSuggester(),
                          placeholder="optional: a held-out file (empty: none)")
        yield Static("[b]What was found[/b]", classes="section")
        yield Static("", id="data-report")

    def first_focus(self):
        return self.query_one(ConfigField).control

    def apply(self, path, raw_yaml, typed=True):
        if path != "data.eval_source.path" or self.context is None or json.loads(raw_yaml):
            return super().apply(path, raw_yaml, typed)
        # eval_source is optional: an empty path means none (and then nothing to evaluate on).
        self.accept(path)
        changes = {"data.eval_source": None}
        if self.context.config.training.eval_strategy != "no":
            changes["training.eval_strategy"] = "no"
        self.post_message(self.Changed(self, changes, frozenset({path})))
        return None

    def show_context(self, context: WizardContext) -> None:
        self.query_one("#data-report", Static).update(self._report_text(context))

    def _report_text(self, context: WizardContext) -> str:
        from textual.markup import escape

        if context.data_error:
            return f"[$error]✗ {escape(context.data_error)}[/]"
        if "data" in context.busy:
            return "[dim]reading the data…[/dim]"
        report = context.data_report
        if report is None:
            return "[dim]—[/dim]"
        lines = [
            f"format [b]{escape(report.format)}[/b] · {report.rows} rows · converted {report.converted_rows}"
            + (f" · dropped {report.dropped_rows}" if report.dropped_rows else "")
        ]
        if report.columns:
            lines.append("columns: " + escape(", ".join(map(str, report.columns))))
        problems = report.problems
        if problems:
            errors = sum(1 for p in problems if p.severity == "error")
            lines.append(f"[$error]{errors} bad row(s)[/], {len(problems) - errors} warning(s):" if errors
                         else f"[$warning]{len(problems)} warning(s):[/]")
            for p in problems[:MAX_PROBLEMS_SHOWN]:
                mark = "[$error]✗[/]" if p.severity == "error" else "[$warning]⚠[/]"
                lines.append(f"  {mark} {escape(row_problem_text(p))}")
            if len(problems) > MAX_PROBLEMS_SHOWN:
                lines.append(f"  … and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        else:
            lines.append("[$success]no problems found[/]")
        audit = report.audit
        if context.data_progress:
            done, total = context.data_progress
            lines.append(f"[dim]token audit: {done}/{total} rows…[/dim]")
        elif "audit" in context.busy:
            lines.append("[dim]token audit: loading the tokenizer…[/dim]")
        elif context.unavailable.get("audit"):
            lines.append(f"[dim]{escape(context.unavailable['audit'])}[/dim]")
        if audit:
            lines.extend(escape(line) for line in _audit_lines(audit))
        return "\n".join(lines)

    def blocking_reason(self) -> str | None:
        reason = super().blocking_reason()
        if reason or self.context is None:
            return reason
        ctx = self.context
        if ctx.data_error:
            return ctx.data_error
        if "data" in ctx.busy:
            return "still reading the data — a moment"
        problems = [p for p in ctx.data_report.problems if p.severity == "error"] if ctx.data_report is not None else []
        if problems and ctx.config.data.on_bad_rows == "stop":
            return (f"{len(problems)} bad row(s), first: {row_problem_text(problems[0])} — fix the file or set "
                    "'On bad rows' to drop")
        return None


def _pct(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "?"


def _audit_lines(audit: dict) -> list[str]:
    """The token audit (``audit.audit_dataset``'s dict) in a few lines: lengths, trained share,
    truncation, end-of-turn, padding."""
    get = audit.get
    lines = []
    lengths = get("token_length")
    if isinstance(lengths, dict):
        lines.append("tokens per row: p50 {p50} · p90 {p90} · p99 {p99} · max {max}".format(
            **{k: lengths.get(k, "?") for k in ("p50", "p90", "p99", "max")}))
    if get("trained_share") is not None:
        lines.append(f"trained tokens: {get('trained_tokens')} of {get('tokens')} ({_pct(get('trained_share'))}) · "
                     f"rows with none: {get('rows_with_no_trained_tokens')} · end-of-turn trained in "
                     f"{_pct(get('eos_coverage'))} of conversations")
    if get("rows_over_max_length") is not None:
        lines.append(f"over max_length {get('max_length')}: {get('rows_over_max_length')} rows · "
                     f"{get('trained_tokens_lost_to_truncation')} trained tokens lost to truncation")
    padding = get("padding")
    if isinstance(padding, dict):
        lines.append(f"padding waste: {_pct(padding.get('waste_without_packing'))} without packing, "
                     f"{_pct(padding.get('waste_with_packing'))} with ({padding.get('packed_sequences')} packed sequences)")
    if not lines:
        kinds = get("kinds")
        lines.append(f"rows by kind: {kinds}" if kinds else "audit: " + json.dumps(audit, default=str)[:200])
    return lines
