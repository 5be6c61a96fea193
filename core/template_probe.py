"""What a chat template does, found by rendering a few probe conversations.

Templates are programs: the only reliable way to know where one puts the system prompt, what it
does with reasoning, whether its ``{% generation %}`` block covers the assistant header, or whether
TRL's training version renders the same text, is to render and compare. Each question here is
answered once per template (resolution time), never per row.

``probe_template`` returns a ``TemplateBehaviour``; ``core/template_sources.py`` stores it on the
``ResolvedTemplate`` and ``core/masks.py`` acts on it (serving-form rendering, header trimming,
reasoning normalization). Findings are plain dicts ``{code, message, severity}`` like the
preview's problems.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from .findings import Severity, finding_dict
from .masks import TemplateError, render_chat

# Private-use characters: no template trims them, no real data holds them.
_SYS = "\ue000sysprobe\ue000"
_R1 = "\ue000first reasoning\ue000"
_R2 = "\ue000second reasoning\ue000"
_A1 = "\ue000first answer\ue000"
_A2 = "\ue000second answer\ue000"

# The shapes reasoning takes in data, and how each is handed to a template.
REASONING_FIELDS = ("reasoning_content", "thinking", "content")

REASONING_MODES = {
    "template": "kept as the model's own template renders it",
    "drop": "removed from every row: only answers train",
}


@dataclass
class TemplateBehaviour:
    """What probing found. ``system``: rendered | last_user | dropped | refused."""

    system: str = "rendered"
    reasoning_field: str | None = None  # the first REASONING_FIELDS entry the template renders
    reasoning: str = "none"  # every_turn | last_turn | dropped | none (no place for it)
    header: str | None = None  # assistant header inside the generation block (markers only)
    injects_date: bool = False
    findings: list[dict] = field(default_factory=list)  # Finding.to_dict()s

    def reasoning_sentence(self) -> str:
        return {
            "every_turn": "this template keeps the reasoning of every assistant turn",
            "last_turn": "this template keeps the reasoning of the last assistant turn only and drops it from "
                         "earlier turns (as the model sees a conversation at inference)",
            "dropped": "this template drops the reasoning of every assistant turn: reasoning in the data is not "
                       "trained",
            "none": "this template has no reasoning handling: a <think> block in the content is trained as "
                    "written, reasoning in a separate field is not rendered",
        }[self.reasoning]

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "reasoning": self.reasoning, "reasoning_field": self.reasoning_field,
                "header_masked": self.header, "injects_date": self.injects_date}


def _finding(code: str, message: str, severity: Severity = "info", **details: Any) -> dict:
    return finding_dict(code, message, severity, **details)


def _render(tokenizer, template: str, messages: list[dict], **kw) -> str | None:
    try:
        return render_chat(tokenizer, template, messages, **kw)[0]
    except TemplateError:
        return None


def _with_reasoning(answer: str, reasoning: str, how: str) -> dict:
    if how == "content":
        return {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}
    return {"role": "assistant", "content": answer, how: reasoning}


def probe_system(tokenizer, template: str) -> str:
    convo = [{"role": "system", "content": _SYS}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": _A1}]
    full = _render(tokenizer, template, convo)
    if full is None:
        return "refused"
    if _SYS in full:
        return "rendered"
    prompt = _render(tokenizer, template, convo[:2], add_generation_prompt=True)
    if prompt is not None and _SYS in prompt:
        return "last_user"
    return "dropped"


def probe_reasoning(tokenizer, template: str) -> tuple[str | None, str]:
    """(the field the template reads reasoning from, what it keeps: every_turn | last_turn | dropped | none).

    ``content`` means the template parses a ``<think>`` block out of the content; a template that
    shows such a block as written (no reasoning handling) is ``(None, "none")``.
    """
    for how in REASONING_FIELDS:
        convo = [{"role": "user", "content": "hi"}, _with_reasoning(_A1, _R1, how),
                 {"role": "user", "content": "and?"}, _with_reasoning(_A2, _R2, how)]
        full = _render(tokenizer, template, convo)
        if full is None or _A2 not in full:
            continue
        first, last = _R1 in full, _R2 in full
        if how == "content":
            verbatim = all(m["content"] in full for m in convo[1::2])
            if verbatim:
                return None, "none"
            return how, "every_turn" if first and last else ("last_turn" if last else "dropped")
        if last:
            return how, "every_turn" if first else "last_turn"
    return None, "none"


def probe_header(tokenizer, template: str) -> str | None:
    """The assistant header inside the template's first generation block, or None."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _A1}]
    try:
        full, spans = render_chat(tokenizer, template, convo, with_indices=True)
    except TemplateError:
        return None
    prompt = _render(tokenizer, template, convo[:1], add_generation_prompt=True)
    if not spans or prompt is None or not full.startswith(prompt):
        return None
    start = spans[0][0]
    if start < len(prompt):
        return full[start:len(prompt)] or None
    return None


