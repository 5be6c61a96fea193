"""The pre-launch doctor: the well-known SFT pitfalls, found in a config and its data before launch.

``check_config`` is a pure function over plain inputs — the ``RunConfig``, the canonical training
and eval rows, the dataset audit (``audit_dataset``'s dict), the model facts and the chat template
training will use — and returns ``DoctorWarning``s: a ``code``, a one-line ``message`` with the
reason, the ``setting`` it concerns (dotted config path) and a ``suggested`` value. Nothing here
blocks a launch; a check whose input is missing is skipped. ``gather_inputs`` (in
``doctor_inputs``) loads those inputs for a preset.

Rules and thresholds (named constants below; docs/doctor.md explains each):

- Learning rate: the usual range at an effective batch of ``LR_REFERENCE_BATCH`` sequences is
  ``LR_RANGE[method]`` (full 1e-5..5e-5, LoRA/QLoRA 1e-4..5e-4). For another effective batch
  ``B`` (per-device batch x gradient accumulation x processes) both ends are multiplied by
  ``sqrt(B / LR_REFERENCE_BATCH)`` (the square-root rule for Adam-type optimisers), that factor
  kept within ``LR_SCALE_LIMITS``. Skipped for ``builtin:`` models, trained from scratch.
- Epochs: more than ``MANY_EPOCHS`` epochs on fewer than ``SMALL_DATASET_ROWS`` rows, or more
  than ``MAX_EPOCHS`` on any dataset, risks memorisation; under ``FEW_EPOCHS`` of an epoch on at
  least ``LARGE_DATASET_ROWS`` rows leaves most of the data unseen; fewer than ``MIN_STEPS``
  optimiser steps in all is too few for a schedule to mean anything.
- max_length below the data's p95 token length (equivalently: more than 5% of rows longer).
- Data: any exact or normalised duplicate (inside train, or eval rows found in train); empty
  turns in any row; refusal openers in at least ``REFUSAL_MIN_SHARE`` of rows; very short
  answers in at least ``SHORT_MIN_SHARE`` of rows.
- Packing: the packer saves fewer than ``PACKING_MIN_GAIN`` of the sequences (rows mostly long).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from . import cleaning
from .findings import Finding, Severity

LR_RANGE = {"full": (1e-5, 5e-5), "lora": (1e-4, 5e-4), "qlora": (1e-4, 5e-4)}
LR_TYPICAL = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}
LR_REFERENCE_BATCH = 16
LR_SCALE_LIMITS = (0.5, 2.0)

MANY_EPOCHS = 3
MAX_EPOCHS = 5
SMALL_DATASET_ROWS = 10_000
FEW_EPOCHS = 0.5
LARGE_DATASET_ROWS = 10_000
MIN_STEPS = 20

MAX_LENGTH_PERCENTILE = 0.95  # max_length should cover at least this share of rows
MAX_LENGTH_ROUND = 64  # suggested max_length is rounded up to a multiple of this

REFUSAL_MIN_SHARE = 0.01
SHORT_MIN_SHARE = 0.05
PACKING_MIN_GAIN = 0.2

EVAL_FRACTION_SUGGESTED = 0.05
PADDING_FREE_ATTENTION = ("flash_attention_2", "flash_attention_3")

# Names of MLP projections across families (leaf names; matched as PEFT matches target names).
MLP_NAMES = {
    "gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "fc_in", "fc_out", "w1", "w2", "w3",
    "c_fc", "dense_h_to_4h", "dense_4h_to_h", "ffn_up", "ffn_down", "wi", "wo", "wi_0", "wi_1",
}
_MLP_PARENTS = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "experts")


class DoctorWarning(Finding):
    """One doctor finding (a ``Finding`` of severity warning): never blocks, always says why and
    what to change. Built as it always was — ``DoctorWarning(code, message, setting, suggested,
    details)`` — and written as the doctor's documented JSON: ``{code, message, setting,
    suggested, details}`` (docs/cli-doctor.md)."""

    def __init__(self, code: str, message: str, setting: str | None = None, suggested: Any = None,
                 details: dict[str, Any] | None = None, *, severity: Severity = "warning", where: str | None = None,
                 suggestion: Any = None):  # Finding's keywords too, so dataclasses.replace works
        super().__init__(code, message, severity, where, setting, suggested if suggestion is None else suggestion,
                         dict(details or {}))

    @property
    def suggested(self) -> Any:
        """The doctor's name for ``suggestion``."""
        return self.suggestion

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "setting": self.setting,
                "suggested": self.suggestion, "details": dict(self.details)}


