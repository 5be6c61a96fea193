"""`sft-wizard data inspect` and `sft-wizard preview`: see the data, and what will be trained, first.

JSON schemas: docs/cli-data.md. ``data inspect`` always reports what it found, every problem by
line and field, and exits 1 when a run on this data would stop; a source that cannot be read at
all (a missing file, an empty one) exits 2 with one sentence, as bad input does for ``preview``.
"""

from __future__ import annotations

import argparse
import sys

from sftwizard.core.config import DATA_FORMATS, ON_BAD_ROWS, TEMPLATE_SOURCES

from .common import UserError, add_json_flag, add_set_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="look at datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: _help(data))

    p = data_sub.add_parser("inspect", help="detect a dataset's format, validate every row, audit tokens")
    p.add_argument("source", help="a .jsonl/.json/.parquet/.csv file, a folder, a Hub dataset id, or builtin:demo")
    _source_options(p)
    p.add_argument("--model", help="a model whose tokenizer and template audit the tokens (optional)")
    p.add_argument("--max-length", type=int, help="training.max_length for the audit (default 1024)")
    p.add_argument("--on-bad-rows", choices=ON_BAD_ROWS, default="stop",
                   help="the run's policy to judge by: stop (the default; exit 1 when a row has an error) or drop "
                        "(exit 0 while some row is usable); every problem is reported either way")
    add_json_flag(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("preview", help="show one row's tokens and which of them carry loss")
    p.add_argument("preset", nargs="?", help="a preset YAML file or name (or give --model and --data)")
    p.add_argument("--model", help="model id or folder (config.json + tokenizer files are enough)")
    p.add_argument("--data", help="dataset source (as for data inspect)")
    _source_options(p)
    p.add_argument("--row", type=int, default=0, help="row to show, from 0 (default 0)")
    p.add_argument("--max-length", type=int, help="override training.max_length")
    p.add_argument("--assistant-only-loss", dest="assistant_only_loss", action=argparse.BooleanOptionalAction,
                   default=None, help="train only assistant turns (default: yes for conversations)")
    p.add_argument("--completion-only-loss", dest="completion_only_loss", action=argparse.BooleanOptionalAction,
                   default=None, help="train only completions (default: yes for prompt-completion data)")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None, help="override training.packing")
    p.add_argument("--template-source", choices=TEMPLATE_SOURCES, help="override template.source")
    p.add_argument("--template-file", help="a Jinja chat template file (template.source: file)")
    p.add_argument("--system-prompt", help="override template.system_prompt")
    add_set_flag(p, "override a preset setting (repeatable)")
    add_json_flag(p)
    p.set_defaults(func=cmd_preview)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=DATA_FORMATS, default="auto", help="dataset format (default: detect)")
    p.add_argument("--map", dest="maps", action="append", default=[], metavar="FIELD=COLUMN|role:THEIRS=OURS",
                   help="map a column to a field (prompt=question) or a role (role:human=user); repeatable")
    p.add_argument("--split", default="train", help="split of a Hub/folder dataset (default train)")
    p.add_argument("--name", help="config name of a Hub dataset")
    p.add_argument("--max-rows", type=int, help="read at most this many rows")


def _data_source(args, path: str):
    from sftwizard.core.config import DataSource
    from sftwizard.core.data import parse_mapping

    if args.max_rows is not None and args.max_rows <= 0:
        raise UserError(f"--max-rows: must be > 0, got {args.max_rows}")
    columns, roles = parse_mapping(args.maps)
    return DataSource(path=path, split=args.split, format=args.format, name=args.name, columns=columns,
                      roles=roles, max_rows=args.max_rows)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console(stream=None):
    from rich.console import Console

    return Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- data inspect

