"""Talk to a trained model with the template it trained with; compare it with its base.

``load_chat_model`` takes a run (id or directory) or a model folder. For a run, the merged
model when ``sft-wizard merge`` made one, else the base with the adapter merged in memory, else
the full fine-tune; the chat template is the one the run trained with. ``generate`` answers one
conversation; ``compare`` answers held-out eval prompts with the base and the tuned model side
by side; ``stop_check`` flags answers that never emitted EOS / the end-of-turn token — a model
that never learned to stop.

Plain functions for the CLI and the TUI's chat pane. Heavy imports inside functions.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import UserError
from .masks import RENDER_LOCK

_PROBE = "\ue000sftw-probe\ue000"


class ChatError(UserError):
    """A model or run that cannot be chatted with as asked. One sentence."""


# --------------------------------------------------------------------------- stop tokens

def end_of_turn_token(tokenizer, template: str | None = None) -> str | None:
    """The special token the template closes an assistant turn with (None if there is none)."""
    template = template or getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    try:
        with RENDER_LOCK:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}],
                chat_template=template, tokenize=False,
            )
    except Exception:
        return None
    at = text.find(_PROBE)
    if at < 0:
        return None
    suffix = text[at + len(_PROBE):].lstrip(" ")
    if not suffix:
        return None
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or []) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids[0] in special else None


def stop_token_ids(tokenizer, template: str | None = None, model=None) -> list[int]:
    """Ids that end an answer: EOS, the template's end-of-turn token, the model's generation EOS."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    eot = end_of_turn_token(tokenizer, template)
    if eot is not None:
        ids.append(int(tokenizer.convert_tokens_to_ids(eot)))
    if model is not None:
        gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids += [gen] if isinstance(gen, int) else list(gen or [])
    return list(dict.fromkeys(ids))


# --------------------------------------------------------------------------- the model

@dataclass
class Reply:
    text: str
    new_tokens: int
    stopped: bool  # an EOS / end-of-turn token was generated
    stop_token: str | None
    token_ids: list[int] = field(default_factory=list, repr=False)  # every generated id, stop token included

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("token_ids")
        return d


@dataclass
class ChatModel:
    model: Any
    tokenizer: Any
    template: str | None
    description: str
    stop_ids: list[int] = field(default_factory=list)
    adapter_off: bool = False  # a PeftModel answering as its base (the adapter switched off per call)

    def generate(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0) -> Reply:
        """Answer ``messages`` (greedy unless ``temperature`` > 0)."""
        import torch

        if not self.template:
            raise ChatError(f"{self.description}: the tokenizer has no chat template, so a conversation cannot "
                            "be rendered")
        with RENDER_LOCK:  # the TUI may be auditing data in another thread
            enc = self.tokenizer.apply_chat_template(
                messages, chat_template=self.template, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt",
            )
        device = next(self.model.parameters()).device
        input_ids = enc["input_ids"].to(device)
        attention = enc.get("attention_mask")
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            eos_token_id=self.stop_ids or None,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else (self.stop_ids[0] if self.stop_ids else None),
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad(), (self.model.disable_adapter() if self.adapter_off else contextlib.nullcontext()):
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention.to(device) if attention is not None else None,
                **kwargs,
            )
        new = out[0][input_ids.shape[1]:].tolist()
        stop_at = next((i for i, t in enumerate(new) if t in self.stop_ids), None)
        answer = new if stop_at is None else new[:stop_at]
        return Reply(
            text=self.tokenizer.decode(answer, skip_special_tokens=True).strip(),
            new_tokens=len(new),
            stopped=stop_at is not None,
            stop_token=self.tokenizer.convert_ids_to_tokens(new[stop_at]) if stop_at is not None else None,
            token_ids=new if stop_at is None else new[:stop_at + 1],
        )


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

@dataclass
class Prompt:
    messages: list[dict]
    reference: str | None

    @property
    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return str(m.get("content"))
        return ""


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
    run's system prompt added as training adds it (the runner samples from these while it trains)."""
    prompts: list[Prompt] = []
    for ex in evals:
        if "messages" in ex:
            msgs = list(ex["messages"])
            last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
            if last is None or last == 0:
                continue
            prompt, reference = msgs[:last], msgs[last].get("content")
        elif isinstance(ex.get("prompt"), list):
            prompt = list(ex["prompt"])
            completion = ex.get("completion") or []
            reference = completion[0].get("content") if completion else None
        else:
            continue
        prompt = [{k: v for k, v in m.items() if k in ("role", "content")} for m in prompt]
        if system and not (prompt and prompt[0].get("role") == "system"):
            prompt = [{"role": "system", "content": system}, *prompt]
        prompts.append(Prompt(prompt, reference))
        if len(prompts) >= limit:
            break
    return prompts


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
    try:
        from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

        if has_generation_markers(chat.template) and not is_chat_template_stop_token_trained(
                chat.tokenizer, chat.template):
            return " — this template leaves the end-of-turn token outside the assistant mask, so it is never trained"
    except Exception:
        return ""
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
