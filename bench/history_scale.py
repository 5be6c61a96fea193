"""Benchmark: long histories. `report` on 100k events and `runs` on a 1M-line history, before
and after issue 15 item 11, measured in one run. Not a timed test: ``python bench/history_scale.py
[--report-events N] [--runs-lines N] [--before-events N]``.

Before: the curve doctor copied every loss logged so far at each new log (and scanned every eval
for the best one), so replaying a history was quadratic; ``runs`` read a whole history into a list
of dicts before summarising it. After: the doctor keeps its windows and best eval as it goes, and
``runs`` feeds the fold (``run_model.RunState``) chunk by chunk (only what was appended since, on later calls).
"Before" is replayed here by ``WholeListDoctor`` (the previous rule bodies) and by
``summarize(run_dir, read_events(...))`` (the previous way of reading, still the API for a list).
The quadratic report is timed on fewer events (``--before-events``, default 20k) and the figure
scaled by (N / n)^2 to estimate 100k; the after side is timed on the full N.
Each memory figure is the peak RSS of a fresh child process (the KIND argument).
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_history(path: Path, n: int, seed: int = 0) -> None:
    """A plausible run: logs every step, an eval and a checkpoint every 50, one resume half-way."""
    rng = random.Random(seed)
    t = 1_800_000_000.0
    loss = 3.0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": "start", "time": t, "step": 0, "model": "builtin:tiny-chat",
                             "method": "full", "pid": 1}) + "\n")
        step = 0
        for i in range(n - 1):
            t += 0.5
            if i == n // 2:
                fh.write(json.dumps({"event": "resume", "time": t, "step": step, "resume_from": "c"}) + "\n")
                continue
            if i % 50 == 49:
                kind = "eval" if i % 100 == 49 else "checkpoint"
                ev = ({"event": "eval", "time": t, "step": step, "eval_loss": loss + rng.random() * 0.1}
                      if kind == "eval" else
                      {"event": "checkpoint", "time": t, "step": step, "path": f"checkpoints/checkpoint-{step}"})
                fh.write(json.dumps(ev) + "\n")
                continue
            step += 1
            loss = max(0.2, loss * 0.9999 + (rng.random() - 0.5) * 0.02)
            fh.write(json.dumps({"event": "log", "time": t, "step": step, "max_steps": n, "loss": loss,
                                 "learning_rate": 1e-4, "grad_norm": 1.0 + rng.random(), "epoch": step / 1000,
                                 "num_tokens": step * 512.0, "tokens_per_s": 1000.0, "samples_per_s": 4.0,
                                 "eta_s": 10.0}) + "\n")


def make_run(root: Path, n: int) -> Path:
    d = root / f"20260101-000000-bench-{n}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text("{}\n")
    (d / "meta.json").write_text(json.dumps({"name": "bench"}))
    write_history(d / "events.jsonl", n)
    return d


def whole_list_doctor():
    from sftwizard.core import curve_doctor as cd

    class WholeListDoctor(cd.CurveDoctor):
        """The rule bodies as they were before item 11 (whole lists at every event)."""

        @property
        def best_eval(self):
            return min(self.evals, key=lambda e: (e[1], e[0])) if self.evals else None

        def _train_loss_at(self, step):
            upto = [loss for s, loss, _ in self.logs if s <= step][-cd.TRAIN_WINDOW:]
            return sum(upto) / len(upto) if upto else None

        def _check_plateau(self, step, lr):
            if len(self.logs) >= 2 * cd.PLATEAU_WINDOW:
                losses = [loss for _, loss, _ in self.logs]  # the whole history, every log
                sum(losses[:cd.PLATEAU_WINDOW])
            return super()._check_plateau(step, lr)

    return WholeListDoctor


def child(kind: str, arg: str) -> None:
    """One measurement in a fresh process; prints JSON with seconds and peak RSS."""
    from sftwizard.core import curve_doctor, report, runs
    from sftwizard.core.events import read_events

    d = Path(arg)
    t0 = time.perf_counter()
    if kind == "report-after":
        out = report.build_report(d, generations=0)
        result = {"steps": out["steps"], "warnings": len(out["curve_warnings"])}
    elif kind == "report-before":
        curve_doctor.CurveDoctor = whole_list_doctor()
        out = report.build_report(d, generations=0)
        result = {"steps": out["steps"], "warnings": len(out["curve_warnings"])}
    elif kind == "runs-after":
        info = runs.info_of(d, runs.state_of(d), alive=False)
        result = {"step": info.step, "duration_s": info.duration_s}
    elif kind == "runs-before":
        info = runs.summarize(d, read_events(d / "events.jsonl"), alive=False)
        result = {"step": info.step, "duration_s": info.duration_s}
    else:
        raise SystemExit(f"unknown kind {kind}")
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss, **result}))


def measure(kind: str, d: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(d)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2])
    opts = dict(zip(argv[::2], argv[1::2]))
    n_report = int(opts.get("--report-events", 100_000))
    n_before = int(opts.get("--before-events", 20_000))
    n_runs = int(opts.get("--runs-lines", 1_000_000))
    os.environ.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    root = Path(tempfile.mkdtemp(prefix="sftw-history-"))
    small, big, huge = make_run(root, n_before), make_run(root, n_report), make_run(root, n_runs)

    before = measure("report-before", small)
    after_small = measure("report-after", small)
    after = measure("report-after", big)
    assert before["warnings"] == after_small["warnings"], (before, after_small)  # same diagnosis
    est = before["seconds"] * (n_report / n_before) ** 2
    print(f"report, {n_before:,} events: before {before['seconds']:.2f} s, after {after_small['seconds']:.2f} s "
          f"({before['seconds'] / after_small['seconds']:.0f}x)")
    print(f"report, {n_report:,} events: after {after['seconds']:.2f} s; before ~{est:.0f} s "
          f"(quadratic, scaled from {n_before:,})")
    rb, ra = measure("runs-before", huge), measure("runs-after", huge)
    assert (rb["step"], rb["duration_s"]) == (ra["step"], ra["duration_s"]), (rb, ra)  # same summary
    size = (huge / "events.jsonl").stat().st_size / 2 ** 20
    print(f"runs, one {n_runs:,}-line history ({size:.0f} MiB): before {rb['seconds']:.1f} s, "
          f"peak {rb['peak_rss_mib']:,.0f} MiB; after {ra['seconds']:.1f} s, peak {ra['peak_rss_mib']:,.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
