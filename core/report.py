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
from .masks import RENDER_LOCK
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


def held_out_prompts(cfg, n: int) -> list[dict]:
    """Up to ``n`` held-out (prompt messages, reference) pairs from the run's eval split."""
    from .runner import resolve_data

    _, evals, _ = resolve_data(cfg)
    pairs = []
    for ex in evals:
        if len(pairs) >= n:
            break
        if "messages" in ex:
            msgs = ex["messages"]
            last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
            if last is None:
                continue
            pairs.append({"messages": msgs[:last], "reference": msgs[last].get("content") or ""})
        elif isinstance(ex.get("prompt"), list):
            ref = ex.get("completion") or []
            pairs.append({"messages": ex["prompt"],
                          "reference": " ".join(m.get("content") or "" for m in ref if isinstance(m, dict))})
        elif isinstance(ex.get("prompt"), str):
            pairs.append({"text": ex["prompt"], "reference": ex.get("completion") or ""})
    return pairs


def _load_final(final: Path):
    if (final / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(final))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(final))


def generate_answers(run_dir: Path, cfg, n: int = DEFAULT_GENERATIONS,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[dict]:
    """Greedy answers of the run's final model to ``n`` held-out prompts, beside the references."""
    import torch
    from transformers import AutoTokenizer

    final = RunDir(run_dir).final
    if not final.is_dir():
        raise ReportError(f"{final}: no final model (the run did not finish)")
    pairs = held_out_prompts(cfg, n)
    if not pairs:
        return []
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    template = None
    try:
        from .templates import resolve_template

        template = resolve_template(tokenizer, cfg.template).template
    except Exception:  # noqa: BLE001 - the tokenizer's own template is the fallback
        template = None
    model = _load_final(final)
    model.eval()
    out = []
    for pair in pairs:
        if "messages" in pair:
            with RENDER_LOCK:
                prompt = tokenizer.apply_chat_template(pair["messages"], chat_template=template, tokenize=False,
                                                       add_generation_prompt=True)
        else:
            prompt = pair["text"]
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = gen[0, ids.shape[1]:].tolist()
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        stop_ids = {tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])} - {None}
        out.append({
            "prompt": pair.get("messages") or pair.get("text"),
            "reference": pair["reference"],
            "generated": tokenizer.decode(new, skip_special_tokens=True).strip(),
            "stopped": bool(new) and new[-1] in stop_ids,
            "new_tokens": len(new),
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
