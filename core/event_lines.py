"""One line of text per event, shared by every viewer (`run`, `attach`, the TUI's log pane)."""

from __future__ import annotations

from pathlib import Path

from sftwizard.core.metrics import format_duration


def event_line(ev: dict) -> str | None:
    """The live progress line of an event (what `sft-wizard run` prints), or None."""
    kind = ev.get("event")
    if kind == "log":
        total = ev.get("max_steps") or "?"
        loss, grad = ev.get("loss"), ev.get("grad_norm")
        parts = [f"step {ev.get('step'):>5}/{total}",
                 (f"loss {loss:.4f}" if isinstance(loss, (int, float)) else f"loss {loss}") if loss is not None else ""]
        if ev.get("learning_rate") is not None:
            parts.append(f"lr {ev['learning_rate']:.2e}")
        if grad is not None:
            parts.append(f"grad {grad:.2f}" if isinstance(grad, (int, float)) else f"grad {grad}")
        if ev.get("tokens_per_s"):
            parts.append(f"{ev['tokens_per_s']:,.0f} tok/s")
        if ev.get("samples_per_s"):
            parts.append(f"{ev['samples_per_s']:,.1f} samples/s")
        if ev.get("eta_s") is not None:
            parts.append(f"ETA {format_duration(ev['eta_s'])}")
        if ev.get("gpu_mem_gib") is not None:
            gpu = f"GPU {ev['gpu_mem_gib']:.1f}/{ev.get('gpu_mem_total_gib') or 0:.0f} GiB {ev.get('gpu_util_pct') or 0:.0f}%"
            if ev.get("gpu_power_w") is not None:
                gpu += f" {ev['gpu_power_w']:.0f} W"
            parts.append(gpu)
        return "  ".join(p for p in parts if p)
    if kind == "eval":
        value = ev.get("eval_loss")
        if value is None:
            return None
        return f"step {ev.get('step'):>5}  eval_loss " + (f"{value:.4f}" if isinstance(value, (int, float)) else str(value))
    if kind == "prepared":
        return (f"data: {ev.get('train_rows')} train / {ev.get('eval_rows')} eval rows; template: "
                f"{ev.get('template_source')}; trainable {ev.get('trainable_params'):,} of {ev.get('total_params'):,} params")
    if kind == "checkpoint":
        return f"checkpoint {ev.get('path')}"
    if kind == "warning":
        return f"warning: {ev.get('message')}"
    return None


def history_line(ev: dict) -> str | None:
    """``event_line`` plus the turns of a run's life (start, resume, errors, the end)."""
    kind = ev.get("event")
    if kind == "start":
        return f"start: {ev.get('model')} ({ev.get('method')})"
    if kind == "resume":
        return f"— resumed from {Path(ev.get('resume_from') or '?').name}"
    if kind == "error":
        return f"error: {ev.get('message')}"
    if kind == "end":
        if ev.get("status") == "finished":
            return "end: finished"
        return f"— {ev.get('status')} at step {ev.get('step')}: {ev.get('message')}"
    line = event_line(ev)
    if line is None and ev.get("message") and kind not in ("log", "eval"):
        return f"{kind}: {ev['message']}"  # any other event that speaks to the user
    return line
