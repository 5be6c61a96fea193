"""`sft-wizard clean` and `sft-wizard report`, and the doctor's warnings for `validate`.

JSON schemas: docs/cli-doctor.md. The doctor's warnings themselves
are gathered in core (``sftwizard.core.doctor_inputs.doctor_warnings``); this module prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sftwizard.core.config import DATA_FORMATS, ON_BAD_ROWS

from .common import UserError, add_json_flag, print_json


def format_warning(w: dict) -> str:
    fix = f" (suggested {w['setting']}: {_show(w['suggested'])})" if w.get("suggested") is not None else ""
    return f"warning [{w['code']}] {w['message']}{fix}"


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


# --------------------------------------------------------------------------- commands

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="write a cleaned copy of a dataset (duplicates, empty turns, refusals, "
                                     "very short answers) and report what was removed; never edits the source")
    p.add_argument("source", help="a .jsonl/.json/.parquet/.csv file, a Hub dataset id, or builtin:demo")
    p.add_argument("--out", required=True, help="where to write the cleaned JSONL (must not be the source)")
    p.add_argument("--drop", default=None, metavar="KINDS",
                   help="comma-separated kinds to remove: duplicate,empty,refusal,short,overlap "
                        "(default duplicate,empty,refusal,short)")
    p.add_argument("--against", metavar="EVAL_SOURCE", help="remove rows also found here (kind overlap)")
    p.add_argument("--format", choices=DATA_FORMATS, default="auto", help="dataset format (default: detect)")
    p.add_argument("--on-bad-rows", choices=ON_BAD_ROWS, default="stop",
                   help="malformed rows: stop (exit 2, the default) or leave them out too")
    add_json_flag(p)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("report", help="after a run: best checkpoint, train/eval gap, answers beside references")
    p.add_argument("run", help="a run id or run directory")
    p.add_argument("--generations", type=int, default=3, help="held-out prompts to answer (0: none; default 3)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="length limit of each answer (default 64)")
    add_json_flag(p)
    p.set_defaults(func=cmd_report)


def cmd_clean(args: argparse.Namespace) -> int:
    from sftwizard.core.cleaning import DEFAULT_KINDS, KINDS, clean_source
    from sftwizard.core.config import DataSource

    kinds = [k.strip() for k in args.drop.split(",") if k.strip()] if args.drop else list(DEFAULT_KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UserError(f"--drop: unknown kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
    if args.against and "overlap" not in kinds:
        kinds.append("overlap")
    source = DataSource(path=args.source, format=args.format)
    against = DataSource(path=args.against) if args.against else None
    report = clean_source(source, args.out, kinds, against, on_bad_rows=args.on_bad_rows)  # CleaningError
    if args.json:
        print_json(report.to_dict())
        return 0
    removed = report.rows_in - report.rows_out
    print(f"{report.rows_out:,} of {report.rows_in:,} rows kept, {removed:,} removed -> {report.output}")
    for kind, n in report.removed.items():
        if n:
            print(f"  {kind:<9} {n:,}")
    for item in report.examples:
        where = f"line {item['line']}" if item.get("line") else f"row {item.get('row')}"
        print(f"    {where}: {item['reason']}: {item['excerpt']}")
    return 0


def _find_run(ref: str) -> Path:
    """A run directory: a folder as given, else the runs registry's lookup (id, prefix, ``last``)."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    from sftwizard.core import runs

    return runs.find_run(ref)


def cmd_report(args: argparse.Namespace) -> int:
    from sftwizard.core.report import build_report

    if args.generations < 0 or args.max_new_tokens <= 0:
        raise UserError("--generations must be >= 0 and --max-new-tokens > 0")
    run_dir = _find_run(args.run)
    report = build_report(run_dir, generations=args.generations, max_new_tokens=args.max_new_tokens)  # ReportError
    if args.json:
        print_json(report)
        return 0
    print(f"run {report['run']}  ({report['status']}, {report['steps']} steps)")
    best = report["best"]
    if best:
        where = best["checkpoint"] or "no checkpoint saved at that step"
        print(f"best eval loss {best['eval_loss']:.4f} at step {best['step']} — {where}")
    else:
        print("no evaluation ran: no best checkpoint by eval loss")
    for key, label in (("final_train_loss", "final train loss"), ("final_eval_loss", "final eval loss"),
                       ("train_eval_gap", "eval - train gap"), ("gap_at_best", "gap at best")):
        if report[key] is not None:
            print(f"{label:<17} {report[key]:.4f}")
    for w in report["curve_warnings"]:
        print(f"step {w['step']}: {w['message']}")
    for sampled in report.get("samples") or []:
        print(f"\nwhile it trained — prompt {sampled['prompt_id']}: {sampled['prompt']}\n"
              f"    reference: {sampled['reference']}")
        for a in sampled["answers"]:
            print(f"    step {a['step']:>5}: {a['text']}" + ("" if a["stopped"] else "   (did not stop)"))
    for i, g in enumerate(report["generations"], 1):
        prompt = g["prompt"][-1]["content"] if isinstance(g["prompt"], list) and g["prompt"] else g["prompt"]
        print(f"\n[{i}] prompt:    {prompt}\n    reference: {g['reference']}\n    model:     {g['generated']}"
              + ("" if g["stopped"] else "   (did not stop)"))
    if report["generation_error"]:
        print(f"generations: {report['generation_error']}", file=sys.stderr)
    return 0
