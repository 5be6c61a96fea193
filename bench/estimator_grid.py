"""GPU accuracy harness for the memory estimator: the probe over a grid of configurations.

For each configuration of ``GRID`` (real architectures' configs from bench/architectures.py,
random weights, 0.5B-8B; full / LoRA / QLoRA; max_length 512-4096; micro-batch 1-8;
checkpointing on and off; sdpa and eager) it runs ``sftwizard.core.probe.run_probe`` — three
optimizer steps through the real runner — in a fresh subprocess (a clean CUDA context, and an OOM
cannot poison the next row), and writes one CSV row with the GPU name, date, versions, the
measured peaks and the estimate.

    python bench/estimator_grid.py                      # all rows -> bench/results/estimator_accuracy.csv
    python bench/estimator_grid.py --only 0,3,7         # some rows
    python bench/estimator_grid.py --list               # print the grid

tests/core/test_estimator.py checks the committed CSV: median |error| <= 10%, max <= 25%.
Needs a CUDA GPU (bitsandbytes for the QLoRA rows). Random-weight models are written once per
architecture under --models-dir (8B in bf16 is 16 GB).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from architectures import ARCHITECTURES  # noqa: E402

RESULTS = HERE / "results" / "estimator_accuracy.csv"

# (architecture, method, max_length, micro-batch, gradient checkpointing, attention, optimizer)
GRID: list[tuple[str, str, int, int, bool, str, str]] = [
    ("qwen2-0.5b", "full", 512, 8, False, "sdpa", "adamw_torch"),
    ("qwen2-0.5b", "full", 2048, 4, False, "sdpa", "adamw_torch_fused"),
    ("qwen2-0.5b", "full", 4096, 2, True, "sdpa", "adamw_torch"),
    ("qwen2-0.5b", "lora", 1024, 8, False, "eager", "adamw_torch"),
    ("qwen2-0.5b", "lora", 4096, 1, False, "eager", "adamw_torch"),
    ("qwen2.5-1.5b", "full", 1024, 4, False, "sdpa", "adamw_torch"),
    ("qwen2.5-1.5b", "full", 2048, 4, True, "sdpa", "adamw_8bit"),
    ("qwen2.5-1.5b", "lora", 2048, 8, True, "sdpa", "adamw_torch"),
    ("llama-3.2-1b", "full", 512, 8, False, "eager", "adamw_torch"),
    ("llama-3.2-1b", "full", 2048, 2, False, "sdpa", "adamw_torch"),
    ("llama-3.2-1b", "lora", 4096, 4, True, "sdpa", "adamw_torch"),
    ("llama-3.2-1b", "qlora", 2048, 4, False, "sdpa", "paged_adamw_8bit"),
    ("gemma-2-2b", "lora", 1024, 4, False, "eager", "adamw_torch"),
    ("gemma-2-2b", "full", 1024, 2, True, "eager", "adamw_8bit"),
    ("phi-3-mini", "lora", 2048, 4, False, "sdpa", "adamw_torch"),
    ("phi-3-mini", "qlora", 4096, 2, True, "sdpa", "adamw_torch"),
    ("mistral-7b", "lora", 1024, 2, True, "sdpa", "adamw_torch"),
    ("mistral-7b", "qlora", 2048, 4, True, "sdpa", "paged_adamw_8bit"),
    ("llama-3-8b", "lora", 512, 8, False, "sdpa", "adamw_torch"),
    ("llama-3-8b", "lora", 2048, 2, True, "eager", "adamw_torch"),
    ("llama-3-8b", "qlora", 1024, 4, False, "sdpa", "adamw_torch"),
    ("llama-3-8b", "qlora", 4096, 1, True, "sdpa", "paged_adamw_8bit"),
    ("llama-3-8b", "full", 512, 1, True, "sdpa", "adamw_8bit"),
]

COLUMNS = [
    "row", "gpu_name", "gpu_total_gib", "date", "torch", "transformers", "trl", "peft", "bitsandbytes", "cuda",
    "arch", "method", "dtype", "attn", "max_length", "batch", "grad_accum", "gradient_checkpointing", "optim",
    "lora_r", "status", "measured_reserved_gib", "measured_allocated_gib", "estimated_total_gib",
    "estimated_reserved_gib", "estimated_allocated_gib", "error_pct", "seconds", "message",
]


def grid_config(arch: str, method: str, max_length: int, batch: int, checkpointing: bool, attn: str, optim: str,
                model_id: str, grad_accum: int = 1, lora_r: int = 16):
    """The RunConfig of one grid row (shared by the harness and the CSV check in the tests)."""
    from sftwizard.core.config import config_from_dict

    return config_from_dict({
        "model": {"id": model_id, "dtype": "bf16", "attn_implementation": attn},
        "method": {"type": method, "lora_r": lora_r, "lora_alpha": 2 * lora_r, "lora_dropout": 0.05,
                   "lora_target_modules": "all-linear"},
        "training": {"per_device_train_batch_size": batch, "gradient_accumulation_steps": grad_accum,
                     "max_length": max_length, "gradient_checkpointing": checkpointing, "optim": optim,
                     "packing": False, "padding_free": False, "learning_rate": 1e-5},
    })


def build_random_model(arch: str, models_dir: Path) -> Path:
    """config.json + random bf16 weights + the builtin tokenizer, once per architecture."""
    folder = models_dir / arch
    if (folder / "model.safetensors.index.json").exists() or (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sftwizard.core.models import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    spec = dict(ARCHITECTURES[arch])
    model_type = spec.pop("model_type")
    spec.pop("architectures", None)
    config = AutoConfig.for_model(model_type, **spec)
    config.architectures = ARCHITECTURES[arch]["architectures"]
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="5GB")
    del model
    torch.cuda.empty_cache()
    tokenizer_dir = resolve_model("builtin:tiny-chat").path
    for f in tokenizer_dir.iterdir():
        if f.is_file() and ("token" in f.name or f.name in ("chat_template.jinja", "special_tokens_map.json")):
            shutil.copy(f, folder / f.name)
    return folder


def run_one(index: int, models_dir: Path) -> dict:
    """One grid row, in this process (the parent starts one process per row)."""
    from sftwizard.core.models import model_facts
    from sftwizard.core.probe import run_probe

    arch, method, max_length, batch, ckpt, attn, optim = GRID[index]
    folder = build_random_model(arch, models_dir)
    cfg = grid_config(arch, method, max_length, batch, ckpt, attn, optim, str(folder))
    result = run_probe(cfg, facts=model_facts(str(folder)))
    v = result.versions
    return {
        "row": index, "gpu_name": result.gpu_name, "gpu_total_gib": result.gpu_total_gib, "date": result.date,
        "torch": v.get("torch"), "transformers": v.get("transformers"), "trl": v.get("trl"), "peft": v.get("peft"),
        "bitsandbytes": v.get("bitsandbytes", ""), "cuda": v.get("cuda"), "arch": arch, "method": method,
        "dtype": "bf16", "attn": attn, "max_length": max_length, "batch": batch, "grad_accum": 1,
        "gradient_checkpointing": ckpt, "optim": optim, "lora_r": 16, "status": result.status,
        "measured_reserved_gib": result.measured_reserved_gib, "measured_allocated_gib": result.measured_allocated_gib,
        "estimated_total_gib": result.estimated_total_gib, "estimated_reserved_gib": result.estimated_reserved_gib,
        "estimated_allocated_gib": result.estimated_allocated_gib, "error_pct": result.error_pct,
        "seconds": result.seconds, "message": result.message or "",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated row numbers")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--models-dir", default=os.environ.get("SFTW_BENCH_MODELS", "/tmp/sftw-bench-models"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: one row, JSON on stdout
    args = ap.parse_args(argv)
    if args.list:
        for i, row in enumerate(GRID):
            print(i, *row)
        return 0
    models_dir = Path(args.models_dir)
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args.one, models_dir)), flush=True)
        return 0
    rows = [int(x) for x in args.only.split(",")] if args.only else list(range(len(GRID)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = {}
    if out.exists():
        with out.open(newline="") as fh:
            existing = {int(r["row"]): r for r in csv.DictReader(fh)}
    for i in rows:
        proc = subprocess.run([sys.executable, __file__, "--one", str(i), "--models-dir", str(models_dir)],
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            arch, method, max_length, batch, ckpt, attn, optim = GRID[i]
            record = {"row": i, "arch": arch, "method": method, "max_length": max_length, "batch": batch,
                      "gradient_checkpointing": ckpt, "attn": attn, "optim": optim, "status": "crash",
                      "message": tail[0][:300]}
        else:
            record = json.loads(line[len("RESULT "):])
        existing[i] = record
        print(f"row {i}: {record.get('status')} measured {record.get('measured_reserved_gib')} GiB, "
              f"estimated {record.get('estimated_reserved_gib')} GiB ({record.get('error_pct')}%)", flush=True)
        with out.open("w", newline="") as fh:  # rewritten after every row: a partial grid is kept
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for k in sorted(existing):
                writer.writerow(existing[k])
    return 0


if __name__ == "__main__":
    sys.exit(main())
