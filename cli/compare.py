"""`sft-wizard compare RUN RUN…`: runs side by side — results, curves, the settings that differ."""

from __future__ import annotations

import argparse

from sftwizard.core.metrics import format_duration

from .common import add_json_flag, print_json

CURVE_POINTS = 6  # eval points shown per run in the text output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two or more runs side by side: eval loss, tokens/s, duration, "
                                       "loss curves and the settings that differ")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids, unique id prefixes, directories or 'last'")
    add_json_flag(p)
    p.set_defaults(func=cmd_compare)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_compare(args: argparse.Namespace) -> int:
    from sftwizard.core.compare import compare_runs

    comparison = compare_runs(args.runs)  # CompareError is a UserError: one sentence, exit 2
    if args.json:
        print_json(comparison.to_dict())
        return 0
    print(text_report(comparison))
    return 0


def text_report(comparison) -> str:
    """The comparison as plain text: one column per run."""
    runs = comparison.runs
    width = max(12, *(len(r.id) for r in runs))
    rows = [
        ("run", [r.id for r in runs]),
        ("status", [r.status for r in runs]),
        ("steps", [_fmt(r.steps, "d") for r in runs]),
        ("final eval loss", [_fmt(r.final_eval_loss, ".4f") for r in runs]),
        ("best eval loss", [_fmt(r.best_eval_loss, ".4f") + (f" @{r.best_step}" if r.best_step is not None else "")
                            for r in runs]),
        ("final train loss", [_fmt(r.final_train_loss, ".4f") for r in runs]),
        ("tokens/s", [_fmt(r.tokens_per_s, ",.0f") for r in runs]),
        ("trained tokens", [_fmt(r.trained_tokens, ",.0f") for r in runs]),
        ("duration", [format_duration(r.duration_s) for r in runs]),
    ]
    lines = [f"{label:<18}" + "  ".join(f"{v:<{width}}" for v in values) for label, values in rows]
    lines.append("")
    lines.append("eval loss by step:")
    for r in runs:
        points = r.eval[:: max(1, -(-len(r.eval) // CURVE_POINTS))] if r.eval else []
        lines.append(f"  {r.id}: " + ("  ".join(f"{s}:{loss:.3f}" for s, _, loss in points) or "no evaluations"))
    lines.append("")
    if comparison.config_diff:
        lines.append("settings that differ:")
        for d in comparison.config_diff:
            lines.append(f"  {d['key']}: " + " | ".join(str(v) for v in d["values"]))
    else:
        lines.append("settings: the same in every run")
    return "\n".join(lines)
