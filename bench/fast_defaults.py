"""Fast by default? The wizard's recommended settings versus TRL's defaults, same model, data and steps.

Two sides, run alternately in fresh processes, several rounds, in one go:

* ``trl``: what ``trl sft`` does given only a model, a dataset and an output_dir. The SFTConfig
  and ModelConfig come from TRL's own ``sft`` argument parser with exactly those arguments plus
  the step budget (``--max_steps``, no saving, no reporting), and the trainer is built the way
  ``trl/scripts/sft.py`` builds it (model passed by path, fp32 load, TRL's default attention).
  On a machine without CUDA, ``trl sft`` refuses to start (its bf16 default needs a GPU), so
  ``--use_cpu`` is added there — the least a user must add.
* ``wizard``: a RunConfig with the same model, data, steps and TRL's batch and length
  (8 x 1024), passed through ``recommend()`` and trained by the runner's ``build_trainer``.

Both sides are measured the same way: a forward pre-hook (``efficiency.BatchCounter``) counts the
real (non-padding) tokens of every training micro-batch, timed from the end of a warm-up step to
the end of the last one. The printed ratio is wizard tokens/s over TRL tokens/s (median of the
rounds). Both sides see the same number of tokens per optimizer step (the wizard converts the
examples per step into packed rows), so "same step budget" means the same amount of data.

    .venv/bin/python bench/fast_defaults.py                  # CPU: builtin tiny-chat model
    .venv/bin/python bench/fast_defaults.py --gpu            # GPU: Qwen2.5-0.5B architecture, random
                                                              # weights, 2048-token packed rows; appends
                                                              # a row to bench/results/fast_defaults_gpu.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_CSV = REPO / "bench" / "results" / "fast_defaults_gpu.csv"

# Qwen2.5-0.5B's published architecture (config.json of Qwen/Qwen2.5-0.5B): built with random weights.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "hidden_act": "silu", "initializer_range": 0.02, "attention_dropout": 0.0, "use_sliding_window": False,
}

# --------------------------------------------------------------------------- data

TOPICS = ["the river", "a small robot", "the old library", "winter in the mountains", "a chess game",
          "the night market", "a broken clock", "the ocean", "a new recipe", "the garden"]
FILLER = ("it was quiet and the light moved slowly across the room while everyone waited for the answer "
          "that would change the plan for the rest of the week and nobody wanted to speak first").split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(words)).capitalize() + "."


def mixed_conversations(n: int, seed: int, long_words: int) -> list[dict]:
    """A realistic spread: most conversations short (one question, one short answer), some
    multi-turn, a few long (long answers up to ``long_words`` words), as in chat SFT sets."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.random()
        topic = rng.choice(TOPICS)
        if kind < 0.6:
            msgs = [{"role": "user", "content": f"Tell me about {topic}."},
                    {"role": "assistant", "content": _sentence(rng, rng.randint(4, 20))}]
        elif kind < 0.9:
            msgs = []
            for _ in range(rng.randint(2, 4)):
                msgs += [{"role": "user", "content": f"And what about {rng.choice(TOPICS)}?"},
                         {"role": "assistant", "content": _sentence(rng, rng.randint(10, long_words // 4))}]
        else:
            msgs = [{"role": "system", "content": "You are a careful storyteller."},
                    {"role": "user", "content": f"Write a long story about {topic}."},
                    {"role": "assistant", "content": " ".join(_sentence(rng, 12) for _ in range(
                        rng.randint(long_words // 24, long_words // 12)))}]
        rows.append({"messages": msgs})
    return rows


def write_dataset(path: Path, rows: int, seed: int, long_words: int) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in mixed_conversations(rows, seed, long_words)) + "\n")
    return path


# --------------------------------------------------------------------------- model for --gpu

def build_random_model(folder: Path) -> Path:
    """Qwen2.5-0.5B's architecture with random weights, and the builtin tokenizer (ids fit its vocab)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sftwizard.core.models import resolve_model

    if (folder / "model.safetensors").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(resolve_model("builtin:tiny-chat").path)
    config = AutoConfig.for_model(**{k: v for k, v in QWEN25_05B.items() if k != "architectures"})
    config.architectures = QWEN25_05B["architectures"]
    config.pad_token_id, config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- one side, in its own process

def _timing_callback(counter, warmup: int, result: dict):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup:
                counter.take()
                result["t0"] = time.perf_counter()
            elif state.global_step > warmup:
                result["t1"] = time.perf_counter()

    return Timing()


def _measure(trainer, warmup: int) -> dict:
    from sftwizard.core.efficiency import BatchCounter

    result: dict = {}
    counter = BatchCounter().attach(trainer.model)
    trainer.add_callback(_timing_callback(counter, warmup, result))
    trainer.train()
    counts = counter.take()
    seconds = result["t1"] - result["t0"]
    return {"tokens": counts.tokens, "positions": counts.positions, "trained": counts.trained,
            "context": counts.context, "seconds": seconds, "tokens_per_s": counts.tokens / seconds,
            "steps": trainer.state.global_step - warmup}


def run_trl_defaults(model: str, data: Path, steps: int, warmup: int, out: Path) -> dict:
    """What `trl sft --model_name_or_path M --dataset_name D --output_dir O` does (+ step budget)."""
    import torch
    from datasets import load_dataset
    from trl import SFTTrainer, get_peft_config, get_quantization_config
    from trl.scripts.sft import make_parser

    argv = ["--model_name_or_path", model, "--dataset_name", "json", "--output_dir", str(out),
            "--max_steps", str(steps), "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    if not torch.cuda.is_available():
        argv.append("--use_cpu")  # `trl sft` refuses to start on a CPU box without it (bf16 default)
    script_args, training_args, model_args, _ = make_parser().parse_args_and_config(
        args=argv, fail_with_unknown_args=True)
    # as trl/scripts/sft.py main() does
    training_args.model_init_kwargs = dict(revision=model_args.model_revision, trust_remote_code=False,
                                           attn_implementation=model_args.attn_implementation,
                                           dtype=model_args.dtype)
    dataset = load_dataset("json", data_files=str(data), split="train")  # --dataset_name, from a local file
    trainer = SFTTrainer(model=model_args.model_name_or_path, args=training_args, train_dataset=dataset,
                         quantization_config=get_quantization_config(model_args),
                         peft_config=get_peft_config(model_args))
    out_ = _measure(trainer, warmup)
    out_["settings"] = {"bf16": training_args.bf16, "gradient_checkpointing": training_args.gradient_checkpointing,
                        "per_device_train_batch_size": training_args.per_device_train_batch_size,
                        "max_length": training_args.max_length, "packing": training_args.packing,
                        "dtype": model_args.dtype, "attn": trainer.model.config._attn_implementation,
                        "optim": str(training_args.optim)}
    return out_


def wizard_config(model: str, data: Path, steps: int, max_length: int):
    from sftwizard.core.config import RunConfig, apply_overrides

    return apply_overrides(RunConfig(), [
        f"model.id={model}", f"data.sources.0.path={data}", "method.type=full",
        "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=1",
        f"training.max_length={max_length}", f"training.max_steps={steps}", "training.save_strategy=no",
        "training.logging_steps=10", "training.learning_rate=2e-5",
    ])


def _hardware():
    try:
        from sftwizard.core.hardware import probe_hardware

        return probe_hardware(check_torch=True)
    except ImportError:  # the hardware module has not landed on this branch yet: CPU facts by hand
        from types import SimpleNamespace

        import torch

        if torch.cuda.is_available():
            raise SystemExit("--gpu needs sftwizard.core.hardware (issue 4) for the GPU facts")
        return SimpleNamespace(gpus=[], torch_cuda=False, cpu_count=os.cpu_count() or 1, libraries={})


def _audit(cfg) -> dict:
    """The data audit recommend() reads."""
    from sftwizard.core.audit import audit_dataset
    from sftwizard.core.models import load_tokenizer, resolve_model
    from sftwizard.core.runner import resolve_data
    from sftwizard.core.templates import resolve_template

    tok = load_tokenizer(resolve_model(cfg.model.id).path)
    examples, _, _ = resolve_data(cfg)
    return audit_dataset(tok, examples, resolve_template(tok, cfg.template), cfg)


def run_wizard(model: str, data: Path, steps: int, warmup: int, out: Path, max_length: int) -> dict:
    from sftwizard.core.models import model_facts
    from sftwizard.core.recommend import recommend
    from sftwizard.core.runner import build_trainer

    cfg = wizard_config(model, data, steps, max_length)
    try:
        from sftwizard.core.estimator import estimate_memory
    except ImportError:
        estimate_memory = None
    rec = recommend(cfg, hardware=_hardware(), facts=model_facts(cfg.model.id), audit=_audit(cfg),
                    estimate_fn=estimate_memory)
    prepared = build_trainer(rec.config, out)
    result = _measure(prepared.trainer, warmup)
    result["settings"] = rec.changes()
    result["reasons"] = {r.setting: r.reason for r in rec.items if r.changed}
    return result


# --------------------------------------------------------------------------- orchestration

def _side(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix=f"fast-{args.side}-"))
    if args.side == "trl":
        result = run_trl_defaults(args.model, Path(args.data), args.steps, args.warmup, out)
    else:
        result = run_wizard(args.model, Path(args.data), args.steps, args.warmup, out, args.max_length)
    print("RESULT " + json.dumps(result, default=str))
    return 0


def _spawn(side: str, model: str, data: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--model", model, "--data", str(data), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--max-length", str(args.max_length)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side} side failed (exit {proc.returncode})")
    return json.loads(line[len("RESULT "):])


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "accelerate", "flash-attn", "liger-kernel"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="0.5B-class model on the GPU, 2048-token packed rows")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per side (default 24 CPU, 60 GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing starts (default 4 CPU, 10 GPU)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per side (default: torch's own); 1 on a box shared with other jobs")
    parser.add_argument("--csv", default=str(GPU_CSV), help="--gpu: the CSV a result row is appended to")
    parser.add_argument("--side", choices=["trl", "wizard"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        return _side(args)

    args.steps = args.steps or (60 if args.gpu else 24)
    args.warmup = args.warmup or (10 if args.gpu else 4)
    work = Path(tempfile.mkdtemp(prefix="fast-defaults-"))
    if args.gpu:
        model = str(build_random_model(work / "qwen2.5-0.5b-random"))
        # conversations up to ~1,000 tokens (TRL's default max_length of 1024 truncates none of them,
        # so both sides train the same tokens); the wizard packs them into 2048-token rows
        data = write_dataset(work / "train.jsonl", args.rows, seed=0, long_words=370)
        args.max_length = 2048
    else:
        from sftwizard.core.models import resolve_model

        model = str(resolve_model("builtin:tiny-chat").path)
        # p50 ~70 tokens, p90 ~340, max ~470: within the builtin model's 512 positions
        data = write_dataset(work / "train.jsonl", args.rows, seed=0, long_words=160)
        args.max_length = 1024  # TRL's default
    results: dict[str, list[dict]] = {"trl": [], "wizard": []}
    for r in range(args.rounds):
        for side in ("trl", "wizard"):
            results[side].append(_spawn(side, model, data, args))
        t, w = results["trl"][-1], results["wizard"][-1]
        print(f"round {r + 1}: TRL defaults {t['tokens_per_s']:,.0f} tok/s   wizard {w['tokens_per_s']:,.0f} tok/s   "
              f"ratio {w['tokens_per_s'] / t['tokens_per_s']:.2f}")
    med = {side: statistics.median(x["tokens_per_s"] for x in runs) for side, runs in results.items()}
    ratio = med["wizard"] / med["trl"]
    for side, runs in results.items():
        last = runs[-1]
        print(f"{side:>6}: {med[side]:,.0f} tok/s (median of {len(runs)}), padding "
              f"{1 - last['tokens'] / last['positions']:.1%}, trained share {last['trained'] / last['tokens']:.1%}, "
              f"{last['tokens'] / last['steps']:,.0f} tokens/step; settings {last['settings']}")
    print(f"ratio wizard / TRL defaults: {ratio:.2f}x")
    if args.gpu:
        _gpu_report(results, med, ratio, model, args)
    return 0


def _gpu_report(results: dict, med: dict, ratio: float, model: str, args) -> None:
    import torch

    from sftwizard.core.efficiency import FlopsModel, mfu
    from sftwizard.core.models import model_facts

    name = torch.cuda.get_device_name(0)
    facts = FlopsModel.from_facts(model_facts(model))
    mfus = {}
    for side, runs in results.items():
        last = runs[-1]
        dtype = "bf16"  # TRL's default autocast, and the wizard's choice on bf16 GPUs
        mfus[side] = mfu(med[side], facts, name, dtype, context=last["context"] or args.max_length)
    print(f"MFU: TRL defaults {mfus['trl']:.1%}, wizard {mfus['wizard']:.1%} on {name}")
    row = {"date": datetime.date.today().isoformat(), "gpu": name, "model": "Qwen2.5-0.5B architecture (random)",
           "max_length": args.max_length, "steps": args.steps, "rounds": args.rounds,
           "trl_tokens_per_s": round(med["trl"]), "wizard_tokens_per_s": round(med["wizard"]),
           "ratio": round(ratio, 3), "trl_mfu": round(mfus["trl"] or 0, 4), "wizard_mfu": round(mfus["wizard"] or 0, 4),
           "wizard_settings": json.dumps(results["wizard"][-1]["settings"], default=str),
           **{f"v_{k}": v for k, v in _versions().items()}}
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(f"appended to {path}")


if __name__ == "__main__":
    sys.exit(main())
