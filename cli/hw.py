"""`sft-wizard hw` (what this machine has) and `sft-wizard estimate` (will this run fit?).

JSON schemas: docs/cli-hw.md.
"""

from __future__ import annotations

import argparse
import sys

from sftwizard.core.config import ATTN_IMPLEMENTATIONS, DTYPES, METHOD_TYPES

from .common import UserError, add_json_flag, add_set_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="GPUs (through NVML), driver, libraries, CPU and RAM")
    add_json_flag(p)
    p.set_defaults(func=cmd_hw)

    p = sub.add_parser(
        "estimate",
        help="peak GPU memory of a training run, with the cheapest changes that make it fit",
        description="Estimate from a PRESET, or from --model with the settings given as flags "
                    "(flags also override a preset's values). A model folder holding only config.json is enough.",
    )
    p.add_argument("preset", nargs="?", help="a preset YAML file, or the name of a shipped/user preset")
    p.add_argument("--model", help="model id, hub id or local folder (config.json is enough)")
    _add_setting_flags(p)
    p.add_argument("--probe", action="store_true",
                   help="also measure: 3 optimizer steps on this CUDA GPU at the longest sequence; "
                        "saved beside the preset as NAME.probe.json")
    add_json_flag(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser(
        "models",
        help="models to start from (builtin, HF cache, folders, well-known ids) and whether each fits here",
        description="Each model with its parameters, size on disk and a fit badge (fits / tight / does not fit) "
                    "from the memory estimator, for the settings of PRESET (or the defaults) and the flags, on this "
                    "machine's GPU — the verdict `estimate` gives.",
    )
    p.add_argument("preset", nargs="?", help="a preset YAML file whose settings (method, lengths…) to assume")
    p.add_argument("--folder", action="append", default=[], metavar="PATH", help="also list this model folder")
    p.add_argument("--fetch", action="store_true",
                   help="fetch the config.json (a few KB) of well-known models not in the cache, to size them")
    _add_setting_flags(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_models, model=None)


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """The settings a memory estimate depends on, as flags (`estimate` and `models`)."""
    p.add_argument("--method", choices=METHOD_TYPES)
    p.add_argument("--lora-r", type=int, metavar="N")
    p.add_argument("--lora-targets", metavar="all-linear|q_proj,v_proj,...")
    p.add_argument("--dtype", choices=[d for d in DTYPES if d != "auto"])
    p.add_argument("--max-length", type=int, metavar="N")
    p.add_argument("--batch-size", type=int, metavar="N", help="per-device micro-batch")
    p.add_argument("--grad-accum", type=int, metavar="N")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--attn", choices=[a for a in ATTN_IMPLEMENTATIONS if a != "auto"])
    p.add_argument("--optim", metavar="NAME", help="a TrainingArguments optimizer name, e.g. adamw_8bit")
    add_set_flag(p, "any other setting, as for `run` (e.g. distributed.strategy=zero3)")
    p.add_argument("--gpu-memory-gib", type=float, metavar="X",
                   help="memory to fit in (default: free memory of the GPU the run lands on)")


# --------------------------------------------------------------------------- hw

def cmd_hw(args: argparse.Namespace) -> int:
    from sftwizard.core.hardware import probe_hardware

    report = probe_hardware(check_torch=True)
    if args.json:
        print_json(report.to_dict())
        return 0
    out = sys.stdout
    if report.gpus:
        out.write(f"NVIDIA driver {report.driver_version} (CUDA {report.cuda_driver_version})\n")
        for g in report.gpus:
            caps = ", ".join(name for name, ok in (("bf16", g.bf16), ("FlashAttention-2", g.flash_attention_2),
                                                    ("FP8", g.fp8)) if ok) or "no bf16"
            out.write(f"GPU {g.index}: {g.name} — {g.architecture} (sm {g.compute_capability}), "
                      f"{g.memory_free_mib / 1024:.1f} of {g.memory_total_mib / 1024:.1f} GiB free; {caps}\n")
            if g.mig_mode:
                for m in g.mig_devices:
                    out.write(f"  MIG {m.index}: {m.name}, {m.memory_free_mib / 1024:.1f} GiB free\n")
                if not g.mig_devices:
                    out.write("  MIG mode is on but no instance exists: CUDA sees no device here\n")
            for proc in g.processes:
                used = f"{proc.used_mib / 1024:.1f} GiB" if proc.used_mib is not None else "memory unknown"
                out.write(f"  busy: pid {proc.pid} ({proc.name or '?'}) holds {used}\n")
    else:
        out.write(f"CPU mode: {report.reason}\n")
        from sftwizard.core.runnable import QLORA_ON_CPU

        out.write(f"{QLORA_ON_CPU}; FlashAttention needs a CUDA GPU\n")
    torch = {True: "yes", False: "no", None: "not checked"}[report.torch_cuda]
    out.write(f"torch sees CUDA: {torch}\n")
    libs = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in report.libraries.items())
    out.write(f"libraries: {libs}\n")
    ram = f"{report.ram_total_mib / 1024:.1f} GiB" if report.ram_total_mib else "unknown"
    out.write(f"CPU: {report.cpu_count} cores, RAM {ram}\n")
    for note in report.notes:
        out.write(f"note: {note}\n")
    return 0


