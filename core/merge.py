"""Merge a run's LoRA adapter into its base model and save a standalone model.

The base is loaded again, unquantized, for the purpose: a LoRA run's base in its training
dtype; a QLoRA run's base in 16 bits (``bnb_4bit_compute_dtype``), never the 4-bit weights it
trained against, whose rounding a merged checkpoint would bake in. The merged folder holds
the model, the tokenizer, the chat template the run trained with (so chat and inference
render prompts as training did) and a generation config that stops at end-of-turn.

Heavy imports (torch, transformers, peft) stay inside functions.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, load_preset, resolved_dtype
from .errors import UserError

MERGED_DIR = "merged"
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class MergeError(UserError):
    """A run that cannot be merged. One sentence."""


@dataclass
class RunArtifacts:
    """Where a run's pieces are: its directory, config and final model or adapter."""

    run_dir: Path
    cfg: RunConfig
    final_dir: Path
    is_adapter: bool

    @property
    def merged_dir(self) -> Path:
        return self.run_dir / MERGED_DIR


def find_run_dir(run: str | os.PathLike) -> Path:
    """A run directory from its path or id (through the runs registry)."""
    from .rundir import RunDir

    path = Path(str(run)).expanduser()
    if path.is_dir() and RunDir(path).config.exists():
        return path.resolve()
    from . import runs

    try:  # ids, unique prefixes, `last`
        return runs.find_run(str(run))
    except runs.RunsError as exc:
        raise MergeError(str(exc).splitlines()[0]) from None


def run_artifacts(run: str | os.PathLike) -> RunArtifacts:
    from .rundir import RunDir

    run_dir = find_run_dir(run)
    cfg = load_preset(RunDir(run_dir).config)
    final = RunDir(run_dir).final
    if not (final / "adapter_config.json").exists() and not (final / "config.json").exists():
        raise MergeError(f"{final}: the run has no final model yet (it is still running, stopped or failed)")
    return RunArtifacts(run_dir, cfg, final, (final / "adapter_config.json").exists())


def merge_dtype(cfg: RunConfig, cuda: bool, bf16_supported: bool) -> str:
    """The dtype the base is loaded in for merging (``bf16`` / ``fp16`` / ``fp32``)."""
    if cfg.method.type == "qlora":
        compute = cfg.method.bnb_4bit_compute_dtype
        return compute if compute in ("bf16", "fp16") else "bf16"
    return resolved_dtype(cfg, bf16_supported, cuda)


def training_template(tokenizer, cfg: RunConfig) -> str | None:
    """The chat template the run trained with (resolved from its config, as the runner does)."""
    try:
        from . import templates

        resolved = templates.resolve_template(tokenizer, cfg.template)
        return getattr(resolved, "template", None) or getattr(tokenizer, "chat_template", None)
    except Exception:  # a template problem would have stopped training; keep the tokenizer's
        return getattr(tokenizer, "chat_template", None)


def set_stop_tokens(model, tokenizer, template: str | None = None) -> list[int]:
    """Make generation stop at EOS and at the template's end-of-turn token (``stop_tokens``, the
    rule chat and the report stop by); return the ids."""
    from .stop_tokens import stop_token_ids

    ids = stop_token_ids(tokenizer, template)
    gen = model.generation_config
    gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    return ids


def load_adapter_model(art: RunArtifacts, dtype: str | None = None):
    """(base + adapter as a PeftModel, unmerged, tokenizer): the adapter can be switched off
    (``disable_adapter``) to answer as the base, with one copy of the weights in memory."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .models import load_tokenizer, resolve_model

    if not art.is_adapter:
        raise MergeError(f"{art.run_dir.name}: a {art.cfg.method.type} fine-tune saves a full model, there is "
                         f"no adapter to merge; use {art.final_dir} as it is")
    from .hardware import supports_bf16, torch_device_capability

    cc = torch_device_capability()
    dtype = dtype or merge_dtype(art.cfg, cc is not None, cc is not None and supports_bf16(*cc))
    base_path = resolve_model(art.cfg.model.id, art.cfg.model.revision, weights=True).path
    base = AutoModelForCausalLM.from_pretrained(
        str(base_path), dtype=getattr(torch, TORCH_DTYPES[dtype]),
        trust_remote_code=art.cfg.model.trust_remote_code,
    )
    tokenizer = load_tokenizer(art.final_dir if (art.final_dir / "tokenizer_config.json").exists() else base_path,
                               trust_remote_code=art.cfg.model.trust_remote_code)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        # the template added tokens (ChatML on a base model): grow as the runner grew them for training
        base.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return PeftModel.from_pretrained(base, str(art.final_dir)), tokenizer


def load_merged(art: RunArtifacts, dtype: str | None = None):
    """(merged model, tokenizer) in memory: base + adapter, merged (and unloaded)."""
    peft_model, tokenizer = load_adapter_model(art, dtype)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, tokenizer


def merge_run(run: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, dtype: str | None = None) -> Path:
    """Merge the run's LoRA/QLoRA adapter into a 16-bit (or the training dtype's) base and save
    model + tokenizer + training chat template to ``RUN_DIR/merged`` (or ``out_dir``)."""
    art = run_artifacts(run)
    merged, tokenizer = load_merged(art, dtype)
    template = training_template(tokenizer, art.cfg)
    if template:
        tokenizer.chat_template = template
    set_stop_tokens(merged, tokenizer, template)
    target = Path(out_dir) if out_dir else art.merged_dir
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "sft_wizard_merge.json").write_text(json.dumps(_provenance(art), indent=2), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _provenance(art: RunArtifacts) -> dict[str, Any]:
    return {"run": art.run_dir.name, "base_model": art.cfg.model.id, "base_revision": art.cfg.model.revision,
            "method": art.cfg.method.type, "adapter": str(art.final_dir)}
