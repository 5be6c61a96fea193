"""After the run: the best checkpoint by eval loss, the train/eval gap, and answers to read.

``build_report(run_dir)`` reads the run's ``events.jsonl`` and ``config.yaml``; with
``generations > 0`` it also loads the final model (or adapter) and answers a few held-out
prompts greedily, each beside its reference answer. Only the report's generation step loads
weights; everything else reads files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .curve_doctor import TRAIN_WINDOW, diagnose_events
from .errors import UserError
from .events import read_events
from .run_model import Kind, Status, fold
from .rundir import RunDir
from .samples import samples_by_prompt

DEFAULT_GENERATIONS = 3
DEFAULT_MAX_NEW_TOKENS = 64


class ReportError(UserError, ValueError):
    """A run cannot be reported on (no such run, no events). One sentence."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def best_checkpoint(events: list[dict]) -> dict | None:
    """The evaluation with the lowest eval loss, and the checkpoint saved at that step if any."""
    evals = [(e.get("step") or 0, _num(e.get("eval_loss"))) for e in events if e.get("event") == Kind.EVAL]
    evals = [(s, loss) for s, loss in evals if loss is not None]
    if not evals:
        return None
    step, loss = min(evals, key=lambda e: (e[1], e[0]))
    ckpts = {e.get("step"): e.get("path") for e in events if e.get("event") == Kind.CHECKPOINT and e.get("path")}
    path = ckpts.get(step)
    return {"step": step, "eval_loss": loss, "checkpoint": path,
            "checkpoint_exists": bool(path and Path(path).is_dir())}


def train_loss_at(events: list[dict], step: int) -> float | None:
    losses = [_num(e.get("loss")) for e in events
              if e.get("event") == Kind.LOG and (e.get("step") or 0) <= step]
    losses = [v for v in losses if v is not None][-TRAIN_WINDOW:]
    return sum(losses) / len(losses) if losses else None


def loss_summary(events: list[dict]) -> dict:
    """Last train/eval losses and the gap between them (eval minus train), at the end and at the best."""
    evals = [e for e in events if e.get("event") == Kind.EVAL and _num(e.get("eval_loss")) is not None]
    logs = [e for e in events if e.get("event") == Kind.LOG and _num(e.get("loss")) is not None]
    out: dict[str, Any] = {
        "final_train_loss": _num(logs[-1]["loss"]) if logs else None,
        "final_eval_loss": _num(evals[-1]["eval_loss"]) if evals else None,
        "train_eval_gap": None, "gap_at_best": None, "evaluations": len(evals),
    }
    if evals:
        last = evals[-1]
        train = train_loss_at(events, last.get("step") or 0)
        if train is not None:
            out["train_eval_gap"] = round(last["eval_loss"] - train, 6)
        best = best_checkpoint(events)
        train_best = train_loss_at(events, best["step"]) if best else None
        if best and train_best is not None:
            out["gap_at_best"] = round(best["eval_loss"] - train_best, 6)
    return out


def held_out_prompts(cfg, n: int):
    """Up to ``n`` held-out prompts of the run's eval split, as training formatted them (its
    system prompt included: ``held_out.held_out_prompts``, the builder chat and samples use)."""
    from .held_out import held_out_prompts as build
    from .runner import resolve_data

    _, evals, _ = resolve_data(cfg)
    return build(evals, cfg.template.system_prompt, n)


def generate_answers(run_dir: Path, cfg, n: int = DEFAULT_GENERATIONS,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[dict]:
    """Greedy answers of the run's final model to ``n`` held-out prompts, beside the references.

    The model, template and stop tokens are chat's (``chat.load_chat_model``: the merged model,
    the adapter on its base, or the full fine-tune, with the template the run trained with and
    ``stop_tokens``' end of turn), so ``stopped`` means what it means in ``sft-wizard chat``."""
    from .chat import load_chat_model

    final = RunDir(run_dir).final
    if not final.is_dir():
        raise ReportError(f"{final}: no final model (the run did not finish)")
    prompts = held_out_prompts(cfg, n)
    if not prompts:
        return []
    out = []
    try:
        chat = load_chat_model(run_dir)
        replies = [chat.generate(p.messages, max_new_tokens=max_new_tokens) if p.messages is not None
                   else chat.complete(p.text, max_new_tokens=max_new_tokens) for p in prompts]
    except UserError as exc:  # no base model for the adapter, no chat template...: one sentence
        raise ReportError(str(exc).splitlines()[0]) from None
    for prompt, reply in zip(prompts, replies):
        out.append({
            "prompt": prompt.messages if prompt.messages is not None else prompt.text,
            "reference": prompt.reference or "",
            "generated": reply.text,
            "stopped": reply.stopped,
            "new_tokens": reply.new_tokens,
        })
    return out


def build_report(run_dir: str | Path, *, generations: int = DEFAULT_GENERATIONS,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """The after-run report as a JSON-ready dict (schema in docs/cli-doctor.md)."""
    from .config import ConfigError, load_preset

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    events = read_events(rd.events)
    if not events:
        raise ReportError(f"{rd.events}: no events (not a run directory, or the run never started)")
    try:
        cfg = load_preset(rd.config)
    except ConfigError:
        cfg = None
    state = fold(events)
    recorded = [e for e in events if e.get("event") == Kind.WARNING and e.get("source") == "curve"]
    curve = recorded or diagnose_events([e for e in events if e.get("event") != Kind.WARNING], cfg)
    report: dict[str, Any] = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "status": state.end_status or Status.RUNNING,  # what the events say (report reads files only)
        "steps": state.top_step,
        "best": best_checkpoint(events),
        **loss_summary(events),
        "curve_warnings": [{k: w.get(k) for k in ("step", "code", "message", "setting", "suggested")}
                           for w in curve],
        "generations": [],
        "generation_error": None,
        "skipped_events": events.skipped,
        # the answers the run sampled while it trained (`sample` events), per prompt, step by step
        "samples": [p.to_dict() for p in samples_by_prompt(events)],
    }
    if generations > 0:
        if cfg is None:
            report["generation_error"] = f"{rd.config}: missing or invalid, cannot find held-out rows"
        elif not rd.final.is_dir():
            report["generation_error"] = "no final model (the run did not finish)"
        else:
            try:
                report["generations"] = generate_answers(run_dir, cfg, generations, max_new_tokens)
            except ReportError as exc:
                report["generation_error"] = str(exc)
            if not report["generations"] and not report["generation_error"]:
                report["generation_error"] = "no held-out rows (set data.eval_source or data.eval_fraction)"
    return report
