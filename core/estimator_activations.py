"""Activation memory of one training micro-batch, counted tensor by tensor.

The counts follow what autograd really keeps for backward in transformers' decoder layers
(Llama, Qwen2/3, Mistral, Gemma/2/3, Phi-3 style), PEFT's LoRA layers, bitsandbytes' 4-bit
matmul and TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``, which never builds
the ``[tokens, vocab]`` logits). Rules used below, each checked on CPU with
``torch.autograd.graph.saved_tensors_hooks`` (see tests/core/test_estimator.py):

* ``nn.Linear`` keeps its input for backward only when its weight is trainable; a frozen weight
  keeps nothing beyond the weight itself.
* An element-wise product keeps each factor the *other* factor's gradient needs.
* SiLU / GELU keep their input; ``x.to(float32)`` inside RMSNorm keeps a 4-byte copy.
* SDPA and FlashAttention keep q, k, v, the output and an fp32 log-sum-exp per head;
  eager attention keeps the fp32 softmax *and* its 16-bit copy: the s² scores.
* bitsandbytes ``MatMul4Bit`` keeps only the packed weight; it dequantizes the whole weight to
  the compute dtype on every forward and backward call (a short-lived ``out x in`` matrix).
* PEFT runs each targeted module's LoRA branch on its own cast/dropout copy of the input.

Everything here is pure arithmetic on plain numbers: the TUI recomputes it on every keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

# TRL's fused LM head (trl/trainer/utils.py, trl/kernels/chunked_logprob.py): tiles of
# TOKEN_CHUNK_SIZE tokens x _CHUNKED_LOGPROB_CHUNK_SIZE vocabulary entries in the compute dtype.
TRL_TOKEN_TILE = 4096
TRL_VOCAB_TILE = 32768

# Model families whose RMSNorm computes in fp32 and multiplies by (1 + weight) in fp32
# (transformers' GemmaRMSNorm): one more 4-byte copy is kept when the weight is trainable.
GEMMA_NORM_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "recurrent_gemma"})
# Families with norms before *and* after attention and MLP (4 per layer).
FOUR_NORM_TYPES = frozenset({"gemma2", "gemma3", "gemma3_text"})
# Families normalising q and k per head (an extra RMSNorm on each).
QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2", "olmo3"})


@dataclass(frozen=True)
class Shape:
    """The model numbers activations depend on (from ModelFacts)."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool
    fused_qkv: bool
    attn_inputs: tuple[str, ...]  # linears reading the attention norm's output
    out_inputs: tuple[str, ...]  # linears reading the attention output (o_proj)
    mlp_inputs: tuple[str, ...]  # linears reading the MLP norm's output
    down_inputs: tuple[str, ...]  # linears reading the MLP's inner activation
    linear_in: dict  # leaf name -> in_features
    linear_out: dict  # leaf name -> out_features


@dataclass(frozen=True)
class Knobs:
    """The run settings activations depend on, already resolved."""

    method: str  # full | lora | qlora
    weight_bytes: int  # bytes per element of the residual stream (the load dtype; NF4 models: 16-bit)
    act_bytes: int  # bytes of linear outputs: the autocast dtype when autocast is on
    adapter_bytes: int  # 4: PEFT's fp32 adapters on a 16-bit model; 2: QLoRA (TRL casts to bf16)
    autocast: bool
    attn: str  # eager | sdpa | flash_attention_2
    batch: int
    seq: int
    padding_free: bool
    full_rows: bool  # every row is exactly max_length (packing 'wrapped'): no padding mask
    checkpointing: bool
    lora_targets: frozenset  # leaf names carrying a LoRA branch
    lora_dropout: float
    dora: bool
    lm_head_trainable: bool
    lora_r: int = 16
    liger: bool = False  # liger-kernel's RMSNorm / SwiGLU / RoPE replace transformers' modules
    # Without Triton (CPU), TRL's fused head folds each [4096, 32768] tile in torch ops that make
    # fp32 temporaries (7 fp32 + 1 bool per tile element, measured); on CUDA a Triton kernel works in place.
    torch_tile_fallback: bool = False
    # native_dropout on CUDA keeps a bool mask; 0 means a mask in the input's dtype (CPU fallback).
    dropout_mask_bytes: int = 1


def _tokens(k: Knobs) -> int:
    return k.batch * k.seq


def attention_span(k: Knobs) -> tuple[int, int]:
    """(rows, row length) of the attention problem: padding-free packs the micro-batch into one row."""
    if k.padding_free:
        return 1, k.batch * k.seq
    return k.batch, k.seq