def probe_default_system(tokenizer, template: str) -> str | None:
    """The system prompt the template writes when a conversation has none, or None."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    bare = _render(tokenizer, template, convo)
    with_sys = _render(tokenizer, template, [{"role": "system", "content": _SYS}, *convo])
    if bare is None or with_sys is None or _SYS not in with_sys:
        return None
    pre, post = with_sys.split(_SYS, 1)
    if bare.startswith(pre) and bare.endswith(post) and len(bare) > len(pre) + len(post):
        return bare[len(pre):len(bare) - len(post)].strip() or None
    return None


_DATE_FORMATS = ("%d %b %Y", "%d %B %Y", "%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%m/%d/%Y")


def probe_date(tokenizer, template: str) -> bool:
    """True when a rendering holds today's date (one that changes with the day, not a fixed one)."""
    if "strftime_now" not in template and "date_string" not in template:
        return False
    text = _render(tokenizer, template, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    if text is None:
        return False
    today = _dt.date.today()
    return any(today.strftime(f) in text and today.strftime(f) not in template for f in _DATE_FORMATS)


def probe_template(tokenizer, template: str | None, *, markers: bool) -> TemplateBehaviour:
    """Everything this module can tell about ``template`` (None: no template, nothing to probe)."""
    b = TemplateBehaviour()
    if not template:
        return b
    b.system = probe_system(tokenizer, template)
    b.reasoning_field, b.reasoning = probe_reasoning(tokenizer, template)
    if markers:
        b.header = probe_header(tokenizer, template)
    b.injects_date = probe_date(tokenizer, template)
    injected = probe_default_system(tokenizer, template)
    if injected:
        b.findings.append(_finding(
            "default_system_prompt",
            f"the template injects a default system prompt when a row has none: {injected!r}", injected=injected))
    if b.system == "last_user":
        b.findings.append(_finding(
            "system_before_last_user",
            "this template writes the system prompt only before the last user turn, and leaves it out when a "
            "conversation ends with an answer: rows are rendered as at inference for their last answer (system "
            "prompt before the last user turn), so it is trained with the system prompt in place"))
    elif b.system == "dropped":
        b.findings.append(_finding(
            "system_prompt_dropped",
            "this template leaves the system message out of the rendering: the system prompts in the data are "
            "neither seen nor trained; put the instructions in the first user turn, or use another template",
            "warning"))
    elif b.system == "refused":
        b.findings.append(_finding(
            "system_role_refused",
            "this template refuses a system message: rows that have one fail; fold it into the first user turn",
            "warning"))
    if b.header:
        b.findings.append(_finding(
            "header_in_generation",
            f"the template's {{% generation %}} block starts with the assistant header {b.header!r}; it is masked, "
            "since the model never generates it"))
    if b.reasoning != "none":
        b.findings.append(_finding("reasoning", b.reasoning_sentence() + " (template.reasoning sets this)"))
    if b.injects_date:
        b.findings.append(_finding(
            "template_injects_date",
            "the template writes today's date into the prompt: rows carry the date they were tokenized on",
            "warning"))
    return b


def first_difference(a: str, b: str, width: int = 24) -> str:
    """A short description of where two renderings part ways."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return f"at character {n}: {a[n:n + width]!r} vs {b[n:n + width]!r}"


def cross_check(tokenizer, own: str, other: str) -> str | None:
    """None when ``other`` (markers ignored) renders the probe conversations as ``own`` does, else why not."""
    probes = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and?"},
         {"role": "assistant", "content": "bye"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
         {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nhello"},
         {"role": "user", "content": "and?"}, {"role": "assistant", "content": "<think>\nr2\n</think>\n\nbye"}],
        *([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", field: "r1"},
           {"role": "user", "content": "and?"}, {"role": "assistant", "content": "bye", field: "r2"}]
          for field in ("reasoning_content", "thinking")),
    ]
    for convo in probes:
        mine = _render(tokenizer, own, convo)
        if mine is None:
            continue
        theirs = _render(tokenizer, other, convo)
        if theirs != mine:
            what = "a conversation with reasoning" if ("<think>" in convo[1]["content"] or len(convo[1]) > 2) else (
                "a multi-turn conversation" if len(convo) > 3 else "a single turn")
            if theirs is None:
                return f"it refuses {what} the model's own template renders"
            return f"it renders {what} differently ({first_difference(mine, theirs)})"
    return None
