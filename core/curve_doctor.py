"""Reading the loss curve while the run goes: warnings from the events stream, as it is written.

``CurveDoctor.feed(event)`` takes each event the run emits (``log``, ``eval``, ``checkpoint``,
...) and returns the warning events it triggers, ready for ``events.jsonl``::

    {"event": "warning", "step": 240, "source": "curve", "code": "overfitting",
     "message": "...", "setting": "training.max_steps", "suggested": 150,
     "stop": false, "details": {...}}

``watch(writer, cfg, on_stop=...)`` wraps the run's ``EventWriter`` so that every emitted event
is fed through a doctor and its warnings are written right after it (one line in the runner).

Rules (the constants below; docs/doctor.md explains them with examples):

- ``overfitting``: eval loss rose at each of the last ``OVERFIT_RISES`` evaluations, in all by
  at least ``OVERFIT_MIN_RISE`` (relative) above the best, while the mean train loss over the last
  ``TRAIN_WINDOW`` logs fell over the same span. Suggests the best checkpoint (by eval loss).
- ``plateau``: the mean train loss of the last ``PLATEAU_WINDOW`` logs is not at least
  ``PLATEAU_MIN_IMPROVEMENT`` (relative) below the mean of the ``PLATEAU_WINDOW`` logs before —
  unless the learning rate has decayed below ``PLATEAU_LR_FLOOR`` of its peak (a schedule's tail
  flattens by design). Once per plateau.
- ``loss_collapse``: the last ``COLLAPSE_LOGS`` train losses are all below ``COLLAPSE_LOSS``
  (nats per token: the model gives the data's next token > 95% probability) — memorisation.
- ``grad_spike``: a grad norm above ``SPIKE_FACTOR`` x the median of the last ``SPIKE_WINDOW``
  (after ``SPIKE_MIN_HISTORY`` logs), at most one warning per ``SPIKE_COOLDOWN_LOGS`` logs.
- ``non_finite``: a NaN/inf loss, grad norm or eval loss. ``stop: true`` with a diagnosis.

Every warning fires once per episode (re-armed when the curve recovers), so a long run does not
flood its events file.
"""

from __future__ import annotations

import bisect
import math
import statistics
from typing import Any, Callable

from .run_model import Kind

OVERFIT_RISES = 2
OVERFIT_MIN_RISE = 0.01
TRAIN_WINDOW = 3
PLATEAU_WINDOW = 10
PLATEAU_MIN_IMPROVEMENT = 0.01
PLATEAU_LR_FLOOR = 0.1
COLLAPSE_LOSS = 0.05
COLLAPSE_LOGS = 3
SPIKE_FACTOR = 5.0
SPIKE_WINDOW = 20
SPIKE_MIN_HISTORY = 5
SPIKE_COOLDOWN_LOGS = 10