Warning = DoctorWarning  # the name the shared API uses; DoctorWarning avoids shadowing the builtin here


@dataclass
class _Inputs:
    cfg: Any
    examples: list[dict] | None
    eval_examples: list[dict] | None
    audit: dict | None
    facts: Any
    template: str | None
    template_findings: list[dict] | None = None


def check_config(cfg, *, examples: list[dict] | None = None, eval_examples: list[dict] | None = None,
                 audit: dict | None = None, facts: Any = None, tokenizer_template: str | None = None,
                 template_findings: list[dict] | None = None) -> list[DoctorWarning]:
    """Every pre-launch warning for ``cfg``; checks whose inputs are missing are skipped.

    ``examples``/``eval_examples``: canonical rows after the eval split; ``audit``: the dict of
    ``audit_dataset`` computed with this config's ``max_length``; ``facts``: ``ModelFacts`` (or
    any object/dict with ``chat_template``, ``has_chat_template``, ``linear_shapes``,
    ``max_position_embeddings``); ``tokenizer_template``: the chat template text training will
    use (the resolved template); ``template_findings``: what probing the template found
    (``ResolvedTemplate.behaviour.findings``).
    """
    if isinstance(facts, dict):
        facts = _Attrs(facts)
    x = _Inputs(cfg, examples, eval_examples, audit, facts, tokenizer_template, template_findings)
    out: list[DoctorWarning] = []
    for check in CHECKS:
        out.extend(check(x))
    return out


class _Attrs:
    def __init__(self, d: dict):
        self.__dict__.update(d)

    def __getattr__(self, name):  # missing keys read as None
        return None


def effective_batch(cfg) -> int:
    t = cfg.training
    world = getattr(getattr(cfg, "distributed", None), "num_processes", None) or 1
    return t.per_device_train_batch_size * t.gradient_accumulation_steps * world


def lr_range(method: str, batch: int) -> tuple[float, float, float]:
    """(low, high, typical) learning rate for ``method`` at effective batch ``batch`` (see module doc)."""
    low, high = LR_RANGE[method]
    lo_f, hi_f = LR_SCALE_LIMITS
    factor = min(hi_f, max(lo_f, math.sqrt(batch / LR_REFERENCE_BATCH)))
    return low * factor, high * factor, LR_TYPICAL[method] * factor


def _sig(x: float) -> float:
    """Two significant digits, for suggested values users can type."""
    return float(f"{x:.2g}") if x else x


# --------------------------------------------------------------------------- training settings

def check_learning_rate(x: _Inputs) -> list[DoctorWarning]:
    cfg = x.cfg
    if cfg.model.id.startswith("builtin:"):
        return []
    method = cfg.method.type
    batch = effective_batch(cfg)
    low, high, typical = lr_range(method, batch)
    lr = cfg.training.learning_rate
    if low <= lr <= high:
        return []
    kind = "full fine-tuning" if method == "full" else method.upper() if method == "qlora" else "LoRA"
    side = "high" if lr > high else "low"
    far = lr > high * 10 or lr < low / 10
    why = ("updates this large tend to wreck what the model knew or diverge" if side == "high"
           else "training this slowly barely moves the model")
    return [DoctorWarning(
        "lr_out_of_range",
        f"learning rate {lr:g} is {'an order of magnitude ' if far else ''}{'above' if side == 'high' else 'below'} "
        f"the usual {low:.1e}–{high:.1e} for {kind} at effective batch {batch}: {why}",
        "training.learning_rate", _sig(typical),
        {"learning_rate": lr, "low": low, "high": high, "effective_batch": batch, "method": method},
    )]


def _train_sequences(x: _Inputs) -> int | None:
    """Sequences per epoch: packed sequences when packing (from the audit), rows otherwise."""
    rows = len(x.examples) if x.examples is not None else (x.audit or {}).get("rows")
    if rows is None:
        return None
    padding = (x.audit or {}).get("padding") or {}
    if x.cfg.training.packing and padding.get("packed_sequences"):
        audited = x.audit.get("rows_encoded") or x.audit.get("rows") or rows
        return max(1, round(padding["packed_sequences"] * rows / max(1, audited)))
    return rows


