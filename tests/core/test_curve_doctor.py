"""The curve doctor on synthetic loss curves: each rule fires on its curve and stays quiet on a healthy one."""

from __future__ import annotations

import math
import random

import pytest

from sftwizard.core import curve_doctor as cd
from sftwizard.core.config import RunConfig, apply_overrides
from sftwizard.core.curve_doctor import CurveDoctor, diagnose_events, watch
from sftwizard.core.events import EventWriter, read_events


def log(step, loss, grad=1.0, lr=2e-4, epoch=None):
    return {"event": "log", "step": step, "loss": loss, "grad_norm": grad, "learning_rate": lr, "epoch": epoch}


def ev(step, eval_loss):
    return {"event": "eval", "step": step, "eval_loss": eval_loss}


def ckpt(step):
    return {"event": "checkpoint", "step": step, "path": f"/runs/x/checkpoints/checkpoint-{step}"}


def codes(warnings):
    return [w["code"] for w in warnings]


def healthy_curve(steps=400, every=10, eval_every=50, seed=0):
    """Train and eval loss both falling exponentially towards 0.8, with a little noise."""
    rng = random.Random(seed)
    events = []
    for step in range(every, steps + 1, every):
        loss = 0.8 + 2.0 * math.exp(-step / 120) + rng.uniform(-0.01, 0.01)
        lr = 2e-4 * (1 - step / (steps + every))
        events.append(log(step, loss, grad=1.0 + rng.uniform(-0.2, 0.2), lr=lr, epoch=step / 200))
        if step % eval_every == 0:
            events.append(ev(step, 0.9 + 2.0 * math.exp(-step / 120)))
            events.append(ckpt(step))
    return events


def test_healthy_curve_raises_nothing():
    assert diagnose_events(healthy_curve()) == []


# --------------------------------------------------------------------------- overfitting

def overfit_curve():
    """Train loss keeps falling; eval loss bottoms out at step 150 and climbs for three evaluations."""
    events = []
    evals = {50: 1.5, 100: 1.2, 150: 1.1, 200: 1.15, 250: 1.22, 300: 1.3}
    for step in range(10, 301, 10):
        events.append(log(step, 2.0 * math.exp(-step / 100) + 0.05))
        if step in evals:
            events.append(ev(step, evals[step]))
            events.append(ckpt(step))
    return events


def test_overfitting_points_at_the_best_checkpoint():
    warnings = diagnose_events(overfit_curve())
    assert codes(warnings) == ["overfitting"]  # once, not at every further rise
    w = warnings[0]
    assert w["step"] == 250 and w["suggested"] == 150 and w["setting"] == "training.max_steps"
    assert w["details"]["best_checkpoint"] == "/runs/x/checkpoints/checkpoint-150"
    assert "step 150" in w["message"] and w["stop"] is False


def test_overfitting_without_a_checkpoint_at_the_best_step_says_so():
    events = [e for e in overfit_curve() if not (e["event"] == "checkpoint" and e["step"] == 150)]
    (w,) = diagnose_events(events)
    assert w["details"]["best_checkpoint"] is None and "save_steps" in w["message"]


def test_eval_rising_with_train_rising_too_is_not_overfitting():
    events = []
    for i, step in enumerate(range(50, 301, 50)):
        events.append(log(step, 1.0 + 0.05 * i))
        events.append(ev(step, 1.0 + 0.06 * i))
    assert "overfitting" not in codes(diagnose_events(events))


def test_eval_noise_below_the_minimum_rise_is_not_overfitting():
    events = []
    evals = [1.0, 1.001, 1.002, 1.003]
    for i, step in enumerate(range(50, 201, 50)):
        events.append(log(step, 1.0 - 0.1 * i))
        events.append(ev(step, evals[i]))
    assert diagnose_events(events) == []


def test_overfitting_rearms_after_a_new_best():
    doctor = CurveDoctor()
    out = []
    seq = [(50, 1.0), (100, 1.1), (150, 1.2), (200, 0.9), (250, 1.0), (300, 1.1)]
    for i, (step, loss) in enumerate(seq):
        out += doctor.feed(log(step, 2.0 - 0.1 * i))
        out += doctor.feed(ev(step, loss))
    assert [w["suggested"] for w in out] == [50, 200]


# --------------------------------------------------------------------------- plateau

def test_flat_loss_from_the_start_is_a_plateau():
    rng = random.Random(1)
    events = [log(s, 2.3 + rng.uniform(-0.005, 0.005), lr=1e-7) for s in range(1, 41)]
    warnings = diagnose_events(events)
    assert codes(warnings) == ["plateau"]  # once, not at every log after
    w = warnings[0]
    assert w["step"] == 2 * cd.PLATEAU_WINDOW and w["details"]["since_start"] is True
    assert "too low" in w["message"] and w["suggested"] == pytest.approx(2e-7)


def test_a_falling_loss_is_no_plateau():
    events = [log(s, 3.0 * math.exp(-s / 40)) for s in range(1, 61)]
    assert "plateau" not in codes(diagnose_events(events))


def test_flattening_at_the_end_of_the_schedule_is_expected():
    events = [log(s, 1.0, lr=2e-4 * 0.05) for s in range(1, 41)]
    for e in events[:3]:
        e["learning_rate"] = 2e-4  # the peak, seen earlier
    assert "plateau" not in codes(diagnose_events(events))


# --------------------------------------------------------------------------- collapse