def has_mask(k: Knobs) -> bool:
    """Whether transformers builds a dense [rows, 1, len, len] mask (eager always; SDPA when rows are
    padded or packed; FlashAttention never — it takes position ids or unpads)."""
    if k.attn == "flash_attention_2":
        return False
    if k.attn == "eager":
        return True
    if k.padding_free:
        return True  # block-diagonal mask from position_ids
    return k.batch > 1 and not k.full_rows  # worst case: a padded batch


def _linear_saves(name: str, width: int, x_bytes: int, k: Knobs) -> tuple[int, int]:
    """(shared, private) bytes per token a linear reading a ``width``-wide input keeps.

    ``shared`` is the input tensor itself (kept once however many linears keep it); ``private`` is
    what this linear keeps alone (cast copies, LoRA dropout copies and masks, DoRA outputs).
    """
    shared = private = 0
    if k.method == "full":
        if k.autocast and x_bytes != k.act_bytes:
            private += k.act_bytes * width  # autocast casts a non-leaf input anew for every linear
        else:
            shared = width * x_bytes
        return shared, private
    # QLoRA base layers: bitsandbytes' MatMul4Bit keeps only the packed weight (ctx.tensors =
    # (None, B)), not its input, so a 4-bit base layer adds nothing here.
    if name not in k.lora_targets:
        return shared, private
    # LoRA branch: x -> cast to adapter dtype -> dropout -> lora_A (keeps its input) -> lora_B
    branch_bytes = k.adapter_bytes if x_bytes != k.adapter_bytes else x_bytes
    lora_a_input_bytes = k.act_bytes if k.autocast else branch_bytes
    private += k.lora_r * lora_a_input_bytes  # lora_A's output, kept by lora_B
    if k.lora_dropout > 0:
        private += width * (k.dropout_mask_bytes or branch_bytes)  # the dropout mask
        private += width * lora_a_input_bytes
    elif branch_bytes != x_bytes or lora_a_input_bytes != x_bytes:
        private += width * lora_a_input_bytes  # a cast copy
    else:
        shared = width * x_bytes
    return shared, private


def _group(names: tuple[str, ...], width: int, x_bytes: int, k: Knobs) -> tuple[int, int]:
    """(shared, private) bytes per token of the linears reading one input."""
    shared = private = 0
    for name in names:
        s, p = _linear_saves(name, width, x_bytes, k)
        shared = max(shared, s)
        private += p
    return shared, private


def layer_bytes_per_token(sh: Shape, k: Knobs) -> float:
    """Bytes per token one decoder layer keeps for backward (no checkpointing)."""
    h, qd, kvd, i = sh.hidden, sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim, sh.intermediate
    wb, ab = k.weight_bytes, k.act_bytes
    full = k.method == "full"
    total = 0.0
    # --- norms: fp32 copy of the input, plus the normalised tensor the weight's gradient needs
    norms = 4 if sh.model_type in FOUR_NORM_TYPES else 2
    if k.liger:
        per_norm = wb * h + 4  # LigerRMSNorm keeps its input and the fp32 rstd, nothing else
    else:
        per_norm = 4 * h + 4  # the fp32 input copy and rsqrt(variance)
        if full:
            per_norm += (4 if sh.model_type in GEMMA_NORM_TYPES else wb) * h
    total += norms * per_norm
    if sh.model_type in QK_NORM_TYPES:
        total += 4 * (qd + kvd) + ((wb * (qd + kvd)) if full else 0)
    # --- linears reading the norm outputs / attention output / MLP activation
    total += sum(_group(sh.attn_inputs, h, wb, k))
    total += sum(_group(sh.mlp_inputs, h, wb, k))
    total += sum(_group(sh.down_inputs, i, ab, k))
    o_shared, o_private = _group(sh.out_inputs, qd, ab, k)
    # --- attention core
    rows, length = attention_span(k)
    repeat = sh.kv_heads < sh.heads and (k.attn == "eager" or (k.attn == "sdpa" and has_mask(k)))
    kv_width = qd if repeat else kvd
    v_width = (qd + 2 * kvd) if (sh.fused_qkv and not repeat) else kv_width  # a view keeps the fused output
    total += ab * (qd + kv_width + v_width)  # q and k after RoPE, v
    if k.attn == "eager":
        span = length  # each token's row of scores
        total += 4 * sh.heads * span  # fp32 softmax output
        if ab != 4:
            total += ab * sh.heads * span  # its 16-bit copy, kept by probs @ v
        total += o_shared + o_private  # o_proj's input is a contiguous copy of probs @ v
    else:
        # SDPA (flash / memory-efficient kernels) and FlashAttention-2 write the output as
        # (batch, seq, heads, dim): the transposed "contiguous" copy fed to o_proj is the same tensor.
        total += 4 * sh.heads  # fp32 log-sum-exp per head
        total += max(o_shared, ab * qd) + o_private
    # --- MLP inner tensors (gate output for the activation, activation and up for the product)
    # (liger's SwiGLU keeps only gate and up outputs and recomputes the activation in backward)
    total += ab * i * ((2 if k.liger else 3) if sh.gated_mlp else 1)
    # --- DoRA keeps the base output and the LoRA output of every targeted module (for the
    # magnitude's gradient), in the adapter's dtype unless autocast runs the matmuls
    if k.dora and k.method != "full":
        lora_out = ab if k.autocast else k.adapter_bytes
        base_out = lora_out if k.lora_dropout > 0 else ab  # without dropout the base layer's own output is reused
        total += sum((lora_out + base_out) * sh.linear_out.get(n, 0) for n in k.lora_targets)
    return total


