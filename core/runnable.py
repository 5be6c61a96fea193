"""Can this machine run a config? One check for `validate`, `run` and the TUI.

``runnable_problems(cfg, env)`` lists, one sentence each (``setting: why: what to do``), what the
machine described by ``env`` cannot run: QLoRA without bitsandbytes or CUDA, FlashAttention-2
without flash-attn or an sm80+ GPU, bf16 on a GPU without it, fp16 on a CPU, Liger or 8-bit
optimizers without their packages. ``run`` refuses the first before a run directory exists, the
TUI blocks on it, ``validate`` shows them as warnings (a preset may be meant for another machine).

The machine is an ``Environment``: from torch (``Environment.detect``, the training process) or
from the NVML report (``Environment.from_hardware``, cheap: the TUI and ``validate``); the checks
also take ``probe_hardware``'s report as it is. Cheap to import: no torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import RunConfig, resolved_precision
from .hardware import (
    install_command,
    libraries_available,
    supports_bf16,
    supports_flash_attention_2,
    torch_device_capability,
)
from .trackers import tracker_problem

# TrainingArguments.optim values implemented by bitsandbytes.
BNB_OPTIMIZERS = ("adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "ademamix_8bit",
                  "paged_ademamix_8bit", "paged_ademamix_32bit", "ademamix", "lion_8bit", "paged_lion_8bit",
                  "lion_32bit", "paged_lion_32bit", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit")


BNB_CPU_VERSION = "0.50"  # NF4 forward/backward on CPU, as tested here (tests/core/test_qlora_cpu.py)
QLORA_ON_CPU = ("QLoRA on CPU: bitsandbytes' CPU kernels are far slower than a GPU's; "
                "fine for tests and tiny models, not for real fine-tuning")


def bnb_has_cpu_backend() -> bool:
    """Whether the installed bitsandbytes runs 4-bit layers on CPU (>= BNB_CPU_VERSION)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("bitsandbytes").split(".")[:2]
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts) >= tuple(
            int(p) for p in BNB_CPU_VERSION.split("."))
    except (PackageNotFoundError, ValueError):
        return False


@dataclass
class Environment:
    """What the training process will have: CUDA, bf16 and FlashAttention-2 support of the GPU it
    trains on (``hardware.supports_bf16``: compute capability, never torch's emulated bf16), and
    which optional libraries are importable (None: look them up)."""

    cuda: bool
    bf16_supported: bool
    device_count: int
    flash_attention_2: bool = False
    libraries: dict[str, bool] | None = field(default=None)

    @classmethod
    def detect(cls) -> "Environment":
        """From torch (imports it): the device the run trains on."""
        import torch

        cc = torch_device_capability()
        return cls(
            cuda=cc is not None,
            bf16_supported=cc is not None and supports_bf16(*cc),
            device_count=torch.cuda.device_count() if cc is not None else 0,
            flash_attention_2=cc is not None and supports_flash_attention_2(*cc),
        )

    @classmethod
    def from_hardware(cls, report: Any) -> "Environment":
        """From ``probe_hardware``'s report (NVML, no torch): the GPU a single-process run lands
        on. A GPU that torch is known not to see (a CPU-only torch build) counts as none."""
        from .hardware import visible_gpus

        gpus = visible_gpus(report)  # those CUDA_VISIBLE_DEVICES leaves, in CUDA's order
        gpu = gpus[0] if gpus else None
        if gpu is not None and getattr(report, "torch_cuda", None) is False:
            gpu = None
        libraries = dict(getattr(report, "libraries", None) or {}) or None
        return cls(cuda=gpu is not None, bf16_supported=bool(gpu is not None and getattr(gpu, "bf16", False)),
                   device_count=len(gpus) if gpu is not None else 0,
                   flash_attention_2=bool(gpu is not None and getattr(gpu, "flash_attention_2", False)),
                   libraries=libraries)

    def has(self, library: str) -> bool:
        if self.libraries is None:
            self.libraries = libraries_available()
        return bool(self.libraries.get(library))


def as_environment(machine: Any) -> Environment:
    """``machine`` as an Environment: itself, or made from a ``probe_hardware`` report."""
    return machine if isinstance(machine, Environment) else Environment.from_hardware(machine)


