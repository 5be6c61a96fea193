"""Chat templates and label masks: the one path from a canonical example to trained tokens.

``encode_example`` (and its batched twin ``encode_examples``) turns a canonical example into
``input_ids`` plus ``assistant_masks`` (1 = the token carries loss). ``build_dataset`` maps it over
a dataset for the trainer and ``render_preview`` calls it for the preview, so what the preview
shows is what is trained. TRL receives the pre-tokenized rows, skips its own tokenization and
turns ``assistant_masks`` into labels; ``sft_mask_kwargs`` holds the SFTConfig values that keep
it from re-masking or rejecting them.

Where assistant turns are found, by template source (always stated in ``ResolvedTemplate``):

- ``tokenizer`` / ``file`` / ``trl-training`` / ``chatml`` with ``{% generation %}`` markers:
  the character spans the markers yield when rendering, mapped to tokens exactly as
  ``apply_chat_template(return_assistant_tokens_mask=True)`` does;
- ``inferred`` (any template without markers): each assistant turn starts where the rendering
  of the conversation before it, with the generation prompt, ends, and runs through its
  end-of-turn tokens, found by rendering growing prefixes (see ``core/masks.py``).

Template resolution lives in ``core/template_sources.py`` and is re-exported here.
Heavy libraries (transformers, trl, datasets) are imported inside functions.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from .masks import (
    Rendered,
    TemplateError,
    example_kind,
    loss_flags,
    render_example,
    tokens_and_masks,
)
from .template_sources import (  # re-exported: templates is the public face
    CHATML_TEMPLATE,
    CHATML_TOKENS,
    PLAIN_TEMPLATE_FILE,
    TEMPLATE_SOURCES,
    ResolvedTemplate,
    chatml_consequences,
    offer_templates,
    prepare_tokenizer,
    resolve_template,
)

_log = logging.getLogger("sftwizard.templates")

# --------------------------------------------------------------------------- encoding (THE path)

def encode_examples(
    tokenizer,
    examples: list[dict],
    template: ResolvedTemplate,
    *,
    assistant_only_loss: bool | None,
    completion_only_loss: bool | None,
    system_prompt: str | None = None,
    details: bool = False,
    on_error: Callable[[int, Exception], None] | None = None,
) -> list[dict | None]:
    """Encode a batch of canonical examples (batched fast tokenization). See ``encode_example``.

    ``on_error(i, exc)`` receives rows whose template rendering fails (their slot is None);
    without it the first failure raises TemplateError.
    """
    rendered: list[Rendered | None] = []
    for i, example in enumerate(examples):
        try:
            rendered.append(render_example(
                tokenizer, example, template,
                assistant_only_loss=assistant_only_loss,
                completion_only_loss=completion_only_loss,
                system_prompt=system_prompt,
            ))
        except TemplateError as exc:
            if on_error is None:
                raise
            on_error(i, exc)
            rendered.append(None)
    return tokens_and_masks(tokenizer, rendered, details=details)


def encode_example(
    tokenizer,
    example: dict,
    template: ResolvedTemplate,
    *,
    assistant_only_loss: bool | None,
    completion_only_loss: bool | None,
    system_prompt: str | None = None,
) -> dict[str, list[int]]:
    """``{"input_ids", "assistant_masks"}`` for one canonical example; 1 in the mask = carries loss.

    ``None`` loss flags mean the wizard's defaults: assistant-only loss for conversations,
    completion-only loss for prompt-completion data. The first token never carries loss (nothing
    predicts it), so its mask is always 0.
    """
    (out,) = encode_examples(
        tokenizer, [example], template,
        assistant_only_loss=assistant_only_loss,
        completion_only_loss=completion_only_loss,
        system_prompt=system_prompt,
    )
    return {"input_ids": out["input_ids"], "assistant_masks": out["assistant_masks"]}


def build_dataset(
    tokenizer,
    examples: list[dict],
    template: ResolvedTemplate,
    cfg,
    *,
    report: list | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 1000,
):
    """A pre-tokenized ``datasets.Dataset`` (``input_ids``, ``assistant_masks``) for SFTTrainer.

    Adds the tokens the template needs first (``prepare_tokenizer``: only ChatML on a tokenizer
    without its markers; the model's embeddings must then grow to ``len(tokenizer)``).
    Rows whose template rendering fails stop the build (``data.on_bad_rows: stop``) or are left out
    with a problem appended to ``report`` (``drop``). Raises TemplateError when no row would carry
    any loss after truncation at ``training.max_length``.
    """
    from datasets import Dataset

    from .data_formats import Problem

    prepare_tokenizer(tokenizer, template)
    on_bad = getattr(getattr(cfg, "data", None), "on_bad_rows", "stop")
    t = cfg.training
    problems: list = []

    def on_error(offset: int, exc: Exception, base: int = 0) -> None:
        problems.append(Problem(code="template_error", message=str(exc), row=base + offset, field="messages"))

    ids_col: list[list[int]] = []
    mask_col: list[list[int]] = []
    any_trained = False
    limit = None if (t.packing and t.packing_strategy == "bfd_split") else t.max_length  # bfd_split keeps all
    total = len(examples)
    for start in range(0, total, batch_size):
        chunk = examples[start:start + batch_size]
        before = len(problems)
        outs = encode_examples(
            tokenizer, chunk, template,
            assistant_only_loss=t.assistant_only_loss,
            completion_only_loss=t.completion_only_loss,
            system_prompt=getattr(cfg.template, "system_prompt", None),
            on_error=lambda i, exc, _b=start: on_error(i, exc, _b),
        )
        if len(problems) > before and on_bad != "drop":
            first = problems[before]
            raise TemplateError(f"row {first.row}: {first.message}", problems[before:])
        for offset, out in enumerate(outs):
            if out is None:
                continue
            kept = out["assistant_masks"][:limit] if limit else out["assistant_masks"]
            if not any(kept) and not chose_no_loss(chunk[offset]):
                why = no_loss_reason(out, limit)
                problem = Problem(code="no_trained_tokens", severity="error", row=start + offset, message=why)
                problems.append(problem)
                if on_bad != "drop":
                    raise TemplateError(
                        f"row {start + offset}: {why}; fix the row or set data.on_bad_rows: drop to leave such "
                        "rows out with a report", problems[before:])
                continue
            any_trained = any_trained or any(kept)
            ids_col.append(out["input_ids"])
            mask_col.append(out["assistant_masks"])
        if progress is not None:
            progress(min(start + batch_size, total), total)
    if report is not None:
        report.extend(problems)
    if problems:
        refused = sum(1 for p in problems if p.code == "template_error")
        empty = sum(1 for p in problems if p.code == "no_trained_tokens")
        _log.warning("building the dataset: %d rows left out (the template refused them), %d rows left out "
                     "(no trained token); first: %s", refused, empty, problems[0].sentence())
    if not ids_col:
        raise TemplateError("the dataset has no rows left to train on", problems)
    if not any_trained:
        raise TemplateError(
            "no row has a token that carries loss (check assistant_only_loss / completion_only_loss, "
            "the template, and training.max_length)", problems,
        )
    return Dataset.from_dict({"input_ids": ids_col, "assistant_masks": mask_col})


def chose_no_loss(example: dict) -> bool:
    """Every assistant turn has weight 0: the row is context only, by the user's choice."""
    turns = [m for m in example.get("messages") or [] if m.get("role") == "assistant"]
    return bool(turns) and all(m.get("weight") is not None and not m.get("weight") for m in turns)


def no_loss_reason(out: dict, limit: int | None) -> str:
    """Why an encoded row has no token that carries loss (one clause)."""
    lost = [n for n in out.get("notes") or [] if n.get("code") == "turn_not_found"]
    if lost:
        why = re.sub(r"; (it|this turn) carries no loss$", "", lost[0]["message"])
        return f"no token carries loss ({why})"
    if limit and any(out["assistant_masks"][limit:]):
        return (f"no token carries loss within training.max_length {limit} (the answers start after it); "
                "raise training.max_length")
    return "no token carries loss (no assistant turn was found in the rendering)"


def sft_mask_kwargs(cfg, template: ResolvedTemplate) -> dict[str, Any]:
    """SFTConfig fields that make TRL take our masks as they are.

    Our dataset is pre-tokenized: TRL skips tokenization and turns ``assistant_masks`` into
    labels. ``assistant_only_loss`` must be False or TRL would demand a conversational dataset and
    swap templates; ``completion_only_loss`` False since there is no ``completion_mask`` column;
    truncation keeps the start (what the preview assumes).
    """
    kwargs: dict[str, Any] = {
        "assistant_only_loss": False,
        "completion_only_loss": False,
        "truncation_mode": "keep_start",
    }
    if template.source == "chatml":
        kwargs["eos_token"] = "<|im_end|>"  # the model stops where ChatML ends a turn (after prepare_tokenizer)
    return kwargs


def effective_loss_flags(cfg, example: dict) -> tuple[bool, bool]:
    """(assistant_only_loss, completion_only_loss) actually used for ``example`` under ``cfg``."""
    t = cfg.training
    return loss_flags(example_kind(example), t.assistant_only_loss, t.completion_only_loss)


__all__ = [
    "CHATML_TOKENS", "PLAIN_TEMPLATE_FILE", "TEMPLATE_SOURCES",
    "CHATML_TEMPLATE", "ResolvedTemplate", "TemplateError", "build_dataset", "chatml_consequences",
    "offer_templates", "prepare_tokenizer",
    "effective_loss_flags", "encode_example", "encode_examples", "resolve_template",
    "sft_mask_kwargs",
]