def _number(value: Any) -> float | None:
    """A logged number (NaN/inf kept); strings such as "NaN" from other writers are read too."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class CurveDoctor:
    """Streaming diagnosis of one run's curves. Feed every event in order."""

    def __init__(self, cfg=None):
        self.cfg = cfg
        self.logs: list[tuple[int, float, float | None]] = []  # (step, loss, lr)
        self.evals: list[tuple[int, float]] = []  # (step, eval_loss)
        self.grad_norms: list[float] = []
        self._best: tuple[int, float] | None = None  # kept as evals come: best_eval is O(1)
        self._log_steps: list[int] = []  # steps of self.logs, for bisect while they only grow
        self._steps_sorted = True
        self.checkpoints: dict[int, str] = {}
        self.peak_lr = 0.0
        self.should_stop = False
        self.stop_reason: str | None = None
        self._fired: set[str] = set()
        self._last_spike_log = -SPIKE_COOLDOWN_LOGS
        self._spikes = 0
        self._overfit_best: int | None = None

    # ----------------------------------------------------------------- state
    @property
    def best_eval(self) -> tuple[int, float] | None:
        """(step, eval loss) of the lowest eval loss so far (the earliest on ties)."""
        return self._best

    def best_checkpoint(self) -> str | None:
        best = self.best_eval
        return self.checkpoints.get(best[0]) if best else None

    # ----------------------------------------------------------------- feeding
    def feed(self, event: dict) -> list[dict]:
        kind = event.get("event")
        step = event.get("step")
        if kind == Kind.CHECKPOINT and event.get("path") and step is not None:
            self.checkpoints[int(step)] = str(event["path"])
            return []
        if kind == Kind.LOG:
            return self._on_log(event, step)
        if kind == Kind.EVAL:
            return self._on_eval(event, step)
        return []

    def _warn(self, code: str, step, message: str, setting: str, suggested: Any = None, stop: bool = False,
              **details: Any) -> dict:
        return {"event": Kind.WARNING, "step": step, "source": "curve", "code": code, "message": message,
                "setting": setting, "suggested": suggested, "stop": stop, "details": details}

    def _on_log(self, event: dict, step) -> list[dict]:
        out: list[dict] = []
        loss = _number(event.get("loss"))
        grad = _number(event.get("grad_norm"))
        lr = _number(event.get("learning_rate"))
        bad = [name for name, v in (("loss", loss), ("grad norm", grad)) if v is not None and not math.isfinite(v)]
        if bad:
            return self._non_finite(step, bad, event)
        if lr is not None:
            self.peak_lr = max(self.peak_lr, lr)
        if grad is not None:
            out.extend(self._check_spike(step, grad, lr))
        if loss is None:
            return out
        step_n = int(step or 0)
        if self._log_steps and step_n < self._log_steps[-1]:
            self._steps_sorted = False  # a resume logged earlier steps again
        self.logs.append((step_n, loss, lr))
        self._log_steps.append(step_n)
        out.extend(self._check_collapse(step, event))
        out.extend(self._check_plateau(step, lr))
        return out

    def _on_eval(self, event: dict, step) -> list[dict]:
        loss = _number(event.get("eval_loss"))
        if loss is None:
            return []
        if not math.isfinite(loss):
            return self._non_finite(step, ["eval loss"], event)
        entry = (int(step or 0), loss)
        self.evals.append(entry)
        if self._best is None or (entry[1], entry[0]) < (self._best[1], self._best[0]):
            self._best = entry
        return self._check_overfit(step)

    # ----------------------------------------------------------------- rules
    def _train_loss_at(self, step: int) -> float | None:
        """Mean of the last TRAIN_WINDOW train losses logged at or before ``step``."""
        if self._steps_sorted:
            end = bisect.bisect_right(self._log_steps, step)
            upto = [loss for _, loss, _ in self.logs[max(0, end - TRAIN_WINDOW):end]]
        else:
            upto = [loss for s, loss, _ in self.logs if s <= step][-TRAIN_WINDOW:]
        return sum(upto) / len(upto) if upto else None

    def _check_overfit(self, step) -> list[dict]:
        best_step, best_loss = self.best_eval
        if self._overfit_best is not None and best_step != self._overfit_best:
            self._overfit_best = None  # a new best since the last warning: re-armed
        if len(self.evals) < OVERFIT_RISES + 1 or self._overfit_best is not None:
            return []
        tail = self.evals[-(OVERFIT_RISES + 1):]
        rising = all(b[1] > a[1] for a, b in zip(tail, tail[1:]))
        if not rising or tail[-1][1] < best_loss * (1 + OVERFIT_MIN_RISE):
            return []
        train_then = self._train_loss_at(tail[0][0])
        train_now = self._train_loss_at(tail[-1][0])
        if train_then is None or train_now is None or not train_now < train_then:
            return []
        self._overfit_best = best_step
        ckpt = self.checkpoints.get(best_step)
        keep = (f"checkpoint {ckpt} holds it" if ckpt else
                f"no checkpoint was saved at step {best_step} (set save_steps equal to eval_steps to keep it)")
        return [self._warn(
            "overfitting", step,
            f"eval loss rose {OVERFIT_RISES} evaluations running ({tail[0][1]:.4f} → {tail[-1][1]:.4f}) while "
            f"train loss fell ({train_then:.4f} → {train_now:.4f}): overfitting — the best model is step "
            f"{best_step} (eval loss {best_loss:.4f}); {keep}; stopping there loses nothing",
            "training.max_steps", best_step,
            best_step=best_step, best_eval_loss=best_loss, best_checkpoint=ckpt,
            eval_losses=[e[1] for e in tail], train_loss_from=train_then, train_loss_to=train_now,
        )]

    def _check_plateau(self, step, lr) -> list[dict]:
        if len(self.logs) < 2 * PLATEAU_WINDOW:
            return []
        losses = [loss for _, loss, _ in self.logs[-2 * PLATEAU_WINDOW:]]  # the windows only: O(1) per log
        before = sum(losses[-2 * PLATEAU_WINDOW:-PLATEAU_WINDOW]) / PLATEAU_WINDOW
        last = sum(losses[-PLATEAU_WINDOW:]) / PLATEAU_WINDOW
        improving = before > 0 and (before - last) / before >= PLATEAU_MIN_IMPROVEMENT
        if improving:
            self._fired.discard("plateau")
            return []
        if "plateau" in self._fired or last < COLLAPSE_LOSS:
            return []
        if lr is not None and self.peak_lr > 0 and lr < PLATEAU_LR_FLOOR * self.peak_lr:
            return []
        self._fired.add("plateau")
        first = sum(loss for _, loss, _ in self.logs[:PLATEAU_WINDOW]) / PLATEAU_WINDOW
        never = len(self.logs) <= 3 * PLATEAU_WINDOW and last >= first * (1 - PLATEAU_MIN_IMPROVEMENT)
        start_step = self.logs[-2 * PLATEAU_WINDOW][0]
        why = ("since the start: the learning rate may be far too low, or the data gives nothing to learn "
               "(masked labels, constant answers)" if never else
               "the learning rate may be too low to go further, or the model has learnt what this data holds")
        suggested = round(lr * 2, 10) if lr else None
        return [self._warn(
            "plateau", step,
            f"train loss has not improved by {PLATEAU_MIN_IMPROVEMENT:.0%} over the last {PLATEAU_WINDOW} logs "
            f"(steps {start_step}–{step}, {before:.4f} → {last:.4f}) {why}",
            "training.learning_rate", suggested, window_mean_before=before, window_mean_last=last,
            since_start=never,
        )]

    def _check_collapse(self, step, event: dict) -> list[dict]:
        recent = [loss for _, loss, _ in self.logs[-COLLAPSE_LOGS:]]
        collapsed = len(recent) == COLLAPSE_LOGS and all(loss < COLLAPSE_LOSS for loss in recent)
        if not collapsed:
            if recent and recent[-1] >= COLLAPSE_LOSS:
                self._fired.discard("loss_collapse")
            return []
        if "loss_collapse" in self._fired:
            return []
        self._fired.add("loss_collapse")
        epoch = _number(event.get("epoch"))
        suggested = max(1, math.floor(epoch)) if epoch and math.isfinite(epoch) else None
        return [self._warn(
            "loss_collapse", step,
            f"train loss is below {COLLAPSE_LOSS} for {COLLAPSE_LOGS} logs ({recent[-1]:.4f}): the model is "
            "memorising the training rows rather than learning from them — fewer epochs, more data or a "
            "lower learning rate",
            "training.num_train_epochs", suggested, losses=recent, epoch=epoch,
        )]

    def _check_spike(self, step, grad: float, lr) -> list[dict]:
        history = self.grad_norms[-SPIKE_WINDOW:]
        self.grad_norms.append(grad)
        n_logs = len(self.grad_norms)
        if len(history) < SPIKE_MIN_HISTORY:
            return []
        median = statistics.median(history)
        if median <= 0 or grad <= SPIKE_FACTOR * median:
            return []
        self._spikes += 1
        if n_logs - self._last_spike_log < SPIKE_COOLDOWN_LOGS:
            return []
        self._last_spike_log = n_logs
        clip = getattr(getattr(self.cfg, "training", None), "max_grad_norm", None)
        clipped = f"; clipping at max_grad_norm {clip:g} caps the update" if clip else ""
        return [self._warn(
            "grad_spike", step,
            f"grad norm {grad:.3g} is {grad / median:.0f}x the recent median ({median:.3g}){clipped}: repeated "
            "spikes come before divergence — lower the learning rate, or look for odd rows at this step",
            "training.learning_rate", round(lr / 2, 10) if lr else None,
            grad_norm=grad, median=median, spikes=self._spikes,
        )]

    def _non_finite(self, step, what: list[str], event: dict) -> list[dict]:
        if "non_finite" in self._fired:
            return []
        self._fired.add("non_finite")
        self.should_stop = True
        t = getattr(self.cfg, "training", None)
        fp16 = bool(getattr(t, "fp16", None)) or getattr(getattr(self.cfg, "model", None), "dtype", None) == "fp16"
        lr = _number(event.get("learning_rate"))
        if self._spikes or _lr_far_too_high(self.cfg, lr) or (
                len(self.logs) >= 2 and self.logs[-1][1] > 2 * min(loss for _, loss, _ in self.logs)):
            diagnosis, setting, suggested = (
                "training diverged (a learning rate far above the usual range, grad-norm spikes or a rising loss "
                "came first): lower the learning rate",
                "training.learning_rate",
                _typical_lr(self.cfg) if _lr_far_too_high(self.cfg, lr)
                else round((lr or getattr(t, "learning_rate", 0) or 0) / 4, 10) or None)
        elif fp16:
            diagnosis, setting, suggested = (
                "fp16 overflowed (its range ends at 65504): train in bf16 on a GPU that has it, or fp32",
                "model.dtype", "bf16")
        elif not self.logs:
            diagnosis, setting, suggested = (
                "NaN from the first logs: a batch with no trained token (all labels masked) divides by zero, "
                "or the weights/dtype are broken — check the preview's label mask",
                "training.assistant_only_loss", None)
        else:
            diagnosis, setting, suggested = (
                "the loss was fine, then became non-finite: lower the learning rate, and look for odd rows "
                "near this step", "training.learning_rate",
                round((lr or getattr(t, "learning_rate", 0) or 0) / 4, 10) or None)
        self.stop_reason = f"{' and '.join(what)} became NaN/inf at step {step}: {diagnosis}"
        return [self._warn("non_finite", step, self.stop_reason + "; training stops", setting, suggested,
                           stop=True, values=list(what))]


