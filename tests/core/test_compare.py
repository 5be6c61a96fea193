"""`sft-wizard compare` (issue 18.2): curves, results and the config keys that differ.

The runs are run directories as the runner leaves them (config.yaml, meta.json, events.jsonl),
written here with fixed times so the numbers are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftwizard.cli.main import main
from sftwizard.core.compare import compare_runs, config_diff, curves_of
from sftwizard.core.config import load_preset, save_preset

REPO = Path(__file__).resolve().parents[2]


def write_run(root: Path, name: str, lr: float, slope: float, tps: float, t0: float = 1_700_000_000.0,
              resumed: bool = False) -> Path:
    """A finished demo-like run: 40 steps, eval every 10, ``slope`` sets how fast the loss falls."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = load_preset(REPO / "presets" / "demo.yaml")
    cfg.training.learning_rate = lr
    cfg.run.name = name
    save_preset(cfg, run_dir / "config.yaml")
    (run_dir / "meta.json").write_text(json.dumps({"id": name, "name": name}))
    events = [{"event": "start", "time": t0, "step": 0, "model": "builtin:tiny-chat", "method": "full"}]
    for step in range(1, 41):
        loss = 6.0 * (1 - slope) ** step + 1.0
        events.append({"event": "log", "time": t0 + step, "step": step, "max_steps": 40, "loss": loss,
                       "num_tokens": 1000.0 * step, "tokens_per_s": tps})
        if step % 10 == 0:
            events.append({"event": "eval", "time": t0 + step + 0.5, "step": step, "eval_loss": loss + 0.2 + 0.01 * step})
        if resumed and step == 20:  # a resume from checkpoint-15 logs 16-20 again
            events.append({"event": "resume", "time": t0 + 20.6, "step": 15, "model": "builtin:tiny-chat"})
            for again in range(16, 21):
                events.append({"event": "log", "time": t0 + 20.7, "step": again, "max_steps": 40, "loss": 2.0,
                               "num_tokens": 1000.0 * again, "tokens_per_s": tps})
    events.append({"event": "end", "time": t0 + 42, "step": 40, "status": "finished"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_dir


def test_compare_two_runs(tmp_path):
    a = write_run(tmp_path, "run-a", 3e-3, 0.10, 900.0)
    b = write_run(tmp_path, "run-b", 1e-3, 0.05, 1100.0, resumed=True)
    comparison = compare_runs([str(a), str(b)])
    ra, rb = comparison.runs
    assert (ra.id, rb.id) == ("run-a", "run-b")
    assert [p[0] for p in ra.eval] == [10, 20, 30, 40] and ra.eval[0][1] == 10_000.0  # trained tokens at the eval
    assert [p[0] for p in rb.train] == list(range(1, 41))  # resumed steps kept once, the newest
    assert rb.train[19][2] == 2.0
    assert ra.final_eval_loss == pytest.approx(6.0 * 0.9 ** 40 + 1.0 + 0.2 + 0.4)
    assert ra.best_step == 10 or ra.best_eval_loss <= min(p[2] for p in ra.eval)
    assert (ra.tokens_per_s, rb.tokens_per_s) == (900.0, 1100.0)
    assert ra.duration_s == 42.0 and ra.status == "finished"
    assert comparison.config_diff == [{"key": "training.learning_rate", "values": [3e-3, 1e-3]}]


def test_compare_json_keys_are_the_documented_ones(tmp_path, capsys):
    a = write_run(tmp_path, "run-a", 3e-3, 0.10, 900.0)
    b = write_run(tmp_path, "run-b", 1e-3, 0.05, 1100.0)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"runs", "config_diff"}
    documented = (REPO / "README.md").read_text()
    for key in out["runs"][0]:
        assert f"`{key}`" in documented, key
    assert out["runs"][0]["eval"][0] == [10, 10000.0, pytest.approx(6.0 * 0.9 ** 10 + 1.3)]
    assert main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "training.learning_rate: 0.003 | 0.001" in text and "best eval loss" in text


def test_compare_needs_two_distinct_runs(tmp_path, capsys):
    a = write_run(tmp_path, "run-a", 3e-3, 0.10, 900.0)
    assert main(["compare", str(a)]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["compare", str(a), str(a)]) == 2
    assert "given twice" in capsys.readouterr().err


def test_curves_and_diff_helpers():
    train, evals = curves_of([{"event": "log", "step": 2, "loss": "nan", "num_tokens": 5},
                              {"event": "eval", "step": 2, "eval_loss": 1.5}])
    assert train == [] and evals == [(2, 5.0, 1.5)]
    assert config_diff([{"a": {"b": 1, "c": [1]}}, {"a": {"b": 1, "c": [2]}}, None]) == [
        {"key": "a.b", "values": [1, 1, None]}, {"key": "a.c", "values": [[1], [2], None]}]
