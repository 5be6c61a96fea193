"""The arithmetic behind ``estimator.estimate_memory``: model view, resolved plan, bytes per component.

Constants carry their sources. Everything is plain arithmetic on numbers from ModelFacts and
RunConfig; see ``estimator`` for the public API and ``estimator_activations`` for activations.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .config import RunConfig, resolved_precision
from .estimator_activations import Knobs, Shape, activations
from .hardware import GpuInfo, auto_attention

GIB = 1024**3

# The CUDA context (driver state, kernels of torch/cuBLAS/cuDNN loaded lazily) lives outside
# PyTorch's caching allocator, so torch.cuda.max_memory_reserved() never shows it while
# nvidia-smi does (PyTorch "CUDA semantics" notes, memory management). With lazy module loading
# (CUDA_MODULE_LOADING=LAZY, PyTorch's default since 1.13 / CUDA 11.7) it is typically
# 0.4-0.6 GiB on recent drivers; 0.5 GiB until the GPU accuracy CSV calibrates it.
CUDA_CONTEXT_GIB = 0.5
# cuBLAS keeps a workspace per (handle, stream) inside the caching allocator: on Hopper PyTorch
# sizes it at 32 MiB (CUBLAS_WORKSPACE_CONFIG, torch.backends.cuda docs); count two.
CUBLAS_WORKSPACE_BYTES = 64 * 1024**2
# The caching allocator rounds blocks up (512-byte granules, 2 MiB segments for small blocks,
# 20 MiB for large) and fragments: reserved exceeds allocated at the peak by a few percent in
# steady training. 8% until the GPU accuracy CSV calibrates it.
ALLOCATOR_SLACK = 0.08
# A run "fits" when it leaves this share of the GPU free: the estimator's error band.
REQUIRED_HEADROOM = 0.05

# bitsandbytes NF4 (QLoRA paper, section 2 "Double Quantization"): one fp32 absmax per block of
# 64 weights; double quantization stores those constants in 8 bits with one fp32 constant per
# 256 of them.
NF4_BYTES = 0.5
NF4_BLOCK = 64
NF4_CONSTANT_BYTES = 4 / NF4_BLOCK  # 0.0625 byte per weight
NF4_DOUBLE_QUANT_BYTES = 1 / NF4_BLOCK + 4 / (NF4_BLOCK * 256)  # ~0.0159 byte per weight
# bitsandbytes 8-bit optimizers quantize each state blockwise (256 values per fp32 absmax).
BNB_8BIT_STATE = 1 + 4 / 256

# Optimizer name -> (states in parameter-dtype units, states in fixed bytes, step temporary in
# parameter-dtype units, kept outside the allocator (paged)). Names are TrainingArguments.optim.
_OPTIMIZERS: dict[str, tuple[float, float, float, bool]] = {
    # torch.optim.AdamW: exp_avg and exp_avg_sq like the parameter; the default foreach
    # implementation builds sqrt(exp_avg_sq) for a whole parameter group at once (PyTorch optim
    # docs: foreach "uses more peak memory" than the for-loop); fused does it in one kernel.
    "adamw_torch": (2, 0, 1, False),
    "adamw_torch_fused": (2, 0, 0, False),
    "adamw_torch_xla": (2, 0, 0, False),
    "adamw_torch_npu_fused": (2, 0, 0, False),
    "adamw_anyprecision": (0, 8, 0, False),  # fp32 moments by default
    "adamw_torch_4bit": (0, 2 * (0.5 + 4 / 128), 0, False),  # torchao 4-bit, block 128
    "adamw_torch_8bit": (0, 2 * BNB_8BIT_STATE, 0, False),
    "adamw_bnb_8bit": (0, 2 * BNB_8BIT_STATE, 0, False),
    "adamw_8bit": (0, 2 * BNB_8BIT_STATE, 0, False),
    "paged_adamw_8bit": (0, 2 * BNB_8BIT_STATE, 0, True),
    "paged_adamw_32bit": (0, 8, 0, True),
    "ademamix": (3, 0, 1, False),
    "ademamix_8bit": (0, 3 * BNB_8BIT_STATE, 0, False),
    "paged_ademamix_8bit": (0, 3 * BNB_8BIT_STATE, 0, True),
    "paged_ademamix_32bit": (0, 12, 0, True),
    "lion_8bit": (0, BNB_8BIT_STATE, 0, False),
    "paged_lion_8bit": (0, BNB_8BIT_STATE, 0, True),
    "lion_32bit": (0, 4, 0, False),
    "paged_lion_32bit": (0, 4, 0, True),
    "sgd": (0, 0, 0, False),  # TrainingArguments builds SGD without momentum: no state
    "adagrad": (1, 0, 1, False),
    "rmsprop": (1, 0, 1, False),
    "rmsprop_bnb": (0, 4, 0, False),
    "rmsprop_bnb_32bit": (0, 4, 0, False),
    "rmsprop_bnb_8bit": (0, BNB_8BIT_STATE, 0, False),
    "lomo": (0, 0, 0, False),
    "adalomo": (0, 0, 0, False),
    "grokadamw": (3, 0, 1, False),
    "schedule_free_adamw": (2, 0, 1, False),
    "schedule_free_radam": (2, 0, 1, False),
    "schedule_free_sgd": (1, 0, 0, False),
    "stable_adamw": (2, 0, 1, False),
}
EIGHT_BIT_OPTIMIZER = "adamw_8bit"

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ATTN_CHOICES = ("eager", "sdpa", "flash_attention_2")

# Leaf names of attention output projections across architectures.
_OUT_PROJ = {"o_proj", "out_proj", "dense", "wo", "c_proj"}


# --------------------------------------------------------------------------- model view

@dataclass(frozen=True)
class ModelView:
    shape: Shape
    total_params: int
    layer_linear_params: int  # sum in*out over one decoder layer's linears
    linears: tuple[tuple[str, int, int], ...]  # (leaf, in, out)
    largest_param: int
    vocab_hidden: int


def _classify(linears: dict[str, list[int]], hidden: int, intermediate: int):
    attn_in, out_in, mlp_in, down_in = [], [], [], []
    for name, (fin, fout) in linears.items():
        parts = name.split(".")
        leaf = parts[-1]
        in_attention = any("attn" in p or "attention" in p for p in parts[:-1]) or leaf in (
            "q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "query_key_value", "Wqkv")
        if in_attention:
            (out_in if leaf in _OUT_PROJ else attn_in).append(name)
        elif fin == hidden and fout != hidden:
            mlp_in.append(name)
        else:
            down_in.append(name)
    return tuple(attn_in), tuple(out_in), tuple(mlp_in), tuple(down_in)


@lru_cache(maxsize=64)
def _model_view_cached(key: tuple) -> ModelView:
    (model_type, layers, hidden, heads, kv_heads, head_dim, inter, vocab, total, linears_items, experts) = key
    linears = {name: list(shape) for name, shape in linears_items}
    head_dim = head_dim or (hidden // heads if heads else 0)
    if not linears:  # facts without shapes: a Llama-style layer from the dimensions
        qd, kvd = heads * head_dim, kv_heads * head_dim
        linears = {"self_attn.q_proj": [hidden, qd], "self_attn.k_proj": [hidden, kvd],
                   "self_attn.v_proj": [hidden, kvd], "self_attn.o_proj": [qd, hidden],
                   "mlp.gate_proj": [hidden, inter], "mlp.up_proj": [hidden, inter],
                   "mlp.down_proj": [inter, hidden]}
    attn_in, out_in, mlp_in, down_in = _classify(linears, hidden, inter)
    qd = heads * head_dim
    gated = any("gate" in n for n in mlp_in) or len(mlp_in) >= 2 or any(
        linears[n][1] == 2 * inter for n in mlp_in)
    fused_qkv = any(linears[n][1] > max(qd, hidden) for n in attn_in)
    shape = Shape(
        model_type=model_type, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads or heads,
        head_dim=head_dim, intermediate=inter, vocab=vocab, gated_mlp=gated, fused_qkv=fused_qkv,
        attn_inputs=attn_in, out_inputs=out_in, mlp_inputs=mlp_in, down_inputs=down_in,
        linear_in={n: s[0] for n, s in linears.items()}, linear_out={n: s[1] for n, s in linears.items()},
    )
    layer_linear = sum(i * o for i, o in linears.values())
    largest = max([vocab * hidden] + [i * o for i, o in linears.values()])
    return ModelView(shape, total, layer_linear, tuple((n, s[0], s[1]) for n, s in linears.items()), largest,
                  vocab * hidden)


def model_view(facts: Any, embedding_rows: int | None = None) -> ModelView:
    """The model as the estimator sees it; ``embedding_rows`` above the config's vocabulary is the
    runner's grown embedding (a template's added tokens): the input and output embeddings (one
    matrix when tied) gain those rows."""
    linears = tuple(sorted((str(k), tuple(int(x) for x in v)) for k, v in (facts.linear_shapes or {}).items()))
    vocab, total = int(facts.vocab_size), int(facts.total_params)
    if embedding_rows and embedding_rows > vocab:
        copies = 1 if getattr(facts, "tie_word_embeddings", False) else 2
        total += (embedding_rows - vocab) * int(facts.hidden_size) * copies
        vocab = int(embedding_rows)
    return _model_view_cached((
        str(getattr(facts, "model_type", "") or ""), int(facts.num_layers), int(facts.hidden_size),
        int(facts.num_heads), int(facts.num_kv_heads or facts.num_heads), int(facts.head_dim or 0),
        int(facts.intermediate_size), vocab, total, linears,
        int(getattr(facts, "num_experts", 0) or 0),
    ))


# --------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Plan:
    knobs: Knobs
    optim: str
    double_quant: bool
    grad_accum: int
    num_gpus: int
    sharding: str | None
    dtype: str
    # The template grew the vocabulary (ChatML on a base model): under LoRA/QLoRA the runner trains
    # embed_tokens and lm_head in full (PEFT modules_to_save: a trainable copy of each).
    grown_embeddings: bool = False
    # Bytes per weight if the same config trained adapters instead: model.dtype auto loads a full
    # fine-tune in fp32 but a LoRA/QLoRA base in bf16 (config.resolved_precision).
    adapter_base_weight_bytes: int | None = None


def lora_targets(target_modules: Any, linear_names: list[str]) -> list[str]:
    """Leaf names PEFT would wrap: "all-linear" is every linear of the decoder layers (lm_head is
    never one of them); a list matches names equal to or ending in ".NAME"; another string is a
    regular expression matched against the full module name, as PEFT does."""
    if target_modules in ("all-linear", None):
        return list(linear_names)
    if isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error:
            return []
        return [n for n in linear_names if pattern.fullmatch(f"model.layers.0.{n}") or pattern.fullmatch(n)]
    wanted = [str(t) for t in target_modules]
    return [n for n in linear_names if any(n == t or n.endswith("." + t) for t in wanted)]


def make_plan(m: ModelView, cfg: RunConfig, gpu: GpuInfo | None, libraries: dict[str, bool], num_gpus: int,
              sharding: str | None, assumptions: list[str], max_positions: int | None = None) -> Plan:
    """The resolved knobs of ``cfg`` on ``gpu`` (the one the run's first process uses; None: no
    GPU known) with ``libraries`` (``HardwareReport.libraries``) installed."""
    t, meth = cfg.training, cfg.method
    if gpu is None and cfg.model.dtype == "auto":
        assumptions.append("model.dtype auto: assumed a bf16-capable GPU (the run would use fp32 on a CPU)")
    bf16_gpu = gpu is None or bool(gpu.bf16)
    precision = resolved_precision(cfg, bf16_gpu, True)  # the runner's own rule, on the GPU it will use
    dtype = precision.weights
    wb = DTYPE_BYTES[dtype]
    autocast = bool(precision.bf16 or precision.fp16)
    method = meth.type
    act = 2 if (autocast or method == "qlora") else wb
    if sharding == "fsdp" and num_gpus > 1 and autocast and method == "full" and wb < 4:
        # accelerate's FSDP2 preparation upcasts trainable low-precision parameters to fp32 under mixed
        # precision (fsdp2_prepare_model); compute still runs in 16 bits (MixedPrecisionPolicy.param_dtype)
        wb = 4
        assumptions.append("FSDP2 with mixed precision: accelerate upcasts the trainable parameters to fp32 "
                           "(weights, gradients and optimizer states counted in fp32, sharded)")
    if method == "qlora":
        adapter = 2  # TRL casts trainable QLoRA parameters to bf16
    elif method == "lora":
        adapter = 4  # PEFT's autocast_adapter_dtype=True keeps adapters of 16-bit models in fp32
    else:
        adapter = wb
    attn = cfg.model.attn_implementation
    if attn == "auto":  # the runner's rule, with this machine's flash-attn when the GPU is here
        attn = auto_attention(bool(gpu is not None and gpu.flash_attention_2), bool(libraries.get("flash_attn")),
                              precision.compute)[0]
    seq = t.max_length
    if seq is None:
        seq = int(max_positions or 0) or 4096
        assumptions.append(f"training.max_length null: assumed rows of {seq} tokens")
    padding_free = bool(t.padding_free or (t.packing and t.packing_strategy in ("bfd", "bfd_split")))
    names = [n for n, _, _ in m.linears]
    targets = frozenset(lora_targets(meth.lora_target_modules, names)) if method != "full" else frozenset()
    if method != "full" and not targets:
        assumptions.append(f"method.lora_target_modules {meth.lora_target_modules!r} matches no linear layer")
    knobs = Knobs(
        method=method, weight_bytes=wb, act_bytes=act, adapter_bytes=adapter, autocast=autocast, attn=attn,
        batch=int(t.per_device_train_batch_size), seq=int(seq), padding_free=padding_free,
        full_rows=bool(t.packing and t.packing_strategy == "wrapped"), checkpointing=bool(t.gradient_checkpointing),
        lora_targets=targets, lora_dropout=float(meth.lora_dropout), dora=bool(meth.use_dora),
        lm_head_trainable=method == "full", lora_r=int(meth.lora_r), liger=bool(t.use_liger_kernel),
    )
    optim = t.optim
    if optim not in _OPTIMIZERS:
        assumptions.append(f"training.optim {optim!r}: memory counted as for adamw_torch")
    lora_cfg = dataclasses.replace(cfg, method=dataclasses.replace(meth, type="lora"))
    base_wb = DTYPE_BYTES[resolved_precision(lora_cfg, bf16_gpu, True).weights]
    return Plan(knobs, optim, bool(meth.bnb_4bit_use_double_quant),
                 int(t.gradient_accumulation_steps), max(1, int(num_gpus)), sharding, dtype,
                 adapter_base_weight_bytes=base_wb)


# --------------------------------------------------------------------------- arithmetic

def saved_module_params(m: ModelView, p: Plan) -> int:
    """Parameters of the full trainable copies PEFT makes of embed_tokens and lm_head (0 unless the
    template grew the vocabulary under LoRA/QLoRA)."""
    if p.knobs.method == "full" or not p.grown_embeddings:
        return 0
    return 2 * m.vocab_hidden


def trainable_params(m: ModelView, p: Plan) -> int:
    k = p.knobs
    if k.method == "full":
        return m.total_params
    per_layer = 0
    for name, fin, fout in m.linears:
        if name in k.lora_targets:
            per_layer += k.lora_r * (fin + fout) + (fout if k.dora else 0)
    return per_layer * m.shape.layers + saved_module_params(m, p)


def compute(m: ModelView, p: Plan) -> dict[str, Any]:
    """Bytes of every component at the worst moment, and where that moment is."""
    k, sh = p.knobs, m.shape
    wb = k.weight_bytes
    trainable = trainable_params(m, p)
    # weights
    if k.method == "qlora":
        quantized = m.layer_linear_params * sh.layers
        constants = NF4_DOUBLE_QUANT_BYTES if p.double_quant else NF4_CONSTANT_BYTES
        weights = quantized * (NF4_BYTES + constants) + (m.total_params - quantized) * wb
    else:
        weights = m.total_params * wb
    param_bytes = wb if k.method == "full" else k.adapter_bytes
    saved = saved_module_params(m, p)  # copies in the model's 16/32-bit dtype, not the adapters'
    adapters = 0 if k.method == "full" else (trainable - saved) * param_bytes + saved * wb
    grads = (trainable - saved) * param_bytes + saved * wb
    # optimizer
    per_param, fixed, temp_units, paged = _OPTIMIZERS.get(p.optim, _OPTIMIZERS["adamw_torch"])
    if p.optim == "adafactor":
        # transformers' Adafactor: factored fp32 row/column second moments for matrices, full
        # fp32 for vectors; its step upcasts one parameter at a time (grad, update, fp32 copy).
        matrices = sh.layers * sum(fin + fout for _, fin, fout in m.linears) + sh.vocab + sh.hidden
        states = 4 * matrices if k.method == "full" else 4 * trainable
        step_temp = 3 * 4 * (m.largest_param if k.method == "full" else max(1, trainable // max(1, sh.layers)))
    else:
        states = (trainable - saved) * (per_param * param_bytes + fixed) + saved * (per_param * wb + fixed)
        step_temp = (trainable - saved) * temp_units * param_bytes + saved * temp_units * wb
    # distributed: shard what the strategy shards (the hook issue 7 fills in)
    n = p.num_gpus if p.sharding else 1
    bucket = 0.0
    if p.sharding in ("zero1", "zero2", "zero3", "fsdp"):
        states /= n
        step_temp /= n
    if p.sharding in ("zero2", "zero3", "fsdp"):
        grads /= n
    gathered = 0.0
    if p.sharding in ("zero3", "fsdp"):
        weights /= n
        adapters /= n
        gathered = 2 * (m.layer_linear_params * wb)  # the unsharded layer in use and the next one prefetched
    if p.sharding == "ddp" and p.num_gpus > 1:
        bucket = grads  # DDP's gradient buckets copy every gradient (gradient_as_bucket_view=False)
    # activations
    act = activations(sh, k)
    grads_other = 0.0  # gradients outside the decoder layers' linears (embeddings, head, norms)
    if k.method == "full":
        grads_other = (m.total_params - m.layer_linear_params * sh.layers) * wb / (n if p.sharding in ("zero2", "zero3", "fsdp") else 1)
    elif saved:
        grads_other = saved * wb / 2  # the head copy's gradient comes first; the embedding's last
    # Backward runs the LM head first (all activations alive, the head's and embeddings'
    # gradients appearing), then the layers top-down: each frees its activations as its weight
    # gradients appear, so with one micro-batch per step the peak is at one end — the start, or
    # the end with every gradient and only the last layer's working set. With accumulation > 1
    # the previous micro-batches' gradients are alive all along.
    act_all = act.layers + act.other + act.logits
    if p.grad_accum > 1:
        ends = [(act_all, grads, act.transient)]
    else:
        ends = [(act_all, grads_other, act.transient), (act.other + act.logits, grads, act.layer_transient)]
    bwd_act, bwd_grads, bwd_transient = max(ends, key=lambda e: e[0] + e[1] + e[2])
    backward = bwd_act + bwd_grads + bwd_transient + bucket
    step = grads + step_temp + bucket
    peak_phase = "backward" if backward >= step else "optimizer_step"
    alive = {
        "weights": weights,
        "adapters": adapters,
        "gradients": bwd_grads if peak_phase == "backward" else grads,
        "optimizer": states,
        "activations": (bwd_act - act.logits) if peak_phase == "backward" else 0.0,
        "logits": act.logits if peak_phase == "backward" else 0.0,
        "transient": (bwd_transient if peak_phase == "backward" else step_temp) + bucket + gathered,
        "workspace": CUBLAS_WORKSPACE_BYTES,
    }
    paged_bytes = states if paged else 0.0  # cudaMallocManaged: outside the caching allocator
    allocated = sum(alive.values()) - paged_bytes
    slack = allocated * ALLOCATOR_SLACK
    context = CUDA_CONTEXT_GIB * GIB
    alive["allocator_slack"] = slack
    alive["cuda_context"] = context
    sizes = {
        "gradients": grads, "activations": act.layers + act.other, "activations_per_layer": act.per_layer,
        "logits": act.logits, "backward_transient": act.transient, "optimizer_step_temp": step_temp,
    }
    return {
        "alive": alive, "allocated": allocated, "reserved": allocated + slack,
        "total": allocated + slack + paged_bytes + context, "trainable": trainable, "phase": peak_phase,
        "sizes": sizes, "paged": paged_bytes,
    }


def total_gib(m: ModelView, p: Plan) -> float:
    return compute(m, p)["total"] / GIB


def fits_in(total_gib: float, gpu_gib: float | None) -> bool | None:
    if gpu_gib is None:
        return None
    return gpu_gib - total_gib >= REQUIRED_HEADROOM * gpu_gib

