"""One human line per run event: the words `run`, `attach` and the TUI's Run screen share.

``event_line`` is the formatter of every kind in ``core/run_model.py``'s schema: a new kind gets
its line here (or none: a kind with a ``message`` is told as "kind: message" without one).

Events come from ``events.jsonl`` (docs/run-directory.md). A value may be a float, ``NaN``
(written by ``json.dumps(allow_nan=True)``), a string such as ``"nan"`` from an older run, or
missing; every formatter here takes all of those without raising.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metrics import format_duration
from .run_model import SEGMENT_STARTS, Kind, as_float


def num(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` when it is a number, else as it was written."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def gpu_text(ev: dict) -> str | None:
    """"12.3/80 GiB 97% 350 W" from a log event's NVML samples, or None when it has none."""
    used = ev.get("gpu_mem_gib")
    if used is None:
        return None
    text = num(used, ".1f")
    if ev.get("gpu_mem_total_gib"):
        text += "/" + num(ev["gpu_mem_total_gib"], ".0f")
    text += " GiB"
    if ev.get("gpu_util_pct") is not None:
        text += f" {num(ev['gpu_util_pct'], '.0f')}%"
    if ev.get("gpu_power_w") is not None:
        text += f" {num(ev['gpu_power_w'], '.0f')} W"
    return text


def log_line(ev: dict, *, live_stats: bool = True) -> str:
    """A ``log`` event: step, loss, lr, grad norm, tok/s; with ``live_stats`` also samples/s,
    ETA and GPU (the TUI leaves those to its status bar, which shows the latest)."""
    parts = [f"step {ev.get('step') or 0:>5}/{ev.get('max_steps') or '?'}"]
    if ev.get("loss") is not None:
        parts.append("loss " + num(ev["loss"], ".4f"))
    if ev.get("learning_rate") is not None:
        parts.append("lr " + num(ev["learning_rate"], ".2e"))
    if ev.get("grad_norm") is not None:
        parts.append("grad " + num(ev["grad_norm"], ".2f"))
    if ev.get("tokens_per_s"):
        parts.append(num(ev["tokens_per_s"], ",.0f") + " tok/s")
    if live_stats:
        if ev.get("samples_per_s"):
            parts.append(num(ev["samples_per_s"], ",.1f") + " samples/s")
        if isinstance(ev.get("eta_s"), (int, float)):
            parts.append("ETA " + format_duration(ev["eta_s"]))
        gpu = gpu_text(ev)
        if gpu:
            parts.append("GPU " + gpu)
    return "  ".join(parts)


