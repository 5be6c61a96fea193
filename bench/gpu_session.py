"""One GPU session, about 7 minutes on one H100/H200, no network: every measurement issue 14 waits on.

    python3 bench/gpu_session.py OUT_DIR            # on the lent GPU machine (bench/GPU.md: how it is started)
    .venv/bin/python bench/gpu_session.py OUT --dry-run   # here, on CPU: the same steps, made small

Steps, in order; each writes its result into OUT as soon as it has it (a timeout loses only the
step in progress) and has its own time cap inside the whole budget (``--budget``, 450 s):

1. ``hw.json``: ``sft-wizard hw --json`` (NVML on real hardware; torch's CUDA build vs the driver).
2. ``qlora.json``: the QLoRA path on a ~1B model (Llama-3.2-1B's architecture, random bf16 weights
   written once under ``--models-dir``): ``sft-wizard run`` through the real runner (NF4 4-bit
   load, bitsandbytes' CUDA kernels, paged 8-bit AdamW, 20 steps, checkpoint), then ``merge``,
   ``chat --prompt`` and ``chat --compare`` (one copy of the weights, adapter on and off).
   Events, timings and each command's exit code go in the file.
3. ``fast_defaults_gpu.csv`` + ``fast_defaults.log``: ``bench/fast_defaults.py --gpu --rounds 1``
   (30 timed steps per side after 6 warm-up steps, to fit the budget).
4. ``estimator_accuracy.csv``: ``bench/estimator_grid.py --only`` a slice of small architectures
   (Qwen2-0.5B and Llama-3.2-1B, full/LoRA/QLoRA rows); rewritten after every row.

``session.log`` holds every command, its exit code and wall time. The largest model built is
~1.2B parameters (2.5 GB of bf16 weights), well inside the machine's 64 GiB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID_SLICE = "0,3,8,11,9"  # bench/estimator_grid.py --list: small architectures, one QLoRA row (11)
QLORA_ARCH = "llama-3.2-1b"


class Session:
    def __init__(self, out: Path, budget_s: float):
        self.out = out
        self.deadline = time.monotonic() + budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.log = (out / "session.log").open("a", encoding="utf-8")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} {self.left():5.0f}s left] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def run(self, args: list[str], cap_s: float, *, env: dict | None = None, stdout_to: Path | None = None) -> dict:
        """Run one command for at most min(cap, time left); never raises."""
        limit = max(1.0, min(cap_s, self.left() - 5))
        self.note(f"$ {' '.join(args)}   (limit {limit:.0f}s)")
        started = time.monotonic()
        try:
            proc = subprocess.run(args, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                                  text=True, timeout=limit)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = "timeout"
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        seconds = round(time.monotonic() - started, 1)
        if stdout_to is not None:
            stdout_to.write_text(stdout + ("\n--- stderr ---\n" + stderr[-4000:] if stderr else ""), encoding="utf-8")
        self.note(f"  -> rc {rc} in {seconds}s" + (f"; stderr: {stderr.strip().splitlines()[-1][:300]}"
                                                   if rc not in (0,) and stderr.strip() else ""))
        return {"rc": rc, "seconds": seconds, "stdout": stdout, "stderr_tail": stderr[-2000:]}

    def save(self, name: str, payload: dict) -> None:
        (self.out / name).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        self.note(f"  wrote {name}")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sftwizard.cli", *args]


def step_hw(s: Session) -> None:
    r = s.run(cli("hw", "--json"), 60)
    try:
        s.save("hw.json", json.loads(r["stdout"]))
    except ValueError:
        s.save("hw.json", {"error": r})


def build_model(s: Session, models_dir: Path, dry_run: bool) -> Path | None:
    if dry_run:
        from sftwizard.core.models import resolve_model

        return resolve_model("builtin:tiny-chat").path
    code = ("import sys; sys.path.insert(0, 'bench'); from pathlib import Path; "
            "from estimator_grid import build_random_model; "
            f"print(build_random_model({QLORA_ARCH!r}, Path({str(models_dir)!r})))")
    r = s.run([sys.executable, "-c", code], 120)
    return Path(r["stdout"].strip().splitlines()[-1]) if r["rc"] == 0 and r["stdout"].strip() else None


def step_qlora(s: Session, models_dir: Path, dry_run: bool) -> None:
    result: dict = {"arch": "builtin:tiny-chat" if dry_run else QLORA_ARCH, "dry_run": dry_run}
    model = build_model(s, models_dir, dry_run)
    if model is None:
        s.save("qlora.json", {**result, "error": "the random model could not be built"})
        return
    runs = Path(os.environ["SFT_WIZARD_HOME"]) / "gpu-session-runs"
    shutil.rmtree(runs, ignore_errors=True)
    preset = Path(os.environ["SFT_WIZARD_HOME"]) / "qlora.yaml"
    method = "lora" if dry_run else "qlora"  # no CUDA here: QLoRA is refused, the plumbing is the same
    preset.write_text(
        f"model:\n  id: {model}\n  dtype: {'fp32' if dry_run else 'bf16'}\n"
        "data:\n  sources:\n    - path: builtin:demo\n  eval_fraction: 0.05\n"
        f"method:\n  type: {method}\n  lora_r: 16\n  lora_alpha: 32\n"
        f"training:\n  max_steps: {3 if dry_run else 20}\n  per_device_train_batch_size: 4\n  max_length: 512\n"
        f"  logging_steps: 5\n  save_steps: {3 if dry_run else 20}\n  learning_rate: 2.0e-4\n"
        f"  optim: {'adamw_torch' if dry_run else 'paged_adamw_8bit'}\n  eval_strategy: 'no'\n"
        f"run:\n  output_root: {runs}\n", encoding="utf-8")
    result["train"] = s.run(cli("run", str(preset)), 150)
    run_dirs = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []
    if run_dirs:
        events = [json.loads(line) for line in (run_dirs[-1] / "events.jsonl").read_text().splitlines() if line.strip()]
        keep = ("prepared", "train_begin", "checkpoint", "end", "error", "warning")
        result["events"] = [e for e in events if e.get("event") in keep] + [e for e in events if e.get("event") == "log"][-3:]
        result["run_dir"] = str(run_dirs[-1])
        log = run_dirs[-1] / "train.log"
        result["train_log_tail"] = log.read_text(errors="replace")[-3000:] if log.exists() else None
    s.save("qlora.json", result)  # the training result first: what follows may run out of time
    if not run_dirs or result["train"]["rc"] != 0:
        return
    run = str(run_dirs[-1])
    result["merge"] = s.run(cli("merge", run, "--json"), 90)
    result["chat"] = s.run(cli("chat", run, "--prompt", "What is 2 + 3?", "--max-new-tokens", "16", "--json"), 75)
    result["compare"] = s.run(cli("chat", run, "--compare", "--limit", "2", "--max-new-tokens", "16", "--json"), 90)
    s.save("qlora.json", result)


def step_fast_defaults(s: Session, dry_run: bool) -> None:
    if dry_run:
        s.note("dry run: would run bench/fast_defaults.py --gpu --rounds 1 --csv OUT/fast_defaults_gpu.csv")
        return
    s.run([sys.executable, "bench/fast_defaults.py", "--gpu", "--rounds", "1", "--steps", "30", "--warmup", "6",
           "--csv", str(s.out / "fast_defaults_gpu.csv")], 160, stdout_to=s.out / "fast_defaults.log")


def step_grid(s: Session, models_dir: Path, dry_run: bool) -> None:
    if dry_run:
        s.note(f"dry run: would run bench/estimator_grid.py --only {GRID_SLICE} --out OUT/estimator_accuracy.csv")
        return
    s.run([sys.executable, "bench/estimator_grid.py", "--only", GRID_SLICE, "--models-dir", str(models_dir),
           "--out", str(s.out / "estimator_accuracy.csv")], 240)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for the results ($OUT on the lent machine)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole session (default 450)")
    ap.add_argument("--models-dir", default="/tmp/sftw-bench-models")
    ap.add_argument("--dry-run", action="store_true", help="CPU: builtin model, LoRA, 3 steps; GPU steps listed only")
    args = ap.parse_args(argv)
    os.environ.setdefault("SFT_WIZARD_HOME", "/tmp/sftw-gpu-session")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    Path(os.environ["SFT_WIZARD_HOME"]).mkdir(parents=True, exist_ok=True)
    s = Session(Path(args.out), args.budget)
    models_dir = Path(args.models_dir)
    s.note(f"gpu session: python {sys.version.split()[0]}, repo {REPO}, dry run {args.dry_run}")
    for step in (lambda: step_hw(s), lambda: step_qlora(s, models_dir, args.dry_run),
                 lambda: step_fast_defaults(s, args.dry_run), lambda: step_grid(s, models_dir, args.dry_run)):
        if s.left() < 15:
            s.note("out of time: remaining steps skipped")
            break
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one step's failure must not lose the others
            s.note(f"step failed: {type(exc).__name__}: {exc}")
    s.note("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
