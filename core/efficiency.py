"""How close a run is to the hardware's limit: FLOPs per token, peak FLOPs, MFU, padding.

Pure arithmetic plus one small meter (``BatchCounter``) that counts what each training
micro-batch really holds. Cheap to import: torch is only touched by ``BatchCounter``.

Model FLOPs per token (training, forward + backward) follow the PaLM paper's MFU definition
(Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with Pathways", appendix B):
``6 N + 12 L H Q T`` with N the parameters taking part in matrix multiplies, L layers, H heads,
Q head dim and T the attention context. Here:

* N counts every matmul weight: all parameters but the input embedding (a lookup, no FLOPs),
  plus the LM head (counted once more when it shares the embedding's weight). Norms and biases
  are in N too; they are a rounding error.
* ``6 N`` is 2 N forward, 2 N for the activation gradients and 2 N for the weight gradients.
  Frozen weights (LoRA / QLoRA base) get no weight gradient, so training costs
  ``4 N + 2 N_trainable`` — the same split of the backward pass (Kaplan et al. 2020, section 2.1).
* The attention term is PaLM's: QKᵀ and AV, 2 FLOPs per multiply-add, forward + backward = 3x,
  causal masking not halved (the usual convention, so MFU figures compare across codebases).
  T is the context each token attends over: the document length, not the packed row length,
  since padding-free / varlen attention never looks across documents. With packed batches we use
  the token-weighted mean document length ``sum(len^2) / sum(len)``.
* Recomputation from gradient checkpointing is not model FLOPs (that would be HFU), and padding
  positions are not counted: MFU measures useful work, so padding lowers it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

# --------------------------------------------------------------------------- peak FLOPs

# Dense (no 2:4 sparsity) peak TFLOPS per dtype. "bf16"/"fp16" are tensor-core peaks with FP32
# accumulation (what training uses); "fp32" is the non-tensor FP32 rate, since PyTorch does
# not use TF32 for matmuls unless told to (torch.backends.cuda.matmul.allow_tf32 is False by
# default); "tf32" is the tensor-core TF32 rate for runs that enable it. NVIDIA datasheets
# print the sparse figure for tensor cores: the dense one is half of it.
# Patterns are matched, in order, against the NVML / torch device name (case-insensitive).
PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    # Blackwell. HGX B200 (1000 W) datasheet: FP16/BF16 4.5 PF sparse -> 2.25 PF dense,
    # TF32 2.2 PF sparse, FP32 80 TF. GB200 (1200 W per GPU): 5 PF sparse BF16, FP32 90 TF.
    (r"\bGB200\b", {"bf16": 2500.0, "fp16": 2500.0, "tf32": 1250.0, "fp32": 90.0, "fp8": 5000.0}),
    (r"\bB200\b", {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 80.0, "fp8": 4500.0}),
    # Hopper. H100 datasheet (nvidia.com/en-us/data-center/h100): SXM BF16 1,979 TF sparse,
    # TF32 989 sparse, FP32 67 TF; PCIe 1,513 / 756 / 51; NVL 1,671 / 835 / 60.
    # H200 datasheet: H200 SXM as H100 SXM; H200 NVL as H100 NVL. GH200 carries an H100/H200 SXM-class GPU.
    (r"H100.*NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0, "fp8": 1670.5}),
    (r"H100.*PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2, "fp8": 1513.0}),
    (r"H200.*NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0, "fp8": 1670.5}),
    (r"\bGH200\b|\bH100\b|\bH200\b|\bH800\b", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9, "fp8": 1978.9}),
    # Ada. L40S datasheet: BF16 tensor 362.05 TF dense (733 sparse), FP32 91.6;
    # L40: BF16 362 sparse, FP32 90.5; L4: BF16 242 sparse, FP32 30.3, TF32 120 sparse.
    # RTX 4090 (Ada whitepaper, appendix): FP16 tensor with FP32 accumulate 165.2 dense, FP32 82.6.
    # RTX 6000 Ada datasheet: FP32 91.1 TF, tensor 1,457 TF (FP8, sparse) -> FP8 728.5 / BF16 364.2 dense.
    (r"\bL40S\b", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6, "fp8": 733.0}),
    (r"\bL40\b", {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5, "fp8": 362.0}),
    (r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3, "fp8": 242.5}),
    (r"RTX 6000 Ada", {"bf16": 364.2, "fp16": 364.2, "tf32": 182.1, "fp32": 91.1, "fp8": 728.5}),
    (r"RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6, "fp8": 330.3}),
    # Ampere. A100 datasheet: BF16/FP16 312 TF dense, TF32 156, FP32 19.5 (SXM and PCIe, 40/80 GB;
    # A800 is the export variant, same compute). A10 datasheet: BF16 125 dense (250 sparse), TF32 62.5,
    # FP32 31.2. A40: BF16 149.7 dense, FP32 37.4. RTX A6000: BF16 154.8 dense, FP32 38.7.
    # RTX 3090 (GA102 whitepaper, appendix A): FP16 tensor with FP32 accumulate 71 dense, FP32 35.6.
    (r"\bA100\b|\bA800\b", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    # (AWS's A10G has no NVIDIA datasheet: not listed, so its MFU is not reported; "\bA10\b" does not match it.)
    (r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bA40\b", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    (r"RTX A6000", {"bf16": 154.8, "fp16": 154.8, "tf32": 77.4, "fp32": 38.7}),
    (r"RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    # Turing / Volta: no bf16 tensor cores. T4 datasheet: FP16 tensor 65 TF (mixed), FP32 8.1.
    # V100 datasheet: SXM2 125 TF tensor, 15.7 FP32; PCIe 112 / 14.
    (r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}),
    (r"V100.*PCIe", {"fp16": 112.0, "fp32": 14.0}),
    (r"\bV100\b", {"fp16": 125.0, "fp32": 15.7}),
]

DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def peak_tflops(gpu_name: str | None, dtype: str) -> float | None:
    """Dense peak TFLOPS of ``gpu_name`` for ``dtype`` (bf16, fp16, fp32, tf32, fp8); None if unknown."""
    if not gpu_name:
        return None
    dtype = DTYPE_ALIASES.get(str(dtype).replace("torch.", ""), str(dtype))
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return peaks.get(dtype)
    return None


# --------------------------------------------------------------------------- model FLOPs

def logical_numel(param: Any) -> int:
    """How many weights a parameter holds. A bitsandbytes 4-bit weight is stored packed (two
    values per byte, in a tensor of ``bnb_4bit_quant_storage``), so ``numel()`` undercounts it
    2-8x; its quant state keeps the original shape."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    if shape is not None:
        count = 1
        for dim in shape:
            count *= int(dim)
        return count
    return int(param.numel())


