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

Heavy libraries (transformers, trl, datasets) are imported inside functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sftwizard.core.masks import (
    Rendered,
    TemplateError,
    example_kind,
    loss_flags,
    render_example,
    tokens_and_masks,
)

_log = logging.getLogger("sftwizard.templates")

TEMPLATE_SOURCES = ("tokenizer", "trl-training", "file", "inferred", "chatml", "none")

# ChatML with generation markers, offered to tokenizers that have no chat template (base models).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass
class ResolvedTemplate:
    """The chat template used for training and preview, and where it came from."""

    source: str  # tokenizer | trl-training | file | inferred | chatml | none
    template: str | None
    has_generation_markers: bool
    notes: list[str] = field(default_factory=list)
    path: str | None = None  # for source "file"

    @property
    def method(self) -> str:
        """How assistant tokens are found: ``markers``, ``inferred`` or ``none`` (no template)."""
        if self.template is None:
            return "none"
        return "markers" if self.has_generation_markers else "inferred"

    def describe(self) -> str:
        what = {
            "tokenizer": "the tokenizer's own chat template",
            "trl-training": "TRL's training version of the tokenizer's chat template",
            "file": f"the chat template file {self.path}",
            "inferred": "the tokenizer's chat template, assistant turns inferred by rendering growing prefixes",
            "chatml": "ChatML (the tokenizer has no chat template of its own)",
            "none": "no chat template",
        }[self.source]
        return what

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "method": self.method,
            "description": self.describe(),
            "has_generation_markers": self.has_generation_markers,
            "path": self.path,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- resolution

def _has_markers(template: str | None) -> bool:
    if not template:
        return False
    from trl.chat_template_utils import has_generation_markers

    return has_generation_markers(template)


def _own_template(tokenizer) -> str | None:
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):
        tpl = tpl.get("default") or next(iter(tpl.values()), None)
    return tpl or None


