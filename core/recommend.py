"""Fast by default: the settings the wizard recommends, each with a one-line reason.

``recommend(cfg, hardware=..., facts=..., audit=..., estimate_fn=...)`` returns a new RunConfig
and one ``Recommendation`` (setting, value, reason) per setting it decided. Inputs are plain
objects — a HardwareReport (``sftwizard.core.hardware.probe_hardware``), ModelFacts
(``sftwizard.core.models.model_facts``), the data audit dict (``sftwizard.core.audit.audit_dataset``)
and ``estimate_memory`` — so the rules run anywhere, GPU or not, in well under a second.

One rule above the others: no recommendation changes *what is trained*. Packing is best-fit
decreasing (whole conversations, truncated exactly as without packing) with padding-free
attention that never looks across documents; micro-batch and accumulation keep the tokens per
optimizer step; precision, attention kernel, checkpointing, Liger and worker counts change how
fast the same loss is computed, not which tokens carry it. Choices that would change the
training (LoRA instead of full, a shorter max_length) are left to the user and only named when
memory forces the question.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .config import RunConfig
from .doctor import padding_free_rows_limit
from .findings import Finding
from .hardware import GpuInfo, HardwareReport, auto_attention, install_command
from .placement import placement

if TYPE_CHECKING:
    from .estimator import Estimate
    from .models import ModelFacts

# Leave this share of the GPU's usable memory free on top of the estimator's own margin.
HEADROOM = 0.10
# Below this many rows, extra dataset processes cost more to start than they save.
MIN_ROWS_PER_PROC = 10_000
MAX_DATASET_PROCS = 16
EIGHT_BIT_OPTIM = "adamw_8bit"
ROW_MULTIPLE = 64  # packed rows shortened to the longest example are rounded up to this
FUSED_ADAMW = "adamw_torch_fused"


class Recommendation(Finding):
    """A recommended value for one setting: a ``Finding`` (severity info) whose ``setting`` is the
    dotted RunConfig path (e.g. ``training.packing``), ``suggestion`` the value and ``message`` the
    one-line reason shown next to the field in the wizard. ``changed``: it differs from the config
    recommend() was given. Written as ``{setting, value, reason, changed}`` (docs, unchanged)."""

    def __init__(self, setting: str, value: Any, reason: str, changed: bool = False):
        super().__init__("recommended_value", reason, "info", setting=setting, suggestion=value)
        self.changed = changed

    @property
    def value(self) -> Any:
        return self.suggestion

    @property
    def reason(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "value": self.value, "reason": self.reason, "changed": self.changed}


@dataclass
class Recommendations:
    config: RunConfig
    items: list[Recommendation] = field(default_factory=list)
    estimate: Estimate | None = None  # the memory estimate of the recommended config, when one was made
    notes: list[str] = field(default_factory=list)  # what the user may want to decide themselves

    def changes(self) -> dict[str, Any]:
        """Dotted path -> value for every setting that differs from the input config."""
        return {r.setting: r.value for r in self.items if r.changed}

    def reason(self, setting: str) -> str | None:
        return next((r.reason for r in self.items if r.setting == setting), None)

    def to_dict(self) -> dict[str, Any]:
        return {"items": [r.to_dict() for r in self.items], "notes": list(self.notes),
                "estimate_total_gib": getattr(self.estimate, "total_gib", None)}


def _get(cfg: RunConfig, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _set(cfg: RunConfig, dotted: str, value: Any) -> RunConfig:
    section, name = dotted.split(".")
    return cfg.replace(**{section: dataclasses.replace(getattr(cfg, section), **{name: value})})


class _Draft:
    """The config being built, and the reasons, in the order decided."""

    def __init__(self, cfg: RunConfig):
        self.original = cfg
        self.cfg = cfg
        self.items: dict[str, Recommendation] = {}
        self.notes: list[str] = []

    def set(self, setting: str, value: Any, reason: str) -> None:
        self.cfg = _set(self.cfg, setting, value)
        self.items[setting] = Recommendation(setting, value, reason, _get(self.original, setting) != value)


def _gpu(cfg: RunConfig, hardware: HardwareReport) -> GpuInfo | None:
    """The GPU the run's first process lands on (``placement``: CUDA_VISIBLE_DEVICES), None on a CPU."""
    if hardware.torch_cuda is False:
        return None
    return placement(cfg, hardware).gpu