def check_epochs(x: _Inputs) -> list[DoctorWarning]:
    t = x.cfg.training
    sequences = _train_sequences(x)
    if not sequences:
        return []
    rows = len(x.examples) if x.examples is not None else sequences
    batch = effective_batch(x.cfg)
    steps_per_epoch = max(1, math.ceil(sequences / batch))
    if t.max_steps and t.max_steps > 0:
        epochs, steps, setting = t.max_steps / steps_per_epoch, t.max_steps, "training.max_steps"
    else:
        epochs, steps, setting = t.num_train_epochs, math.ceil(t.num_train_epochs * steps_per_epoch), \
            "training.num_train_epochs"
    details = {"rows": rows, "epochs": round(epochs, 3), "steps": steps, "steps_per_epoch": steps_per_epoch,
               "effective_batch": batch}
    out = []
    if epochs > MAX_EPOCHS or (epochs > MANY_EPOCHS and rows < SMALL_DATASET_ROWS):
        target = 2 if rows < SMALL_DATASET_ROWS else MANY_EPOCHS
        suggested = target * steps_per_epoch if setting == "training.max_steps" else target
        out.append(DoctorWarning(
            "many_epochs",
            f"{epochs:.3g} epochs over {rows:,} rows: the model sees each row {epochs:.0f} times and starts to "
            "memorise it — watch eval loss, or train fewer epochs",
            setting, suggested, details))
    elif epochs < FEW_EPOCHS and rows >= LARGE_DATASET_ROWS:
        out.append(DoctorWarning(
            "fraction_of_epoch",
            f"{steps:,} steps cover {epochs:.0%} of an epoch over {rows:,} rows: most of the data is never seen",
            "training.max_steps", steps_per_epoch, details))
    if steps < MIN_STEPS:
        out.append(DoctorWarning(
            "few_steps",
            f"only {steps} optimiser steps in all ({rows:,} rows at effective batch {batch}): too few for the "
            "schedule and warm-up to work — lower the batch or gradient accumulation",
            "training.gradient_accumulation_steps", 1 if t.gradient_accumulation_steps > 1 else None, details))
    return out


def check_max_length(x: _Inputs) -> list[DoctorWarning]:
    t = x.cfg.training
    a = x.audit
    if not a or not t.max_length:
        return []
    rows = a.get("rows_encoded") or a.get("rows") or 0
    lengths = a.get("token_length") or {}
    if not rows:
        return []
    same = a.get("max_length") == t.max_length
    over = a.get("rows_over_max_length", 0) if same else None
    p95 = lengths.get("p95")
    if over is not None:
        short = over / rows > 1 - MAX_LENGTH_PERCENTILE
    elif p95 is not None:
        short = p95 > t.max_length
    else:  # an audit made at another max_length, without p95: below p90 is surely below p95
        short = bool(lengths.get("p90")) and lengths["p90"] > t.max_length
    if not short:
        return []
    target = max(lengths.get("p99") or 0, p95 or 0)
    suggested = int(math.ceil(target / MAX_LENGTH_ROUND) * MAX_LENGTH_ROUND) if target else None
    ctx = getattr(x.facts, "max_position_embeddings", None) if x.facts is not None else None
    if suggested and ctx:
        suggested = min(suggested, int(ctx))
    scale = (len(x.examples) / rows) if x.examples else 1.0
    cut = f"{over / rows:.0%} of rows ({round(over * scale):,})" if over is not None else "more than 5% of rows"
    lost = a.get("trained_tokens_lost_to_truncation") if same else None
    lost_txt = f", losing {round(lost * scale):,} trained tokens" if lost else ""
    return [DoctorWarning(
        "max_length_below_p95",
        f"max_length {t.max_length} is below the data's p95 length: truncation cuts {cut}{lost_txt}",
        "training.max_length", suggested,
        {"max_length": t.max_length, "rows_over": over, "trained_tokens_lost": lost,
         "rows_cutting_trained_tokens": a.get("rows_truncating_trained_tokens") if same else None,
         "token_length": dict(lengths)},
    )]


