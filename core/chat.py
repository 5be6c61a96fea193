"""Talk to a trained model with the template it trained with; compare it with its base.

``load_chat_model`` takes a run (id or directory) or a model folder. For a run, the merged
model when ``sft-wizard merge`` made one, else the base with the adapter merged in memory, else
the full fine-tune; the chat template is the one the run trained with. ``generate`` answers one
conversation; ``compare`` answers held-out eval prompts with the base and the tuned model side
by side; ``stop_check`` flags answers that never emitted EOS / the end-of-turn token — a model
that never learned to stop.

Plain functions for the CLI and the TUI's chat pane. Heavy imports inside functions. The pieces
report and the samples share live lower down: answering (``chat_model.ChatModel``), the held-out
prompts (``held_out``) and what ends a turn (``stop_tokens``); they are re-exported here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .chat_model import ChatError, ChatModel, Reply
from .config import RunConfig
from .held_out import HeldOutPrompt, held_out_prompts
from .stop_tokens import end_of_turn_token, end_of_turn_trained, stop_token_ids

__all__ = ["ChatError", "ChatModel", "Comparison", "Prompt", "Reply", "StopReport", "compare", "end_of_turn_token",
           "eval_prompts", "load_chat_model", "load_compare_pair", "load_path_model", "prompts_from_examples",
           "stop_check", "stop_token_ids"]

Prompt = HeldOutPrompt  # the name chat's callers know: a held-out prompt (core/held_out.py builds them)


def _device_dtype():
    import torch

    from .hardware import supports_bf16, torch_device_capability

    cc = torch_device_capability()
    if cc is not None:
        return "cuda", (torch.bfloat16 if supports_bf16(*cc) else torch.float16)
    return "cpu", torch.float32


def _finish(model, tokenizer, template: str | None, description: str) -> ChatModel:
    device, _ = _device_dtype()
    model.to(device)
    model.eval()
    return ChatModel(model, tokenizer, template, description, stop_token_ids(tokenizer, template, model))


def load_path_model(path: str | os.PathLike, *, trust_remote_code: bool = False,
                    template: str | None = None) -> ChatModel:
    """A model folder (a merged run, a full fine-tune, any local model) with its own template."""
    from transformers import AutoModelForCausalLM

    from .models import load_tokenizer

    path = Path(path).expanduser()
    if not (path / "config.json").exists():
        raise ChatError(f"{path}: not a model folder (no config.json) and not a run id or directory")
    _, dtype = _device_dtype()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    return _finish(model, tokenizer, template or tokenizer.chat_template, str(path))


def _is_run(target: str | os.PathLike) -> bool:
    from .rundir import RunDir

    p = Path(str(target)).expanduser()
    if p.is_dir():
        return RunDir(p).config.exists()
    return True  # not a folder: a run id


def load_chat_model(target: str | os.PathLike, *, base: bool = False) -> ChatModel:
    """The tuned model of a run (``base=True``: its base model) or a model folder, ready to chat."""
    from transformers import AutoModelForCausalLM

    from . import merge
    from .models import load_tokenizer, resolve_model

    if not _is_run(target):
        if base:
            raise ChatError(f"{target}: --compare needs a run (its base model is in the run's config)")
        return load_path_model(target)
    try:
        art = merge.run_artifacts(target)
    except merge.MergeError as exc:
        raise ChatError(str(exc)) from None
    cfg = art.cfg
    trust = cfg.model.trust_remote_code
    _, dtype = _device_dtype()
    if base:
        base_path = resolve_model(cfg.model.id, cfg.model.revision, weights=True).path
        tokenizer = load_tokenizer(base_path, trust_remote_code=trust)
        template = merge.training_template(tokenizer, cfg)
        model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype, trust_remote_code=trust)
        return _finish(model, tokenizer, template, f"{cfg.model.id} (base of {art.run_dir.name})")
    if (art.merged_dir / "config.json").exists():
        chat = load_path_model(art.merged_dir, trust_remote_code=trust)
        chat.description = f"{art.run_dir.name} (merged)"
        return chat
    if art.is_adapter:
        model, tokenizer = merge.load_merged(art, dtype=None if dtype is None else _dtype_name(dtype))
        how = "adapter merged in memory"
    else:
        model = AutoModelForCausalLM.from_pretrained(str(art.final_dir), dtype=dtype, trust_remote_code=trust)
        tokenizer = load_tokenizer(art.final_dir, trust_remote_code=trust)
        how = "full fine-tune"
    template = merge.training_template(tokenizer, cfg)
    return _finish(model, tokenizer, template, f"{art.run_dir.name} ({how})")


def load_compare_pair(target: str | os.PathLike) -> tuple[ChatModel, ChatModel]:
    """(base, tuned) for ``chat --compare``. A LoRA/QLoRA run loads its base once with the adapter
    on top and answers as the base with the adapter switched off (peft's ``disable_adapter``):
    one copy of the weights, not two (an 8B model in bf16 is 16 GB per copy). A full fine-tune
    has no base inside it, so both are loaded."""
    from . import merge
    from .models import load_tokenizer, resolve_model

    if not _is_run(target):
        raise ChatError(f"{target}: --compare needs a run (its base model is in the run's config)")
    try:
        art = merge.run_artifacts(target)
    except merge.MergeError as exc:
        raise ChatError(str(exc)) from None
    if not art.is_adapter:
        return load_chat_model(target, base=True), load_chat_model(target)
    cfg = art.cfg
    _, dtype = _device_dtype()
    model, tokenizer = merge.load_adapter_model(art, _dtype_name(dtype))
    tuned = _finish(model, tokenizer, merge.training_template(tokenizer, cfg), f"{art.run_dir.name} (adapter)")
    base_path = resolve_model(cfg.model.id, cfg.model.revision, weights=True).path
    base_tokenizer = load_tokenizer(base_path, trust_remote_code=cfg.model.trust_remote_code)
    base = ChatModel(model, base_tokenizer, merge.training_template(base_tokenizer, cfg),
                     f"{cfg.model.id} (base of {art.run_dir.name}, adapter off)",
                     stop_token_ids(base_tokenizer, merge.training_template(base_tokenizer, cfg), model),
                     adapter_off=True)
    return base, tuned


def _dtype_name(dtype) -> str:
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[str(dtype).replace("torch.", "")]


# --------------------------------------------------------------------------- eval prompts and comparison

def eval_prompts(cfg: RunConfig, limit: int = 5) -> list[Prompt]:
    """Held-out conversations of the run's eval data, cut before their last assistant answer."""
    from .runner import resolve_data

    _, evals, _ = resolve_data(cfg)
    if not evals:
        raise ChatError("the run has no held-out eval data (data.eval_source or data.eval_fraction) to compare on")
    prompts = prompts_from_examples(evals, cfg.template.system_prompt, limit)
    if not prompts:
        raise ChatError("the run's eval data holds no conversation ending in an assistant answer to compare on")
    return prompts


def prompts_from_examples(evals: list[dict], system: str | None, limit: int) -> list[Prompt]:
    """Up to ``limit`` conversations of ``evals`` cut before their last assistant answer, with the
    run's system prompt added as training adds it (``held_out.held_out_prompts``)."""
    return held_out_prompts(evals, system, limit, conversations_only=True)


@dataclass
class StopReport:
    total: int
    stopped: int
    never_stopped: list[int]  # indexes of answers that ran to max_new_tokens
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stop_check(replies: list[Reply], chat: ChatModel | None = None, max_new_tokens: int | None = None) -> StopReport:
    """Flag answers that never emitted EOS / end-of-turn (the model did not learn to stop)."""
    never = [i for i, r in enumerate(replies) if not r.stopped]
    total = len(replies)
    if not never:
        return StopReport(total, total, [], True, f"all {total} answers ended with an end-of-turn token")
    tokens = ", ".join(chat.tokenizer.convert_ids_to_tokens(chat.stop_ids)) if chat and chat.stop_ids else "EOS"
    limit = f" within {max_new_tokens} new tokens" if max_new_tokens else ""
    hint = _stop_hint(chat)
    message = (f"{len(never)} of {total} answers never emitted an end-of-turn token ({tokens}){limit}: "
               f"the model may not have learned to stop{hint}")
    return StopReport(total, total - len(never), never, False, message)


def _stop_hint(chat: ChatModel | None) -> str:
    if chat is None or not chat.template:
        return ""
    if end_of_turn_trained(chat.tokenizer, chat.template) is False:
        return " — this template leaves the end-of-turn token outside the assistant mask, so it is never trained"
    return " (train longer, or check that the assistant mask covers the end-of-turn token)"


@dataclass
class Comparison:
    prompt: list[dict]
    reference: str | None
    base: Reply
    tuned: Reply

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "reference": self.reference,
                "base": self.base.to_dict(), "tuned": self.tuned.to_dict()}


def compare(base: ChatModel, tuned: ChatModel, prompts: list[Prompt], *, max_new_tokens: int = 128) -> list[Comparison]:
    """Answer each held-out prompt with both models (greedy), side by side."""
    return [
        Comparison(p.messages, p.reference,
                   base.generate(p.messages, max_new_tokens=max_new_tokens),
                   tuned.generate(p.messages, max_new_tokens=max_new_tokens))
        for p in prompts
    ]