@dataclass(frozen=True)
class FlopsModel:
    """The numbers FLOPs per token needs, from ModelFacts or from a live model."""

    matmul_params: int  # N: weights that take part in matmuls (embedding lookup out, LM head in)
    trainable_matmul_params: int  # the part of N that gets a weight gradient
    num_layers: int
    num_heads: int
    head_dim: int
    moe: bool = False  # 6N overstates a mixture-of-experts model (only top-k experts run per token)

    @classmethod
    def from_facts(cls, facts: Any, trainable_params: int | None = None) -> "FlopsModel":
        """From ``sftwizard.core.models.ModelFacts``; ``trainable_params`` None means a full fine-tune."""
        tied_head = facts.vocab_size * facts.hidden_size if facts.tie_word_embeddings else 0
        n = int(facts.total_params - facts.embedding_params + tied_head)
        return cls(
            matmul_params=n,
            trainable_matmul_params=n if trainable_params is None else int(trainable_params),
            num_layers=int(facts.num_layers), num_heads=int(facts.num_heads), head_dim=int(facts.head_dim),
            moe=bool(getattr(facts, "num_experts", 0)),
        )

    @classmethod
    def from_model(cls, model: Any) -> "FlopsModel":
        """From a live (possibly PEFT-wrapped) transformers model: parameters counted exactly."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        emb = base.get_input_embeddings()
        emb_ids = {id(p) for p in emb.parameters()} if emb is not None else set()
        out = base.get_output_embeddings()
        tied = out is not None and emb is not None and out.weight is emb.weight
        n = trainable = 0
        for p in model.parameters():
            if id(p) in emb_ids:
                continue
            count = logical_numel(p)
            n += count
            trainable += count if p.requires_grad else 0
        if tied:  # the LM head multiplies by the embedding matrix
            n += out.weight.numel()
            trainable += out.weight.numel() if out.weight.requires_grad else 0
        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        hidden = int(getattr(config, "hidden_size", 0) or 0)
        head_dim = int(getattr(config, "head_dim", None) or (hidden // heads if heads else 0))
        experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0
        return cls(n, trainable, int(getattr(config, "num_hidden_layers", 0) or 0), heads, head_dim, bool(experts))


def flops_per_token(model: Any, context: float, *, trainable_params: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) at attention context ``context`` tokens.

    ``model`` is a FlopsModel or a ModelFacts. See the module docstring for the formula.
    """
    m = model if isinstance(model, FlopsModel) else FlopsModel.from_facts(model, trainable_params)
    dense = 4 * m.matmul_params + 2 * m.trainable_matmul_params
    attention = 12 * m.num_layers * m.num_heads * m.head_dim * float(context)
    return float(dense + attention)