def check_lora_targets(x: _Inputs) -> list[DoctorWarning]:
    m = x.cfg.method
    if m.type == "full":
        return []
    targets = m.lora_target_modules
    if targets == "all-linear":
        return []
    leaves = list((getattr(x.facts, "linear_shapes", None) or {}) if x.facts is not None else {})
    mlp_leaves = [leaf for leaf in leaves if _is_mlp(leaf)]
    if isinstance(targets, str):  # PEFT: a string is a regex over the full module name
        pattern = re.compile(targets)
        candidates = mlp_leaves or sorted(MLP_NAMES)
        hits = [leaf for leaf in candidates if pattern.fullmatch(leaf) or pattern.fullmatch(f"model.layers.0.{leaf}")]
    else:
        names = set(targets)
        candidates = mlp_leaves or sorted(MLP_NAMES)
        hits = [leaf for leaf in candidates if leaf in names or leaf.rsplit(".", 1)[-1] in names]
    if hits:
        return []
    shown = targets if isinstance(targets, str) else ", ".join(targets)
    return [DoctorWarning(
        "lora_no_mlp",
        f"LoRA targets ({shown}) leave out the MLP layers, which hold most of the weights; adapters on "
        "attention only learn noticeably less",
        "method.lora_target_modules", "all-linear",
        {"targets": targets, "mlp_modules": [leaf.rsplit(".", 1)[-1] for leaf in mlp_leaves]},
    )]


def _is_mlp(leaf: str) -> bool:
    parts = leaf.split(".")
    return parts[-1] in MLP_NAMES or any(p in _MLP_PARENTS for p in parts[:-1])


def padding_free_rows_limit(attn: str) -> int | None:
    """Rows per forward that padding-free batches may hold with ``attn`` (None: no limit). The one
    rule the recommender sizes batches by and the doctor checks.

    With a varlen kernel (FlashAttention-2/3) the flattened batch is split by sequence lengths, so
    any number of rows. Other kernels (SDPA, eager) get the batch as one flattened sequence and
    transformers builds a dense block-diagonal mask over it, whose memory grows with its length
    squared: one packed row per forward keeps that mask the size of one row's causal mask."""
    return None if attn in PADDING_FREE_ATTENTION else 1


def check_padding_free(x: _Inputs) -> list[DoctorWarning]:
    t = x.cfg.training
    padding_free = t.padding_free or (t.packing and t.packing_strategy in ("bfd", "bfd_split"))
    attn = x.cfg.model.attn_implementation
    limit = padding_free_rows_limit(attn)
    if not padding_free or limit is None:
        return []
    why = "packing with the bfd strategy is padding-free" if not t.padding_free else "padding_free is on"
    shown = attn if attn != "auto" else "auto (sdpa unless flash-attn and an sm80+ GPU are there)"
    if x.cfg.model.trust_remote_code:
        return [DoctorWarning(
            "padding_free_attention",
            f"{why} with attention {shown} and a model running its own code, which may not honour packed "
            "position ids and then attends across rows — use flash_attention_2 on a GPU, or turn packing off",
            "model.attn_implementation", "flash_attention_2", {"attn_implementation": attn}),
        ]
    rows = [("training.per_device_train_batch_size", t.per_device_train_batch_size)]
    if t.eval_strategy != "no":
        rows.append(("training.per_device_eval_batch_size", t.per_device_eval_batch_size))
    over = [(name, n) for name, n in rows if n > limit]
    if not over:
        return []
    name, n = over[0]
    return [DoctorWarning(
        "padding_free_attention",
        f"{why}, but attention is {shown} and {name.split('.')[1]} is {n}: transformers then builds a dense "
        f"block mask over the {n} flattened rows (memory grows with their total length squared) — use "
        f"{limit} row per forward (raise gradient_accumulation_steps instead) or flash_attention_2 on a GPU",
        name, limit, {"attn_implementation": attn, "rows_per_forward": n}),
    ]


def check_pure_half_full(x: _Inputs) -> list[DoctorWarning]:
    """Full fine-tuning with 16-bit weights has no fp32 master copy (config.resolved_precision)."""
    if x.cfg.method.type != "full" or x.cfg.model.dtype not in ("bf16", "fp16"):
        return []
    dtype = x.cfg.model.dtype
    return [DoctorWarning(
        "pure_half_full_finetune",
        f"full fine-tuning with model.dtype {dtype} keeps no fp32 master weights: an update smaller than about "
        f"1/{256 if dtype == 'bf16' else 2048} of a weight rounds away (on the builtin model at lr 2e-5, 60 steps: "
        "27% of the weights ever changed against 93% with fp32 weights, final loss 6.65 against 6.17); auto keeps "
        "fp32 weights with bf16 autocast, at 8 more bytes per parameter (weights, gradients, Adam states)",
        "model.dtype", "auto", {"dtype": dtype}),
    ]


