"""Training data: find it, read it, detect its format, convert it to canonical examples.

Sources are local JSONL / JSON / Parquet / CSV files, folders ``datasets`` can read, Hugging
Face Hub ids, and ``builtin:demo`` / ``builtin:demo-eval``. Files are read as a stream: the
format is detected from the first rows, so a 1 GB file is never read whole to detect it.
Every row that cannot be used becomes a ``Problem`` naming its place (1-based ``line`` for
line-based files, 0-based ``row`` otherwise) and field; ``on_bad_rows`` chooses between stopping
(``DataError``) and dropping those rows with the report. Nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .data_formats import (
    FORMATS,
    MAPPABLE,
    DataError,
    Problem,
    apply_columns,
    convert_row,
    detect_format,
)
from .data_readers import BUILTIN_DATA, iter_source, locate

DETECT_ROWS = 64
INSPECT_CHARS = 1_000_000  # characters of one row the audit tokenizes (a 20 MB row took 4 GB whole)
STOP_AFTER_PROBLEMS = 100  # on_bad_rows: stop — enough to show, without reading a huge file through


@dataclass
class DataReport:
    source: str
    path: str | None
    format: str
    rows: int = 0  # rows read
    columns: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    converted_rows: int = 0  # rows turned into canonical examples
    dropped_rows: int = 0
    audit: dict | None = None
    truncated: bool = False  # stopped early (max_rows, or too many problems while stopping)
    origins: list[dict] = field(default_factory=list, repr=False)  # per example: {"line": n} or {"row": n}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "columns": list(self.columns),
            "problems": [p.to_dict() for p in self.problems],
            "converted_rows": self.converted_rows,
            "dropped_rows": self.dropped_rows,
            "audit": self.audit,
        }

    def origin_of(self, index: int) -> dict:
        return self.origins[index] if 0 <= index < len(self.origins) else {"row": index}


# --------------------------------------------------------------------------- detection and loading

def peek_rows(source, n: int = DETECT_ROWS) -> tuple[list[Any], list[str]]:
    """The first ``n`` readable rows and the columns seen in them (streams; never reads a file whole)."""
    rows, columns, _ = _peek(source, n)
    return rows, columns


def _peek(source, n: int = DETECT_ROWS) -> tuple[list[Any], list[str], "Problem | None"]:
    located = locate(source)
    rows: list[Any] = []
    columns: list[str] = []
    first: Problem | None = None
    for where, value in iter_source(located, source):
        if isinstance(value, Problem):
            if first is None:
                value.source, value.line, value.row = located.display, where.get("line"), where.get("row")
                first = value
            if not rows and where.get("line", where.get("row", 0)) > 1000:
                break  # nothing readable in the first thousand rows: the scan reports them
            continue
        rows.append(value)
        if isinstance(value, dict):
            for key in value:
                if key not in columns:
                    columns.append(key)
        if len(rows) >= n:
            break
    return rows, columns, first


def _check_mapping(source, columns: list[str], display: str) -> None:
    for ours, theirs in (source.columns or {}).items():
        if ours not in MAPPABLE:
            raise DataError(f"{display}: cannot map to {ours!r}; fields are {', '.join(MAPPABLE)}")
        if columns and theirs not in columns:
            raise DataError(f"{display}: no column {theirs!r} to map to {ours!r} (columns: {', '.join(columns)})")


def detect_source_format(source) -> tuple[str, list[str]]:
    """(format, columns) from the first rows, after the column mapping."""
    rows, columns, first = _peek(source)
    located = locate(source)
    if not rows:
        if first is not None:
            raise DataError(f"{first.sentence()} (and no readable row to detect the format from)", [first])
        raise DataError(f"{located.display}: the dataset has no rows")
    _check_mapping(source, columns, located.display)
    if source.format and source.format != "auto":
        return source.format, columns
    mapped = [apply_columns(r, source.columns or {}) if isinstance(r, dict) else r for r in rows]
    return detect_format(mapped), columns


def _unknown_format_report(source, columns: list[str]) -> DataReport:
    """The report of a source whose format cannot be told: every row counted, none converted."""
    located = locate(source)
    report = DataReport(source=located.display, path=None if located.kind == "hub" else located.path,
                        format="unknown", columns=columns)
    for where, value in iter_source(located, source):
        if source.max_rows is not None and report.rows >= source.max_rows:
            report.truncated = True
            break
        report.rows += 1
        if isinstance(value, Problem):
            value.source, value.line, value.row = located.display, where.get("line"), where.get("row")
            report.problems.append(value)
    report.dropped_rows = report.rows
    report.problems.insert(0, Problem("unknown_format", _unknown_format_message(columns), source=located.display))
    return report


def _unknown_format_message(columns: list[str]) -> str:
    hint = f" (columns: {', '.join(columns)})" if columns else ""
    return (f"cannot tell the dataset format{hint}; give --format or a column mapping "
            "(e.g. --map prompt=question --map completion=answer)")


def _scan(source, *, stop: bool, progress: Callable[[int, int | None], None] | None = None,
          limit: int | None = None):
    located = locate(source)
    fmt, columns = detect_source_format(source)
    report = DataReport(source=located.display, path=None if located.kind == "hub" else located.path,
                        format=fmt, columns=columns)
    if fmt == "unknown":
        raise DataError(f"{located.display}: {_unknown_format_message(columns)}")
    if fmt not in FORMATS:
        raise DataError(f"{located.display}: unknown format {fmt!r}")
    examples: list[dict] = []
    roles = dict(source.roles or {})
    mapping = dict(source.columns or {})
    errors = 0
    for where, value in iter_source(located, source):
        if source.max_rows is not None and report.rows >= source.max_rows:
            report.truncated = True
            break
        report.rows += 1
        if isinstance(value, Problem):
            value.source = where.get("file", located.display)  # a folder's shard, else the source
            value.line, value.row = where.get("line"), where.get("row")
            found = [value]
            example = None
        else:
            row = apply_columns(value, mapping) if isinstance(value, dict) else value
            example, row_problems = convert_row(row, fmt, roles)
            found = [
                Problem(p.code, p.message, line=where.get("line"), row=where.get("row"),
                        field=mapping.get(p.field, p.field) if p.field else None,
                        source=where.get("file", located.display))
                for p in row_problems
            ]
        if example is None:
            report.dropped_rows += 1
            report.problems.extend(found)
            errors += 1
            if stop and errors >= STOP_AFTER_PROBLEMS:
                report.truncated = True
                break
            continue
        examples.append(example)
        report.origins.append(where)
        report.converted_rows += 1
        if limit is not None and len(examples) >= limit:
            report.truncated = True
            break
        if progress is not None and report.rows % 1000 == 0:
            progress(report.rows, None)
    if progress is not None:
        progress(report.rows, report.rows)
    return examples, report


def load_examples(source, *, on_bad_rows: str = "stop", progress=None) -> tuple[list[dict], DataReport]:
    """Canonical examples of one source and the report of what was read, converted and dropped.

    ``on_bad_rows="stop"`` raises ``DataError`` (its sentence names the first bad line/row and
    field; ``.problems`` holds them all); ``"drop"`` leaves those rows out and lists them in the
    report. A source with no usable row raises either way.
    """
    examples, report = _scan(source, stop=on_bad_rows != "drop", progress=progress)
    if on_bad_rows != "drop":
        _raise_for_problems(report)
    if not examples:
        if report.rows == 0:
            raise DataError(f"{report.source}: the dataset has no rows")
        raise DataError(f"{report.source}: none of the {report.rows} rows can be used; first: "
                        f"{report.problems[0].sentence()}", report.problems)
    return examples, report


def _raise_for_problems(report: DataReport) -> None:
    errors = [p for p in report.problems if p.severity == "error"]
    if not errors:
        return
    more = len(errors) - 1
    tail = f" ({more} more problem{'s' if more != 1 else ''}; on_bad_rows: drop leaves such rows out)" \
        if more else " (on_bad_rows: drop leaves such rows out)"
    raise DataError(errors[0].sentence() + tail, report.problems)


def example_at(cfg, row: int) -> dict:
    """Example ``row`` (0-based, over all of ``cfg.data.sources`` in order, unusable rows skipped).

    Streams: only the rows up to ``row`` are read.
    """
    if row < 0:
        raise DataError(f"--row {row}: rows count from 0")
    seen = 0
    for source in cfg.data.sources:
        stop = cfg.data.on_bad_rows != "drop"
        examples, report = _scan(source, stop=stop, limit=row - seen + 1)
        if stop:
            _raise_for_problems(report)
        if seen + len(examples) > row:
            return examples[row - seen]
        seen += len(examples)
    raise DataError(f"--row {row}: the data has {seen} usable rows (0 to {seen - 1})")


def inspect_data(source, *, tokenizer=None, template=None, cfg=None, progress=None,
                 on_bad_rows: str = "drop", report_unknown: bool = False) -> DataReport:
    """Everything known about a source without training: format, rows, problems, audit.

    With ``on_bad_rows="drop"`` (the default) row problems are reported, never raised; with
    ``"stop"`` the first one raises ``DataError`` as ``load_examples`` does. With a tokenizer, the
    chat template is applied to every row too (template problems, e.g. roles a template forbids,
    are reported with the row's place) and ``audit`` holds the dataset-wide token audit. With
    ``report_unknown``, a format that cannot be detected is a report too (``format: unknown``, the
    columns, the rows' reading problems and an ``unknown_format`` problem) rather than a DataError.
    """
    if report_unknown:
        fmt, columns = detect_source_format(source)
        if fmt == "unknown":
            return _unknown_format_report(source, columns)
    examples, report = _scan(source, stop=on_bad_rows != "drop", progress=progress)
    if on_bad_rows != "drop":
        _raise_for_problems(report)
    if tokenizer is not None and examples:
        from .audit import audit_dataset
        from .config import RunConfig

        cfg = cfg or RunConfig()
        if template is None:
            from .templates import resolve_template

            template = resolve_template(tokenizer, cfg.template)
        from .templates import prepare_tokenizer

        prepare_tokenizer(tokenizer, template)
        limit = max(INSPECT_CHARS, 100 * (cfg.training.max_length or 0))
        bounded = []
        for i, ex in enumerate(examples):
            cut = _cut_to(ex, limit)
            if cut is not ex:
                origin = report.origin_of(i)
                report.problems.append(Problem(
                    "row_too_long", f"{_chars(ex):,} characters: the token audit reads its first {limit:,} only",
                    line=origin.get("line"), row=origin.get("row"), severity="warning", source=report.source))
            bounded.append(cut)
        audit = audit_dataset(tokenizer, bounded, template, cfg, progress=progress)
        for p in audit.pop("row_problems", []):
            origin = report.origin_of(p["row"])
            report.problems.append(Problem(p["code"], p["message"], line=origin.get("line"), row=origin.get("row"),
                                           field=p.get("field"), severity=p.get("severity", "error"),
                                           source=origin.get("file", report.source)))
        report.audit = audit
        refused = int(audit.get("rows_failed") or 0)  # rows the template cannot render: training leaves them out
        report.dropped_rows += refused
        report.converted_rows -= refused
        if on_bad_rows != "drop":
            _raise_for_problems(report)  # rows the template refuses stop like malformed rows
    elif examples:
        report.audit = text_audit(examples)
    return report


def _texts(example: dict) -> list[tuple[Any, Any]]:
    """(holder, key) of every text in a canonical example, in order."""
    out: list[tuple[Any, Any]] = []
    for key in ("messages", "prompt", "completion", "text"):
        value = example.get(key)
        if isinstance(value, str):
            out.append((example, key))
        elif isinstance(value, list):
            out += [(m, "content") for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return out


def _chars(example: dict) -> int:
    return sum(len(holder[key]) for holder, key in _texts(example))


def _cut_to(example: dict, limit: int) -> dict:
    """``example`` itself when its texts hold at most ``limit`` characters, else a copy whose texts
    are cut to ``limit`` in all (in order; later texts become empty, so the turns stay)."""
    if _chars(example) <= limit:
        return example
    import copy

    cut = copy.deepcopy(example)
    left = limit
    for holder, key in _texts(cut):
        holder[key] = holder[key][:left]
        left -= len(holder[key])
    return cut


def text_audit(examples: list[dict]) -> dict:
    """What can be said without a tokenizer: kinds of rows, turns, characters."""
    kinds: dict[str, int] = {}
    turns: list[int] = []
    chars: list[int] = []
    for ex in examples:
        if "messages" in ex:
            kind = "messages"
            msgs = ex["messages"]
        elif "prompt" in ex:
            kind = "conversational_prompt_completion" if isinstance(ex["prompt"], list) else "prompt_completion"
            msgs = (ex["prompt"] + ex["completion"]) if isinstance(ex["prompt"], list) else [
                {"role": "user", "content": ex["prompt"]}, {"role": "assistant", "content": ex["completion"]}]
        else:
            kind = "text"
            msgs = [{"role": "text", "content": ex["text"]}]
        kinds[kind] = kinds.get(kind, 0) + 1
        turns.append(sum(1 for m in msgs if m.get("role") == "assistant"))
        chars.append(sum(len(m.get("content") or "") for m in msgs))
    from .audit import percentiles

    return {"tokenizer": None, "rows": len(examples), "kinds": kinds,
            "assistant_turns": percentiles(turns), "characters": percentiles(chars)}


def parse_mapping(items: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``--map`` values: ``FIELD=COLUMN`` (column mapping) or ``role:THEIRS=OURS`` (role mapping)."""
    columns: dict[str, str] = {}
    roles: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--map {item}: expected FIELD=COLUMN or role:THEIRS=OURS")
        key, value = (s.strip() for s in item.split("=", 1))
        if key.startswith("role:"):
            theirs = key[5:]
            if value not in ("system", "user", "assistant", "tool"):
                raise DataError(f"--map {item}: a role maps to system, user, assistant or tool, not {value!r}")
            roles[theirs] = value
        else:
            if key not in MAPPABLE:
                raise DataError(f"--map {item}: cannot map to {key!r}; fields are {', '.join(MAPPABLE)}")
            columns[key] = value
    return columns, roles


__all__ = [
    "BUILTIN_DATA", "DataError", "DataReport", "Problem", "detect_source_format", "example_at", "inspect_data",
    "load_examples", "parse_mapping", "peek_rows", "text_audit",
]
