"""The after-run report: best checkpoint, train/eval gap, real greedy answers beside the references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sftwizard.cli.main import main
from sftwizard.core.config import DataSource, RunConfig, save_preset
from sftwizard.core.events import EventWriter
from sftwizard.core.report import best_checkpoint, build_report, loss_summary


def make_run(root: Path, model_dir: Path | None, evals=((50, 1.4), (100, 1.1), (150, 1.2)),
             lora: bool = False) -> Path:
    run = root / "20260101-000000-test"
    (run / "checkpoints").mkdir(parents=True)
    cfg = RunConfig()
    cfg = cfg.replace(data=cfg.data.__class__(sources=[DataSource(path="builtin:demo")],
                                              eval_source=DataSource(path="builtin:demo-eval")))
    save_preset(cfg, run / "config.yaml")
    w = EventWriter(run / "events.jsonl")
    w.emit("start", 0)
    ev = dict(evals)
    for step in range(10, 151, 10):
        w.emit("log", step, loss=2.0 - step / 100, grad_norm=1.0, learning_rate=1e-4)
        if step in ev:
            w.emit("eval", step, eval_loss=ev[step])
            (run / "checkpoints" / f"checkpoint-{step}").mkdir()
            w.emit("checkpoint", step, path=str(run / "checkpoints" / f"checkpoint-{step}"))
    w.emit("end", 150, status="finished", final_dir=str(run / "final"))
    w.close()
    if model_dir is not None:
        if lora:
            from peft import LoraConfig, get_peft_model
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                                   LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
            model.save_pretrained(run / "final")
            AutoTokenizer.from_pretrained(model_dir).save_pretrained(run / "final")
        else:
            shutil.copytree(model_dir, run / "final")
    return run


def test_best_checkpoint_and_gap_from_events(tmp_path):
    run = make_run(tmp_path, None)
    from sftwizard.core.events import read_events

    events = read_events(run / "events.jsonl")
    best = best_checkpoint(events)
    assert best["step"] == 100 and best["eval_loss"] == 1.1 and best["checkpoint_exists"]
    assert best["checkpoint"].endswith("checkpoint-100")
    s = loss_summary(events)
    # train loss at step 150: mean of logs 130, 140, 150 = 0.6; eval 1.2
    assert s["final_eval_loss"] == 1.2 and s["train_eval_gap"] == pytest.approx(0.6)
    assert s["gap_at_best"] == pytest.approx(1.1 - 1.1)  # mean of 80, 90, 100 = 1.1
    assert best_checkpoint([{"event": "log", "step": 1, "loss": 1.0}]) is None


def test_report_replays_the_curve_doctor_for_runs_without_recorded_warnings(tmp_path):
    run = make_run(tmp_path, None, evals=((30, 1.5), (60, 1.2), (90, 1.3), (120, 1.4), (150, 1.5)))
    report = build_report(run, generations=0)
    assert [w["code"] for w in report["curve_warnings"]] == ["overfitting"]
    assert report["best"]["step"] == 60 and report["generations"] == []


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_report_generates_answers_beside_references(tmp_path, builtin_model_dir, lora):
    run = make_run(tmp_path, builtin_model_dir, lora=lora)
    report = build_report(run, generations=2, max_new_tokens=6)
    assert report["status"] == "finished" and report["generation_error"] is None
    eval_rows = [json.loads(l) for l in
                 (Path(__file__).resolve().parents[2] / "core/assets/demo/eval.jsonl").read_text().splitlines()[:2]]
    assert [g["reference"] for g in report["generations"]] == [r["messages"][-1]["content"] for r in eval_rows]
    for g in report["generations"]:
        assert isinstance(g["generated"], str) and 1 <= g["new_tokens"] <= 6
        assert g["prompt"][-1]["role"] == "user"


def test_report_command_json_and_missing_run(tmp_path, capsys):
    run = make_run(tmp_path, None)
    assert main(["report", str(run), "--json", "--generations", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"]["step"] == 100 and out["generation_error"].startswith("no final model")
    assert main(["report", str(run), "--generations", "0"]) == 0
    assert "best eval loss 1.1000 at step 100" in capsys.readouterr().out
    assert main(["report", "no-such-run-anywhere"]) == 2
    assert "no-such-run-anywhere" in capsys.readouterr().err