def estimate_on(hardware: HardwareReport | None) -> Callable[..., Estimate]:
    """The ``estimate_fn`` for a launch on ``hardware``: ``estimator.estimate_for``, the estimate
    `sft-wizard estimate` and the memory bar give (the launch's GPU, processes and sharding)."""
    from .estimator import estimate_for

    def estimate(facts: ModelFacts, cfg: RunConfig, *, gpu_memory_gib: float | None = None) -> Estimate:
        return estimate_for(cfg, hardware, facts, gpu_memory_gib=gpu_memory_gib)

    return estimate


def _has(hardware: Any, library: str) -> bool:
    return bool((getattr(hardware, "libraries", None) or {}).get(library))


def cpu_bf16_instructions(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's bf16 matmul instructions (``amx_bf16`` or ``avx512_bf16``), None without them.

    Without either, PyTorch emulates bf16 matmuls on CPU and autocast is slower than fp32. With
    AVX512-BF16 (this project's 2-core AMD EPYC dev box), a forward + backward of the builtin model
    over 2 x 256 tokens took 0.45 s with bf16 autocast against 0.53 s in fp32 (one thread, best of 8).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            flags = set(fh.read().split())
    except OSError:
        return None
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)


def recommend(cfg: RunConfig, *, hardware: HardwareReport, facts: ModelFacts, audit: dict | None = None,
              estimate_fn: Callable[..., Any] | None = None) -> Recommendations:
    """Recommended settings for training ``cfg`` on ``hardware``; see the module docstring.

    ``estimate_fn(facts, cfg, gpu_memory_gib=...)`` returns an object with ``total_gib``:
    ``estimate_on(hardware)`` (the estimate of the launch, as `sft-wizard estimate` gives it) or the
    bare ``estimator.estimate_memory``; without it, memory-driven choices keep the config's values.
    """
    d = _Draft(cfg)
    gpu = _gpu(cfg, hardware)
    _precision(d, gpu)
    attn = _attention(d, gpu, hardware)
    packing = _packing(d, attn, audit)
    estimate = _batch_and_memory(d, gpu, hardware, facts, audit, estimate_fn, attn, packing)
    _liger(d, gpu, hardware, facts)
    _dataset_procs(d, hardware, audit)
    return Recommendations(d.cfg, list(d.items.values()), estimate, d.notes)


# --------------------------------------------------------------------------- the rules

def _precision(d: _Draft, gpu: Any) -> None:
    if gpu is not None and getattr(gpu, "bf16", False):
        why = f"{gpu.name} has bf16 tensor cores: half the memory of fp32 at the tensor-core rate, with fp32's range"
        if d.cfg.method.type == "full":
            # config.resolved_precision: what `auto` means for full fine-tuning on this GPU
            d.set("model.dtype", "fp32", "full fine-tuning keeps fp32 weights (the optimizer's master copy): in "
                  "pure bf16, updates smaller than 1/256 of a weight round away")
            d.set("training.bf16", True, f"{gpu.name} has bf16 tensor cores: matmuls in bf16 autocast over the fp32 "
                  "weights")
        else:
            d.set("model.dtype", "bf16", why + " (the base is frozen: no updates to round away)")
            d.set("training.bf16", True, why)
        d.set("training.fp16", False, "bf16 is on (fp16 needs loss scaling and has less range)")
        if d.cfg.method.type == "qlora":
            d.set("method.bnb_4bit_compute_dtype", "bf16", "4-bit layers compute in bf16 on this GPU")
    elif gpu is not None:
        why = f"{gpu.name} has no bf16 (pre-Ampere): fp32 weights with fp16 mixed precision and loss scaling"
        d.set("model.dtype", "fp32", why)
        d.set("training.bf16", False, why)
        d.set("training.fp16", True, why)
        if d.cfg.method.type == "qlora":
            d.set("method.bnb_4bit_compute_dtype", "fp16", "4-bit layers compute in fp16: this GPU has no bf16")
    else:
        isa = cpu_bf16_instructions()
        if isa:
            why = f"CPU with {isa}: bf16 autocast over fp32 weights runs its matmuls in bf16 hardware"
            d.set("model.dtype", "fp32", why)
            d.set("training.bf16", True, why)
        else:
            why = "CPU without bf16 instructions (AVX512-BF16/AMX): bf16 would be emulated, so fp32"
            d.set("model.dtype", "fp32", why)
            d.set("training.bf16", False, why)
        d.set("training.fp16", False, "fp16 training needs a CUDA GPU")


def _attention(d: _Draft, gpu: Any, hardware: Any) -> str:
    """What ``auto`` would pick (``hardware.auto_attention``), written down with its reason."""
    from .config import resolved_precision

    bf16_gpu = bool(gpu is not None and getattr(gpu, "bf16", False))
    compute = resolved_precision(d.cfg, bf16_gpu, gpu is not None).compute
    if gpu is None:
        attn, why = "sdpa", "no CUDA GPU: PyTorch's scaled_dot_product_attention is the fastest kernel here"
    else:
        attn, why = auto_attention(bool(getattr(gpu, "flash_attention_2", False)), _has(hardware, "flash_attn"),
                                   compute)
        why = why.replace("the GPU", gpu.name)
    d.set("model.attn_implementation", attn, why)
    return attn


def _packing(d: _Draft, attn: str, audit: dict | None) -> bool:
    t = d.cfg.training
    if d.cfg.model.trust_remote_code:
        d.set("training.packing", t.packing, "the model runs custom code that may not honour packed position ids: "
              "packing left as configured")
        return t.packing
    if t.max_length is None:
        longest = ((audit or {}).get("token_length") or {}).get("max")
        if not longest:
            d.set("training.packing", False, "packing needs a row length: set training.max_length or audit the data")
            return False
        d.set("training.max_length", int(longest),
              f"the longest example ({int(longest)} tokens): packed rows need a length, and nothing is truncated")
    if t.packing and t.packing_strategy != "bfd":
        d.set("training.packing", True, f"packing already on with {t.packing_strategy!r}: kept, it is your choice of "
              "what to train on")
        return True
    if attn == "flash_attention_2":
        why = ("whole conversations packed best-fit into max_length rows; FlashAttention's varlen kernel keeps them "
               "apart, so no padding is computed and nothing crosses a document")
    else:
        why = ("whole conversations packed best-fit into max_length rows, one row per forward: SDPA gets a "
               "block-diagonal mask (no cross-document attention) and no padding is computed")
        _shorter_rows(d, audit)
    d.set("training.packing", True, why)
    d.set("training.packing_strategy", "bfd", "best-fit decreasing keeps every conversation whole and truncates "
          "exactly as unpacked training does")
    d.set("training.padding_free", True, "padding-free batches: what bfd packing implies in TRL")
    return True


def _shorter_rows(d: _Draft, audit: dict | None) -> None:
    """SDPA computes a packed row's attention densely (masked): its cost grows with the row length
    squared. When the longest example is well below max_length, rows just long enough for it cut
    nothing that max_length would not, and cost less."""
    longest = ((audit or {}).get("token_length") or {}).get("max")
    limit = d.cfg.training.max_length
    if not longest or not limit or longest >= limit or d.cfg.data.eval_source is not None:
        return  # (a separate eval set was not audited: its rows might be longer)
    row = min(limit, -(-int(longest) // ROW_MULTIPLE) * ROW_MULTIPLE)
    if row < limit:
        d.set("training.max_length", row, f"packed rows of {row} tokens: the longest example has {int(longest)}, so "
              f"nothing is cut, and SDPA's masked attention costs the row length squared")


def _rows_per_step(d: _Draft, audit: dict | None, packing: bool) -> tuple[int, str]:
    """Micro-batch rows per optimizer step (per device) that keep the input config's tokens per step."""
    t0 = d.original.training
    examples = t0.per_device_train_batch_size * t0.gradient_accumulation_steps
    if not packing or t0.packing:
        return examples, f"{examples} rows per step per device, as configured"
    audit = audit or {}
    padding = audit.get("padding") or {}
    packed, rows = padding.get("packed_sequences"), audit.get("rows_encoded") or audit.get("rows")
    tokens, row_len = audit.get("tokens"), d.cfg.training.max_length
    if tokens and rows and row_len:
        fill = 1 - (padding.get("waste_with_packing") or 0.0)
        target = max(1, round(examples * tokens / rows / (row_len * fill)))
        return target, (f"{examples} examples per step per device ≈ {target} packed rows of {row_len} tokens "
                        f"({tokens / rows:.0f} tokens per example)")
    if packed and rows:
        target = max(1, round(examples * packed / rows))
        return target, (f"{examples} examples per step per device ≈ {target} packed rows "
                        f"({rows} examples pack into {packed} rows)")
    d.notes.append("no data audit: a packed row holds several examples, so each step now sees more examples than "
                   "configured; lower gradient_accumulation_steps to compensate")
    return examples, f"{examples} packed rows per step per device (no data audit to convert examples to rows)"


def _fits(estimate: Any, usable_gib: float) -> bool:
    total = getattr(estimate, "total_gib", None)
    if total is None:
        return bool(getattr(estimate, "fits", False))
    return total <= usable_gib * (1 - HEADROOM)


def _split(target: int, largest: int) -> tuple[int, int]:
    """(micro, accumulation) with micro <= largest and micro * accumulation >= target, least overshoot."""
    accum = math.ceil(target / max(1, largest))
    return math.ceil(target / accum), accum


def _batch_and_memory(d: _Draft, gpu: Any, hardware: Any, facts: Any, audit: dict | None,
                      estimate_fn: Callable[..., Any] | None, attn: str, packing: bool) -> Any:
    target, target_why = _rows_per_step(d, audit, packing)
    one_row_per_forward = packing and padding_free_rows_limit(attn) == 1  # the doctor's rule
    usable = gpu.usable_memory_mib / 1024 if gpu is not None else None
    optim = d.cfg.training.optim
    if optim == "adamw_torch":
        optim = FUSED_ADAMW
        d.set("training.optim", optim, "fused AdamW: the same update in one kernel per step (TRL's default too)")

    def trial(micro: int, checkpointing: bool, opt: str) -> RunConfig:
        c = _set(d.cfg, "training.per_device_train_batch_size", micro)
        c = _set(c, "training.gradient_accumulation_steps", _split(target, micro)[1])  # gradients kept alive
        c = _set(c, "training.gradient_checkpointing", checkpointing)
        return _set(c, "training.optim", opt)

    if estimate_fn is None or usable is None:
        largest = 1 if one_row_per_forward else min(target, d.original.training.per_device_train_batch_size)
        micro, accum = _split(target, largest)
        gc_why = ("no GPU memory to fit: recomputing activations would only cost time" if usable is None
                  else "no memory estimate available: left off (turn it on after an out-of-memory)")
        d.set("training.gradient_checkpointing", False, gc_why)
        _set_batch(d, micro, accum, target_why, one_row_per_forward, None)
        return None

    def largest_fitting(checkpointing: bool, opt: str) -> tuple[int | None, Any]:
        ceiling = 1 if one_row_per_forward else target
        lo, hi, best, best_est = 1, ceiling, None, None
        while lo <= hi:
            mid = (lo + hi) // 2
            est = estimate_fn(facts, trial(mid, checkpointing, opt), gpu_memory_gib=usable)
            if _fits(est, usable):
                best, best_est, lo = mid, est, mid + 1
            else:
                hi = mid - 1
        return best, best_est

    gc = False
    largest, est = largest_fitting(False, optim)
    if largest is None:
        gc = True
        largest, est = largest_fitting(True, optim)
    if largest is None and gpu is not None and _has(hardware, "bitsandbytes") and optim != EIGHT_BIT_OPTIM:
        largest, est = largest_fitting(True, EIGHT_BIT_OPTIM)
        if largest is not None:
            optim = EIGHT_BIT_OPTIM
            d.set("training.optim", optim, "8-bit AdamW states (bitsandbytes): the run does not fit with 32-bit "
                  "states even with checkpointing at micro-batch 1")
    if largest is None:
        largest = 1
        est = estimate_fn(facts, trial(1, True, optim), gpu_memory_gib=usable)
        d.notes.append(f"does not fit in {usable:.1f} GiB even at micro-batch 1 with gradient checkpointing "
                       f"(estimate {getattr(est, 'total_gib', '?')} GiB): LoRA/QLoRA or a shorter max_length would, "
                       "but they change what is trained, so that choice is yours")
    if gc:
        d.set("training.gradient_checkpointing", True,
              f"needed: without it even micro-batch 1 exceeds {usable:.1f} GiB less {int(HEADROOM * 100)}% headroom")
    else:
        d.set("training.gradient_checkpointing", False,
              "not needed: the estimate fits without it, and recomputing activations costs about a third more compute")
    micro, accum = _split(target, largest)
    _set_batch(d, micro, accum, target_why, one_row_per_forward, usable)
    final = estimate_fn(facts, d.cfg, gpu_memory_gib=usable)
    return final if final is not None else est


def _set_batch(d: _Draft, micro: int, accum: int, target_why: str, one_row: bool, usable: float | None) -> None:
    if one_row:
        micro_why = "one packed row per forward: SDPA would attend over a flattened batch as one long sequence"
    elif usable is not None:
        micro_why = f"the largest micro-batch that fits {usable:.1f} GiB with {int(HEADROOM * 100)}% headroom"
    else:
        micro_why = "as configured (no GPU memory to size it against)"
    d.set("training.per_device_train_batch_size", micro, micro_why)
    d.set("training.gradient_accumulation_steps", accum, f"reaches the target batch: {target_why}")
    if d.cfg.training.packing and d.cfg.training.per_device_eval_batch_size > micro:
        d.set("training.per_device_eval_batch_size", micro,
              "eval batches are packed rows too: as many per forward as training takes")


def _liger(d: _Draft, gpu: Any, hardware: Any, facts: Any) -> None:
    if gpu is None:
        d.set("training.use_liger_kernel", False, "Liger's Triton kernels need a CUDA GPU")
        return
    if not _has(hardware, "liger_kernel"):
        d.set("training.use_liger_kernel", False, f"liger-kernel is not installed ({install_command('liger_kernel')})")
        return
    model_type = getattr(facts, "model_type", "")
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # noqa: BLE001 - a broken install is the same as none
        d.set("training.use_liger_kernel", False, "liger-kernel is installed but cannot be imported")
        return
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        d.set("training.use_liger_kernel", False, f"Liger has no kernels for model type {model_type!r}")
        return
    d.set("training.use_liger_kernel", True,
          f"Liger's fused RMSNorm/RoPE/SwiGLU kernels for {model_type}: the same math, less memory traffic")


def _dataset_procs(d: _Draft, hardware: Any, audit: dict | None) -> None:
    cores = int(getattr(hardware, "cpu_count", 0) or 1)
    rows = (audit or {}).get("rows")
    if rows is None:
        rows = 0
    procs = min(cores - 1, MAX_DATASET_PROCS, rows // MIN_ROWS_PER_PROC)
    if procs >= 2:
        d.set("training.dataset_num_proc", procs, f"{procs} processes for dataset preparation ({cores} cores, "
              f"{rows:,} rows)")
    else:
        why = (f"one process: {cores} cores" if cores <= 2 else
               f"one process: {rows:,} rows prepare faster than {MIN_ROWS_PER_PROC:,}-row workers start")
        d.set("training.dataset_num_proc", None, why)
