"""Export a preset to a config that ``trl sft --config OUT.yaml`` runs as it is.

A preset must not lock anyone in. The exported YAML holds only keys TRL's ``sft`` script
knows (``ScriptArguments``, ``SFTConfig``, ``ModelConfig``, ``DatasetMixtureConfig``): it
rejects unknown keys, and every key is checked against those dataclasses before writing.

The data the wizard trains on is written next to the YAML (``OUT.data/train.jsonl`` and
``test.jsonl``), already converted, split and filtered exactly as a wizard run does it, so
``trl sft`` trains on the same rows. Two forms:

- ``messages``: canonical rows (messages / prompt-completion / text) that TRL renders and
  masks itself. Chosen when TRL's own masking equals ours: the chat template has
  ``{% generation %}`` markers (written next to the YAML as ``chat_template_path`` when it is
  not the tokenizer's own) and no row carries per-message weights.
- ``tokens``: ``input_ids`` + ``assistant_masks`` made by the wizard's encoder, which TRL takes
  as they are. Chosen when TRL cannot express our masking (a template without markers whose
  assistant turns the wizard infers, per-message weights, mixed kinds of rows); exact, but tied
  to this model's tokenizer.

The YAML starts with a comment header saying what was resolved for this machine and what
differs from a wizard run. Heavy imports (trl, datasets, torch) stay inside functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig, resolved_dtype
from .errors import UserError
from .paths import unwritable_folder

DATA_MODES = ("auto", "messages", "tokens")
TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Set by the wizard's runner for its own process; harmless but meaningless for `trl sft`.
RUNNER_ONLY = {"disable_tqdm"}


class ExportError(UserError):
    """A preset that cannot be exported as asked. One sentence."""


@dataclass
class TrlExport:
    """What ``export_trl`` wrote, for the CLI's ``--json`` and the TUI."""

    config_path: Path
    data_dir: Path | None
    data_mode: str  # messages | tokens
    train_rows: int
    eval_rows: int
    chat_template_path: Path | None
    config: dict[str, Any]
    differences: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_path": str(self.config_path),
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "data_mode": self.data_mode,
            "train_rows": self.train_rows,
            "eval_rows": self.eval_rows,
            "chat_template_path": str(self.chat_template_path) if self.chat_template_path else None,
            "config": self.config,
            "differences": self.differences,
            "resolved": self.resolved,
            "command": self.command,
        }


def trl_sft_keys() -> set[str]:
    """Every key ``trl sft --config`` accepts (the fields of the dataclasses its parser reads)."""
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, SFTConfig

    keys: set[str] = set()
    for cls in (ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig):
        keys.update(f.name for f in dataclasses.fields(cls))
    return keys


# --------------------------------------------------------------------------- data

def _with_system_prompt(example: dict, system_prompt: str | None) -> dict:
    """The system prompt the wizard adds to conversations that have none, made explicit (the rule
    training renders by: ``masks.with_system_prompt``)."""
    from .masks import with_system_prompt

    if not system_prompt:
        return example
    if "messages" in example:
        return {**example, "messages": with_system_prompt(example["messages"], system_prompt)}
    if isinstance(example.get("prompt"), list):
        return {**example, "prompt": with_system_prompt(example["prompt"], system_prompt)}
    return example


def _kind(example: dict) -> str:
    from .masks import TemplateError, example_kind

    try:
        return example_kind(example)
    except TemplateError:
        return "unknown"


def _loss_flags(cfg: RunConfig, kind: str) -> tuple[bool, bool]:
    """(assistant_only_loss, completion_only_loss) as the wizard's trainer resolves them for rows of
    ``kind`` (``masks.loss_flags``, the rule training masks by): what TRL must be told to mask alike."""
    from .masks import loss_flags

    return loss_flags(kind, cfg.training.assistant_only_loss, cfg.training.completion_only_loss)


def _has_markers(template: str | None) -> bool:
    if not template:
        return False
    from trl.chat_template_utils import has_generation_markers

    return bool(has_generation_markers(template))


def _weighted(examples: list[dict]) -> bool:
    for ex in examples:
        for key in ("messages", "prompt", "completion"):
            value = ex.get(key)
            if isinstance(value, list) and any(isinstance(m, dict) and m.get("weight") == 0 for m in value):
                return True
    return False


