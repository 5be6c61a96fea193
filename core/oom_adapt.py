"""Out of memory is a pause, not a failure (``run.on_oom: adapt``, opt-in).

When the training process dies of a CUDA out-of-memory error and the config says ``adapt``, the
runner records the ``error`` and exits with ``ADAPT_EXIT`` instead of ending the run; the
supervisor (core/supervisor.py) asks ``next_fix`` for the cheapest change that keeps what is
trained the same, writes it into the run's ``config.yaml``, records an ``adapt`` event (old and
new values, the reason) and starts training again from the last complete checkpoint, or from
step 0 when there is none. After ``MAX_ATTEMPTS`` adaptations, or when nothing is left to try,
the run fails as before, with the diagnosis.

The fixes, cheapest first:

1. a smaller micro-batch with more gradient accumulation, the product unchanged (the same
   effective batch, so the same optimizer steps over the same samples);
2. gradient checkpointing (activations recomputed in the backward pass: slower, same result);
3. a shorter ``training.max_length`` (halved), only when ``run.on_oom_allow`` lists
   ``max_length`` — it changes what is trained, so it is never chosen silently.

Plain config arithmetic: no torch here (the supervisor imports this).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .config import RunConfig

ADAPT_EXIT = 75  # EX_TEMPFAIL: the runner's exit code for "out of memory, adapt me"
MAX_ATTEMPTS = 4
MIN_MAX_LENGTH = 64  # max_length is never halved below this
# Test-only: "STEP:BATCH" makes the runner raise a real torch.OutOfMemoryError when step STEP
# begins while per_device_train_batch_size > BATCH (memory grows with the micro-batch, as on a
# GPU). Read by the runner's events callback; never set it outside tests.
TEST_OOM_ENV = "SFT_WIZARD_TEST_OOM_AT"


@dataclass
class Fix:
    """One adaptation: the settings it changes (dotted keys) with their old and new values."""

    old: dict[str, Any]
    new: dict[str, Any]
    reason: str

    def apply(self, cfg: RunConfig) -> RunConfig:
        training = dataclasses.replace(cfg.training, **{k.split(".", 1)[1]: v for k, v in self.new.items()})
        return cfg.replace(training=training)


def effective_batch(cfg: RunConfig) -> int:
    """Samples per optimizer step on one process (the world size does not change here)."""
    return cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps


def _smallest_factor(n: int) -> int:
    f = 2
    while f * f <= n:
        if n % f == 0:
            return f
        f += 1
    return n


def next_fix(cfg: RunConfig) -> Fix | None:
    """The cheapest change left that may fit in memory, or None when none is allowed."""
    t = cfg.training
    if t.per_device_train_batch_size > 1:
        f = _smallest_factor(t.per_device_train_batch_size)  # 2 for even sizes: halve
        new = {"training.per_device_train_batch_size": t.per_device_train_batch_size // f,
               "training.gradient_accumulation_steps": t.gradient_accumulation_steps * f}
        old = {"training.per_device_train_batch_size": t.per_device_train_batch_size,
               "training.gradient_accumulation_steps": t.gradient_accumulation_steps}
        if t.per_device_eval_batch_size > new["training.per_device_train_batch_size"]:
            # evaluation runs the same model on as many rows at once: it must fit too
            new["training.per_device_eval_batch_size"] = max(1, t.per_device_eval_batch_size // f)
            old["training.per_device_eval_batch_size"] = t.per_device_eval_batch_size
        return Fix(old, new, f"a micro-batch of {new['training.per_device_train_batch_size']} with "
                             f"{new['training.gradient_accumulation_steps']} accumulation steps: the same "
                             f"effective batch of {effective_batch(cfg)}, less activation memory")
    if not t.gradient_checkpointing:
        return Fix({"training.gradient_checkpointing": False}, {"training.gradient_checkpointing": True},
                   "gradient checkpointing: activations recomputed in the backward pass (slower, same result)")
    if "max_length" in cfg.run.on_oom_allow and t.max_length and t.max_length // 2 >= MIN_MAX_LENGTH:
        return Fix({"training.max_length": t.max_length}, {"training.max_length": t.max_length // 2},
                   "a shorter max_length (allowed by run.on_oom_allow): longer rows are truncated")
    return None


def give_up_message(cfg: RunConfig, attempts: int, diagnosis: str | None) -> str:
    """The failure line once adaptation stops: why, and the original diagnosis."""
    if attempts >= MAX_ATTEMPTS:
        why = f"still out of memory after {attempts} adaptations"
    else:
        allow = "" if "max_length" in cfg.run.on_oom_allow else " (run.on_oom_allow: [max_length] would allow a shorter max_length)"
        why = f"out of memory with a micro-batch of 1 and gradient checkpointing on, nothing left to adapt{allow}"
    return f"{why}; {diagnosis}" if diagnosis else why


def injected_oom_step(batch_size: int, environ: dict | None = None) -> int | None:
    """The step at which the test-only hook raises for this micro-batch, or None (see TEST_OOM_ENV)."""
    import os

    value = (environ if environ is not None else os.environ).get(TEST_OOM_ENV)
    if not value:
        return None
    step, _, over = value.partition(":")
    try:
        return int(step) if batch_size > int(over or 0) else None
    except ValueError:
        return None
