"""What ends an assistant turn, for one tokenizer and chat template: the one rule.

Three questions used to be answered three ways (the preview and the audit: "any added token or
EOS"; chat: "EOS or the template's end-of-turn token"; the report: "EOS or the model's generation
EOS"), so a Gemma run could show its end-of-turn as trained in the preview and its answers as "did
not stop" in the report. Every caller now asks here:

- ``stop_token_ids(tokenizer, template, model=None)``: the ids that end an answer — the tokenizer's
  EOS, the token the template closes an assistant turn with (``end_of_turn_token``), and, when a
  model is given, the EOS ids of its generation config (what the model itself declares);
- ``stop_token_trained(...)``: does a row teach the model to stop — is its last trained token
  (whitespace aside) one of those ids? (preview's ``eos_not_trained``, the audit's ``eos_coverage``);
- ``stop_index(new_ids, stop_ids)``: where a generation stopped, or None when it never did
  (chat, the samples taken while training, the report);
- ``end_of_turn_trained(tokenizer, template)``: does a template's ``{% generation %}`` block cover
  its end-of-turn token (chat's hint when a model never stops)?

No heavy imports: the tokenizer is the caller's.
"""

from __future__ import annotations

import re

from .masks import TemplateError, render_chat

_PROBE = "\ue000sftw-probe\ue000"
_MARKERS = re.compile(r"\{%-?\s*generation\s*-?%\}")


def end_of_turn_token(tokenizer, template: str | None = None) -> str | None:
    """The special token the template closes an assistant turn with (None if there is none).

    Found by rendering a one-exchange conversation (as training renders it) and reading the first
    token after the answer; only a special or added token counts (plain text never stops a turn).
    """
    template = template or getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    try:
        text, _ = render_chat(tokenizer, template,
                              [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
    except TemplateError:
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


def end_of_turn_trained(tokenizer, template: str | None) -> bool | None:
    """Whether the template's ``{% generation %}`` block (what carries loss) covers the end-of-turn
    token after an answer; None when it cannot tell: no template, no end-of-turn token, or no
    markers (the wizard then infers each turn, its end-of-turn included)."""
    if not template or not _MARKERS.search(template):
        return None
    eot = end_of_turn_token(tokenizer, template)
    if eot is None:
        return None
    try:
        text, spans = render_chat(tokenizer, template,
                                  [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}],
                                  with_indices=True)
    except TemplateError:
        return None
    if not spans:
        return None
    at = text.find(eot, text.find(_PROBE) + len(_PROBE))
    return at >= 0 and any(start <= at and at + len(eot) <= end for start, end in spans)


def stop_token_ids(tokenizer, template: str | None = None, model=None) -> list[int]:
    """Ids that end an answer: EOS, the template's end-of-turn token, and (given ``model``) the
    EOS ids of the model's generation config. ``template`` defaults to the tokenizer's own."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    eot = end_of_turn_token(tokenizer, template)
    if eot is not None:
        ids.append(int(tokenizer.convert_tokens_to_ids(eot)))
    if model is not None:
        gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids += [int(gen)] if isinstance(gen, int) else [int(i) for i in (gen or [])]
    return list(dict.fromkeys(ids))


class BlankTokens:
    """Whether a token decodes to whitespace only (cached per id: the audit asks millions of times)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        hit = self.cache.get(token_id)
        if hit is None:
            hit = self.cache[token_id] = self.tokenizer.decode([token_id]).strip() == ""
        return hit


def stop_token_trained(ids: list[int], trained: list, stop_ids, blank: BlankTokens) -> bool:
    """The last trained token that is not whitespace ends a turn (is in ``stop_ids``)."""
    stop = stop_ids if isinstance(stop_ids, (set, frozenset)) else set(stop_ids)
    for t in range(min(len(ids), len(trained)) - 1, -1, -1):
        if trained[t] and not blank(ids[t]):
            return ids[t] in stop
    return False


def stop_index(new_ids: list[int], stop_ids) -> int | None:
    """Index of the first stop token in a generation's new ids; None: it never stopped."""
    stop = stop_ids if isinstance(stop_ids, (set, frozenset)) else set(stop_ids)
    return next((i for i, t in enumerate(new_ids) if t in stop), None)
