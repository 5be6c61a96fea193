"""A loaded model that answers: render with the template it trained with, generate greedily (or
sampled), stop where ``stop_tokens`` says a turn ends.

The one generation path of chat (``core/chat.py``), the samples taken while a run trains
(``core/samples.py``) and the after-run report (``core/report.py``). Loading models is the
callers' business; torch is imported inside ``generate``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .masks import RENDER_LOCK
from .stop_tokens import stop_index


class ChatError(UserError):
    """A model or run that cannot be chatted with as asked. One sentence."""


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
    stop_ids: list[int] = field(default_factory=list)  # stop_tokens.stop_token_ids(tokenizer, template, model)
    adapter_off: bool = False  # a PeftModel answering as its base (the adapter switched off per call)

    def generate(self, messages: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0) -> Reply:
        """Answer ``messages`` (greedy unless ``temperature`` > 0)."""
        if not self.template:
            raise ChatError(f"{self.description}: the tokenizer has no chat template, so a conversation cannot "
                            "be rendered")
        with RENDER_LOCK:  # the TUI may be auditing data in another thread
            enc = self.tokenizer.apply_chat_template(
                messages, chat_template=self.template, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt",
            )
        return self._generate(enc["input_ids"], enc.get("attention_mask"), max_new_tokens, temperature, top_p)

    def complete(self, text: str, *, max_new_tokens: int = 128) -> Reply:
        """Continue a plain prompt (a prompt-completion row without a chat template), greedily,
        tokenized as training tokenizes it (with the tokenizer's special tokens)."""
        enc = self.tokenizer(text, return_tensors="pt")
        return self._generate(enc["input_ids"], enc.get("attention_mask"), max_new_tokens, 0.0, 1.0)

    def _generate(self, input_ids, attention, max_new_tokens: int, temperature: float, top_p: float) -> Reply:
        import torch

        device = next(self.model.parameters()).device
        input_ids = input_ids.to(device)
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
                attention_mask=attention.to(device) if attention is not None else torch.ones_like(input_ids),
                **kwargs,
            )
        new = out[0][input_ids.shape[1]:].tolist()
        stop_at = stop_index(new, self.stop_ids)
        answer = new if stop_at is None else new[:stop_at]
        return Reply(
            text=self.tokenizer.decode(answer, skip_special_tokens=True).strip(),
            new_tokens=len(new),
            stopped=stop_at is not None,
            stop_token=self.tokenizer.convert_ids_to_tokens(new[stop_at]) if stop_at is not None else None,
            token_ids=new if stop_at is None else new[:stop_at + 1],
        )
