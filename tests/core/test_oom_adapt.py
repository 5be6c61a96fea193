"""run.on_oom: adapt (issue 18.3): an out-of-memory error resumes with a smaller micro-batch.

The error is a real ``torch.OutOfMemoryError`` raised inside the training loop by the runner's
test-only hook (``SFT_WIZARD_TEST_OOM_AT``), in a real detached run (supervisor + runner)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sftwizard.core import runs
from sftwizard.core.config import config_from_dict, load_preset
from sftwizard.core.event_lines import event_line
from sftwizard.core.events import read_events
from sftwizard.core.oom_adapt import TEST_OOM_ENV, effective_batch, give_up_message, next_fix
from sftwizard.core.rundir import EVENTS_FILE

REPO = Path(__file__).resolve().parents[2]


def oom_config(root: Path, **training):
    d = load_preset(REPO / "presets" / "demo.yaml").to_dict()
    d["data"]["sources"][0]["max_rows"] = 64
    d["data"]["eval_source"] = None
    d["training"].update(dict(max_steps=8, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                              logging_steps=1, eval_strategy="no", save_steps=2, save_total_limit=2,
                              warmup_ratio=0.0, max_length=96), **training)
    d["run"].update(output_root=str(root), on_oom="adapt", samples=0)
    return config_from_dict(d)


def wait_ended(run_dir: Path, timeout: float = 240) -> runs.RunInfo:
    deadline = time.time() + timeout
    while runs.is_alive(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    assert not runs.is_alive(run_dir), f"run {run_dir.name} still running after {timeout} s"
    return runs.run_info(run_dir)


def test_injected_oom_adapts_and_finishes_with_the_same_effective_batch(tmp_path, monkeypatch):
    # OOM when step 5 begins with a micro-batch above 2 (checkpoint-4 exists), and when step 2
    # begins in a second run saving only at step 4 (no checkpoint yet: back to step 0).
    monkeypatch.setenv(TEST_OOM_ENV, "5:2")
    late = runs.launch(oom_config(tmp_path / "late"))
    monkeypatch.setenv(TEST_OOM_ENV, "2:2")
    early = runs.launch(oom_config(tmp_path / "early", save_steps=4))
    default = oom_config(tmp_path / "fail")
    default.run.on_oom = "fail"
    failing = runs.launch(default)  # the default: fails as before

    info = wait_ended(late.run_dir)
    assert info.status == "finished", (info.message, (late.run_dir / "train.log").read_text()[-2000:])
    events = read_events(late.run_dir / EVENTS_FILE)
    adapt = [e for e in events if e["event"] == "adapt"]
    assert len(adapt) == 1
    assert adapt[0]["old"]["training.per_device_train_batch_size"] == 4
    assert adapt[0]["new"] == {"training.per_device_train_batch_size": 2, "training.gradient_accumulation_steps": 2,
                               "training.per_device_eval_batch_size": 16}
    assert adapt[0]["resume_from"].endswith("checkpoint-4") and "micro-batch" in adapt[0]["reason"]
    assert "per_device_train_batch_size 4 → 2" in event_line(adapt[0])
    error = next(e for e in events if e["event"] == "error")
    assert error["reason"] == "oom" and error["adapting"] and error["step"] == 4
    begins = [e for e in events if e["event"] == "train_begin"]
    assert [b["samples_per_step"] for b in begins] == [4, 4]  # the same effective batch
    cfg = load_preset(late.run_dir / "config.yaml")
    assert (cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps) == (2, 2)
    steps = [e["step"] for e in events if e["event"] == "log" and e.get("loss") is not None]
    assert steps == list(range(1, 9))  # one continuous curve: 1-4, then 5-8 after the resume
    assert [e["event"] for e in events].count("end") == 1 and events[-1]["status"] == "finished"

    info = wait_ended(early.run_dir)
    assert info.status == "finished", (info.message, (early.run_dir / "train.log").read_text()[-2000:])
    events = read_events(early.run_dir / EVENTS_FILE)
    adapt = next(e for e in events if e["event"] == "adapt")
    assert adapt["resume_from"] is None and "from step 0" in adapt["reason"]
    assert [e["event"] for e in events if e["event"] in ("start", "resume")] == ["start", "start"]
    after = events[events.index(adapt):]
    assert [e["step"] for e in after if e["event"] == "log" and e.get("loss") is not None] == list(range(1, 9))

    info = wait_ended(failing.run_dir)
    assert (info.status, info.reason) == ("failed", "oom") and "CUDA out of memory" in info.message
    assert not [e for e in read_events(failing.run_dir / EVENTS_FILE) if e["event"] == "adapt"]


def test_nothing_left_to_adapt_fails_with_the_diagnosis(tmp_path):
    from sftwizard.core.config import save_preset
    from sftwizard.core.supervisor import adapt_after_oom

    cfg = oom_config(tmp_path, per_device_train_batch_size=1, gradient_checkpointing=True)
    run_dir = runs.create_run(cfg)
    oom = {"event": "error", "step": 3, "reason": "oom", "message": "CUDA out of memory: try a smaller batch",
           "adapting": True}
    assert adapt_after_oom(run_dir, 1, oom) is None
    end = read_events(run_dir / EVENTS_FILE)[-1]
    assert (end["event"], end["status"], end["reason"]) == ("end", "failed", "oom")
    assert "nothing left to adapt" in end["message"] and "CUDA out of memory: try" in end["message"]
    save_preset(oom_config(tmp_path), run_dir / "config.yaml")  # plenty to adapt, but tries are spent
    assert adapt_after_oom(run_dir, 5, oom) is None
    assert "still out of memory after 4 adaptations" in read_events(run_dir / EVENTS_FILE)[-1]["message"]


def test_fixes_keep_the_effective_batch_then_checkpoint_then_max_length_only_if_allowed(tmp_path):
    cfg = oom_config(tmp_path, per_device_train_batch_size=6, gradient_accumulation_steps=2,
                     per_device_eval_batch_size=2, max_length=256)
    seen = []
    while (fix := next_fix(cfg)) is not None:
        cfg = fix.apply(cfg)
        seen.append(fix.new)
        assert effective_batch(cfg) == 12
    assert seen == [{"training.per_device_train_batch_size": 3, "training.gradient_accumulation_steps": 4},
                    {"training.per_device_train_batch_size": 1, "training.gradient_accumulation_steps": 12,
                     "training.per_device_eval_batch_size": 1},
                    {"training.gradient_checkpointing": True}]
    assert "on_oom_allow" in give_up_message(cfg, 3, "CUDA out of memory")
    cfg = cfg.replace(run=config_from_dict({"run": {"on_oom": "adapt", "on_oom_allow": ["max_length"]}}).run)
    lengths = []
    while (fix := next_fix(cfg)) is not None:
        cfg = fix.apply(cfg)
        lengths.append(cfg.training.max_length)
    assert lengths == [128, 64]  # never below 64


@pytest.mark.parametrize("bad, message", [
    ({"on_oom": "retry"}, "run.on_oom"), ({"on_oom_allow": ["lr"]}, "run.on_oom_allow"), ({"samples": -1}, "run.samples"),
])
def test_bad_run_settings_name_the_field(bad, message):
    from sftwizard.core.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        config_from_dict({"run": bad})
