"""Where the chat template comes from: resolution, with the source always stated.

``resolve_template`` follows ``template.source`` (``auto`` by default): the tokenizer's own
template when it has ``{% generation %}`` markers, TRL's training version when TRL knows the
template, a user Jinja file, the template-agnostic ``inferred`` method for anything else, and
ChatML (or a plain-text template) offered to tokenizers without a template, with what that
means for special tokens and embeddings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .masks import TemplateError
from .template_probe import TemplateBehaviour, cross_check, probe_template

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
    reason: str | None = None  # why this source and method were chosen (one sentence)
    behaviour: TemplateBehaviour = field(default_factory=TemplateBehaviour)
    reasoning_mode: str = "template"  # template.reasoning: template | drop

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
            "reason": self.reason,
            "notes": list(self.notes),
            "behaviour": self.behaviour.to_dict(),
            "reasoning_mode": self.reasoning_mode,
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
    training template when TRL knows this template *and* it renders the probe conversations
    exactly as the model's own template does (``template_probe.cross_check``); else the inferred
    method on the tokenizer's template; ``none`` when the tokenizer has no template
    (conversational data then fails with a sentence offering ChatML). The result carries what
    probing found (system prompt placement, reasoning, a header inside the generation block) and
    the reason for the choice.
    """
    resolved = _resolve_source(tokenizer, section)
    resolved.behaviour = _probe_cached(tokenizer, resolved.template, resolved.has_generation_markers)
    resolved.reasoning_mode = getattr(section, "reasoning", "template") or "template"
    if resolved.reason is None:
        resolved.reason = _default_reason(resolved)
    return resolved


def _default_reason(t: ResolvedTemplate) -> str:
    return {
        "tokenizer": "the tokenizer's template marks assistant turns with {% generation %} blocks",
        "trl-training": "TRL knows this template and its training version renders the same text with markers",
        "file": "template.path names a Jinja file",
        "inferred": "the template has no {% generation %} markers: assistant turns are found by rendering",
        "chatml": "template.source is chatml",
        "none": "the tokenizer has no chat template",
    }[t.source]


_PROBES: dict[tuple, TemplateBehaviour] = {}


def _probe_cached(tokenizer, template: str | None, markers: bool) -> TemplateBehaviour:
    """``probe_template`` once per (template, special tokens)."""
    key = (template, markers, tuple(sorted(tokenizer.special_tokens_map.items(), key=str)))
    found = _PROBES.get(key)
    if found is None:
        found = _PROBES[key] = probe_template(tokenizer, template, markers=markers)
        if len(_PROBES) > 64:
            _PROBES.pop(next(iter(_PROBES)))
    return found


def _resolve_source(tokenizer, section=None) -> ResolvedTemplate:
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
        notes = ["TRL's training template replaces the tokenizer's (same format, with {% generation %} markers)."]
        differs = cross_check(tokenizer, own, trl_template)
        if differs:
            notes.append(f"Train/serve mismatch you chose: TRL's training template {differs.removeprefix('it ')}, "
                         "unlike the model's own template at inference.")
        return ResolvedTemplate("trl-training", trl_template, True, notes,
                                reason="template.source is trl-training")
    if trl_template is not None:
        differs = cross_check(tokenizer, own, trl_template)
        if differs is None:
            return ResolvedTemplate("trl-training", trl_template, True, [
                "TRL's training template replaces the tokenizer's (same format, with {% generation %} markers)."
            ])
        why = (f"TRL's training template was not used: {differs}; the model's own template is used and "
               "assistant turns are found by rendering")
        return ResolvedTemplate("inferred", own, False, [why], reason=why)
    return ResolvedTemplate("inferred", own, False, [
        "TRL cannot patch this template: assistant turns are inferred by rendering growing prefixes."
    ], reason="TRL has no training version of this template, which has no {% generation %} markers: "
              "assistant turns are found by rendering")


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


EMBEDDING_ROW_MULTIPLE = 64  # the runner grows embeddings with pad_to_multiple_of=64


def grown_embedding_rows(model_path: str | Path, embedding_rows: int, trust_remote_code: bool = False) -> int | None:
    """The embedding rows a run with ``template.source: chatml`` will have once ChatML's markers
    are added to this model's tokenizer (the runner's ``resize_token_embeddings``), ``embedding_rows``
    when none are needed, or None when the tokenizer cannot be read here (a folder with only
    config.json). Read once per model folder."""
    tokens = _tokenizer_size_with_chatml(str(model_path), bool(trust_remote_code))
    if tokens is None:
        return None
    if tokens <= embedding_rows:
        return embedding_rows
    multiple = EMBEDDING_ROW_MULTIPLE
    return -(-tokens // multiple) * multiple


@functools.lru_cache(maxsize=16)
def _tokenizer_size_with_chatml(model_path: str, trust_remote_code: bool) -> int | None:
    from .models import ModelError, load_tokenizer

    try:
        tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    except (ModelError, OSError, ValueError):
        return None
    vocab = tokenizer.get_vocab()
    return len(tokenizer) + sum(1 for t in CHATML_TOKENS if t not in vocab)
