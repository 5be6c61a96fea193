"""Rendering canonical examples and turning assistant/completion spans into token masks.

Two steps, so that tokenization can be batched (the fast tokenizer works in parallel):
``render_example`` renders one example to text plus the character spans that carry loss, and
``tokens_and_masks`` tokenizes a batch of renderings and maps spans to tokens exactly as
transformers' ``apply_chat_template(return_assistant_tokens_mask=True)`` does (first and last
character of a span, via ``char_to_token``). ``templates.encode_example`` is these two steps.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .findings import Severity, finding_dict

# Appended to one assistant message to find where its content ends in a rendering (private-use
# characters: templates that trim whitespace leave it alone, no real data contains it).
_SENTINEL = "\ue000\ue001sftw\ue001\ue000"


class TemplateError(UserError, ValueError):
    """A template cannot be resolved or applied. One sentence; ``problems`` for the details."""

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass
class Rendered:
    """One example rendered to text, with what carries loss stated in characters."""

    text: str
    add_special_tokens: bool  # plain text goes through tokenizer(text); chat renderings don't add BOS again
    mode: str  # "all": every token; "assistant": only spans with weight 1; "all_but": all but weight-0 spans
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, weight) per assistant turn
    prompt_text: str | None = None  # completion-only loss: tokens shared with this prompt carry no loss
    prompt_add_special_tokens: bool = False
    notes: list[dict] = field(default_factory=list)  # {code, message, severity} about finding turns


# --------------------------------------------------------------------------- example kinds and loss flags

def example_kind(example: dict) -> str:
    """``messages``, ``conversational_prompt_completion``, ``prompt_completion`` or ``text``."""
    if "messages" in example:
        return "messages"
    if "prompt" in example and "completion" in example:
        return "conversational_prompt_completion" if isinstance(example["prompt"], list) else "prompt_completion"
    if "text" in example:
        return "text"
    raise TemplateError(f"not a canonical example (keys: {', '.join(sorted(example)) or 'none'})")


def loss_flags(kind: str, assistant_only_loss: bool | None, completion_only_loss: bool | None) -> tuple[bool, bool]:
    """Resolve ``None`` (auto): assistant-only for conversations, completion-only for prompt-completion."""
    conversational = kind in ("messages", "conversational_prompt_completion")
    if assistant_only_loss is None:
        aol = kind == "messages"
    else:
        aol = bool(assistant_only_loss)
    if aol and not conversational:
        raise TemplateError(
            f"training.assistant_only_loss: needs conversational data, but this data is {kind.replace('_', '-')}; "
            "use completion_only_loss for prompt-completion data"
        )
    if completion_only_loss is None:
        col = kind in ("prompt_completion", "conversational_prompt_completion")
    else:
        col = bool(completion_only_loss) and kind in ("prompt_completion", "conversational_prompt_completion")
    return aol, col


# --------------------------------------------------------------------------- rendering

def _clean(messages: list[dict]) -> list[dict]:
    """Messages as the template sees them: no ``weight``, no None values (as apply_chat_template does)."""
    return [{k: v for k, v in m.items() if k != "weight" and v is not None} for m in messages]


# transformers compiles each chat template once and shares it (lru_cache); its generation-marker
# tracker holds per-rendering state ("AssistantTracker should not be reused before closed" when two
# threads render at once). The lock is per rendering, so a long audit and a preview interleave.
RENDER_LOCK = threading.Lock()


def render_chat(tokenizer, template: str, messages: list[dict], *, add_generation_prompt: bool = False,
                with_indices: bool = False, tools: Any = None, extra: dict | None = None):
    """(text, generation character spans or None), rendered as ``apply_chat_template`` renders."""
    from transformers.utils.chat_template_utils import render_jinja_template

    kwargs = {**tokenizer.special_tokens_map, **(extra or {})}
    try:
        with RENDER_LOCK:  # one rendering at a time, however many threads encode
            rendered, indices = render_jinja_template(
                conversations=[_clean(messages)],
                tools=tools,
                chat_template=template,
                return_assistant_tokens_mask=with_indices,
                add_generation_prompt=add_generation_prompt,
                **kwargs,
            )
    except Exception as exc:  # jinja's raise_exception, TypeError in a template, ...
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemplateError(f"the chat template refused this conversation: {text}") from None
    return rendered[0], (indices[0] if with_indices else None)


def _note(code: str, message: str, severity: Severity) -> dict:
    return finding_dict(code, message, severity)


def _merge_adjacent(spans: list) -> list[tuple[int, int]]:
    """Generation blocks that touch are one turn (e.g. Phi-3 closes the last turn with a second block)."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare in blocks first, then characters
    step = 64
    while i + step <= n and a[i:i + step] == b[i:i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def infer_spans(tokenizer, template: str, messages: list[dict], full: str, tools=None, extra=None,
                render_full=None):
    """Character spans of each assistant turn in ``full``, found without generation markers.

    A turn starts where the conversation before it, rendered with the generation prompt, ends
    (that rendering must be a prefix of ``full``). It ends where the rendering of the
    conversation up to and including it stops agreeing with ``full`` — when that rendering is
    not a prefix (templates that re-render earlier turns, or close the last turn differently),
    the content end is found with a sentinel and the end-of-turn text shared by both renderings
    is kept. When neither the prompt nor the conversation before the turn is a prefix (a template
    that moves the system prompt, e.g. to the last user turn), the turn starts where the rendering
    first depends on its content. ``render_full(messages)`` renders a whole conversation the way
    ``full`` was rendered (default: the template as it is). Returns (spans, notes); spans are
    (start, end, message index).
    """
    if render_full is None:
        def render_full(msgs):
            return render_chat(tokenizer, template, msgs, tools=tools, extra=extra)[0]
    spans: list[tuple[int, int, int]] = []
    notes: list[dict] = []
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt = "" if i == 0 else render_chat(
            tokenizer, template, messages[:i], add_generation_prompt=True, tools=tools, extra=extra
        )[0]
        if full.startswith(prompt):
            start = len(prompt)
        else:
            # the generation prompt may hold what the rendered turn does not (e.g. an opening <think>):
            # the turn starts where the prompt and the conversation part ways, past the turns before it
            before = render_chat(tokenizer, template, messages[:i], tools=tools, extra=extra)[0] if i else ""
            if full.startswith(before):
                start = _token_safe(tokenizer, full,
                                    len(before) + _common_prefix(prompt[len(before):], full[len(before):]))
                notes.append(_note("generation_prompt_differs", f"message {i}: the generation prompt differs from "
                                   f"the rendered turn; the turn starts after {full[len(before):start]!r}", "info"))
            else:
                found_start = _content_start(tokenizer, render_full, messages, i, full)
                if found_start is None:
                    notes.append(_note(
                        "turn_not_found", f"message {i}: the rendering before this assistant turn differs from the "
                        "full conversation and its content cannot be found in it; this turn carries no loss",
                        "warning"))
                    continue
                start = found_start
        upto = full if i == last else render_chat(tokenizer, template, messages[: i + 1], tools=tools, extra=extra)[0]
        if full.startswith(upto):
            end = len(upto)
        else:
            found = _aligned_end(tokenizer, template, messages, i, full, upto, tools, extra, render_full)
            if found is None:
                notes.append(_note("turn_not_found", f"message {i}: cannot locate this assistant turn in the "
                                   "rendering; it carries no loss", "warning"))
                continue
            end, rerendered = found
            if rerendered:
                notes.append(_note(
                    "not_prefix_preserving", f"message {i}: the template renders this turn differently once later "
                    "turns follow; it was located by its content", "info"))
        if end <= start:
            notes.append(_note("turn_not_found", f"message {i}: this assistant turn renders to nothing; "
                               "it carries no loss", "warning"))
            continue
        spans.append((start, end, i))
    return spans, notes


def _content_start(tokenizer, render_full, messages, i, full) -> int | None:
    """Where ``full`` first depends on message ``i``'s content (its start), or None."""
    marked = [dict(m) for m in messages]
    marked[i]["content"] = _SENTINEL
    try:
        full_m = render_full(marked)
    except TemplateError:
        return None
    at = _common_prefix(full, full_m)
    if full_m.find(_SENTINEL, at) < 0:
        return None
    return _token_safe(tokenizer, full, at)


def _aligned_end(tokenizer, template, messages, i, full, upto, tools, extra, render_full=None) -> tuple[int, bool] | None:
    """(end of turn ``i`` in ``full``, whether ``full`` renders the turn differently) or None."""
    content = messages[i].get("content")
    if not isinstance(content, str):
        return None
    marked = [dict(m) for m in messages]
    marked[i]["content"] = content + _SENTINEL
    full_m = (render_full(marked) if render_full is not None
              else render_chat(tokenizer, template, marked, tools=tools, extra=extra)[0])
    upto_m = full_m if i == len(messages) - 1 else render_chat(
        tokenizer, template, marked[: i + 1], tools=tools, extra=extra
    )[0]
    c_full = _common_prefix(full, full_m)
    c_upto = _common_prefix(upto, upto_m)
    if not full_m.startswith(_SENTINEL, c_full) or not upto_m.startswith(_SENTINEL, c_upto):
        # the sentinel may sit after trimmed whitespace: look for it in the marked rendering
        pos_full, pos_upto = full_m.find(_SENTINEL, c_full), upto_m.find(_SENTINEL, c_upto)
        if pos_full < 0 or pos_upto < 0:
            return None
    tail = _common_prefix(full[c_full:], upto[c_upto:])
    end = _token_safe(tokenizer, full, c_full + tail)
    end = _token_safe(tokenizer, upto, c_upto + (end - c_full)) - c_upto + c_full
    return end, c_full != c_upto or full[:c_full] != upto[:c_upto]


def _token_safe(tokenizer, text: str, pos: int) -> int:
    """``pos`` moved back to the start of an added/special token it would cut in half."""
    for token in tokenizer.get_added_vocab():
        if len(token) < 2:
            continue
        lo = max(0, pos - len(token) + 1)
        at = text.find(token, lo, pos + len(token) - 1)
        while at != -1 and at < pos:
            if at + len(token) > pos:
                pos = at
                break
            at = text.find(token, at + 1, pos + len(token) - 1)
    return pos


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """``messages`` as training renders them: ``template.system_prompt`` first when the
    conversation has no system message of its own (the data's own one wins)."""
    if system_prompt and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def _conversation(example: dict, system_prompt: str | None) -> tuple[list[dict], list[dict] | None]:
    """(all messages, prompt messages or None) with the system prompt added when none is there."""
    if "messages" in example:
        return with_system_prompt(example["messages"], system_prompt), None
    prompt = with_system_prompt(example["prompt"], system_prompt)
    return prompt + list(example["completion"]), prompt


def render_example(tokenizer, example: dict, template, *, assistant_only_loss: bool | None,
                   completion_only_loss: bool | None, system_prompt: str | None = None) -> Rendered:
    """Render one canonical example; see the module docstring."""
    kind = example_kind(example)
    aol, col = loss_flags(kind, assistant_only_loss, completion_only_loss)
    eos = tokenizer.eos_token
    if kind == "text":
        text = example["text"]
        if eos and not text.endswith(eos):
            text += eos
        return Rendered(text, True, "all")
    if kind == "prompt_completion":
        completion = example["completion"]
        if eos and not completion.endswith(eos):
            completion += eos
        prompt = example["prompt"]
        return Rendered(prompt + completion, True, "all", prompt_text=prompt if col else None,
                        prompt_add_special_tokens=True)

    # conversational
    if template.template is None:
        raise TemplateError(
            "this tokenizer has no chat template, so conversations cannot be rendered; "
            "set template.source: chatml (or template.path to a Jinja file)"
        )
    messages, prompt = _conversation(example, system_prompt)
    tools = example.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools)
    extra = dict(example.get("chat_template_kwargs") or {})
    behaviour = getattr(template, "behaviour", None)
    notes: list[dict] = []
    messages = normalize_reasoning(messages, behaviour, getattr(template, "reasoning_mode", "template"), notes)
    if prompt is not None:
        prompt = messages[:len(prompt)]
    weights = [m.get("weight") for m in messages]
    has_zero = any(w is not None and not w for w, m in zip(weights, messages) if m.get("role") == "assistant")
    need_spans = aol or has_zero
    spans: list[tuple[int, int, int]] = []
    tpl = template.template
    render_full = None
    if behaviour is not None and behaviour.system == "last_user":
        def render_full(msgs):
            return serving_text(tokenizer, tpl, msgs, tools=tools, extra=extra)
    if need_spans and template.has_generation_markers:
        text, gen = render_chat(tokenizer, tpl, messages, with_indices=True, tools=tools, extra=extra)
        assistant_idx = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        gen = _merge_adjacent(gen)
        header = getattr(behaviour, "header", None)
        if header:  # the model never generates its own header: it is not trained
            gen = [(s + len(header) if text.startswith(header, s) and s + len(header) < e else s, e) for s, e in gen]
        if len(gen) == len(assistant_idx):
            spans = [(s, e, i) for (s, e), i in zip(gen, assistant_idx)]
        elif not has_zero:
            spans = [(s, e, -1) for s, e in gen]
        else:
            raise TemplateError(
                f"the template's {{% generation %}} blocks ({len(gen)}) do not match the assistant messages "
                f"({len(assistant_idx)}), so per-message weight cannot be applied"
            )
    else:
        text = (render_full(messages) if render_full is not None
                else render_chat(tokenizer, tpl, messages, tools=tools, extra=extra)[0])
        if need_spans:
            spans, found = infer_spans(tokenizer, tpl, messages, text, tools=tools, extra=extra,
                                       render_full=render_full)
            notes.extend(found)
    _check_tool_calls(messages, text)
    weighted = [(s, e, 0 if (i >= 0 and weights[i] is not None and not weights[i]) else 1) for s, e, i in spans]
    mode = "assistant" if aol else ("all_but" if has_zero else "all")
    prompt_text = None
    if col and prompt is not None:
        prompt_text, _ = render_chat(tokenizer, tpl, prompt, add_generation_prompt=True, tools=tools, extra=extra)
    return Rendered(text, False, mode, weighted, prompt_text, False, notes)


_THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


def _reasoning_of(message: dict) -> tuple[str | None, str | None, str]:
    """(the form reasoning takes in this message, the reasoning, the answer without it)."""
    content = message.get("content")
    content = content if isinstance(content, str) else ""
    for key in ("reasoning_content", "thinking"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return key, value, content
    found = _THINK_BLOCK.match(content)
    if found:
        return "content", found.group(1).strip("\n"), content[found.end():]
    return None, None, content


def normalize_reasoning(messages: list[dict], behaviour, mode: str, notes: list[dict]) -> list[dict]:
    """Assistant reasoning handed to the template in the form it reads (``template.reasoning``).

    Reasoning comes as a ``<think>`` block opening the content, a ``reasoning_content`` field or
    gpt-oss's ``thinking`` field. ``drop`` removes it; ``template`` moves it to the field the
    template renders (``behaviour.reasoning_field``), or notes that the template cannot show it.
    """
    out = []
    target = getattr(behaviour, "reasoning_field", None)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            out.append(m)
            continue
        form, reasoning, answer = _reasoning_of(m)
        if form is None or (mode != "drop" and form == target):
            out.append(m)
            continue
        m = {k: v for k, v in m.items() if k not in ("reasoning_content", "thinking")}
        if mode == "drop":
            m["content"] = answer
        elif target is None:
            if form != "content":
                notes.append(_note("reasoning_not_rendered", f"message {i}: this template does not render the "
                                   f"{form!r} field, so its reasoning is not trained (set template.reasoning: drop "
                                   "to say so, or put it in the content as a <think> block)", "warning"))
            else:
                m["content"] = messages[i]["content"]
        elif target == "content":
            m["content"] = f"<think>\n{reasoning}\n</think>\n\n{answer}"
        else:
            m["content"] = answer
            m[target] = reasoning
        out.append(m)
    return out


def serving_text(tokenizer, template: str, messages: list[dict], *, tools=None, extra=None) -> str:
    """The conversation as the model sees it at inference for its last answer.

    For templates that write the system prompt only before the last user turn (Mistral's), the
    plain rendering of a conversation that ends with an answer has no system prompt at all. Here
    it is the generation prompt of the last answer (system prompt in place) followed by that
    answer as the template renders it. Other conversations render as they are.
    """
    plain = render_chat(tokenizer, template, messages, tools=tools, extra=extra)[0]
    k = len(messages) - 1
    if k < 1 or messages[k].get("role") != "assistant" or messages[0].get("role") != "system":
        return plain
    prompt = render_chat(tokenizer, template, messages[:k], add_generation_prompt=True, tools=tools, extra=extra)[0]
    rest = messages[1:]
    base = render_chat(tokenizer, template, rest[:-1], add_generation_prompt=True, tools=tools, extra=extra)[0]
    if not plain.startswith(base):
        return plain
    return prompt + plain[len(base):]


def _check_tool_calls(messages: list[dict], text: str) -> None:
    """A template that cannot show an assistant's tool call would train it as an empty answer."""
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            fn = call.get("function", call) if isinstance(call, dict) else {}
            name = fn.get("name") if isinstance(fn, dict) else None
            if name and name not in text:
                raise TemplateError(
                    f"message {i}: this chat template does not render tool calls (the call to {name!r} is missing "
                    "from the rendering), so the turn would train as an empty answer; use a template with tool "
                    "support, or leave tool-calling rows out")


# --------------------------------------------------------------------------- tokens and masks

def _spans_to_mask(enc, n: int, spans, mask: list[int], value: int, only_weight: int | None) -> None:
    """Set ``mask`` over each span's tokens the way transformers maps generation spans to tokens."""
    for start, end, weight in spans:
        start_token = enc.char_to_token(start)
        if start_token is None:
            break  # as transformers: a span past the tokenized text ends the scan
        end_token = enc.char_to_token(end - 1) if end > 0 else None
        if only_weight is not None and weight != only_weight:
            continue
        for t in range(start_token, end_token + 1 if end_token else n):
            mask[t] = value


def _common_prefix_ids(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode_batch(tokenizer, texts: list[str], add_special_tokens: bool) -> list:
    """``tokenizers.Encoding`` per text, as ``tokenizer(texts, add_special_tokens=...)`` computes them.

    The Rust tokenizer is called directly (transformers' conversion of every encoding to Python
    lists is a third of the time); the first text of each batch is checked against the regular
    call, and any difference falls back to it.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and texts:
        encodings = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        reference = tokenizer(texts[:1], add_special_tokens=add_special_tokens)
        if list(reference["input_ids"][0]) == encodings[0].ids:
            return encodings
    enc = tokenizer(texts, add_special_tokens=add_special_tokens)
    return list(enc.encodings)


def tokens_and_masks(tokenizer, rendered: list[Rendered | None], *, details: bool = False) -> list[dict | None]:
    """Tokenize a batch of renderings (fast tokenizer, batched) and build each ``assistant_masks``."""
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError("the tokenizer must be a fast (Rust) tokenizer to map template spans to tokens")
    out: list[dict | None] = [None] * len(rendered)
    for special in (False, True):
        rows = [i for i, r in enumerate(rendered) if r is not None and r.add_special_tokens == special]
        if not rows:
            continue
        encodings = _encode_batch(tokenizer, [rendered[i].text for i in rows], special)
        prompt_rows = [i for i in rows if rendered[i].prompt_text is not None]
        prompt_ids: dict[int, list[int]] = {}
        for p_special in (False, True):
            batch = [i for i in prompt_rows if rendered[i].prompt_add_special_tokens == p_special]
            if batch:
                penc = _encode_batch(tokenizer, [rendered[i].prompt_text for i in batch], p_special)
                prompt_ids.update(zip(batch, (e.ids for e in penc)))
        for j, i in enumerate(rows):
            r = rendered[i]
            enc = encodings[j]
            ids = list(enc.ids)
            n = len(ids)
            if r.mode == "assistant":
                mask = [0] * n
                _spans_to_mask(enc, n, r.spans, mask, 1, only_weight=1)
            else:
                mask = [1] * n
                if r.mode == "all_but":
                    _spans_to_mask(enc, n, r.spans, mask, 0, only_weight=0)
            prompt_len = 0
            if i in prompt_ids:
                prompt_len = _common_prefix_ids(prompt_ids[i], ids)
                for t in range(prompt_len):
                    mask[t] = 0
            if n:
                mask[0] = 0  # nothing predicts the first token
            item: dict[str, Any] = {"input_ids": ids, "assistant_masks": mask}
            if r.notes:
                item["notes"] = list(r.notes)
            if details:
                item.update(text=r.text, notes=list(r.notes), spans=list(r.spans), prompt_tokens=prompt_len,
                            prompt_tokens_expected=len(prompt_ids.get(i, [])))
            out[i] = item
    return out
