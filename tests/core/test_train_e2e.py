"""End to end, for real: `sft-wizard run` trains the builtin model on the bundled demo on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sftwizard.core.events import read_events

CLI = [sys.executable, "-m", "sftwizard.cli"]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def run_dir_from(stderr: str) -> Path:
    line = next(l for l in stderr.splitlines() if l.startswith("run "))
    return Path(line.split("(", 1)[1].rstrip(")"))


def losses(events: list[dict]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "log" and e.get("loss") is not None]


@pytest.fixture(scope="module")
def demo_run(repo_root: Path) -> Path:
    """The shipped demo preset, exactly as a user runs it."""
    out = run_cli("run", str(repo_root / "presets" / "demo.yaml"))
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir_from(out.stderr)


def test_demo_loss_halves_and_events_are_complete(demo_run: Path):
    events = read_events(demo_run / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[-1]["status"] == "finished"
    assert {"log", "eval", "checkpoint"} <= set(kinds)
    curve = losses(events)
    assert curve[-1] <= curve[0] / 2, curve
    log = next(e for e in events if e["event"] == "log" and e.get("tokens_per_s"))
    assert {"step", "loss", "learning_rate", "grad_norm", "tokens_per_s", "epoch", "time"} <= set(log)
    assert (demo_run / "config.yaml").exists() and (demo_run / "train.log").exists()
    assert (demo_run / "final" / "model.safetensors").exists()


def test_demo_model_learned_to_stop(demo_run: Path, repo_root: Path):
    """Greedy answers to held-out prompts end with the end-of-turn token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = demo_run / "final"
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    rows = [json.loads(l) for l in (repo_root / "core/assets/demo/eval.jsonl").read_text().splitlines()[:8]]
    stopped = 0
    for row in rows:
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        enc = tok.apply_chat_template(msgs[:last], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**enc, max_new_tokens=48, do_sample=False)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        stopped += tok.eos_token_id in new
    assert stopped == len(rows)


def test_lora_run_saves_an_adapter_peft_can_load(repo_root: Path, builtin_model_dir: Path):
    out = run_cli("run", str(repo_root / "presets" / "demo.yaml"), "--set", "method.type=lora",
                  "--set", "training.max_steps=16", "--set", "training.eval_strategy=no",
                  "--set", "training.logging_steps=2", "--set", "training.learning_rate=1e-2")
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = run_dir_from(out.stderr)
    events = read_events(run_dir / "events.jsonl")
    prepared = next(e for e in events if e["event"] == "prepared")
    assert prepared["trainable_params"] < prepared["total_params"] / 2
    curve = losses(events)
    assert curve[-1] < curve[0]
    final = run_dir / "final"
    assert (final / "adapter_config.json").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    model = PeftModel.from_pretrained(base, str(final))
    assert any("lora_A" in name for name, _ in model.named_parameters())