def dora_weight_copies(sh: Shape, k: Knobs) -> int:
    """Bytes per layer DoRA keeps that do not scale with tokens: with dropout on, PEFT recomputes
    the base output from the dropped input with a cast copy of the weight, which that matmul keeps."""
    if not (k.dora and k.method != "full" and k.lora_dropout > 0):
        return 0
    copy_bytes = k.act_bytes if k.autocast else k.adapter_bytes
    return sum(copy_bytes * sh.linear_in.get(n, 0) * sh.linear_out.get(n, 0) for n in k.lora_targets)


def mask_bytes(k: Knobs) -> int:
    """The one attention mask all layers share: bool for SDPA, model dtype for eager."""
    if not has_mask(k):
        return 0
    rows, length = attention_span(k)
    return rows * length * length * (k.weight_bytes if k.attn == "eager" else 1)


def layer_backward_transient(sh: Shape, k: Knobs) -> float:
    """Working set while one layer runs backward: the gradients of its inner tensors."""
    rows, length = attention_span(k)
    t = _tokens(k)
    qd, kvd = sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim
    ab = k.act_bytes
    per_token = ab * (3 * sh.intermediate + qd + 2 * kvd) + 2 * 4 * sh.hidden
    work = per_token * t
    if k.method == "qlora":  # the dequantized weight of the largest 4-bit linear
        work += ab * max((sh.linear_in[n] * sh.linear_out[n] for n in sh.linear_in), default=0)
    if k.attn == "eager":
        work += rows * sh.heads * length * length * (4 + 2 * ab)  # grad of fp32 softmax + 16-bit copies
    return work


@dataclass(frozen=True)
class ActivationBreakdown:
    layers: float  # everything the decoder layers keep (all layers)
    per_layer: float  # one layer, not checkpointed
    other: float  # inputs, masks, rotary tables, final norm, LM head inputs
    logits: float  # LM head / loss buffers alive at the start of backward
    head_transient: float  # working set of the LM head's backward (the first thing backward runs)
    layer_transient: float  # working set of one layer's backward (+ its recomputation when checkpointing)

    @property
    def transient(self) -> float:
        return max(self.head_transient, self.layer_transient)


def activations(sh: Shape, k: Knobs) -> ActivationBreakdown:
    t = _tokens(k)
    per_layer = layer_bytes_per_token(sh, k) * t + dora_weight_copies(sh, k)
    if k.checkpointing:
        layers = sh.layers * k.weight_bytes * sh.hidden * t  # each layer's input only
        recompute = per_layer  # one layer rebuilt during its backward
    else:
        layers = sh.layers * per_layer
        recompute = 0.0
    h, wb, ab = sh.hidden, k.weight_bytes, k.act_bytes
    other = 3 * 8 * t  # input_ids, labels, attention mask / position ids (int64)
    other += mask_bytes(k)
    other += 2 * wb * sh.head_dim * t  # rotary cos and sin
    other += t * (4 * h + (wb * h if k.method == "full" else 0))  # final norm
    # TRL's fused head keeps the selected hidden states (worst case: every token is trained),
    # the boolean index and a few fp32 per-token vectors (log Z, entropy, log-probs, accuracy).
    logits = t * (wb * h + 8 + 6 * 4)
    # Backward of the fused head: fp32 grad of the hidden states (+ its cast back), one
    # [4096, 32768] tile, and for a trainable head its fp32 weight gradient (+ its cast back).
    tile = min(t, TRL_TOKEN_TILE) * TRL_VOCAB_TILE * ab
    head_bwd = t * h * (4 + wb) + tile
    if k.lm_head_trainable:
        head_bwd += sh.vocab * h * (4 + wb)  # tied or not, the head's weight is [vocab, hidden]
    if k.torch_tile_fallback:
        head_bwd += min(t, TRL_TOKEN_TILE) * min(sh.vocab, TRL_VOCAB_TILE) * (7 * 4 + 1)
    return ActivationBreakdown(layers=layers, per_layer=per_layer, other=other, logits=logits,
                               head_transient=head_bwd, layer_transient=layer_backward_transient(sh, k) + recompute)
