"""Held-out prompts: eval rows cut before their answer, formatted the way training formatted them.

One builder for every place that makes a model answer held-out rows — ``sft-wizard chat
--compare``, the samples taken while a run trains and the after-run ``report`` — so an answer is
generated from the prompt the model was trained on: the conversation up to its last assistant
answer, with ``template.system_prompt`` added as training adds it (``masks.with_system_prompt``:
only when the row has no system message of its own). Plain prompt-completion rows (a text
prompt, no chat template) keep their text as it is, as training tokenizes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .masks import with_system_prompt


@dataclass
class HeldOutPrompt:
    """One held-out prompt and the answer the data gives. ``messages`` for conversations, else
    ``text`` (a plain prompt-completion row's prompt)."""

    messages: list[dict] | None
    reference: str | None
    text: str | None = None

    @property
    def last_user(self) -> str:
        """The last user message (or the plain prompt): how a prompt is named in one line."""
        for m in reversed(self.messages or []):
            if m.get("role") == "user":
                return str(m.get("content"))
        return self.text or ""


def _content(message: dict) -> str | None:
    content = message.get("content")
    return content if content is None or isinstance(content, str) else str(content)


def held_out_prompt(example: dict, system_prompt: str | None) -> HeldOutPrompt | None:
    """``example`` cut before its last assistant answer (None: it has no answer to hold out)."""
    if "messages" in example:
        msgs = list(example["messages"])
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            return None
        prompt, reference = msgs[:last], _content(msgs[last])
    elif isinstance(example.get("prompt"), list):
        prompt = list(example["prompt"])
        answers = [_content(m) for m in example.get("completion") or [] if isinstance(m, dict)]
        reference = " ".join(a for a in answers if a) if answers else None
    elif isinstance(example.get("prompt"), str):
        completion = example.get("completion")
        return HeldOutPrompt(None, completion if isinstance(completion, str) else None, example["prompt"])
    else:
        return None
    prompt = [{k: v for k, v in m.items() if k in ("role", "content")} for m in prompt]
    return HeldOutPrompt(with_system_prompt(prompt, system_prompt), reference)


def held_out_prompts(examples: list[dict], system_prompt: str | None, limit: int | None = None, *,
                     conversations_only: bool = False) -> list[HeldOutPrompt]:
    """Up to ``limit`` held-out prompts of ``examples``, in order (``conversations_only``: rows a
    chat template renders, for callers that answer conversations)."""
    out: list[HeldOutPrompt] = []
    for example in examples:
        if limit is not None and len(out) >= limit:
            break
        prompt = held_out_prompt(example, system_prompt)
        if prompt is None or (conversations_only and prompt.messages is None):
            continue
        out.append(prompt)
    return out


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (so a split ordered by task shows more than one)."""
    if n <= 0 or not items:
        return []
    picked = sorted({round(i * len(items) / n) for i in range(n)} & set(range(len(items))))
    return [items[k] for k in picked]
