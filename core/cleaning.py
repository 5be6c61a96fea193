"""Row quality: duplicates, empty turns, refusal openers, very short answers — and a cleaned copy.

The checks here work on canonical examples (what ``data.load_examples`` returns: ``{"messages":
[...]}``, ``{"prompt", "completion"}`` or ``{"text"}``). The doctor counts what they find; the
opt-in ``clean`` command writes a cleaned copy of the data and reports every row it removed.
The user's file is never edited: the output must be a different file.

What counts as what (constants below, also in docs/doctor.md):

- ``duplicate``: the row equals an earlier row exactly (same JSON, key order aside) or after
  normalisation (all text lower-cased, runs of whitespace collapsed to one space);
- ``empty``: a turn whose content is empty or whitespace only (any role);
- ``refusal``: an assistant answer opening with a refusal ("I'm sorry, but", "As an AI", ...);
- ``short``: an assistant answer under ``SHORT_ANSWER_CHARS`` characters that is not a number;
- ``overlap``: (with ``against``) the row also appears, normalised, in another set — the eval split.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .paths import atomic_writer

# An assistant answer shorter than this (stripped, in characters) is "very short", unless it is a number.
SHORT_ANSWER_CHARS = 3
# How a refusal opens: matched at the start of an assistant answer, case-insensitively.
REFUSAL_OPENERS = (
    "i'm sorry", "i am sorry", "sorry, but", "sorry, i", "i apologize", "i apologise",
    "i cannot", "i can't", "i can not", "i won't be able", "i'm unable", "i am unable",
    "i'm not able to", "i am not able to", "as an ai", "as a language model", "as an artificial intelligence",
    "unfortunately, i can", "unfortunately, i am", "unfortunately, i'm",
)
KINDS = ("duplicate", "empty", "refusal", "short", "overlap")
DEFAULT_KINDS = ("duplicate", "empty", "refusal", "short")
MAX_LISTED = 20  # removed rows listed per kind in a report; counts are always complete

_NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?%?\.?")
_SPACE = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


class CleaningError(UserError, ValueError):
    """A clean request that cannot be done (e.g. the output is the input file). One sentence."""


# --------------------------------------------------------------------------- row views

def turns(example: dict) -> list[tuple[str, str]]:
    """(role, content) of every turn of a canonical example; plain text is one ``text`` turn."""
    if "messages" in example:
        return [(str(m.get("role")), _content(m.get("content"))) for m in example["messages"]]
    if "prompt" in example:
        prompt, completion = example.get("prompt"), example.get("completion")
        if isinstance(prompt, list):
            msgs = list(prompt) + list(completion if isinstance(completion, list) else [])
            return [(str(m.get("role")), _content(m.get("content"))) for m in msgs]
        return [("user", _content(prompt)), ("assistant", _content(completion))]
    if "text" in example:
        return [("text", _content(example["text"]))]
    return []


def is_conversational(example: dict) -> bool:
    return "messages" in example or isinstance(example.get("prompt"), list)


def _content(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # multimodal-style parts: keep the text ones
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return str(value)


def normalise(text: str) -> str:
    """Lower-case, curly apostrophes straightened, whitespace runs collapsed."""
    return _SPACE.sub(" ", text.translate(_APOSTROPHES).lower()).strip()


def exact_key(example: dict) -> str:
    return hashlib.sha1(json.dumps(example, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def normalised_key(example: dict) -> str:
    text = "\x1e".join(f"{role}\x1f{normalise(content)}" for role, content in turns(example))
    return hashlib.sha1(text.encode()).hexdigest()


def is_refusal(answer: str) -> bool:
    start = normalise(answer)[:80]
    return start.startswith(REFUSAL_OPENERS)


def is_short(answer: str) -> bool:
    text = answer.strip()
    return len(text) < SHORT_ANSWER_CHARS and not _NUMBER.fullmatch(text)


def row_flags(example: dict) -> list[str]:
    """Quality flags of one row (``empty``, ``refusal``, ``short``), in that order, no repeats."""
    flags: list[str] = []
    for role, content in turns(example):
        if not content.strip():
            if "empty" not in flags:
                flags.append("empty")
            continue
        if role == "assistant":
            if is_refusal(content) and "refusal" not in flags:
                flags.append("refusal")
            if is_short(content) and "short" not in flags:
                flags.append("short")
    return [f for f in ("empty", "refusal", "short") if f in flags]


# --------------------------------------------------------------------------- dataset views

@dataclass
class DuplicateCounts:
    exact: int = 0  # rows that repeat an earlier row exactly
    normalised: int = 0  # rows that repeat an earlier row only after normalisation
    rows: list[int] = field(default_factory=list)  # indices of every repeating row (both kinds)

    @property
    def total(self) -> int:
        return self.exact + self.normalised


def find_duplicates(examples: list[dict]) -> DuplicateCounts:
    """Rows that repeat an earlier row of the same list (the first occurrence is kept)."""
    seen_exact: set[str] = set()
    seen_norm: set[str] = set()
    out = DuplicateCounts()
    for i, ex in enumerate(examples):
        e, n = exact_key(ex), normalised_key(ex)
        if e in seen_exact:
            out.exact += 1
            out.rows.append(i)
        elif n in seen_norm:
            out.normalised += 1
            out.rows.append(i)
        seen_exact.add(e)
        seen_norm.add(n)
    return out


def find_overlap(examples: list[dict], others: list[dict]) -> DuplicateCounts:
    """Rows of ``examples`` that also appear in ``others`` (exactly, or only after normalisation)."""
    exact = {exact_key(ex) for ex in others}
    norm = {normalised_key(ex) for ex in others}
    out = DuplicateCounts()
    for i, ex in enumerate(examples):
        if exact_key(ex) in exact:
            out.exact += 1
            out.rows.append(i)
        elif normalised_key(ex) in norm:
            out.normalised += 1
            out.rows.append(i)
    return out


def quality_counts(examples: Iterable[dict]) -> dict[str, int]:
    """How many rows carry each quality flag (a row may count under several)."""
    counts = {"empty": 0, "refusal": 0, "short": 0}
    for ex in examples:
        for flag in row_flags(ex):
            counts[flag] += 1
    return counts


# --------------------------------------------------------------------------- cleaning

@dataclass
class CleaningReport:
    source: str
    output: str | None
    rows_in: int
    rows_out: int
    kinds: list[str]
    removed: dict[str, int]
    examples: list[dict] = field(default_factory=list)  # up to MAX_LISTED per kind: row/line, reason, excerpt

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "output": self.output, "rows_in": self.rows_in, "rows_out": self.rows_out,
            "rows_removed": self.rows_in - self.rows_out, "kinds": list(self.kinds),
            "removed": dict(self.removed), "removed_rows": list(self.examples),
        }


def clean_examples(examples: list[dict], kinds: Iterable[str] = DEFAULT_KINDS, against: list[dict] | None = None,
                   origin=None) -> tuple[list[dict], dict[str, int], list[dict]]:
    """(kept rows, removed count per kind, listed removed rows). A row is removed for its first reason.

    ``origin(i)`` may map a row index to ``{"line": ...}`` or ``{"row": ...}`` for the listing.
    """
    kinds = list(kinds)
    unknown = set(kinds) - set(KINDS)
    kinds = [k for k in KINDS if k in set(kinds)]
    if unknown:
        raise CleaningError(f"--drop: unknown kind {sorted(unknown)[0]!r} (kinds: {', '.join(KINDS)})")
    if "overlap" in kinds and against is None:
        raise CleaningError("--drop overlap needs --against EVAL_SOURCE (the rows to compare with)")
    removed = {k: 0 for k in kinds}
    listed: list[dict] = []
    against_exact = {exact_key(ex) for ex in against or []}
    against_norm = {normalised_key(ex) for ex in against or []}
    seen_exact: set[str] = set()
    seen_norm: set[str] = set()
    kept: list[dict] = []
    for i, ex in enumerate(examples):
        e, n = exact_key(ex), normalised_key(ex)
        reason = None
        if "overlap" in kinds and (e in against_exact or n in against_norm):
            reason = "overlap"
        elif "duplicate" in kinds and (e in seen_exact or n in seen_norm):
            reason = "duplicate"
        else:
            flags = [f for f in row_flags(ex) if f in kinds]
            reason = flags[0] if flags else None
        seen_exact.add(e)
        seen_norm.add(n)
        if reason is None:
            kept.append(ex)
            continue
        removed[reason] += 1
        if removed[reason] <= MAX_LISTED:
            where = dict(origin(i)) if origin else {"row": i}
            listed.append({**where, "reason": reason, "excerpt": _excerpt(ex)})
    return kept, removed, listed


def _excerpt(example: dict, limit: int = 80) -> str:
    text = " | ".join(f"{role}: {content}" for role, content in turns(example))
    text = _SPACE.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_jsonl(examples: list[dict], out: str | os.PathLike) -> Path:
    """Write canonical rows as JSONL atomically (temp file in the same folder, then rename)."""
    with atomic_writer(out) as fh:
        for ex in examples:
            fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
    return Path(out)


def _same_file(a: str, b: Path) -> bool:
    pa = Path(a).expanduser()
    try:
        if pa.exists() and b.exists():
            return os.path.samefile(pa, b)
        return pa.resolve() == b.resolve()
    except OSError:
        return False


def clean_source(source, out: str | os.PathLike, kinds: Iterable[str] = DEFAULT_KINDS, against=None,
                 on_bad_rows: str = "stop") -> CleaningReport:
    """Load ``source`` (a ``DataSource``), drop the flagged rows, write the rest to ``out`` as JSONL.

    ``against`` is another ``DataSource`` (usually the eval split) for the ``overlap`` kind. The
    output holds canonical rows (``messages`` / ``prompt``+``completion`` / ``text``), which the
    data loader reads back as they are. Refuses to write over the source.
    """
    from . import data as data_mod

    out_path = Path(out).expanduser()
    if not str(source.path).startswith("builtin:") and _same_file(source.path, out_path):
        raise CleaningError(f"--out {out}: that is the source file; clean never edits your data, give another path")
    examples, report = data_mod.load_examples(source, on_bad_rows=on_bad_rows)
    others = None
    if against is not None:
        others, _ = data_mod.load_examples(against, on_bad_rows=on_bad_rows)
    origin = getattr(report, "origin_of", None)
    kept, removed, listed = clean_examples(examples, kinds, others, origin=origin)
    write_jsonl(kept, out_path)
    return CleaningReport(
        source=str(source.path), output=str(out_path), rows_in=len(examples), rows_out=len(kept),
        kinds=[k for k in KINDS if k in set(kinds)], removed=removed, examples=listed,
    )