def mfu(tokens_per_s: float | None, facts: Any, gpu_name: str | None, dtype: str, *,
        context: float = 2048, num_gpus: int = 1, trainable_params: int | None = None) -> float | None:
    """Model FLOPs utilisation in [0, 1]: achieved model FLOPs / (peak FLOPs x GPUs).

    ``tokens_per_s`` counts real (non-padding) tokens over all GPUs; ``facts`` is a ModelFacts or a
    FlopsModel. None when the GPU's peak for ``dtype`` is unknown, on CPU, or for MoE models.
    """
    peak = peak_tflops(gpu_name, dtype)
    m = facts if isinstance(facts, FlopsModel) else FlopsModel.from_facts(facts, trainable_params)
    if not tokens_per_s or peak is None or m.moe or num_gpus < 1:
        return None
    return tokens_per_s * flops_per_token(m, context) / (peak * 1e12 * num_gpus)


# --------------------------------------------------------------------------- padding and rates

def padding_share(real_tokens: float, positions: float) -> float | None:
    """Share of the positions a forward pass computed that were padding."""
    if not positions:
        return None
    return max(0.0, 1.0 - real_tokens / positions)


def rate(count: float | None, seconds: float | None) -> float | None:
    """``count`` per second, None when either is missing or the interval is empty."""
    if count is None or not seconds or seconds <= 0:
        return None
    return count / seconds


def trained_tokens_per_s(tokens_per_s: float | None, trained_share: float | None) -> float | None:
    """Tokens carrying loss per second, from total tokens/s and the trained share of real tokens."""
    if tokens_per_s is None or trained_share is None:
        return None
    return tokens_per_s * trained_share


# --------------------------------------------------------------------------- live counting

@dataclass
class BatchCounts:
    """What the training micro-batches since the last reading held (this process only)."""

    positions: int = 0  # sequence positions computed, padding included
    tokens: int = 0  # real tokens
    trained: int = 0  # tokens whose label is predicted with loss (labels != -100 after the shift)
    context_sq: int = 0  # sum over documents of length^2 (attention context)
    micro_batches: int = 0

    @property
    def context(self) -> float | None:
        """Token-weighted mean document length: the attention context T of the FLOPs formula."""
        return self.context_sq / self.tokens if self.tokens else None


class BatchCounter:
    """Counts positions, real tokens, trained tokens and document lengths of every training forward.

    A forward pre-hook on the model reads the batch the trainer passes (``input_ids``, ``labels``
    and ``attention_mask`` or padding-free ``position_ids``). Counts stay on the device as tensors
    and are read (one sync) only by ``take()``, at logging time. Eval forwards are not counted.
    """

    def __init__(self):
        self._acc: dict[str, Any] = {}
        self._micro = 0
        self._handle = None

    def attach(self, model: Any) -> "BatchCounter":
        self.detach()
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _add(self, key: str, value: Any) -> None:
        self._acc[key] = value if key not in self._acc else self._acc[key] + value

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        counts = batch_counts(kwargs.get("input_ids"), kwargs.get("labels"), kwargs.get("attention_mask"),
                              kwargs.get("position_ids"))
        if counts is None:
            return
        for key, value in counts.items():
            self._add(key, value)
        self._micro += 1

    def take(self) -> BatchCounts:
        """The counts since the last call, and reset."""
        out = BatchCounts(micro_batches=self._micro,
                          **{k: int(v.item() if hasattr(v, "item") else v) for k, v in self._acc.items()})
        self._acc, self._micro = {}, 0
        return out


def batch_counts(input_ids, labels=None, attention_mask=None, position_ids=None) -> dict[str, Any] | None:
    """Counts of one collated batch (tensors in, 0-d tensors out; no host sync).

    Padding-free batches are one row holding several documents, told apart by ``position_ids``
    restarting at 0; padded batches have one document per row and an ``attention_mask``.
    """
    import torch

    if input_ids is None or input_ids.dim() != 2:
        return None
    positions = input_ids.numel()
    if attention_mask is not None:
        lengths = attention_mask.sum(dim=1)
        tokens = lengths.sum()
        context_sq = (lengths * lengths).sum()
    elif position_ids is not None:
        flat = position_ids.reshape(-1)
        starts = torch.nonzero(flat == 0).flatten()
        bounds = torch.cat([starts, torch.tensor([flat.numel()], device=flat.device)])
        lengths = bounds.diff()
        # (with pad_to_multiple_of set, trailing pads carry position 0 and count as 1-token documents)
        tokens = lengths.sum()
        context_sq = (lengths * lengths).sum()
    else:
        tokens = torch.tensor(positions)
        context_sq = torch.tensor(input_ids.shape[1] ** 2 * input_ids.shape[0])
    trained = (labels[:, 1:] != -100).sum() if labels is not None else tokens
    return {"positions": positions, "tokens": tokens, "trained": trained, "context_sq": context_sq}