def chatml_consequences(tokenizer) -> list[str]:
    """What applying ChatML to this tokenizer means for its vocabulary and embeddings."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in CHATML_TOKENS if t not in vocab]
    if not missing:
        return ["ChatML's <|im_start|> and <|im_end|> are already tokens of this vocabulary: no new embeddings."]
    return [
        f"ChatML's {' and '.join(missing)} are not in this vocabulary (unchanged, each would be split into "
        "ordinary pieces): they are added as special tokens, which grows the embedding matrix and LM head by "
        f"{len(missing)} row{'s' if len(missing) > 1 else ''} (resize_token_embeddings) with untrained vectors.",
        "With LoRA those rows only learn if embed_tokens and lm_head are trained too (modules_to_save); "
        "<|im_end|> becomes the EOS the model learns to stop at.",
    ]


PLAIN_TEMPLATE_FILE = Path(__file__).parent / "assets" / "templates" / "plain.jinja"


def offer_templates(tokenizer) -> list[dict[str, Any]]:
    """Templates to offer a tokenizer without one (a base model), each with its consequences.

    Each entry: ``name``, the ``template`` section values to set (``source``, ``path``) and
    ``consequences`` (sentences about special tokens and embeddings).
    """
    eos = tokenizer.eos_token
    return [
        {"name": "chatml", "source": "chatml", "path": None, "consequences": chatml_consequences(tokenizer)},
        {"name": "plain", "source": "file", "path": str(PLAIN_TEMPLATE_FILE), "consequences": [
            "\"### User:\" / \"### Assistant:\" headers in plain text: no new tokens, no embedding change.",
            f"Each assistant turn ends with the tokenizer's EOS ({eos!r}), which the model learns to stop at."
            if eos else "The tokenizer has no EOS token: the model cannot learn where a turn ends.",
        ]},
    ]


def prepare_tokenizer(tokenizer, template: ResolvedTemplate) -> list[str]:
    """Add the tokens ``template`` needs to ``tokenizer`` (ChatML's markers on a base model).

    Returns the tokens added; the caller must then grow the model's embeddings
    (``model.resize_token_embeddings(len(tokenizer))``) and, with LoRA, train embed_tokens and
    lm_head. Call it before ``build_dataset`` and ``render_preview`` alike (the preview does).
    """
    if template.source != "chatml":
        return []
    vocab = tokenizer.get_vocab()
    missing = [t for t in CHATML_TOKENS if t not in vocab]
    if missing:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return missing


def resolve_template(tokenizer, section=None) -> ResolvedTemplate:
    """Pick the template for training and preview, following ``template.source`` (``auto`` by default).

    ``auto``: the tokenizer's own template when it has ``{% generation %}`` markers; else TRL's
    training template when TRL knows this template; else the inferred method on the tokenizer's
    template; ``none`` when the tokenizer has no template (conversational data then fails with
    a sentence offering ChatML).
    """
    source = getattr(section, "source", "auto") or "auto"
    path = getattr(section, "path", None)
    own = _own_template(tokenizer)

    if source == "file" or (source == "auto" and path):
        if not path:
            raise TemplateError("template.path: a Jinja file is needed when template.source is 'file'")
        p = Path(path).expanduser()
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TemplateError(f"template.path: no such file {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"template.path: cannot read {p}: {exc}") from None
        _check_syntax(text, f"template.path {p}")
        markers = _has_markers(text)
        notes = [] if markers else [
            "The file has no {% generation %} markers: assistant turns are inferred by rendering growing prefixes."
        ]
        return ResolvedTemplate("file", text, markers, notes, path=str(p))

    if source == "chatml":
        notes = chatml_consequences(tokenizer)
        if own:
            notes.insert(0, "The tokenizer's own chat template is replaced by ChatML.")
        return ResolvedTemplate("chatml", CHATML_TEMPLATE, True, notes)

    if own is None:
        if source in ("tokenizer", "trl-training", "inferred"):
            raise TemplateError(
                f"template.source: {source!r} needs a chat template, but this tokenizer has none; "
                "use template.source: chatml or template.path"
            )
        return ResolvedTemplate("none", None, False, [
            "This tokenizer has no chat template (a base model?): conversational data needs one, "
            f"e.g. template.source: chatml, or template.source: file with path {PLAIN_TEMPLATE_FILE} "
            "(plain-text headers, no new tokens).",
            *chatml_consequences(tokenizer),
        ])

    own_markers = _has_markers(own)
    if source == "tokenizer":
        notes = [] if own_markers else [
            "The tokenizer's template has no {% generation %} markers: assistant turns are inferred."
        ]
        return ResolvedTemplate("tokenizer" if own_markers else "inferred", own, own_markers, notes)
    if source == "inferred":
        return ResolvedTemplate("inferred", own, False, [
            "Assistant turns are inferred by rendering growing prefixes (markers, if any, are ignored)."
        ])

    if source == "auto" and own_markers:  # as TRL does: a template with markers is used as it is
        return ResolvedTemplate("tokenizer", own, True, [])
    # auto or trl-training
    trl_template, why = _trl_training_template(tokenizer)
    if source == "trl-training":
        if trl_template is None and own_markers and why is None:
            return ResolvedTemplate("tokenizer", own, True, [
                "TRL needs no training template here: the tokenizer's own template already has markers."
            ])
        if trl_template is None:
            raise TemplateError(
                "template.source: TRL cannot patch this tokenizer's chat template "
                "(it only knows a list of templates by exact text); use template.source: inferred or auto"
            )
        return ResolvedTemplate("trl-training", trl_template, True, [
            "TRL's training template replaces the tokenizer's (same format, with {% generation %} markers)."
        ])
    if trl_template is not None:
        return ResolvedTemplate("trl-training", trl_template, True, [
            "TRL's training template replaces the tokenizer's (same format, with {% generation %} markers)."
        ])
    return ResolvedTemplate("inferred", own, False, [
        "TRL cannot patch this template: assistant turns are inferred by rendering growing prefixes."
    ])


def _trl_training_template(tokenizer) -> tuple[str | None, str | None]:
    """(TRL's training template or None, why not). None + None: the own template needs no patch."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer), None
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # a template that raises on TRL's probe conversation
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_syntax(text: str, where: str) -> None:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(text)
    except Exception as exc:
        raise TemplateError(f"{where}: not a valid Jinja template: {str(exc).splitlines()[0]}") from None


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

    from sftwizard.core.data import Problem

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
            ids_col.append(out["input_ids"])
            mask_col.append(out["assistant_masks"])
            kept = out["assistant_masks"][:limit] if limit else out["assistant_masks"]
            if any(kept):
                any_trained = True
            else:
                problems.append(Problem(
                    code="no_trained_tokens", severity="warning", row=start + offset,
                    message="no token carries loss" + (
                        " after truncation at max_length; SFTTrainer drops this row" if not t.packing else ""),
                ))
        if progress is not None:
            progress(min(start + batch_size, total), total)
    if report is not None:
        report.extend(problems)
    if problems:
        dropped = sum(1 for p in problems if p.code == "template_error")
        empty = len(problems) - dropped
        _log.warning("building the dataset: %d rows left out (the template refused them), %d rows with no "
                     "trained token; first: %s", dropped, empty, problems[0].sentence())
    if not ids_col:
        raise TemplateError("the dataset has no rows left to train on", problems)
    if not any_trained:
        raise TemplateError(
            "no row has a token that carries loss (check assistant_only_loss / completion_only_loss, "
            "the template, and training.max_length)", problems,
        )
    return Dataset.from_dict({"input_ids": ids_col, "assistant_masks": mask_col})


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


def render_preview(cfg, row: int = 0, *, tokenizer=None, examples=None):
    """The preview of one row: see ``sftwizard.core.preview.render_preview``."""
    from sftwizard.core.preview import render_preview as _render_preview

    return _render_preview(cfg, row, tokenizer=tokenizer, examples=examples)


def audit_dataset(tokenizer, examples, template, cfg, progress=None) -> dict:
    """Dataset-wide audit: see ``sftwizard.core.audit.audit_dataset``."""
    from sftwizard.core.audit import audit_dataset as _audit

    return _audit(tokenizer, examples, template, cfg, progress=progress)


__all__ = [
    "CHATML_TEMPLATE", "ResolvedTemplate", "TemplateError", "build_dataset", "chatml_consequences",
    "offer_templates", "prepare_tokenizer",
    "effective_loss_flags", "encode_example", "encode_examples", "render_preview", "resolve_template",
    "sft_mask_kwargs", "audit_dataset",
]

