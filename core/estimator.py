"""Training-memory estimate from model facts alone (config, no weights).

``estimate_memory(facts, cfg)`` answers "will this run fit, and if not, what is the cheapest
change that makes it fit?" It models what PyTorch, transformers, PEFT, bitsandbytes and TRL
really allocate on one GPU at the worst moment of a training step:

* weights in the load dtype — NF4 linears at 4 bits plus their quantization constants (double
  quantization or not), embeddings, lm_head and norms kept in 16-bit;
* trainable parameters — everything (full), or LoRA/DoRA matrices on the exact target modules,
  in the dtype they really take (PEFT upcasts adapters of a 16-bit model to fp32; TRL casts
  QLoRA adapters to bf16);
* gradients, alive across gradient accumulation;
* optimizer states by optimizer (AdamW 2 states in the parameter dtype, 8-bit / paged bitsandbytes,
  Adafactor's factored moments, SGD none) and the optimizer step's own temporaries;
* activations (``estimator_activations``), the LM head / loss buffers and backward working sets;
* the CUDA context and the caching allocator's slack.

Pure arithmetic: one estimate with its suggestions takes well under 5 ms, so the TUI can call it
on every keystroke. All sizes are GiB (2**30 bytes).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .estimator_memory import (
    ALLOCATOR_SLACK,
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_GIB,
    EIGHT_BIT_OPTIMIZER,
    GIB,
    REQUIRED_HEADROOM,
    ModelView,
    Plan,
    compute,
    fits_in,
    lora_targets,
    make_plan,
    model_view,
    total_gib,
)
from .findings import Finding

if TYPE_CHECKING:
    from .config import RunConfig
    from .hardware import HardwareReport
    from .models import ModelFacts

__all__ = [
    "Estimate", "Suggestion", "estimate_for", "estimate_memory", "fit_badge", "lora_targets",
    "ALLOCATOR_SLACK", "CUBLAS_WORKSPACE_BYTES", "CUDA_CONTEXT_GIB", "REQUIRED_HEADROOM",
]


class Suggestion(Finding):
    """One change that lowers (or, for the micro-batch, uses) memory, with its cost rank: a
    ``Finding`` (severity info) whose ``message`` is the text and ``suggestion`` the changes
    (dotted RunConfig path -> new value, apply_overrides-ready); ``total_gib``, ``fits`` and
    ``cost`` (0 free ... 6 changes what is trained) are its details. Written as
    ``{text, changes, total_gib, fits, cost}`` (docs, unchanged)."""

    def __init__(self, text: str, changes: dict[str, Any], total_gib: float, fits: bool | None, cost: int):
        super().__init__("memory_suggestion", text, "info", setting=next(iter(changes), None), suggestion=changes,
                         details={"total_gib": total_gib, "fits": fits, "cost": cost})

    text = property(lambda self: self.message)
    changes = property(lambda self: self.suggestion)
    total_gib = property(lambda self: self.details["total_gib"])
    fits = property(lambda self: self.details["fits"])
    cost = property(lambda self: self.details["cost"])

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "changes": copy.deepcopy(self.changes), "total_gib": self.total_gib, "fits": self.fits,
                "cost": self.cost}


@dataclass
class Estimate:
    total_gib: float
    components: dict[str, float]  # name -> GiB at the peak; they sum to total_gib
    trainable_params: int
    total_params: int
    gpu_memory_gib: float | None
    fits: bool | None
    headroom_gib: float | None
    suggestions: list[Suggestion] = field(default_factory=list)
    allocated_gib: float = 0.0  # what torch.cuda.max_memory_allocated() should read
    reserved_gib: float = 0.0  # what torch.cuda.max_memory_reserved() should read
    peak_phase: str = "backward"  # backward | optimizer_step
    sizes: dict[str, float] = field(default_factory=dict)  # full sizes (not only what is alive at the peak)
    settings: dict[str, Any] = field(default_factory=dict)  # the resolved knobs the estimate assumed
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["suggestions"] = [s.to_dict() for s in self.suggestions]
        return d


# --------------------------------------------------------------------------- suggestions

def _with(p: Plan, **knobs: Any) -> Plan:
    return replace(p, knobs=replace(p.knobs, **knobs))


def _largest(lo: int, hi: int, ok) -> int | None:
    """Largest n in [lo, hi] with ok(n), for ok monotone decreasing in n; None if none."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _suggestions(m: ModelView, p: Plan, gpu_gib: float | None, total: float) -> list[Suggestion]:
    if gpu_gib is None:
        return []
    fits_now = fits_in(total, gpu_gib)
    k = p.knobs
    out: list[Suggestion] = []

    def add(text: str, changes: dict[str, Any], plan: Plan, cost: int) -> None:
        t = total_gib(m, plan)
        worth_it = total - t >= max(0.25, 0.01 * total)  # a change that saves next to nothing is noise
        if worth_it or changes.get("training.per_device_train_batch_size", 0) > k.batch:
            out.append(Suggestion(text, changes, round(t, 2), fits_in(t, gpu_gib), cost))

    effective = k.batch * p.grad_accum
    ok_batch = lambda b: fits_in(total_gib(m, _with(p, batch=b)), gpu_gib)  # noqa: E731
    if fits_now:
        best = _largest(k.batch, min(64, max(effective, k.batch)), ok_batch)
        # keep the effective batch: the largest divisor of it that fits
        best = max((d for d in range(k.batch + 1, (best or 0) + 1) if effective % d == 0), default=None)
        if best:
            ga = effective // best
            add(f"Room for micro-batch {best} (gradient accumulation {ga}): faster at the same effective batch",
                {"training.per_device_train_batch_size": best, "training.gradient_accumulation_steps": ga},
                _with(p, batch=best), 0)
        return out
    if k.attn == "eager":
        add("Use SDPA attention instead of eager: same result without the s² score matrices",
            {"model.attn_implementation": "sdpa"}, _with(p, attn="sdpa"), 0)
    if k.batch > 1:
        best = _largest(1, k.batch - 1, ok_batch) or 1
        ga = math.ceil(effective / best)
        add(f"Lower the micro-batch to {best} with gradient accumulation {ga} (same effective batch {effective})",
            {"training.per_device_train_batch_size": best, "training.gradient_accumulation_steps": ga},
            replace(_with(p, batch=best), grad_accum=ga), 1)
    if k.method != "full" and k.lora_dropout > 0:
        add("Set LoRA dropout to 0: each adapted layer stops keeping its own dropped copy of the input",
            {"method.lora_dropout": 0.0}, _with(p, lora_dropout=0.0), 1)
    if "8bit" not in p.optim and p.optim not in ("sgd", "lomo", "adalomo"):
        add("Use the 8-bit AdamW optimizer (bitsandbytes): optimizer states at ~1 byte per value",
            {"training.optim": EIGHT_BIT_OPTIMIZER}, replace(p, optim=EIGHT_BIT_OPTIMIZER), 2)
    if not k.checkpointing:
        add("Turn on gradient checkpointing: keeps one tensor per layer, recomputes the rest (~30% slower)",
            {"training.gradient_checkpointing": True}, _with(p, checkpointing=True), 3)
    names = frozenset(n for n, _, _ in m.linears)
    if k.method == "full":
        lora = _with(p, method="lora", adapter_bytes=4, lora_targets=names, lm_head_trainable=False, dora=False,
                     lora_dropout=0.05, lora_r=16, weight_bytes=p.adapter_base_weight_bytes or k.weight_bytes)
        add("Train LoRA adapters (r=16, all linear layers) instead of every weight",
            {"method.type": "lora", "method.lora_r": 16, "method.lora_target_modules": "all-linear"}, lora, 4)
    if k.method != "qlora":
        targets = k.lora_targets or names
        qlora = replace(_with(p, method="qlora", adapter_bytes=2, act_bytes=2, lora_targets=targets,
                              weight_bytes=p.adapter_base_weight_bytes or k.weight_bytes,
                              lm_head_trainable=False, lora_dropout=k.lora_dropout if k.method != "full" else 0.05,
                              lora_r=k.lora_r if k.method != "full" else 16), double_quant=True)
        add("Use QLoRA: base weights in 4-bit NF4 with double quantization (needs bitsandbytes)",
            {"method.type": "qlora"} if k.method != "full" else
            {"method.type": "qlora", "method.lora_r": 16, "method.lora_target_modules": "all-linear"}, qlora, 5)
    if k.seq > 128:
        ok_len = lambda n: fits_in(total_gib(m, _with(p, seq=n * 128)), gpu_gib)  # noqa: E731
        best = _largest(1, (k.seq - 1) // 128, ok_len)
        if best:
            add(f"Shorten max_length to {best * 128} tokens (longer examples get truncated)",
                {"training.max_length": best * 128}, _with(p, seq=best * 128), 6)
    out.sort(key=lambda s: (s.cost, s.total_gib))
    if out and not any(s.fits and s.cost < 6 for s in out):
        out.append(_combined(m, p, gpu_gib, out))
    return out


def _combined(m: ModelView, p: Plan, gpu_gib: float, singles: list[Suggestion]) -> Suggestion:
    """Cheapest changes stacked in cost order until the run fits (or all are used)."""
    changes: dict[str, Any] = {}
    labels: list[str] = []
    plan = p
    for s in singles:
        if "training.max_length" in s.changes:
            continue
        changes.update(s.changes)
        labels.append(re.split(r" \(|: ", s.text, maxsplit=1)[0])
        plan = _apply_changes(plan, s.changes, m)
        if fits_in(total_gib(m, plan), gpu_gib):
            break
    t = total_gib(m, plan)
    text = "Together: " + "; ".join(label[0].lower() + label[1:] for label in labels)
    return Suggestion(text, changes, round(t, 2), fits_in(t, gpu_gib), max(s.cost for s in singles))


def _apply_changes(p: Plan, changes: dict[str, Any], m: ModelView) -> Plan:
    names = frozenset(n for n, _, _ in m.linears)
    for key, value in changes.items():
        if key == "model.attn_implementation":
            p = _with(p, attn=value)
        elif key == "training.per_device_train_batch_size":
            p = _with(p, batch=value)
        elif key == "training.gradient_accumulation_steps":
            p = replace(p, grad_accum=value)
        elif key == "training.optim":
            p = replace(p, optim=value)
        elif key == "training.gradient_checkpointing":
            p = _with(p, checkpointing=value)
        elif key == "method.lora_dropout":
            p = _with(p, lora_dropout=value)
        elif key == "method.type" and value == "lora":
            p = _with(p, method="lora", adapter_bytes=4, lora_targets=names, lm_head_trainable=False, lora_r=16,
                      weight_bytes=p.adapter_base_weight_bytes or p.knobs.weight_bytes)
        elif key == "method.type" and value == "qlora":
            p = replace(_with(p, method="qlora", adapter_bytes=2, act_bytes=2,
                              lora_targets=p.knobs.lora_targets or names, lm_head_trainable=False,
                              weight_bytes=p.adapter_base_weight_bytes or p.knobs.weight_bytes), double_quant=True)
    return p

# --------------------------------------------------------------------------- public API

def template_embedding_rows(facts: Any, cfg: Any, assumptions: list[str]) -> int:
    """The embedding rows the run will have: the config's vocabulary, grown by ChatML's markers when
    ``template.source`` is chatml and the tokenizer lacks them (the tokenizer is read, once)."""
    vocab = int(facts.vocab_size)
    if getattr(getattr(cfg, "template", None), "source", None) != "chatml":
        return vocab
    from .template_sources import grown_embedding_rows

    path = getattr(facts, "path", None)
    rows = grown_embedding_rows(path, vocab, getattr(cfg.model, "trust_remote_code", False)) if path else None
    if rows is None:
        assumptions.append("template.source chatml: no tokenizer here to tell whether its tokens grow the "
                           "embeddings; counted as they are")
        return vocab
    return rows


def estimate_memory(facts: ModelFacts, cfg: RunConfig, *, gpu_memory_gib: float | None = None,
                    hardware: HardwareReport | None = None, num_gpus: int = 1, sharding: str | None = None,
                    suggest: bool = True) -> Estimate:
    """Peak GPU memory of training ``cfg`` on the model described by ``facts``, for the processes
    and sharding given. The arithmetic only: ``estimate_for`` decides these inputs for a launch.

    ``gpu_memory_gib`` is the memory to fit in; without it, the free memory of the first GPU
    visible in ``hardware`` (``hardware.visible_gpus``; its MIG slice in MIG mode), whose bf16 and
    FlashAttention support also resolve ``auto`` settings. ``sharding`` (ddp, zero1, zero2, zero3,
    fsdp) with ``num_gpus`` gives the per-GPU share of what the strategy shards.
    """
    from .hardware import visible_gpus

    visible = visible_gpus(hardware)
    gpu = visible[0] if visible else None
    assumptions: list[str] = []
    rows = template_embedding_rows(facts, cfg, assumptions)
    m = model_view(facts, rows)
    if int(getattr(facts, "num_experts", 0) or 0):
        assumptions.append("mixture-of-experts: activations counted as one dense MLP per token")
    if sharding is None and num_gpus > 1:  # the preset's own strategy (config.distributed)
        sharding = getattr(getattr(cfg, "distributed", None), "strategy", None) or "ddp"
    libraries = hardware.libraries if hardware is not None else {}
    p = make_plan(m, cfg, gpu, libraries, num_gpus, sharding, assumptions, facts.max_position_embeddings)
    if rows > int(facts.vocab_size):
        p = replace(p, grown_embeddings=True)
        assumptions.append(
            f"template.source chatml adds tokens: embeddings grow from {int(facts.vocab_size):,} to {rows:,} rows"
            + ("" if p.knobs.method == "full" else "; embed_tokens and lm_head are trained in full (modules_to_save)"))
    r = compute(m, p)
    total = r["total"] / GIB
    if gpu_memory_gib is None and gpu is not None:
        gpu_memory_gib = gpu.usable_memory_mib / 1024
    headroom = None if gpu_memory_gib is None else round(gpu_memory_gib - total, 2)
    k = p.knobs
    return Estimate(
        total_gib=round(total, 2),
        components={name: round(v / GIB, 3) for name, v in r["alive"].items()},
        trainable_params=int(r["trainable"]),
        total_params=int(m.total_params),
        gpu_memory_gib=None if gpu_memory_gib is None else round(float(gpu_memory_gib), 2),
        fits=fits_in(total, gpu_memory_gib),
        headroom_gib=headroom,
        suggestions=_suggestions(m, p, gpu_memory_gib, total) if suggest else [],
        allocated_gib=round(r["allocated"] / GIB, 3),
        reserved_gib=round(r["reserved"] / GIB, 3),
        peak_phase=r["phase"],
        sizes={name: round(v / GIB, 3) for name, v in r["sizes"].items()},
        settings={
            "method": k.method, "dtype": p.dtype, "autocast": k.autocast, "attn_implementation": k.attn,
            "micro_batch": k.batch, "max_length": k.seq, "tokens_per_micro_batch": k.batch * k.seq,
            "gradient_accumulation_steps": p.grad_accum, "gradient_checkpointing": k.checkpointing,
            "padding_free": k.padding_free, "optim": p.optim, "lora_targets": sorted(k.lora_targets),
            "num_gpus": p.num_gpus, "sharding": p.sharding, "optimizer_paged": r["paged"] > 0,
        },
        assumptions=assumptions,
    )


def estimate_for(cfg: RunConfig, hardware: HardwareReport | None, facts: ModelFacts | None = None, *,
                 gpu_memory_gib: float | None = None, suggest: bool = True) -> Estimate:
    """The estimate of training ``cfg`` as it will be launched on ``hardware`` (None: no GPU known).
    The one place that assembles the estimator's inputs: `sft-wizard estimate`, the TUI's memory
    bar, the Model step's fit badges, the recommender and the out-of-memory advice all call it.

    - the model: ``facts``, else read from ``cfg.model``'s config (no weights);
    - where the launch lands (``placement.placement``): the GPU its first process uses, the
      first of ``CUDA_VISIBLE_DEVICES`` (whose usable memory is the budget unless
      ``gpu_memory_gib`` is given), and its processes (``distributed.num_processes``, else one per
      visible GPU) with what the strategy shards per GPU.
    """
    from .placement import placement

    if facts is None:
        from .models import model_facts

        facts = model_facts(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)
    where = placement(cfg, hardware)
    if gpu_memory_gib is None:
        gpu_memory_gib = where.gpu_memory_gib
    return estimate_memory(facts, cfg, gpu_memory_gib=gpu_memory_gib, hardware=hardware, num_gpus=where.num_gpus,
                           sharding=where.sharding, suggest=suggest)


FIT_BADGES = ("fits", "tight", "does not fit")


def fit_badge(estimate: Estimate) -> str | None:
    """fits (``estimate.fits``), tight (within the estimator's safety margin, so ``fits`` is false),
    does not fit (over the memory); None without a GPU to fit in."""
    if estimate.fits is None or estimate.headroom_gib is None:
        return None
    if estimate.fits:
        return "fits"
    return "tight" if estimate.headroom_gib >= 0 else "does not fit"