# --------------------------------------------------------------------------- event fields

def efficiency_fields(logs: Mapping[str, Any] | None, *, counts: BatchCounts | None = None,
                      tokens_per_s: float | None = None, flops: FlopsModel | None = None,
                      gpu_name: str | None = None, dtype: str = "fp32", num_gpus: int = 1) -> dict[str, Any]:
    """The efficiency fields of one ``log`` event.

    ``logs`` is the trainer's log dict (for ``tokens_per_s`` when not given; TRL's ``num_tokens``
    counts real tokens over all processes), ``counts`` the BatchCounter reading for the same
    interval. Returns ``trained_tokens_per_s``, ``trained_share``, ``padding_share``,
    ``attention_context`` and, on a GPU with a known peak, ``mfu`` (0..1); fields that cannot be
    known are None.
    """
    logs = logs or {}
    tps = tokens_per_s if tokens_per_s is not None else logs.get("tokens_per_s")
    out: dict[str, Any] = {"trained_tokens_per_s": None, "trained_share": None, "padding_share": None,
                           "attention_context": None, "mfu": None}
    if counts is not None and counts.tokens:
        share = counts.trained / counts.tokens
        out["trained_share"] = round(share, 4)
        out["padding_share"] = round(padding_share(counts.tokens, counts.positions), 4)
        out["attention_context"] = round(counts.context, 1)
        if tps is not None:
            out["trained_tokens_per_s"] = round(trained_tokens_per_s(tps, share), 2)
    if flops is not None and tps:
        context = counts.context if counts is not None and counts.context else 0.0
        value = mfu(tps, flops, gpu_name, dtype, context=context, num_gpus=num_gpus)
        out["mfu"] = None if value is None or not math.isfinite(value) else round(value, 4)
    return out


class EfficiencyMeter:
    """What the runner's events callback holds: a BatchCounter plus the run's constants.

    ``EfficiencyMeter.start(args, model)`` at train begin, ``meter.fields(logs, tokens_per_s)`` at
    every log.
    """

    def __init__(self, flops: FlopsModel | None, gpu_name: str | None, dtype: str, num_gpus: int):
        self.counter = BatchCounter()
        self.flops, self.gpu_name, self.dtype, self.num_gpus = flops, gpu_name, dtype, num_gpus

    @classmethod
    def start(cls, args: Any, model: Any) -> "EfficiencyMeter":
        import torch

        gpu_name = torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else None
        dtype = compute_dtype(args, model)
        try:
            flops = FlopsModel.from_model(model)
        except Exception:  # an exotic model without the usual accessors: no MFU, the rest still works
            flops = None
        meter = cls(flops, gpu_name, dtype, max(1, int(getattr(args, "world_size", 1) or 1)))
        meter.counter.attach(model)
        return meter

    def fields(self, logs: Mapping[str, Any] | None, tokens_per_s: float | None) -> dict[str, Any]:
        return efficiency_fields(logs, counts=self.counter.take(), tokens_per_s=tokens_per_s, flops=self.flops,
                                 gpu_name=self.gpu_name, dtype=self.dtype, num_gpus=self.num_gpus)


def compute_dtype(args: Any, model: Any) -> str:
    """The dtype matmuls run in: autocast's when bf16/fp16 is on, else the weights' own."""
    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    try:
        dtype = str(next(p for p in model.parameters() if p.is_floating_point()).dtype)
    except StopIteration:
        return "fp32"
    name = DTYPE_ALIASES.get(dtype.replace("torch.", ""), "fp32")
    if name == "fp32":
        import torch

        if torch.backends.cuda.matmul.allow_tf32:
            return "tf32"
    return name


def start_meter(args: Any, model: Any) -> EfficiencyMeter | None:
    """An EfficiencyMeter attached to ``model``, or None if it cannot be (never raises: a meter
    must not stop a run)."""
    try:
        return EfficiencyMeter.start(args, model) if model is not None else None
    except Exception:  # noqa: BLE001
        return None


def meter_fields(meter: EfficiencyMeter | None, logs: Mapping[str, Any] | None,
                 tokens_per_s: float | None) -> dict[str, Any]:
    """``meter.fields(...)``, or {} without a meter or on any error (never raises)."""
    if meter is None:
        return {}
    try:
        return meter.fields(logs, tokens_per_s)
    except Exception:  # noqa: BLE001
        return {}