def _lr_far_too_high(cfg, lr: float | None) -> bool:
    """The learning rate is over 10x the top of the usual range for the method (see ``doctor.lr_range``)."""
    if cfg is None or lr is None:
        return False
    from .doctor import effective_batch, lr_range

    try:
        return lr > 10 * lr_range(cfg.method.type, effective_batch(cfg))[1]
    except (AttributeError, KeyError, TypeError):
        return False


def _typical_lr(cfg) -> float:
    from .doctor import effective_batch, lr_range

    return float(f"{lr_range(cfg.method.type, effective_batch(cfg))[2]:.2g}")


def diagnose_events(events: list[dict], cfg=None) -> list[dict]:
    """Replay a whole events list (e.g. a finished run's events.jsonl); return the warnings."""
    doctor = CurveDoctor(cfg)
    out: list[dict] = []
    for ev in events:
        out.extend(doctor.feed(ev))
    return out


class CurveWatch:
    """An event writer that feeds everything it writes through a CurveDoctor and writes its warnings.

    Drop-in for ``EventWriter``: ``emit(event, step, **fields)`` returns the record as before.
    ``on_stop()`` is called once when a warning asks to stop (NaN/inf).
    """

    def __init__(self, writer, cfg=None, on_stop: Callable[[], None] | None = None):
        self.writer = writer
        self.doctor = CurveDoctor(cfg)
        self.on_stop = on_stop
        self._stopped = False

    def emit(self, event: str, step: int | None = None, **fields: Any) -> dict:
        record = self.writer.emit(event, step, **fields)
        if event == Kind.WARNING:
            return record
        try:
            warnings = self.doctor.feed(record)
        except Exception:  # noqa: BLE001 - a doctor bug must never break a training run
            warnings = []
        for w in warnings:
            w = dict(w)
            self.writer.emit(w.pop("event"), w.pop("step"), **w)
        if self.doctor.should_stop and not self._stopped:
            self._stopped = True
            if self.on_stop is not None:
                self.on_stop()
        return record

    @property
    def should_stop(self) -> bool:
        return self.doctor.should_stop

    def __getattr__(self, name: str):
        return getattr(self.writer, name)


def watch(writer, cfg=None, on_stop: Callable[[], None] | None = None) -> CurveWatch:
    """Wrap the run's EventWriter: ``writer = watch(writer, cfg, on_stop=...)`` — one line in the runner."""
    return CurveWatch(writer, cfg, on_stop)