def _tokens_reasons(cfg: RunConfig, examples: list[dict], template_text: str | None) -> list[str]:
    """Why TRL's own rendering and masking would differ from the wizard's (empty: it would not)."""
    kinds = {_kind(ex) for ex in examples}
    if len(kinds) > 1:
        return [f"the data mixes kinds of rows ({', '.join(sorted(kinds))}), which one TRL dataset cannot hold"]
    (kind,) = kinds
    reasons = []
    if _weighted(examples):
        reasons.append("some assistant messages carry weight 0 (not trained), which TRL's config cannot express")
    aol, _ = _loss_flags(cfg, kind)
    if aol and kind in ("messages", "conversational_prompt_completion") and not _has_markers(template_text):
        reasons.append(
            "the chat template has no {% generation %} markers, so TRL's assistant_only_loss cannot find the "
            "assistant turns the wizard infers (template-agnostic masks)"
        )
    return reasons


def _write_jsonl(path: Path, rows) -> int:
    n = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def _token_rows(dataset) -> list[dict]:
    return [{"input_ids": list(r["input_ids"]), "assistant_masks": list(r["assistant_masks"])} for r in dataset]


# --------------------------------------------------------------------------- config

def _model_keys(cfg: RunConfig, dtype: str, attn: str, resolved) -> tuple[dict[str, Any], list[str]]:
    notes = []
    keys: dict[str, Any] = {}
    if resolved.source in ("builtin", "local"):
        keys["model_name_or_path"] = str(Path(resolved.path).resolve())
        if resolved.source == "builtin":
            notes.append(f"model: {cfg.model.id} is referenced by its local folder {resolved.path}")
    else:
        keys["model_name_or_path"] = cfg.model.id
        if cfg.model.revision:
            keys["model_revision"] = cfg.model.revision
    keys["dtype"] = TORCH_DTYPE_NAMES[dtype]
    keys["attn_implementation"] = attn
    m = cfg.method
    if m.type in ("lora", "qlora"):
        targets = m.lora_target_modules
        keys.update(
            use_peft=True,
            lora_r=m.lora_r,
            lora_alpha=m.lora_alpha,
            lora_dropout=m.lora_dropout,
            lora_target_modules=[targets] if isinstance(targets, str) else list(targets),
            use_dora=m.use_dora,
        )
    if m.type == "qlora":
        keys.update(
            load_in_4bit=True,
            bnb_4bit_quant_type=m.bnb_4bit_quant_type,
            use_bnb_nested_quant=m.bnb_4bit_use_double_quant,
            bnb_4bit_quant_storage=TORCH_DTYPE_NAMES[dtype],
        )
    return keys, notes


