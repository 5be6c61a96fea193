"""Dataset formats: detect one from a few rows, and convert each row to a canonical example.

Canonical examples are TRL's dataset types: ``{"messages": [...]}``, ``{"prompt": str,
"completion": str}``, ``{"prompt": [msgs], "completion": [msgs]}`` and ``{"text": str}``.
Alpaca, ShareGPT and column mappings become ``messages``. A row that cannot be converted yields
``Problem``s naming its field; nothing is dropped without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DATA_FORMATS
from .errors import UserError

# What detection finds: a format a source may name (all but "auto"), or "unknown".
FORMATS = (*(f for f in DATA_FORMATS if f != "auto"), "unknown")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
    "function_response": "tool", "observation": "tool", "ipython": "tool",
}
# OpenAI's names for the same roles.
MESSAGE_ROLE_ALIASES = {"developer": "system", "function": "tool"}
# Fields a column mapping may target (ours -> their column).
MAPPABLE = (
    "messages", "conversations", "prompt", "completion", "instruction", "input", "output",
    "system", "text", "user", "assistant",
)


class DataError(UserError, ValueError):
    """Data that cannot be used. One sentence naming file, line/row and field; ``problems`` lists all."""

    def __init__(self, message: str, problems: list["Problem"] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass
class Problem:
    code: str
    message: str
    line: int | None = None  # 1-based, line-based files
    row: int | None = None  # 0-based, other sources
    field: str | None = None
    severity: str = "error"  # error | warning | info
    source: str | None = None

    def where(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.line is not None:
            parts.append(f"line {self.line}")
        elif self.row is not None:
            parts.append(f"row {self.row}")
        if self.field:
            parts.append(f"field {self.field}")
        return ", ".join(parts)

    def sentence(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, Any]:
        out = {"code": self.code, "message": self.message, "severity": self.severity}
        for key in ("line", "row", "field", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass
class RowProblem:
    field: str | None
    message: str
    code: str = "invalid_row"


# --------------------------------------------------------------------------- detection

def _first_dict(value: Any) -> dict | None:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return None


def detect_row_format(row: Any) -> str:
    """The format one row looks like (``unknown`` when none fits)."""
    if not isinstance(row, dict):
        return "unknown"
    for key in ("messages", "conversations"):
        first = _first_dict(row.get(key))
        if first is not None:
            if "from" in first and "value" in first:
                return "sharegpt"
            if "role" in first:
                return "messages"
    if "prompt" in row and "completion" in row:
        if isinstance(row["prompt"], list) or isinstance(row["completion"], list):
            return "conversational_prompt_completion"
        return "prompt_completion"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "user" in row and "assistant" in row:
        return "messages"  # a mapped question/answer pair
    if "text" in row:
        return "text"
    return "unknown"


def detect_format(rows: list[Any]) -> str:
    """The format most of the first rows look like (ties: the earliest)."""
    counts: dict[str, int] = {}
    order: list[str] = []
    for row in rows:
        fmt = detect_row_format(row)
        if fmt == "unknown":
            continue
        if fmt not in counts:
            order.append(fmt)
        counts[fmt] = counts.get(fmt, 0) + 1
    if not counts:
        return "unknown"
    return max(order, key=lambda f: (counts[f], -order.index(f)))


def apply_columns(row: dict, columns: dict[str, str]) -> dict:
    """Rename their columns to our fields (``columns`` maps ours -> theirs)."""
    if not columns:
        return row
    out = dict(row)
    for ours, theirs in columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


# --------------------------------------------------------------------------- conversion

def _content(value: Any, field: str, problems: list[RowProblem]) -> str | None:
    """Message content as a string: OpenAI text parts are joined; anything else is a problem."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                problems.append(RowProblem(f"{field}[{j}]", f"non-text content ({kind}) is not supported",
                                           "non_text_content"))
                return None
        return "".join(texts)
    problems.append(RowProblem(field, f"content must be a string, got {_type(value)}", "non_string_content"))
    return None


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _weight(value: Any, field: str, problems: list[RowProblem]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return int(value)
    problems.append(RowProblem(field, f"weight must be 0 or 1, got {value!r}", "invalid_weight"))
    return None


def convert_messages(value: Any, field: str, roles: dict[str, str], problems: list[RowProblem], *,
                     role_key: str = "role", content_key: str = "content", default_roles: dict | None = None,
                     must_end_with_assistant: bool = True) -> list[dict] | None:
    """Validate and normalize a list of messages (also ShareGPT turns, via the key names)."""
    if not isinstance(value, list):
        problems.append(RowProblem(field, f"must be a list of messages, got {_type(value)}", "invalid_messages"))
        return None
    if not value:
        problems.append(RowProblem(field, "the conversation is empty", "empty_conversation"))
        return None
    out: list[dict] = []
    before = len(problems)
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            problems.append(RowProblem(where, f"must be a message object, got {_type(msg)}", "invalid_message"))
            continue
        raw_role = msg.get(role_key)
        if not isinstance(raw_role, str):
            problems.append(RowProblem(f"{where}.{role_key}", "missing role" if raw_role is None
                                       else f"role must be a string, got {_type(raw_role)}", "missing_role"))
            continue
        role = roles.get(raw_role) or (default_roles or {}).get(raw_role) or raw_role
        if role not in ROLES:
            hint = f" (map it with --map role:{raw_role}=user|assistant|system|tool)"
            problems.append(RowProblem(f"{where}.{role_key}", f"unknown role {raw_role!r}{hint}", "unknown_role"))
            continue
        new: dict[str, Any] = {"role": role}
        tool_calls = msg.get("tool_calls")
        if content_key not in msg and not (role == "assistant" and tool_calls):
            problems.append(RowProblem(f"{where}.{content_key}", "missing content", "missing_content"))
            continue
        raw = msg.get(content_key)
        if raw is None and role == "assistant" and tool_calls:
            content = ""
        else:
            content = _content(raw, f"{where}.{content_key}", problems)
            if content is None:
                continue
        if role == "assistant" and not content.strip() and not tool_calls:
            problems.append(RowProblem(f"{where}.{content_key}", "empty assistant content", "empty_assistant"))
            continue
        new["content"] = content
        for key in ("tool_calls", "name", "tool_call_id", "reasoning_content", "thinking"):
            if msg.get(key) is not None:
                new[key] = msg[key]
        weight = _weight(msg.get("weight"), f"{where}.weight", problems)
        if weight is not None:
            if role != "assistant" and weight == 1:
                problems.append(RowProblem(f"{where}.weight", "weight 1 is only supported on assistant turns",
                                           "invalid_weight"))
                continue
            if role == "assistant":
                new["weight"] = weight
        out.append(new)
    if len(problems) > before:
        return None
    if must_end_with_assistant and out[-1]["role"] != "assistant":
        problems.append(RowProblem(f"{field}[{len(out) - 1}].{role_key}",
                                   "the conversation ends without an assistant turn", "no_final_assistant"))
        return None
    return out


def _text(row: dict, key: str, problems: list[RowProblem], *, required: bool = True,
          non_empty: bool = True) -> str | None:
    if key not in row or row[key] is None:
        if required:
            problems.append(RowProblem(key, "missing field", "missing_field"))
        return None
    value = row[key]
    if not isinstance(value, str):
        problems.append(RowProblem(key, f"must be a string, got {_type(value)}", "non_string_content"))
        return None
    if non_empty and not value.strip():
        problems.append(RowProblem(key, "empty text", "empty_field"))
        return None
    return value


def convert_row(row: Any, fmt: str, roles: dict[str, str]) -> tuple[dict | None, list[RowProblem]]:
    """(canonical example or None, problems) for one row already renamed by the column mapping."""
    problems: list[RowProblem] = []
    if not isinstance(row, dict):
        return None, [RowProblem(None, f"a row must be an object, got {_type(row)}", "invalid_row")]
    if fmt == "messages":
        if "messages" not in row and "conversations" not in row and ("user" in row or "assistant" in row):
            return _pair(row, problems), problems
        key = "messages" if "messages" in row else "conversations"
        if key not in row:
            return None, [RowProblem("messages", "missing field", "missing_field")]
        msgs = convert_messages(row[key], key, roles, problems, default_roles=MESSAGE_ROLE_ALIASES)
        if msgs is None:
            return None, problems
        example: dict[str, Any] = {"messages": msgs}
        if row.get("tools") is not None:
            example["tools"] = row["tools"]
        return example, problems
    if fmt == "sharegpt":
        key = "conversations" if "conversations" in row else "messages"
        if key not in row:
            return None, [RowProblem("conversations", "missing field", "missing_field")]
        msgs = convert_messages(row[key], key, roles, problems, role_key="from", content_key="value",
                                default_roles=SHAREGPT_ROLES)
        if msgs is None:
            return None, problems
        system = row.get("system")
        if isinstance(system, str) and system.strip() and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}, *msgs]
        return {"messages": msgs}, problems
    if fmt == "prompt_completion":
        prompt = _text(row, "prompt", problems, non_empty=False)
        completion = _text(row, "completion", problems)
        if problems:
            return None, problems
        return {"prompt": prompt, "completion": completion}, problems
    if fmt == "conversational_prompt_completion":
        prompt = convert_messages(row.get("prompt"), "prompt", roles, problems, must_end_with_assistant=False)
        completion = convert_messages(row.get("completion"), "completion", roles, problems)
        if problems:
            return None, problems
        return {"prompt": prompt, "completion": completion}, problems
    if fmt == "alpaca":
        instruction = _text(row, "instruction", problems)
        extra = _text(row, "input", problems, required=False, non_empty=False)
        output = _text(row, "output", problems)
        system = _text(row, "system", problems, required=False, non_empty=False)
        if problems:
            return None, problems
        user = instruction if not (extra and extra.strip()) else f"{instruction}\n\n{extra}"
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        if system and system.strip():
            msgs.insert(0, {"role": "system", "content": system})
        return {"messages": msgs}, problems
    if fmt == "text":
        text = _text(row, "text", problems)
        return ({"text": text} if text is not None else None), problems
    return None, [RowProblem(None, "no known format fits this row", "unknown_format")]


def _pair(row: dict, problems: list[RowProblem]) -> dict | None:
    user = _text(row, "user", problems)
    assistant = _text(row, "assistant", problems)
    system = _text(row, "system", problems, required=False, non_empty=False)
    if problems:
        return None
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if system and system.strip():
        msgs.insert(0, {"role": "system", "content": system})
    return {"messages": msgs}