# --------------------------------------------------------------------------- estimate

def _overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.model:
        out.append(f"model.id={args.model}")
    if args.method:
        out.append(f"method.type={args.method}")
    if args.lora_r is not None:
        out.append(f"method.lora_r={args.lora_r}")
    if args.lora_targets:
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        if targets == ["all-linear"]:
            out.append("method.lora_target_modules=all-linear")
        else:
            out.append("method.lora_target_modules=[" + ", ".join(targets) + "]")
    if args.dtype:
        out.append(f"model.dtype={args.dtype}")
    if args.max_length is not None:
        out.append(f"training.max_length={args.max_length}")
    if args.batch_size is not None:
        out.append(f"training.per_device_train_batch_size={args.batch_size}")
    if args.grad_accum is not None:
        out.append(f"training.gradient_accumulation_steps={args.grad_accum}")
    if args.gradient_checkpointing is not None:
        out.append(f"training.gradient_checkpointing={'true' if args.gradient_checkpointing else 'false'}")
    if args.attn:
        out.append(f"model.attn_implementation={args.attn}")
    if args.optim:
        out.append(f"training.optim={args.optim}")
    return out


def config_for_estimate(args: argparse.Namespace, *, need_model: bool = True):
    """The RunConfig the flags describe: a preset (or the defaults) with the flags applied."""
    from sftwizard.core import presets
    from sftwizard.core.config import RunConfig, apply_overrides

    overrides = _overrides(args) + list(getattr(args, "overrides", None) or [])
    if args.preset:
        return presets.load(args.preset, overrides)[1]
    if need_model and not args.model:
        raise UserError("estimate: give a PRESET or --model (a hub id or a folder holding config.json)")
    return apply_overrides(RunConfig(), overrides) if overrides else RunConfig()


def cmd_estimate(args: argparse.Namespace) -> int:
    from sftwizard.core.estimator import estimate_for
    from sftwizard.core.hardware import probe_hardware
    from sftwizard.core.models import model_facts

    if args.gpu_memory_gib is not None and args.gpu_memory_gib <= 0:
        raise UserError(f"--gpu-memory-gib: must be > 0, got {args.gpu_memory_gib}")
    cfg = config_for_estimate(args)
    facts = model_facts(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)
    est = estimate_for(cfg, probe_hardware(), facts, gpu_memory_gib=args.gpu_memory_gib)
    measured = _probe(args, cfg, facts) if args.probe else None
    if args.json:
        d = est.to_dict()
        if measured is not None:
            d["probe"] = measured
        print_json(d)
        return 0
    out = sys.stdout
    s = est.settings
    out.write(f"{facts.id}: {est.total_params / 1e9:.2f}B parameters, {est.trainable_params:,} trainable "
              f"({s['method']}, {s['dtype']}, {s['attn_implementation']}, micro-batch {s['micro_batch']} x "
              f"{s['max_length']} tokens, checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, {s['optim']})\n")
    out.write(f"peak ≈ {est.total_gib:.1f} GiB (during {est.peak_phase.replace('_', ' ')})\n")
    width = max(len(k) for k in est.components)
    for name, gib in est.components.items():
        if gib >= 0.0005:
            out.write(f"  {name:<{width}}  {gib:7.2f} GiB\n")
    if est.gpu_memory_gib is None:
        out.write("no GPU here: pass --gpu-memory-gib to check the fit\n")
    elif est.fits:
        out.write(f"fits in {est.gpu_memory_gib:.1f} GiB with {est.headroom_gib:.1f} GiB to spare\n")
    else:
        out.write(f"does NOT fit in {est.gpu_memory_gib:.1f} GiB ({-est.headroom_gib:.1f} GiB over"
                  if est.headroom_gib < 0 else
                  f"too tight for {est.gpu_memory_gib:.1f} GiB (only {est.headroom_gib:.1f} GiB to spare")
        out.write(")\n")
    for i, sug in enumerate(est.suggestions, 1):
        verdict = "fits" if sug.fits else "still too big"
        out.write(f"  {i}. {sug.text} → {sug.total_gib:.1f} GiB, {verdict}\n")
    for note in est.assumptions:
        out.write(f"assumed: {note}\n")
    if measured is not None:
        if measured["status"] == "ok":
            out.write(f"measured on {measured['gpu_name']}: {measured['measured_reserved_gib']:.2f} GiB reserved "
                      f"(estimate {measured['estimated_reserved_gib']:.2f} GiB, {measured['error_pct']:+.1f}%)\n")
        else:
            out.write(f"probe {measured['status']}: {measured['message']}\n")
        if measured.get("saved_to"):
            out.write(f"saved to {measured['saved_to']}\n")
    return 0


