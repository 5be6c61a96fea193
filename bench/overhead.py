"""Does the wizard add overhead? tokens/s of `sft-wizard run` vs a plain TRL script.

Same model (builtin:tiny-chat), same data (the bundled demo), same SFTConfig values, run one
after the other, alternating, in one go. Both sides are measured the same way: the trainer's
own token count (TRL's ``num_tokens``) divided by its ``train_runtime``. Prints each round and
the ratio wizard / plain (target >= 0.97).

    .venv/bin/python bench/overhead.py [--steps 120] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    import torch
    from sftwizard.core.models import resolve_model
    path = resolve_model("builtin:tiny-chat").path
    steps, out = int(sys.argv[1]), sys.argv[2]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    ds = load_dataset("json", data_files=sys.argv[3], split="train")
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=16, learning_rate=3e-3,
                     lr_scheduler_type="cosine", warmup_steps=0.05, max_length=256, logging_steps=10,
                     save_strategy="no", report_to="none", seed=42, use_cpu=True, disable_tqdm=True,
                     assistant_only_loss=True, bf16=False, fp16=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    result = trainer.train()
    tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1]
    print(json.dumps({"tokens": tokens, "runtime": result.metrics["train_runtime"]}))
    """
)


def run_plain(steps: int, work: Path) -> float:
    from sftwizard.core.demo_data import TRAIN_FILE

    out = subprocess.run([sys.executable, "-c", PLAIN, str(steps), str(work / "plain"), str(TRAIN_FILE)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["tokens"] / result["runtime"]


def run_wizard(steps: int, work: Path) -> float:
    from sftwizard.core.events import read_events

    out = subprocess.run(
        [sys.executable, "-m", "sftwizard.core.cli", "run", str(REPO / "presets/demo.yaml"),
         "--set", f"training.max_steps={steps}", "--set", "training.eval_strategy=no",
         "--set", "training.save_strategy=no", "--set", f"run.output_root={work / 'runs'}"],
        capture_output=True, text=True, check=True,
    )
    run_dir = Path(next(l for l in out.stderr.splitlines() if l.startswith("run ")).split("(", 1)[1].rstrip(")"))
    events = read_events(run_dir / "events.jsonl")
    tokens = [e["num_tokens"] for e in events if e["event"] == "log" and e.get("num_tokens")][-1]
    runtime = next(e["train_runtime"] for e in events if e["event"] == "summary")
    return tokens / runtime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plain, wizard = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            plain.append(run_plain(args.steps, work))
            wizard.append(run_wizard(args.steps, work))
            print(f"round {r + 1}: plain TRL {plain[-1]:,.0f} tok/s   sft-wizard {wizard[-1]:,.0f} tok/s")
    best_plain, best_wizard = max(plain), max(wizard)
    ratio = best_wizard / best_plain
    print(f"best of {args.rounds}: plain TRL {best_plain:,.0f} tok/s, sft-wizard {best_wizard:,.0f} tok/s, "
          f"ratio {ratio:.3f} (target >= 0.97)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
