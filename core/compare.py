"""Compare runs: their loss curves, results and the settings that differ.

``compare_runs(refs)`` reads each run's ``events.jsonl`` and ``config.yaml`` (no weights) and
returns a ``Comparison``: per run the train and eval curves as (step, trained tokens, loss)
points, the final and best eval loss, mean tokens/s, duration and status; and the config keys
whose values are not the same in every run. ``Comparison.to_dict`` is the ``compare --json``
schema (README, docs/cli-runs.md). The Runs screen's comparison view draws the same object.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .events import read_events
from .run_model import Kind
from .rundir import RunDir

# Keys that always differ between runs and say nothing about how they trained.
IGNORED_KEYS = ("run.name", "run.output_root")


class CompareError(UserError, ValueError):
    """Runs that cannot be compared as asked. One sentence."""


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunCurves:
    id: str
    name: str
    status: str
    steps: int | None
    duration_s: float
    tokens_per_s: float | None  # mean over the run's logs (sampling time excluded)
    final_train_loss: float | None
    final_eval_loss: float | None
    best_eval_loss: float | None
    best_step: int | None
    trained_tokens: float | None
    train: list[tuple[int, float | None, float]] = field(default_factory=list)  # (step, tokens, loss)
    eval: list[tuple[int, float | None, float]] = field(default_factory=list)  # (step, tokens, eval_loss)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = [list(p) for p in self.train]
        d["eval"] = [list(p) for p in self.eval]
        return d


@dataclass
class Comparison:
    runs: list[RunCurves]
    config_diff: list[dict[str, Any]]  # {key, values: one per run, in run order}

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "config_diff": self.config_diff}


def curves_of(events: list[dict]) -> tuple[list[tuple], list[tuple]]:
    """Train and eval points (step, trained tokens so far or None, loss). A step logged twice (a
    resume from an earlier checkpoint) keeps its newest value, so the curve stays one line."""
    train: dict[int, tuple] = {}
    evals: dict[int, tuple] = {}
    tokens_at: dict[int, float] = {}
    for ev in events:
        step = ev.get("step")
        if not isinstance(step, int):
            continue
        if ev.get("event") == Kind.LOG:
            tokens = _num(ev.get("num_tokens"))
            if tokens is not None:
                tokens_at[step] = tokens
            loss = _num(ev.get("loss"))
            if loss is not None:
                train[step] = (step, tokens, loss)
        elif ev.get("event") == Kind.EVAL:
            loss = _num(ev.get("eval_loss"))
            if loss is not None:
                evals[step] = (step, None, loss)
    known = sorted(tokens_at)
    for step, (s, _, loss) in list(evals.items()):
        before = [k for k in known if k <= step]
        evals[step] = (s, tokens_at[before[-1]] if before else None, loss)
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 1}}`` → ``{"training.lr": 1}``; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def config_diff(configs: list[dict | None]) -> list[dict[str, Any]]:
    """The dotted keys whose values differ between the configs (None where a run has no config)."""
    flat = [flatten(c) if c is not None else {} for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    diff = []
    for key in keys:
        if key in IGNORED_KEYS:
            continue
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diff.append({"key": key, "values": values})
    return diff


def run_curves(run_dir) -> RunCurves:
    from .runs import run_info

    info = run_info(run_dir)
    events = read_events(RunDir(run_dir).events)
    train, evals = curves_of(events)
    rates = [_num(ev.get("tokens_per_s")) for ev in events if ev.get("event") == Kind.LOG]
    rates = [r for r in rates if r is not None]
    best = min(evals, key=lambda p: (p[2], p[0])) if evals else None
    tokens = [p[1] for p in train if p[1] is not None]
    return RunCurves(
        id=info.id, name=info.name, status=info.status, steps=info.step, duration_s=info.duration_s,
        tokens_per_s=round(sum(rates) / len(rates), 1) if rates else None,
        final_train_loss=train[-1][2] if train else None,
        final_eval_loss=evals[-1][2] if evals else None,
        best_eval_loss=best[2] if best else None, best_step=best[0] if best else None,
        trained_tokens=tokens[-1] if tokens else None, train=train, eval=evals,
    )


def compare_runs(refs: list[str]) -> Comparison:
    """Two or more runs (ids, prefixes, directories or ``last``) side by side."""
    from .config import ConfigError, load_preset
    from .runs import find_run

    if len(refs) < 2:
        raise CompareError("compare needs at least two runs")
    dirs = [find_run(ref) for ref in refs]
    seen = set()
    for d in dirs:
        if d in seen:
            raise CompareError(f"run {d.name} is given twice")
        seen.add(d)
    configs = []
    for d in dirs:
        try:  # through the schema, so a run written before a field existed shows its default
            configs.append(load_preset(RunDir(d).config).to_dict())
        except (OSError, ConfigError):
            configs.append(None)
    return Comparison([run_curves(d) for d in dirs], config_diff(configs))
