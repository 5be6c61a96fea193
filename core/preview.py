"""The preview: one row as it will be trained, token by token, with the problems it shows.

Tokens and masks come from ``templates.encode_examples`` — the function ``build_dataset`` uses
for the trainer — and then get what SFTTrainer does to them afterwards: truncation at
``max_length`` (keeping the start), the first token of every sequence never carries loss, and a
row left with no trained token is dropped when not packing. So ``trained`` is exactly
``labels != -100`` in the batches the trainer sees. Model weights are never loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .findings import Severity, finding_dict
from .masks import TemplateError, example_kind, loss_flags
from .stop_tokens import BlankTokens, stop_token_ids, stop_token_trained

_EMPTY_THINK = re.compile(r"<think>\s*</think>")


@dataclass
class Preview:
    row: int
    kind: str  # messages | prompt_completion | conversational_prompt_completion | text
    text: str  # the row as tokenized (ids decoded: the rendering plus any BOS the tokenizer adds)
    tokens: list[dict]  # {id, text, trained} (+ "truncated": true past max_length)
    template_source: str
    template: dict
    problems: list[dict]
    max_length: int | None
    assistant_only_loss: bool
    completion_only_loss: bool
    dropped_by_trainer: bool = False
    counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "kind": self.kind,
            "text": self.text,
            "tokens": self.tokens,
            "template_source": self.template_source,
            "template_reason": self.template.get("reason"),
            "template": self.template,
            "problems": self.problems,
            "counts": self.counts,
            "max_length": self.max_length,
            "assistant_only_loss": self.assistant_only_loss,
            "completion_only_loss": self.completion_only_loss,
            "dropped_by_trainer": self.dropped_by_trainer,
        }

    @property
    def trained_flags(self) -> list[bool]:
        """Flags of the tokens the trainer keeps (after truncation)."""
        return [t["trained"] for t in self.tokens if not t.get("truncated")]


def _problem(code: str, message: str, severity: Severity = "warning", **extra: Any) -> dict:
    return finding_dict(code, message, severity, **extra)


def load_preview_tokenizer(cfg):
    """The tokenizer of ``cfg.model`` (config and tokenizer files only, never weights)."""
    from .models import load_tokenizer, resolve_model

    resolved = resolve_model(cfg.model.id, cfg.model.revision, weights=False)
    return load_tokenizer(resolved.path, trust_remote_code=cfg.model.trust_remote_code)


def _token_texts(tokenizer, ids: list[int]) -> list[str]:
    out = []
    for i in ids:
        text = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if "\ufffd" in text:  # part of a multi-byte character: show the raw token
            text = tokenizer.convert_ids_to_tokens(i)
        out.append(text)
    return out


def template_problems(tokenizer, template) -> list[dict]:
    """Problems of the template and tokenizer themselves, whatever the row."""
    problems: list[dict] = []
    if template.source == "none":
        problems.append(_problem("no_chat_template", template.notes[0], "error"))
    if tokenizer.pad_token is None:
        problems.append(_problem(
            "missing_pad_token",
            f"the tokenizer has no pad token; SFTTrainer pads with EOS ({tokenizer.eos_token!r}), which is safe "
            "since padding never carries loss", "info"))
    if tokenizer.eos_token is None:
        problems.append(_problem("missing_eos_token", "the tokenizer has no EOS token", "error"))
    behaviour = getattr(template, "behaviour", None)
    problems.extend(dict(f) for f in (behaviour.findings if behaviour is not None else []))
    for note in template.notes:
        if template.source != "none":
            problems.append(_problem("template_note", note, "info"))
    return problems


def render_preview(cfg, row: int = 0, *, tokenizer=None, examples=None, template=None) -> Preview:
    """Row ``row`` of ``cfg``'s data (or of ``examples``) as it will be trained."""
    from .templates import chose_no_loss, encode_examples, prepare_tokenizer, resolve_template

    if tokenizer is None:
        tokenizer = load_preview_tokenizer(cfg)
    if examples is None:
        from .data import example_at

        example = example_at(cfg, row)
    else:
        if not 0 <= row < len(examples):
            raise TemplateError(f"--row {row}: the data has {len(examples)} rows (0 to {len(examples) - 1})")
        example = examples[row]
    if template is None:
        template = resolve_template(tokenizer, cfg.template)
    prepare_tokenizer(tokenizer, template)
    t = cfg.training
    kind = example_kind(example)
    aol, col = loss_flags(kind, t.assistant_only_loss, t.completion_only_loss)
    (out,) = encode_examples(
        tokenizer, [example], template,
        assistant_only_loss=t.assistant_only_loss,
        completion_only_loss=t.completion_only_loss,
        system_prompt=getattr(cfg.template, "system_prompt", None),
        details=True,
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    n = len(ids)
    split = bool(t.packing and t.packing_strategy == "bfd_split" and t.max_length)
    limit = n if split or not t.max_length else t.max_length
    kept = min(n, limit)
    texts = _token_texts(tokenizer, ids)
    tokens = []
    for i, (tid, bit, text) in enumerate(zip(ids, mask, texts)):
        # bfd_split packing cuts long rows into max_length pieces; a piece's first token carries no loss
        cut = split and i % t.max_length == 0
        item = {"id": tid, "text": text, "trained": bool(bit) and i < limit and not cut}
        if i >= limit:
            item["truncated"] = True
        tokens.append(item)
    trained = sum(1 for tok in tokens if tok["trained"])
    lost = sum(mask[limit:]) if n > limit else 0
    problems = template_problems(tokenizer, template) if kind in ("messages", "conversational_prompt_completion") \
        else [p for p in template_problems(tokenizer, template) if p["code"] in ("missing_pad_token", "missing_eos_token")]
    problems.extend(dict(note) for note in out.get("notes", []))
    dropped = False
    if trained == 0 and kind in ("messages", "conversational_prompt_completion") and not chose_no_loss(example):
        from .templates import no_loss_reason

        dropped = True
        drop = cfg.data.on_bad_rows == "drop"
        problems.append(_problem(
            "no_trained_tokens",
            no_loss_reason(out, None if split else limit) + (
                "; data.on_bad_rows: drop leaves this row out of training" if drop else
                "; training stops at this row (set data.on_bad_rows: drop to leave such rows out)"), "error"))
    elif trained == 0:
        dropped = not t.packing
        problems.append(_problem(
            "no_trained_tokens",
            "no token of this row carries loss" + ("; SFTTrainer drops it" if dropped else ""), "error"))
    if lost:
        problems.append(_problem(
            "truncated_assistant",
            f"truncation at max_length {limit} cuts {n - limit} tokens, {lost} of them trained", "warning",
            tokens_lost=n - limit, trained_tokens_lost=lost))
    elif n > limit:
        problems.append(_problem("truncated", f"truncation at max_length {limit} cuts {n - limit} untrained tokens",
                                 "info", tokens_lost=n - limit))
    if trained and not lost and not stop_token_trained(ids[:kept], [tok["trained"] for tok in tokens[:kept]],
                                                       stop_token_ids(tokenizer, template.template),
                                                       BlankTokens(tokenizer)):
        if n <= limit:
            problems.append(_problem(
                "eos_not_trained",
                "the end-of-turn/EOS token is not trained: the model won't learn to stop", "warning"))
    bos = tokenizer.bos_token_id
    if bos is not None and n > 1 and ids[0] == bos and ids[1] == bos:
        problems.append(_problem("duplicated_bos", "the row starts with two BOS tokens", "warning"))
    trained_text = "".join(tok["text"] for tok in tokens if tok["trained"])
    if _EMPTY_THINK.search(trained_text):
        problems.append(_problem(
            "empty_think_trained",
            "empty <think></think> blocks carry loss: the model learns to answer without reasoning", "warning"))
    if col and out.get("prompt_tokens", 0) < out.get("prompt_tokens_expected", 0):
        problems.append(_problem(
            "prompt_not_prefix",
            "the tokenized prompt is not a prefix of prompt+completion; the completion starts where they differ",
            "info"))
    if t.packing and t.packing_strategy == "wrapped":
        problems.append(_problem(
            "wrapped_packing",
            "wrapped packing cuts rows at arbitrary points: the token after each cut carries no loss", "info"))
    if t.padding_free and not t.packing and t.max_length is not None:
        problems.append(_problem(
            "padding_free_needs_packing",
            "SFTTrainer refuses padding_free without packing while max_length is set", "error"))
    counts = {"tokens": n, "kept_tokens": kept, "trained": trained, "masked": kept - trained,
              "truncated_tokens": n - kept, "trained_tokens_lost": lost}
    return Preview(
        row=row, kind=kind, text=tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
        tokens=tokens, template_source=template.source,
        template=template.to_dict(), problems=problems, max_length=t.max_length,
        assistant_only_loss=aol, completion_only_loss=col, dropped_by_trainer=dropped, counts=counts,
    )