def amount(value: Any, unit: str | None) -> str:
    """A count in its unit: "1.2 GB", "12,000 rows", "3 shards"."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if unit == "bytes":
        from .hub_download import format_bytes

        return format_bytes(value)
    if unit and value == 1 and unit.endswith("s"):
        unit = unit[:-1]  # 1 shard, 1 file
    return f"{value:,.0f} {unit or ''}".rstrip()


def phase_progress_text(ev: dict) -> str:
    """"1.2 GB / 16.1 GB  7%  85.3 MB/s  ETA 3m12s" for a ``phase`` event (what the bar leaves out)."""
    unit = ev.get("unit")
    done, total = ev.get("done"), ev.get("total")
    if isinstance(total, (int, float)) and total > 0:
        first = amount(done or 0, unit) if unit == "bytes" else amount(done or 0, None)
        text = first + " / " + amount(total, unit)
        if isinstance(done, (int, float)):
            text += f"  {min(100.0, 100 * done / total):.0f}%"
    else:
        text = amount(done or 0, unit)
    rate = ev.get("rate")
    if isinstance(rate, (int, float)) and rate > 0:
        text += "  " + (amount(rate, unit) if unit == "bytes" else f"{rate:,.1f} {unit}") + "/s"
    if isinstance(ev.get("eta_s"), (int, float)) and ev.get("state") != "end":
        text += "  ETA " + format_duration(ev["eta_s"])
    return text


def phase_line(ev: dict) -> str | None:
    """A ``phase`` event: "download  1.2 GB / 16.1 GB  7%  85.3 MB/s  ETA 3m12s", "tokenize done in 4s"."""
    name = ev.get("phase") or "?"
    if ev.get("what"):
        name += f" {ev['what']}"
    state = ev.get("state")
    if state == "begin":
        total = ev.get("total")
        return f"{name} …" + (f" {amount(total, ev.get('unit'))}" if isinstance(total, (int, float)) and total else "")
    if state == "end":
        return f"{name} done in {format_duration(as_float(ev.get('duration_s')))}"
    return f"{name}  {phase_progress_text(ev)}"


def best_checkpoint_text(ev: dict) -> str:
    """" — the best checkpoint: checkpoint-40 (eval_loss 1.2345)" when a finished run ended on its best
    checkpoint (training.load_best_model_at_end), else ""."""
    best = ev.get("best_checkpoint")
    if not best:
        return ""
    loss = ev.get("best_eval_loss")
    return f" — the best checkpoint: {Path(best).name}" + (f" (eval_loss {num(loss, '.4f')})" if loss is not None else "")


def sample_line(ev: dict, width: int = 60) -> str:
    """A ``sample`` event: 'sample 2 @ step 75: "Paris." (stopped, 4 tokens, 0.1 s)'."""
    text = " ".join(str(ev.get("text") or "").split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    how = "stopped" if ev.get("stopped") else "did not stop"
    took = f", {num(ev['generation_s'], '.1f')} s" if ev.get("generation_s") is not None else ""
    return (f"sample {ev.get('prompt_id')} @ step {ev.get('step')}: \"{text}\" "
            f"({how}, {ev.get('new_tokens')} tokens{took})")


def adapt_line(ev: dict) -> str:
    """An ``adapt`` event: what run.on_oom: adapt changed after an out-of-memory, and why."""
    changes = ", ".join(f"{k} {ev['old'].get(k)} → {v}" for k, v in (ev.get("new") or {}).items()
                        if isinstance(ev.get("old"), dict))
    return f"adapt (try {ev.get('attempt')}/{ev.get('max_attempts')}): {changes} — {ev.get('reason')}"


def event_line(ev: dict, *, live_stats: bool = True) -> str | None:
    """One line for any event, or None for events that carry nothing to read."""
    kind = ev.get("event")
    step = ev.get("step")
    if kind == Kind.LOG:
        return log_line(ev, live_stats=live_stats)
    if kind == Kind.PHASE:
        return phase_line(ev)
    if kind == Kind.EVAL:
        if ev.get("eval_loss") is None:
            return None
        return f"step {step or 0:>5}  eval_loss " + num(ev["eval_loss"], ".4f")
    if kind in SEGMENT_STARTS:
        return f"{kind}: {ev.get('model')} ({ev.get('method')})"
    if kind == Kind.PREPARED:
        return (f"data: {ev.get('train_rows')} train / {ev.get('eval_rows')} eval rows · template: "
                f"{ev.get('template_source')} · trainable {num(ev.get('trainable_params') or 0, ',')} of "
                f"{num(ev.get('total_params') or 0, ',')} params")
    if kind == Kind.SAMPLE:
        return sample_line(ev)
    if kind == Kind.ADAPT:
        return adapt_line(ev)
    if kind == Kind.CHECKPOINT:
        where = f" → {Path(ev['path']).name}" if ev.get("path") else ""
        return f"checkpoint at step {step}{where}"
    if kind in (Kind.ERROR, Kind.WARNING):
        return f"{kind}: {ev.get('message')}"
    if kind == Kind.END:
        return (f"end: {ev.get('status')}" + (f" — {ev.get('message')}" if ev.get("message") else "")
                + best_checkpoint_text(ev))
    if ev.get("message"):  # any other event that speaks to the user
        return f"{kind}: {ev['message']}"
    return None


def run_status_text(status: str, phase: dict | None) -> str:
    """"running", or "running: download 7%" for a run not yet training (a RunInfo's status and phase)."""
    if not phase:
        return status
    done, total = phase.get("done"), phase.get("total")
    share = (f" {100 * done / total:.0f}%" if isinstance(done, (int, float)) and isinstance(total, (int, float))
             and total else "")
    return f"{status}: {phase.get('name')}{share}"