def check_packing_gain(x: _Inputs) -> list[DoctorWarning]:
    t = x.cfg.training
    a = x.audit
    if not t.packing or not a or not t.max_length:
        return []
    rows = a.get("rows_encoded") or a.get("rows") or 0
    packed = (a.get("padding") or {}).get("packed_sequences")
    p50 = (a.get("token_length") or {}).get("p50")
    if rows and packed:
        gain = 1 - packed / rows
    elif p50:
        gain = 0.0 if p50 >= t.max_length / 2 else None
    else:
        gain = None
    if gain is None or gain >= PACKING_MIN_GAIN:
        return []
    return [DoctorWarning(
        "packing_little_gain",
        f"most rows are long for max_length {t.max_length} (median {p50} tokens): packing saves only "
        f"{max(gain, 0):.0%} of the sequences while mixing rows in one context",
        "training.packing", False, {"rows": rows, "packed_sequences": packed, "gain": round(max(gain, 0), 4)}),
    ]


# --------------------------------------------------------------------------- template

def _strip_markers(template: str) -> str:
    text = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)
    return re.sub(r"\s+", "", text)


def check_chat_template(x: _Inputs) -> list[DoctorWarning]:
    if x.facts is None:
        return []
    src = x.cfg.template.source
    released = getattr(x.facts, "chat_template", None)
    has = getattr(x.facts, "has_chat_template", None)
    has = bool(released) if has is None else has
    conversational = x.examples is not None and any(cleaning.is_conversational(ex) for ex in x.examples[:200])
    if not has and conversational and src not in ("chatml", "file"):
        return [DoctorWarning(
            "no_chat_template",
            "the tokenizer has no chat template (a base model) and the data is conversational: pick a "
            "template to train with (ChatML adds <|im_start|>/<|im_end|> tokens and embedding rows) and use "
            "it again at inference",
            "template.source", "chatml", {"template_source": src}),
        ]
    if has and released and x.template and src != "trl-training" \
            and _strip_markers(x.template) != _strip_markers(released):
        return [DoctorWarning(
            "template_differs",
            "the chat template used for training differs from the one the model was released with: an "
            "instruct model fine-tuned on another format unlearns its own, and inference must then use yours",
            "template.source", "auto", {"template_source": src}),
        ]
    return []


def check_template_behaviour(x: _Inputs) -> list[DoctorWarning]:
    """What the template does to training rows: a system prompt it leaves out, today's date it writes."""
    out: list[DoctorWarning] = []
    has_system = bool(x.cfg.template.system_prompt) or any(
        (ex.get("messages") or [{}])[0].get("role") == "system" for ex in (x.examples or [])[:500]
        if isinstance(ex.get("messages"), list))
    for f in x.template_findings or []:
        if f["code"] in ("system_prompt_dropped", "system_role_refused") and has_system:
            out.append(DoctorWarning(f["code"], f["message"], "template.system_prompt", None, {}))
        elif f["code"] == "template_injects_date":
            out.append(DoctorWarning(f["code"], f["message"] + "; the same rows tokenized another day differ",
                                     "template.source", None, {}))
    return out


# --------------------------------------------------------------------------- data

def check_eval_split(x: _Inputs) -> list[DoctorWarning]:
    d, t = x.cfg.data, x.cfg.training
    has_eval = d.eval_source is not None or d.eval_fraction > 0
    if not has_eval:
        return [DoctorWarning(
            "no_eval",
            "no eval split: overfitting cannot be seen during the run and no best checkpoint can be picked",
            "data.eval_fraction", EVAL_FRACTION_SUGGESTED)]
    if t.eval_strategy == "no":
        return [DoctorWarning(
            "eval_never_runs",
            "an eval split is set but training.eval_strategy is 'no': it is never evaluated",
            "training.eval_strategy", "steps")]
    return []


def check_save_eval_alignment(x: _Inputs) -> list[DoctorWarning]:
    t = x.cfg.training
    has_eval = x.cfg.data.eval_source is not None or x.cfg.data.eval_fraction > 0
    if not has_eval or t.eval_strategy != "steps" or t.save_strategy != "steps" or not t.eval_steps:
        return []
    if t.save_steps < 1 or t.eval_steps < 1:  # ratios of the total: alignment depends on the run length
        return []
    if t.eval_steps % t.save_steps == 0:  # every evaluation lands on a checkpoint
        return []
    return [DoctorWarning(
        "saves_miss_evals",
        f"checkpoints every {t.save_steps:g} steps but evaluations every {t.eval_steps:g}: the best evaluation "
        "may have no checkpoint to go back to",
        "training.save_steps", t.eval_steps, {"save_steps": t.save_steps, "eval_steps": t.eval_steps})]


