"""Sample answers while it trains (issue 18.1): real tiny model, real training steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftwizard.core import runs
from sftwizard.core.config import config_from_dict, load_preset
from sftwizard.core.event_lines import event_line
from sftwizard.core.events import read_events
from sftwizard.core.rundir import EVENTS_FILE
from sftwizard.core.samples import samples_by_prompt

REPO = Path(__file__).resolve().parents[2]


def demo_config(root: Path, **run) -> "object":
    d = load_preset(REPO / "presets" / "demo.yaml").to_dict()
    d["training"].update(max_steps=6, eval_steps=3, save_strategy="no", logging_steps=1,
                         per_device_train_batch_size=4, per_device_eval_batch_size=16, warmup_ratio=0.0)
    d["data"]["eval_source"]["max_rows"] = 16
    d["data"]["sources"][0]["max_rows"] = 64
    d["run"].update(output_root=str(root), **run)
    return config_from_dict(d)


def train_in_process(cfg) -> Path:
    from sftwizard.core.runner import execute

    run_dir = runs.create_run(cfg)
    assert execute(run_dir) == 0, (run_dir / "train.log")
    return run_dir


def test_samples_at_each_eval_with_the_base_model_first(tmp_path, capsys):
    from sftwizard.cli.main import main
    from sftwizard.core.report import build_report

    run_dir = train_in_process(demo_config(tmp_path))
    events = read_events(run_dir / EVENTS_FILE)
    kinds = [e["event"] for e in events]
    samples = [e for e in events if e["event"] == "sample"]
    # base model first: three samples at step 0 before any training log
    assert kinds.index("sample") < kinds.index("log")
    assert [(s["step"], s["prompt_id"]) for s in samples] == [(st, p) for st in (0, 3, 6) for p in range(3)]
    for ev_step in (3, 6):  # each after its evaluation
        at = [i for i, e in enumerate(events) if e["event"] == "sample" and e["step"] == ev_step]
        evals = [i for i, e in enumerate(events) if e["event"] == "eval" and e["step"] == ev_step]
        assert evals and evals[0] < at[0]
    for s in samples:
        assert isinstance(s["text"], str) and isinstance(s["stopped"], bool)
        assert 0 < s["new_tokens"] <= 128 and s["generation_s"] >= 0
        assert s["reference"] and s["prompt"]
    grouped = samples_by_prompt(events)
    assert [g.prompt_id for g in grouped] == [0, 1, 2]
    assert [a["step"] for a in grouped[0].answers] == [0, 3, 6]
    assert event_line(samples[0]).startswith("sample 0 @ step 0: ")
    assert events[-1]["status"] == "finished"
    # `report` reuses them (no model loaded with generations=0); `attach` prints them
    report = build_report(run_dir, generations=0)
    assert [[a["step"] for a in p["answers"]] for p in report["samples"]] == [[0, 3, 6]] * 3
    capsys.readouterr()
    assert main(["attach", str(run_dir), "--no-follow"]) == 0
    assert sum(line.startswith("sample ") for line in capsys.readouterr().out.splitlines()) == 9


def test_samples_zero_turns_them_off_and_training_is_unchanged(tmp_path):
    """Sampling neither consumes the RNG nor changes the model: the same losses with it off."""
    on = read_events(train_in_process(demo_config(tmp_path / "on", samples=2)) / EVENTS_FILE)
    off = read_events(train_in_process(demo_config(tmp_path / "off", samples=0)) / EVENTS_FILE)
    assert not [e for e in off if e["event"] == "sample"]
    assert len([e for e in on if e["event"] == "sample"]) == 6
    loss = lambda evs: [(e["step"], e["loss"]) for e in evs if e["event"] == "log" and e.get("loss") is not None]
    assert loss(on) == pytest.approx(loss(off), rel=1e-6)
    evals = lambda evs: [e["eval_loss"] for e in evs if e["event"] == "eval"]
    assert evals(on) == pytest.approx(evals(off), rel=1e-6)


def test_generation_keeps_rng_mode_and_no_gradients(builtin_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftwizard.core.samples import SamplePrompt, generate_samples

    tok = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    model.train()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    prompt = SamplePrompt(0, [{"role": "user", "content": "What is 2 + 3?"}], "5")
    out = generate_samples(model, tok, tok.chat_template, [prompt], 0, [tok.eos_token_id])
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert out[0]["prompt"] == "What is 2 + 3?" and out[0]["reference"] == "5"


def test_a_failing_generation_warns_once_and_never_stops_training(builtin_model_dir, tmp_path):
    """A template that cannot render (none at all here) turns sampling off with one warning."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftwizard.core.events import EventWriter
    from sftwizard.core.samples import SamplePrompt, samples_callback

    tok = AutoTokenizer.from_pretrained(builtin_model_dir)
    model = AutoModelForCausalLM.from_pretrained(builtin_model_dir)
    writer = EventWriter(tmp_path / EVENTS_FILE)
    paused = []
    callback = samples_callback(writer, tok, None, [SamplePrompt(0, [{"role": "user", "content": "hi"}], "hello")],
                                paused=paused.append)
    callback._sample(model, 0)
    callback._sample(model, 5)
    writer.close()
    events = read_events(tmp_path / EVENTS_FILE)
    assert [(e["event"], e["code"]) for e in events] == [("warning", "samples_failed")]
    assert "no chat template" in events[0]["message"] and len(paused) == 1


def test_sample_fields_are_part_of_the_event_schema():
    from sftwizard.core.events import event_problem

    good = {"event": "sample", "time": 1.0, "step": 3, "prompt_id": 0, "prompt": "hi", "reference": "hello",
            "text": "hello", "stopped": True, "new_tokens": 2, "generation_s": 0.1}
    assert event_problem(good) is None
    assert event_problem({**good, "prompt_id": "0"}) == "prompt_id is str"  # readers group by it
    assert event_problem({**good, "text": ["hello"]}) == "text is list"