def cmd_inspect(args: argparse.Namespace) -> int:
    from sftwizard.core.config import RunConfig
    from sftwizard.core.data import inspect_data

    source = _data_source(args, args.source)
    tokenizer = None
    cfg = RunConfig()
    if args.max_length is not None:
        if args.max_length <= 0:
            raise UserError(f"--max-length: must be > 0, got {args.max_length}")
        cfg.training.max_length = args.max_length
        if not args.model:
            note("--max-length has no effect without --model (the token audit needs a tokenizer)")
    if args.model:
        from sftwizard.core.preview import load_preview_tokenizer

        cfg.model.id = args.model
        tokenizer = load_preview_tokenizer(cfg)
    # Every row is read and every problem reported; --on-bad-rows only says what a run would do.
    report = inspect_data(source, tokenizer=tokenizer, cfg=cfg, on_bad_rows="drop", report_unknown=True)
    verdict = _verdict(report, args.on_bad_rows)
    if args.json:
        print_json(report.to_dict())
    else:
        _print_report(report)
        if verdict:
            print(f"sft-wizard: {verdict}", file=sys.stderr)
    return 1 if verdict else 0


def _verdict(report, on_bad_rows: str) -> str | None:
    """Why a run on this data would stop (one sentence), or None when it would go on."""
    if report.format == "unknown":
        return next(p.sentence() for p in report.problems if p.code == "unknown_format")
    if not report.converted_rows:
        return f"{report.source}: none of the {report.rows} rows can be used"
    errors = [p for p in report.problems if p.severity == "error"]
    if not errors or on_bad_rows == "drop":
        return None
    rows = len({(p.line, p.row) for p in errors})
    return (f"{rows} row{'s' if rows != 1 else ''} with errors, first {errors[0].sentence()}; a run with "
            "on_bad_rows: stop refuses this data (drop leaves such rows out)")


def _print_report(report) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{escape(report.source)}[/bold]  format [cyan]{report.format}[/cyan]")
    console.print(f"rows {report.rows}   converted {report.converted_rows}   "
                  f"dropped {'[red]' if report.dropped_rows else ''}{report.dropped_rows}"
                  f"{'[/red]' if report.dropped_rows else ''}   columns {escape(', '.join(report.columns)) or '-'}")
    if report.problems:
        table = Table("where", "field", "problem", title=f"{len(report.problems)} problems", title_justify="left")
        for p in report.problems[:30]:
            where = f"line {p.line}" if p.line is not None else (f"row {p.row}" if p.row is not None else "")
            style = "red" if p.severity == "error" else ("yellow" if p.severity == "warning" else "dim")
            table.add_row(where, escape(p.field or ""), f"[{style}]{escape(p.message)}[/{style}]")
        console.print(table)
        if len(report.problems) > 30:
            console.print(f"[dim]… {len(report.problems) - 30} more (--json lists them all)[/dim]")
    audit = report.audit or {}
    if audit.get("tokenizer") is not None or "token_length" in audit:
        tl = audit["token_length"]
        console.print(
            f"tokens per row  p50 {tl['p50']}  p90 {tl['p90']}  p99 {tl['p99']}  max {tl['max']}   "
            f"over max_length {audit['max_length']}: {audit['rows_over_max_length']} rows")
        console.print(
            f"trained share {audit['trained_share']:.1%}   rows with nothing trained "
            f"{audit['rows_with_no_trained_tokens']}   EOS/end-of-turn trained in {audit['eos_coverage']:.1%} of rows")
        pad = audit["padding"]
        console.print(
            f"padding waste {pad['waste_without_packing']:.1%} unpacked (batch {pad['batch_size']}); packing makes "
            f"{pad['packed_sequences']} sequences")
    elif audit:
        console.print(f"assistant turns per row p50 {audit['assistant_turns']['p50']}   characters per row "
                      f"p50 {audit['characters']['p50']} max {audit['characters']['max']}   "
                      "[dim](give --model for the token audit)[/dim]")


# --------------------------------------------------------------------------- preview