def runnable_problems(cfg: RunConfig, hardware: Any) -> list[str]:
    """What the machine cannot run in ``cfg``: one sentence per problem, naming the setting.

    ``hardware``: an Environment or a ``probe_hardware`` report.
    """
    env = as_environment(hardware)
    out: list[str] = []
    m, t = cfg.method, cfg.training
    if m.type == "qlora":
        if not env.has("bitsandbytes"):
            out.append(f"method.type: QLoRA needs bitsandbytes: {install_command('bitsandbytes')}")
        elif not env.cuda and not bnb_has_cpu_backend():
            out.append(f"method.type: QLoRA without a CUDA GPU needs bitsandbytes >= {BNB_CPU_VERSION} (its CPU "
                       f"backend): {install_command('bitsandbytes')} — or use lora or full")
    if t.optim in BNB_OPTIMIZERS and not env.has("bitsandbytes"):
        out.append(f"training.optim: {t.optim} is a bitsandbytes optimizer: {install_command('bitsandbytes')} "
                   "(or use adamw_torch_fused)")
    precision = resolved_precision(cfg, env.bf16_supported, env.cuda)
    if env.cuda and not env.bf16_supported:
        if precision.weights == "bf16":
            out.append("model.dtype: this GPU has no bf16 support (pre-Ampere, compute capability below 8.0); "
                       "use fp16 or fp32")
        elif precision.bf16:
            out.append("training.bf16: this GPU has no bf16 support (pre-Ampere, compute capability below 8.0); "
                       "use training.fp16")
    if not env.cuda:
        if precision.weights == "fp16":
            out.append("model.dtype: fp16 training needs a CUDA GPU; use fp32 (or bf16) on CPU")
        elif precision.fp16:
            out.append("training.fp16: fp16 mixed precision needs a CUDA GPU; use training.bf16 or fp32 on CPU")
    if cfg.model.attn_implementation == "flash_attention_2":
        if not env.cuda:
            out.append("model.attn_implementation: flash_attention_2 needs a CUDA GPU; use sdpa or auto")
        elif not env.flash_attention_2:
            out.append("model.attn_implementation: FlashAttention-2 needs an Ampere or newer GPU (sm80+); use sdpa or auto")
        if not env.has("flash_attn"):
            out.append(f"model.attn_implementation: flash_attention_2 needs flash-attn: {install_command('flash_attn')}")
    if t.use_liger_kernel:
        if not env.cuda:
            out.append("training.use_liger_kernel: Liger's Triton kernels need a CUDA GPU; set it to false")
        if not env.has("liger_kernel"):
            out.append(f"training.use_liger_kernel: needs liger-kernel: {install_command('liger_kernel')}")
    tracker = tracker_problem(t.report_to)  # transformers raises at launch for a tracker not installed
    if tracker:
        out.append(tracker)
    return out


def runnable_notes(cfg: RunConfig, hardware: Any) -> list[str]:
    """What the machine runs in ``cfg``, but the user should hear about: QLoRA on CPU is slow."""
    if cfg.method.type == "qlora" and not as_environment(hardware).cuda:
        return [QLORA_ON_CPU]
    return []


ANYWHERE = Environment(cuda=False, bf16_supported=False, device_count=0, flash_attention_2=False, libraries={})


def runs_anywhere(cfg: RunConfig) -> bool:
    """True when ``cfg`` asks for nothing a bare CPU machine lacks (no need to look at this one)."""
    return not runnable_problems(cfg, ANYWHERE)


def runnable_warnings(cfg: RunConfig, hardware: Any = None) -> list[dict[str, Any]]:
    """What this machine cannot run, as ``validate``'s warnings (code ``not_runnable_here``): a preset
    may be meant for another machine, so they inform; ``run`` refuses the same problems (preflight).

    ``hardware``: an Environment or a ``probe_hardware`` report; probed (NVML, torch) when None.
    """
    if runs_anywhere(cfg):
        return []
    if hardware is None:
        from .hardware import probe_hardware

        hardware = probe_hardware(check_torch=True)
    env = as_environment(hardware)
    problems = runnable_problems(cfg, env)
    return [{"code": "not_runnable_here", "message": f"not runnable on this machine: {p}",
             "setting": p.split(":", 1)[0], "suggested": None, "details": {}}
            for p in problems] + ([] if problems else [
        {"code": "qlora_on_cpu", "message": note, "setting": "method.type", "suggested": None, "details": {}}
        for note in runnable_notes(cfg, env)])