def _clean_hint(x: _Inputs, kinds: str) -> str:
    src = x.cfg.data.sources[0].path if x.cfg.data.sources else "DATA"
    return f"sft-wizard clean {src} --out cleaned.jsonl --drop {kinds}"


def check_eval_overlap(x: _Inputs) -> list[DoctorWarning]:
    if not x.examples or not x.eval_examples:
        return []
    found = cleaning.find_overlap(x.eval_examples, x.examples)
    if not found.total:
        return []
    n = len(x.eval_examples)
    parts = []
    if found.exact:
        parts.append(f"{found.exact} exactly")
    if found.normalised:
        parts.append(f"{found.normalised} after whitespace/case normalisation")
    fix = ("remove them from the training data" if x.cfg.data.eval_source is not None
           else "deduplicate the data before the split")
    return [DoctorWarning(
        "eval_overlaps_train",
        f"{found.total} of {n} eval rows ({found.total / n:.0%}) also appear in the training data "
        f"({', '.join(parts)}): eval loss will look better than it is — {fix}",
        "data.sources", _clean_hint(x, "overlap --against EVAL" if x.cfg.data.eval_source else "duplicate"),
        {"exact": found.exact, "normalised": found.normalised, "eval_rows": n, "eval_row_indices": found.rows[:20]},
    )]


def check_train_duplicates(x: _Inputs) -> list[DoctorWarning]:
    if not x.examples:
        return []
    found = cleaning.find_duplicates(x.examples)
    if not found.total:
        return []
    n = len(x.examples)
    return [DoctorWarning(
        "train_duplicates",
        f"{found.total:,} of {n:,} training rows ({found.total / n:.0%}) repeat an earlier row "
        f"({found.exact:,} exactly, {found.normalised:,} after whitespace/case normalisation): they weigh "
        "double and are memorised first",
        "data.sources", _clean_hint(x, "duplicate"),
        {"exact": found.exact, "normalised": found.normalised, "rows": n, "row_indices": found.rows[:20]},
    )]


def check_row_quality(x: _Inputs) -> list[DoctorWarning]:
    if not x.examples:
        return []
    n = len(x.examples)
    counts = cleaning.quality_counts(x.examples)
    out = []
    if counts["empty"]:
        out.append(DoctorWarning(
            "empty_turns", f"{counts['empty']:,} rows have an empty turn: the model learns to answer nothing, "
            "or to expect nothing", "data.sources", _clean_hint(x, "empty"), {"rows": counts["empty"]}))
    if counts["refusal"] and counts["refusal"] / n >= REFUSAL_MIN_SHARE:
        out.append(DoctorWarning(
            "refusals", f"{counts['refusal']:,} rows ({counts['refusal'] / n:.0%}) have assistant answers that "
            "open with a refusal (\"I'm sorry, but…\", \"As an AI…\"): the model learns to refuse",
            "data.sources", _clean_hint(x, "refusal"), {"rows": counts["refusal"]}))
    if counts["short"] and counts["short"] / n >= SHORT_MIN_SHARE:
        out.append(DoctorWarning(
            "short_answers", f"{counts['short']:,} rows ({counts['short'] / n:.0%}) have assistant answers under "
            f"{cleaning.SHORT_ANSWER_CHARS} characters: little to learn, and a habit of terse replies",
            "data.sources", _clean_hint(x, "short"), {"rows": counts["short"]}))
    return out


CHECKS = [
    check_learning_rate, check_epochs, check_max_length, check_lora_targets, check_chat_template,
    check_template_behaviour,
    check_eval_split, check_save_eval_alignment, check_eval_overlap, check_train_duplicates, check_row_quality, check_packing_gain,
    check_padding_free, check_pure_half_full,
]

# The RunConfig sections a warning's setting lies in. (Which wizard step shows it is the TUI's
# business: the step whose fields edit that setting, tui/steps/base.py ``Step.edits``.)
SECTIONS = ("model", "data", "template", "method", "training")