def _preview_config(args):
    from sftwizard.core.config import RunConfig, TemplateSection, apply_overrides

    if args.preset:
        from sftwizard.core import presets

        _, cfg = presets.load(args.preset, args.overrides)
    else:
        if not (args.model and args.data):
            raise UserError("preview: give a preset, or both --model and --data")
        cfg = RunConfig()
        if args.overrides:
            cfg = apply_overrides(cfg, args.overrides)
    if args.model:
        cfg.model.id = args.model
    if args.data:
        cfg.data.sources = [_data_source(args, args.data)]
    elif args.maps or args.format != "auto":
        for src in cfg.data.sources:
            columns, roles = _data_source(args, src.path).columns, _data_source(args, src.path).roles
            src.columns.update(columns)
            src.roles.update(roles)
            if args.format != "auto":
                src.format = args.format
    _note_conflicts(args)
    t = cfg.training
    if args.max_length is not None:
        if args.max_length <= 0:
            raise UserError(f"--max-length: must be > 0, got {args.max_length}")
        t.max_length = args.max_length
    if args.assistant_only_loss is not None:
        t.assistant_only_loss = args.assistant_only_loss
    if args.completion_only_loss is not None:
        t.completion_only_loss = args.completion_only_loss
    if args.packing is not None:
        t.packing = args.packing
    if args.template_file:
        cfg.template = TemplateSection(source="file", path=args.template_file,
                                       system_prompt=cfg.template.system_prompt)
    elif args.template_source:
        cfg.template.source = args.template_source
    if args.system_prompt is not None:
        cfg.template.system_prompt = args.system_prompt
    return cfg


# flag -> the setting it overrides (a --set of the same setting loses to the flag)
FLAG_SETTINGS = {"max_length": "training.max_length", "assistant_only_loss": "training.assistant_only_loss",
                 "completion_only_loss": "training.completion_only_loss", "packing": "training.packing",
                 "template_source": "template.source", "template_file": "template.path",
                 "system_prompt": "template.system_prompt", "data": "data.sources"}


def note(message: str) -> None:
    """A conflict resolved one way: said on stderr (stdout may be JSON)."""
    print(f"sft-wizard: note: {message}", file=sys.stderr)


def _note_conflicts(args) -> None:
    """Options that contradict each other are resolved as documented, never silently."""
    if args.template_file and args.template_source and args.template_source != "file":
        note(f"--template-file {args.template_file} is used; --template-source {args.template_source} is ignored")
    flags = {"--" + name.replace("_", "-"): setting for name, setting in FLAG_SETTINGS.items()
             if getattr(args, name, None) is not None}
    for item in getattr(args, "overrides", None) or []:
        key = item.split("=", 1)[0].strip()
        for flag, setting in flags.items():
            if key == setting or key.startswith(setting + "."):
                note(f"{flag} overrides --set {item}")
    if args.preset and args.data:
        note(f"--data {args.data} replaces the preset's data.sources")


def cmd_preview(args: argparse.Namespace) -> int:
    from sftwizard.core.preview import render_preview

    cfg = _preview_config(args)
    preview = render_preview(cfg, row=args.row)
    if args.json:
        print_json(preview.to_dict())
    else:
        print_preview(preview)
    empty = next((p for p in preview.problems if p["code"] == "no_trained_tokens"), None)
    if empty is not None and cfg.data.on_bad_rows != "drop":
        print(f"sft-wizard: row {preview.row}: {empty['message']}", file=sys.stderr)
        return 2
    return 0


def print_preview(preview, console=None) -> None:
    """Human view: trained tokens green, masked dim, cut by truncation red; then counts and problems."""
    from rich.text import Text

    console = console or _console()
    c = preview.counts
    console.print(
        f"[bold]row {preview.row}[/bold] ({preview.kind.replace('_', '-')})   template: "
        f"[cyan]{preview.template_source}[/cyan] — {escape(preview.template['description'])}")
    text = Text()
    for tok in preview.tokens:
        if tok.get("truncated"):
            style = "red strike"
        elif tok["trained"]:
            style = "bold green"
        else:
            style = "dim"
        text.append(tok["text"], style=style)
    console.print(text)
    console.print()
    console.print(
        f"tokens {c['tokens']}   [green]trained {c['trained']}[/green]   [dim]masked {c['masked']}[/dim]"
        + (f"   [red]cut by max_length {preview.max_length}: {c['truncated_tokens']}[/red]"
           if c["truncated_tokens"] else "")
        + f"   assistant_only_loss={preview.assistant_only_loss} completion_only_loss={preview.completion_only_loss}")
    console.print("[dim]legend:[/dim] [bold green]trained[/bold green] [dim]masked[/dim] [red strike]cut[/red strike]")
    for p in preview.problems:
        style = {"error": "red", "warning": "yellow"}.get(p["severity"], "dim")
        console.print(f"[{style}]{p['severity']}[/{style}] {p['code']}: {escape(p['message'])}")