def test_loss_collapsing_to_zero_is_memorisation():
    events = [log(s * 10, max(0.001, 2.0 - 0.25 * s), epoch=s / 4) for s in range(1, 15)]
    warnings = diagnose_events(events)
    assert codes(warnings) == ["loss_collapse"]
    assert warnings[0]["setting"] == "training.num_train_epochs" and warnings[0]["suggested"] == 2


def test_a_low_but_sane_loss_does_not_collapse():
    events = [log(s * 10, 0.3 + 0.001 * (s % 3)) for s in range(1, 10)]
    assert "loss_collapse" not in codes(diagnose_events(events))


def test_one_low_log_is_not_a_collapse():
    events = [log(10, 0.5), log(20, 0.01), log(30, 0.4), log(40, 0.5)]
    assert diagnose_events(events) == []


# --------------------------------------------------------------------------- grad-norm spikes

def test_grad_norm_spike():
    events = [log(s, 1.0 - 0.001 * s, grad=1.0 + 0.05 * (s % 3)) for s in range(1, 11)]
    events.append(log(11, 0.99, grad=12.0))
    events.append(log(12, 0.99, grad=15.0))  # inside the cool-down: counted, not repeated
    warnings = diagnose_events(events, apply_overrides(RunConfig(), ["training.max_grad_norm=1.0"]))
    assert codes(warnings) == ["grad_spike"]
    w = warnings[0]
    assert w["step"] == 11 and w["details"]["median"] == pytest.approx(1.05) and "max_grad_norm 1" in w["message"]
    assert w["suggested"] == pytest.approx(1e-4)


def test_noisy_grad_norms_within_the_factor_are_fine():
    rng = random.Random(3)
    events = [log(s, 1.0 - 0.001 * s, grad=rng.uniform(0.5, 2.4)) for s in range(1, 60)]
    assert "grad_spike" not in codes(diagnose_events(events))


def test_no_spike_judged_before_enough_history():
    events = [log(1, 2.0, grad=1.0), log(2, 1.9, grad=50.0)]
    assert diagnose_events(events) == []


# --------------------------------------------------------------------------- NaN / inf

def test_nan_loss_stops_with_a_divergence_diagnosis():
    doctor = CurveDoctor(RunConfig())
    out = []
    for s in range(1, 11):
        out += doctor.feed(log(s, 1.0, grad=1.0))
    out += doctor.feed(log(11, 1.1, grad=30.0))
    out += doctor.feed(log(12, float("nan"), grad=float("inf")))
    out += doctor.feed(log(13, float("nan")))
    assert codes(out) == ["grad_spike", "non_finite"]
    w = out[-1]
    assert w["stop"] is True and doctor.should_stop and "diverged" in w["message"]
    assert w["setting"] == "training.learning_rate" and w["suggested"] == pytest.approx(5e-5)


def test_nan_after_an_extreme_learning_rate_is_divergence():
    cfg = apply_overrides(RunConfig(), ["method.type=full"])
    out = diagnose_events([log(1, 7.0, lr=0.0), log(2, 7.1, grad=float("nan"), lr=1e4)], cfg)
    assert "diverged" in out[0]["message"] and out[0]["suggested"] == pytest.approx(1.4e-5)  # 2e-5 x sqrt(8/16)
    out = diagnose_events([log(1, 7.0, lr=1e-5), log(2, 7.1, grad=float("nan"), lr=1e-5)], cfg)
    assert "diverged" not in out[0]["message"]


def test_nan_under_fp16_blames_fp16():
    cfg = apply_overrides(RunConfig(), ["model.dtype=fp16"])
    out = diagnose_events([log(1, 2.0), log(2, 1.9), log(3, float("inf"))], cfg)
    assert codes(out) == ["non_finite"] and out[0]["suggested"] == "bf16"


def test_nan_from_the_first_log_points_at_masked_labels():
    out = diagnose_events([log(1, "NaN")])
    assert codes(out) == ["non_finite"] and "no trained token" in out[0]["message"]


def test_nan_eval_loss_stops_too():
    out = diagnose_events([log(1, 2.0), ev(1, float("nan"))])
    assert codes(out) == ["non_finite"] and "eval loss" in out[0]["message"]


def test_missing_values_are_not_nan():
    events = [log(1, None, grad=None, lr=None), {"event": "eval", "step": 2}, {"event": "summary", "step": 3}]
    assert diagnose_events(events) == []


# --------------------------------------------------------------------------- wiring into the run's writer

def test_watch_writes_warnings_into_events_jsonl_and_asks_to_stop(tmp_path):
    stops = []
    writer = watch(EventWriter(tmp_path / "events.jsonl"), RunConfig(), on_stop=lambda: stops.append(1))
    for e in overfit_curve():
        writer.emit(e.pop("event"), e.pop("step"), **e)
    writer.emit("log", 400, loss=float("nan"), grad_norm=None, learning_rate=1e-4)
    writer.emit("log", 410, loss=float("nan"))
    writer.close()
    events = read_events(tmp_path / "events.jsonl")
    warnings = [e for e in events if e["event"] == "warning"]
    assert [w["code"] for w in warnings] == ["overfitting", "non_finite"]
    assert all({"time", "step", "message", "setting", "suggested", "source"} <= set(w) for w in warnings)
    # the overfitting warning comes right after the eval that triggered it
    i = events.index(warnings[0])
    assert events[i - 1]["event"] == "eval" and events[i - 1]["step"] == 250
    assert stops == [1] and writer.should_stop