# --------------------------------------------------------------------------- models

def cmd_models(args: argparse.Namespace) -> int:
    from sftwizard.core.hardware import probe_hardware
    from sftwizard.core.hub_download import format_bytes
    from sftwizard.core.model_catalog import format_params, list_models
    from sftwizard.core.placement import placement

    if args.gpu_memory_gib is not None and args.gpu_memory_gib <= 0:
        raise UserError(f"--gpu-memory-gib: must be > 0, got {args.gpu_memory_gib}")
    from pathlib import Path

    for folder in args.folder:
        if not (Path(folder).expanduser() / "config.json").is_file():
            raise UserError(f"--folder {folder}: no config.json there")
    cfg = config_for_estimate(args, need_model=False)
    hardware = probe_hardware()
    gpu = placement(cfg, hardware).gpu  # the one each badge's estimate checks against
    memory = args.gpu_memory_gib if args.gpu_memory_gib is not None else (
        round(gpu.usable_memory_mib / 1024, 2) if gpu is not None else None)
    rows = list_models(cfg, hardware=hardware, folders=args.folder, fetch=args.fetch,
                       gpu_memory_gib=args.gpu_memory_gib)
    t = cfg.training
    settings = {"method": cfg.method.type, "max_length": t.max_length, "micro_batch": t.per_device_train_batch_size,
                "gradient_checkpointing": t.gradient_checkpointing}
    if args.json:
        print_json({"gpu": {"name": gpu.name, "memory_gib": memory} if gpu is not None else None,
                    "gpu_memory_gib": memory, "settings": settings, "models": [r.to_dict() for r in rows]})
        return 0
    out = sys.stdout
    where = (f"fit on {gpu.name if gpu is not None else 'the given memory'} ({memory:.1f} GiB)" if memory is not None
             else "no GPU here (pass --gpu-memory-gib to check the fit)")
    out.write(f"{cfg.method.type}, max_length {t.max_length}, micro-batch {t.per_device_train_batch_size} — "
              f"{where}\n")
    width = max(len(r.id) for r in rows)
    for r in rows:
        size = format_bytes(r.size_bytes) if r.size_bytes else {"known": "on the Hub"}.get(r.source, r.source)
        params = format_params(r.params)
        if r.fit:
            verdict = f"{r.fit} ({r.total_gib:.1f} GiB)"
        elif r.problem:
            verdict = f"? {r.problem}"
        else:
            verdict = f"peak {r.total_gib:.1f} GiB" if r.total_gib is not None else "-"
        out.write(f"{r.id:<{width}}  {params:>6}  {size:>10}  {verdict}\n")
    return 0


def _probe(args: argparse.Namespace, cfg, facts) -> dict:
    from pathlib import Path

    from sftwizard.core.probe import ProbeError, run_probe, save_probe

    try:
        result = run_probe(cfg, facts=facts)
    except ProbeError as exc:
        raise UserError(f"--probe: {exc}") from None
    d = result.to_dict()
    if args.preset and Path(args.preset).is_file():
        d["saved_to"] = str(save_probe(result, args.preset))
    return d
