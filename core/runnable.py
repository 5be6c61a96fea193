"""Can this machine run this config? The one answer ``validate``, ``run``, the wizard and the
training process all use (``runnable_problems``), so a setting that would fail after launch is
refused before it, in one sentence naming the setting.

What the machine has comes as an ``Environment``: ``Environment.detect()`` asks torch (the
training process), ``Environment.from_hardware(probe_hardware())`` reads NVML without importing
torch (the CLI and the TUI). Checks that need no machine (``seed`` range, ``padding_free``
without packing) are the config's own (core/config.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from sftwizard.core.config import RunConfig, resolved_dtype
from sftwizard.core.trackers import tracker_problem


@dataclass
class Environment:
    cuda: bool
    bf16_supported: bool
    device_count: int
    gpus: list[Any] = field(default_factory=list)  # hardware.GpuInfo when known: per-GPU capabilities

    @classmethod
    def detect(cls) -> "Environment":
        import torch

        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16_supported=bool(cuda and torch.cuda.is_bf16_supported()),
            device_count=torch.cuda.device_count() if cuda else 0,
        )

    @classmethod
    def from_hardware(cls, hardware) -> "Environment":
        """From ``hardware.probe_hardware()`` (NVML; no torch import)."""
        gpus = list(getattr(hardware, "gpus", None) or [])
        if getattr(hardware, "torch_cuda", None) is False:
            gpus = []  # the driver sees GPUs, this torch cannot use them
        return cls(cuda=bool(gpus), bf16_supported=bool(gpus) and all(getattr(g, "bf16", False) for g in gpus),
                   device_count=len(gpus), gpus=gpus)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def runnable_problems(cfg: RunConfig, env: Environment) -> list[str]:
    """What this machine cannot run in ``cfg``: one sentence each, naming the setting. Empty when
    the run can start here."""
    problems: list[str] = []
    if cfg.method.type == "qlora" and not env.cuda:
        problems.append("method.type: QLoRA needs a CUDA GPU (bitsandbytes 4-bit); none is visible here — "
                        "use lora or full")
    elif cfg.method.type == "qlora" and not _installed("bitsandbytes"):
        problems.append("method.type: QLoRA needs bitsandbytes: pip install 'sft-wizard[gpu]'")
    dtype = resolved_dtype(cfg, env.bf16_supported, env.cuda)
    if dtype == "bf16" and env.cuda and not env.bf16_supported:
        problems.append("model.dtype: this GPU has no bf16 support (pre-Ampere); use fp16 or fp32")
    if dtype == "fp16" and not env.cuda:
        problems.append("model.dtype: fp16 training needs a CUDA GPU; use fp32 (or bf16) on CPU")
    if cfg.model.attn_implementation == "flash_attention_2":
        old = [g for g in env.gpus if not getattr(g, "flash_attention_2", True)]
        if not env.cuda or not _installed("flash_attn"):
            problems.append("model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package")
        elif old:
            names = ", ".join(f"{g.name} ({g.architecture})" for g in old)
            problems.append(f"model.attn_implementation: FlashAttention-2 needs an Ampere or newer GPU; {names} is not")
    tracker = tracker_problem(cfg.training.report_to)
    if tracker:
        problems.append(tracker)
    return problems


def problems_here(cfg: RunConfig, hardware=None) -> list[str]:
    """``runnable_problems`` for this machine: NVML's view (``hardware``, probed when not given);
    when that sees no GPU and something needs one, torch is asked before refusing (NVML can be
    missing where torch still sees CUDA)."""
    if hardware is None:
        from sftwizard.core.hardware import probe_hardware

        hardware = probe_hardware()
    env = Environment.from_hardware(hardware)
    problems = runnable_problems(cfg, env)
    if problems and not env.cuda:
        try:
            problems = runnable_problems(cfg, Environment.detect())
        except ImportError:
            pass
    return problems
