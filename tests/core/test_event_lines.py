"""The one line per run event that `run`, `attach` and the Run screen all print."""

from __future__ import annotations

import json

from sftwizard.cli.run import format_event
from sftwizard.core.event_lines import as_float, event_line, gpu_text


def test_a_log_line_carries_the_numbers_a_user_watches():
    ev = {"event": "log", "step": 40, "max_steps": 60, "loss": 1.23456, "learning_rate": 2.5e-4,
          "grad_norm": 0.5, "tokens_per_s": 12345.6, "samples_per_s": 3.21, "eta_s": 75,
          "gpu_mem_gib": 61.23, "gpu_mem_total_gib": 79.6, "gpu_util_pct": 97, "gpu_power_w": 612.4}
    line = event_line(ev)
    for piece in ("step    40/60", "loss 1.2346", "lr 2.50e-04", "grad 0.50", "12,346 tok/s",
                  "3.2 samples/s", "ETA 1m15s", "GPU 61.2/80 GiB 97% 612 W"):
        assert piece in line, (piece, line)
    compact = event_line(ev, live_stats=False)  # the TUI's log pane: its status bar has the rest
    assert "GPU" not in compact and "ETA" not in compact and "loss 1.2346" in compact


def test_non_numbers_in_events_are_written_as_they_came_never_raised_on():
    # events.jsonl is written with allow_nan=True: a diverged run has NaN/Infinity floats there
    raw = '{"event": "log", "step": 2, "max_steps": 9, "loss": NaN, "grad_norm": Infinity}'
    assert event_line(json.loads(raw)) == "step     2/9  loss nan  grad inf"
    assert event_line({"event": "log", "step": 3, "loss": "nan", "learning_rate": "?"}) == \
        "step     3/?  loss nan  lr ?"
    assert event_line({"event": "eval", "step": 4, "eval_loss": "nan"}) == "step     4  eval_loss nan"
    assert as_float("nan") != as_float("nan")  # a NaN, not None
    assert as_float("n/a") is None and as_float(None) is None and as_float(True) is None


def test_every_kind_of_event_has_its_line_and_the_cli_leaves_start_and_end_to_its_summary():
    assert event_line({"event": "checkpoint", "step": 40, "path": "/r/checkpoints/checkpoint-40"}) == \
        "checkpoint at step 40 → checkpoint-40"
    assert event_line({"event": "warning", "message": "loss is flat"}) == "warning: loss is flat"
    assert event_line({"event": "end", "status": "failed", "message": "out of memory"}) == \
        "end: failed — out of memory"
    assert event_line({"event": "end", "status": "finished", "best_checkpoint": "/r/checkpoints/checkpoint-40",
                       "best_eval_loss": 1.23456}) == "end: finished — the best checkpoint: checkpoint-40 (eval_loss 1.2346)"
    assert event_line({"event": "train_begin", "step": 0}) is None
    assert "trainable 1,024 of 2,048 params" in event_line(
        {"event": "prepared", "train_rows": 8, "eval_rows": 0, "template_source": "tokenizer",
         "trainable_params": 1024, "total_params": 2048})
    for kind in ("start", "end", "error"):
        assert format_event({"event": kind, "status": "finished", "message": "x"}) is None
    assert format_event({"event": "warning", "message": "loss is flat"}) == "warning: loss is flat"
    assert gpu_text({"event": "log"}) is None