def _embedding_modules(model_path: Path, trust_remote_code: bool) -> list[str]:
    """Leaf names of the input/output embeddings, from the config alone (meta device), as the runner names them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .runner import _embedding_module_names

    config = AutoConfig.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return _embedding_module_names(model)


def _header(cfg: RunConfig, source: str | None, result: TrlExport) -> str:
    lines = [
        "# trl sft config exported by sft-wizard" + (f" from {source}" if source else ""),
        f"# Run it as is:  trl sft --config {result.config_path}",
    ]
    if result.resolved:
        lines.append("# Resolved at export time:")
        lines += [f"#   - {r}" for r in result.resolved]
    lines.append("# Differences from `sft-wizard run`:" if result.differences else "# Differences: none")
    lines += [f"#   - {d}" for d in result.differences]
    return "\n".join(lines) + "\n"


def build_trl_export(cfg: RunConfig, out_yaml: str | os.PathLike, *, data_mode: str = "auto",
                     source: str | None = None) -> TrlExport:
    """Write ``out_yaml`` (+ its data folder and chat template) and say what was written."""
    from . import templates
    from .distributed import is_distributed
    from .models import load_tokenizer, resolve_model
    from .runner import Environment, attn_implementation, resolve_data, sft_config_kwargs

    if data_mode not in DATA_MODES:
        raise ExportError(f"--data: must be one of {', '.join(DATA_MODES)}, got {data_mode!r}")
    out = Path(out_yaml).expanduser().absolute()
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise ExportError(f"{out_yaml}: the exported config must be a .yaml file")
    base = out.with_suffix("")
    data_dir = Path(f"{base}.data")
    output_dir = Path(f"{base}.output")
    if out.is_dir():
        raise ExportError(f"{out_yaml}: is a folder; give the path of the .yaml file to write")
    if why := unwritable_folder(out.parent) or unwritable_folder(data_dir):
        raise ExportError(f"{out_yaml}: cannot write the export there: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)

    env = Environment.detect()
    resolved_model = resolve_model(cfg.model.id, cfg.model.revision)  # config + tokenizer are enough
    tokenizer = load_tokenizer(resolved_model.path, trust_remote_code=cfg.model.trust_remote_code)
    template = templates.resolve_template(tokenizer, cfg.template)
    template_text = getattr(template, "template", None)
    added_tokens = templates.prepare_tokenizer(tokenizer, template)  # ChatML's markers on a base model
    train, evals, _ = resolve_data(cfg)
    sys_prompt = cfg.template.system_prompt
    train = [_with_system_prompt(ex, sys_prompt) for ex in train]
    evals = [_with_system_prompt(ex, sys_prompt) for ex in evals]

    reasons = _tokens_reasons(cfg, train + evals, template_text)
    if data_mode == "messages" and reasons:
        raise ExportError(f"--data messages: TRL would train other tokens than the wizard: {reasons[0]}")
    mode = data_mode if data_mode != "auto" else ("tokens" if reasons else "messages")

    differences: list[str] = [
        "trl sft writes no events.jsonl: the wizard's live monitor, runs list, graceful stop and resume "
        "do not see this training",
    ]
    resolved_notes: list[str] = []
    dtype = resolved_dtype(cfg, env.bf16_supported, env.cuda)
    if cfg.model.dtype == "auto":
        resolved_notes.append(f"model.dtype auto -> {TORCH_DTYPE_NAMES[dtype]} on this machine "
                              f"({'CUDA' if env.cuda else 'CPU'}); edit dtype/bf16/fp16 for another machine")
    if not env.cuda:
        resolved_notes.append("use_cpu: true (no CUDA here); remove it to train on a GPU")

    # ---- the data, next to the YAML
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("train.jsonl", "test.jsonl"):
        (data_dir / stale).unlink(missing_ok=True)
    chat_template_path = None
    mask_keys: dict[str, Any]
    if mode == "tokens":
        train_ds = templates.build_dataset(tokenizer, train, template, cfg)
        n_train = _write_jsonl(data_dir / "train.jsonl", _token_rows(train_ds))
        n_eval = 0
        if evals:
            eval_ds = templates.build_dataset(tokenizer, evals, template, cfg)
            n_eval = _write_jsonl(data_dir / "test.jsonl", _token_rows(eval_ds))
        mask_keys = dict(templates.sft_mask_kwargs(cfg, template))
        differences.append(
            "the dataset is pre-tokenized (input_ids + assistant_masks, made by the wizard's encoder) because "
            + "; and ".join(reasons or ["--data tokens was asked"])
            + ": TRL trains exactly the wizard's tokens, but the data is tied to this model's tokenizer"
        )
    else:
        n_train = _write_jsonl(data_dir / "train.jsonl", train)
        n_eval = _write_jsonl(data_dir / "test.jsonl", evals) if evals else 0
        kind = _kind(train[0])
        aol, col = _loss_flags(cfg, kind)
        mask_keys = {"assistant_only_loss": aol, "completion_only_loss": col, "truncation_mode": "keep_start"}
        if "eos_token" in templates.sft_mask_kwargs(cfg, template):
            mask_keys["eos_token"] = templates.sft_mask_kwargs(cfg, template)["eos_token"]
        own = getattr(tokenizer, "chat_template", None)
        if added_tokens:
            pass  # the tokenizer folder below carries the template
        elif template_text and template_text != own and kind in ("messages", "conversational_prompt_completion"):
            chat_template_path = Path(f"{base}.chat_template.jinja")
            chat_template_path.write_text(template_text, encoding="utf-8")
            resolved_notes.append(f"chat template ({getattr(template, 'source', 'resolved')}) written to "
                                  f"{chat_template_path.name} and set as chat_template_path")
        if sys_prompt:
            resolved_notes.append("template.system_prompt is written into the rows that had no system message")
    modules_to_save: list[str] = []
    if added_tokens:
        # TRL's clone_chat_template (chat_template_path = a tokenizer folder) adds the same tokens in the
        # same order and grows the embeddings, as the wizard's runner does.
        tokenizer_dir = Path(f"{base}.tokenizer")
        if template_text:
            tokenizer.chat_template = template_text
        eos = mask_keys.pop("eos_token", None)  # TRL checks eos_token before it clones: the clone sets it
        if eos:
            tokenizer.eos_token = eos
        tokenizer.save_pretrained(str(tokenizer_dir))
        chat_template_path = tokenizer_dir
        resolved_notes.append(f"the template adds {', '.join(added_tokens)} as tokens: the tokenizer with them is "
                              f"written to {tokenizer_dir.name}/ and set as chat_template_path (TRL grows the "
                              "embeddings when it clones it)")
        if cfg.method.type != "full":
            modules_to_save = _embedding_modules(resolved_model.path, cfg.model.trust_remote_code)
            differences.append("new token rows: TRL also marks them trainable through trainable_token_indices on "
                               "top of the fully trained embeddings the wizard uses (lora_modules_to_save)")
    if cfg.data.eval_source is None and cfg.data.eval_fraction > 0:
        resolved_notes.append(f"data.eval_fraction {cfg.data.eval_fraction}: the held-out rows were split off "
                              f"with seed {cfg.training.seed}, as a wizard run splits them")

    # ---- the config
    training = sft_config_kwargs(cfg, env, output_dir)
    for key in RUNNER_ONLY:
        training.pop(key, None)
    training.update(mask_keys)
    if cfg.training.use_liger_kernel:
        # The wizard applies Liger's layer kernels itself; `trl sft` has only this (deprecated in
        # TRL 1.16, removed in 2) switch for them.
        training["use_liger_kernel"] = True
    if not evals:
        training["eval_strategy"] = "no"
        for key in ("eval_steps", "metric_for_best_model", "greater_is_better", "load_best_model_at_end"):
            training.pop(key, None)
    if cfg.model.trust_remote_code:
        training["trust_remote_code"] = True
    if chat_template_path is not None:
        training["chat_template_path"] = str(chat_template_path)
    model_keys, model_notes = _model_keys(cfg, dtype, attn_implementation(cfg, env), resolved_model)
    if modules_to_save:
        model_keys["lora_modules_to_save"] = modules_to_save
    resolved_notes += model_notes
    if cfg.method.type == "qlora" and cfg.method.bnb_4bit_compute_dtype != dtype:
        differences.append(f"QLoRA compute dtype: trl sft computes in the model dtype ({TORCH_DTYPE_NAMES[dtype]}), "
                           f"the preset asks for {TORCH_DTYPE_NAMES[cfg.method.bnb_4bit_compute_dtype]}")
    script_keys: dict[str, Any] = {
        "dataset_name": str(data_dir),
        "dataset_train_split": "train",
        "dataset_test_split": "test",
    }
    config: dict[str, Any] = {**model_keys, **script_keys, **training}
    if is_distributed(cfg):
        differences.append(
            "multi-GPU: trl sft reads accelerate's settings from its command line, not this file; generate them "
            "with `sft-wizard accelerate PRESET --config-out acc.yaml` and run "
            "`trl sft --config THIS.yaml --accelerate_config acc.yaml`"
        )

    unknown = sorted(set(config) - trl_sft_keys())
    if unknown:  # never ship a file trl rejects
        raise ExportError(f"internal: keys {', '.join(unknown)} are not trl sft options; please report this")

    result = TrlExport(
        config_path=out, data_dir=data_dir, data_mode=mode, train_rows=n_train, eval_rows=n_eval,
        chat_template_path=chat_template_path, config=config, differences=differences,
        resolved=resolved_notes, command=["trl", "sft", "--config", str(out)],
    )
    text = _header(cfg, source, result) + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return result


def export_trl(cfg: RunConfig, out_yaml: str | os.PathLike, *, data_mode: str = "auto",
               source: str | None = None) -> Path:
    """Write a ``trl sft --config`` YAML for ``cfg`` (and its data next to it); return its path."""
    return build_trl_export(cfg, out_yaml, data_mode=data_mode, source=source).config_path
