"""Training data: find it, read it, detect its format, convert it to canonical examples.

Sources are local JSONL / JSON / Parquet / CSV files, folders ``datasets`` can read, Hugging
Face Hub ids, and ``builtin:demo`` / ``builtin:demo-eval``. Files are read as a stream: the
format is detected from the first rows, so a 1 GB file is never read whole to detect it.
Every row that cannot be used becomes a ``Problem`` naming its place (1-based ``line`` for
line-based files, 0-based ``row`` otherwise) and field; ``on_bad_rows`` chooses between stopping
(``DataError``) and dropping those rows with the report. Nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sftwizard.core.data_formats import (
    FORMATS,
    MAPPABLE,
    apply_columns,
    convert_row,
    detect_format,
)

ASSETS = Path(__file__).parent / "assets" / "demo"
BUILTIN_DATA = {"builtin:demo": ASSETS / "train.jsonl", "builtin:demo-eval": ASSETS / "eval.jsonl"}
LOCAL_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                  ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
DETECT_ROWS = 64
STOP_AFTER_PROBLEMS = 100  # on_bad_rows: stop — enough to show, without reading a huge file through


class DataError(ValueError):
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


# --------------------------------------------------------------------------- locating a source

@dataclass
class _Located:
    kind: str  # jsonl | json | parquet | csv | hub | dir
    path: str  # file path, folder, or hub id
    display: str  # how problems name it


def _locate(source) -> _Located:
    raw = (source.path or "").strip()
    if not raw:
        raise DataError("data source: the path is empty")
    if raw in BUILTIN_DATA:
        return _Located("jsonl", str(BUILTIN_DATA[raw]), raw)
    if raw.startswith("builtin:"):
        raise DataError(f"{raw}: no such builtin dataset (known: {', '.join(BUILTIN_DATA)})")
    p = Path(raw).expanduser()
    if p.is_dir():
        return _Located("dir", str(p), str(p))
    if p.exists():
        suffix = p.suffix.lower()
        kind = LOCAL_SUFFIXES.get(suffix)
        if kind is None:
            raise DataError(f"{p}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .parquet or .csv")
        return _Located(kind, str(p), str(p))
    looks_local = raw.startswith((".", "/", "~")) or p.suffix.lower() in LOCAL_SUFFIXES or raw.count("/") > 1
    if looks_local:
        raise DataError(f"{raw}: no such file")
    return _Located("hub", raw, raw)


# --------------------------------------------------------------------------- readers: (location, row | Problem)

def _iter_jsonl(path: str) -> Iterator[tuple[dict, Any]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = {"line": lineno}
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, Problem("undecodable", f"bytes that are not UTF-8 (at column {exc.start + 1})")
                continue
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield where, Problem("invalid_json", f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            yield where, value


def _iter_json(path: str) -> Iterator[tuple[dict, Any]]:
    """Stream the objects of a top-level JSON array; a top-level object holding one list is read whole."""
    decoder = json.JSONDecoder()
    with open(path, "rb") as fh:
        reader = codecs.getincrementaldecoder("utf-8")()
        buf = ""
        pos = 0
        consumed = 0  # characters before buf[0], to report lines on errors
        line_base = 1

        def more() -> bool:
            nonlocal buf, pos, consumed, line_base
            chunk = fh.read(1 << 20)
            try:
                text = reader.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                raise DataError(f"{path}: bytes that are not UTF-8 near line {line_base + buf.count(chr(10))}") from None
            line_base += buf.count("\n", 0, pos)
            consumed += pos
            buf = buf[pos:] + text
            pos = 0
            return bool(chunk)

        more()
        buf = buf.lstrip("\ufeff")

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not more():
                    return

        skip_ws()
        if pos >= len(buf):
            raise DataError(f"{path}: the file is empty")
        if buf[pos] != "[":
            # a top-level object: read it whole (e.g. {"data": [...]})
            while more():
                pass
            try:
                value = json.loads(buf)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
            lists = [v for v in value.values() if isinstance(v, list)] if isinstance(value, dict) else []
            if len(lists) != 1:
                raise DataError(f"{path}: expected a JSON array of rows (or an object holding one list)")
            for i, item in enumerate(lists[0]):
                yield {"row": i}, item
            return
        pos += 1
        index = 0
        while True:
            skip_ws()
            if pos < len(buf) and buf[pos] == "]":
                return
            if index and pos < len(buf) and buf[pos] == ",":
                pos += 1
                skip_ws()
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    if more():  # the row may just continue in the next chunk
                        continue
                    line = line_base + buf.count("\n", 0, exc.pos)
                    raise DataError(f"{path}: line {line}: invalid JSON in row {index}: {exc.msg}") from None
            pos = end
            yield {"row": index}, value
            index += 1


def _iter_csv(path: str) -> Iterator[tuple[dict, Any]]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    bad_lines: set[int] = set()

    def lines() -> Iterator[str]:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad_lines.add(lineno)
                    text = raw.decode("utf-8", errors="replace")
                yield text.lstrip("\ufeff") if lineno == 1 else text

    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    last = reader.line_num
    for record in reader:
        start, last = last + 1, reader.line_num
        where = {"line": start}
        if not any(cell.strip() for cell in record):
            continue
        bad = [n for n in range(start, last + 1) if n in bad_lines]
        if bad:
            yield where, Problem("undecodable", "bytes that are not UTF-8")
            continue
        if len(record) != len(header):
            yield where, Problem("invalid_csv", f"{len(record)} cells where the header has {len(header)}")
            continue
        yield where, dict(zip(header, record))


def _iter_parquet(path: str) -> Iterator[tuple[dict, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    index = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield {"row": index}, row
            index += 1


def _iter_hub(located: _Located, source) -> Iterator[tuple[dict, Any]]:
    dataset = _load_hub(located, source)
    for i, row in enumerate(dataset):
        yield {"row": i}, row


def _load_hub(located: _Located, source):
    import datasets

    split = source.split or "train"
    try:
        if located.kind == "dir" and (Path(located.path) / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(located.path)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(located.path, source.name, split=split, streaming=located.kind == "hub")
    except Exception as exc:  # offline, missing dataset, bad split: one sentence
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or any(
            word in text.lower() for word in ("offline", "connection", "resolve", "network", "max retries")
        )
        if located.kind == "hub" and offline:
            raise DataError(
                f"{located.path}: cannot reach the Hugging Face Hub to load this dataset (offline?); "
                "download it on a connected machine or give a local file"
            ) from None
        raise DataError(f"{located.path}: cannot load split {split!r}: {text}") from None


def _iter_source(located: _Located, source) -> Iterator[tuple[dict, Any]]:
    if located.kind == "jsonl":
        return _iter_jsonl(located.path)
    if located.kind == "json":
        return _iter_json(located.path)
    if located.kind == "csv":
        return _iter_csv(located.path)
    if located.kind == "parquet":
        return _iter_parquet(located.path)
    return _iter_hub(located, source)


# --------------------------------------------------------------------------- detection and loading

def peek_rows(source, n: int = DETECT_ROWS) -> tuple[list[Any], list[str]]:
    """The first ``n`` readable rows and the columns seen in them (streams; never reads a file whole)."""
    rows, columns, _ = _peek(source, n)
    return rows, columns


def _peek(source, n: int = DETECT_ROWS) -> tuple[list[Any], list[str], "Problem | None"]:
    located = _locate(source)
    rows: list[Any] = []
    columns: list[str] = []
    first: Problem | None = None
    for where, value in _iter_source(located, source):
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
    located = _locate(source)
    if not rows:
        if first is not None:
            raise DataError(f"{first.sentence()} (and no readable row to detect the format from)", [first])
        raise DataError(f"{located.display}: the dataset has no rows")
    _check_mapping(source, columns, located.display)
    if source.format and source.format != "auto":
        return source.format, columns
    mapped = [apply_columns(r, source.columns or {}) if isinstance(r, dict) else r for r in rows]
    return detect_format(mapped), columns


def _scan(source, *, stop: bool, progress: Callable[[int, int | None], None] | None = None,
          limit: int | None = None):
    located = _locate(source)
    fmt, columns = detect_source_format(source)
    report = DataReport(source=located.display, path=None if located.kind == "hub" else located.path,
                        format=fmt, columns=columns)
    if fmt == "unknown":
        hint = f" (columns: {', '.join(columns)})" if columns else ""
        raise DataError(
            f"{located.display}: cannot tell the dataset format{hint}; give --format or a column mapping "
            "(e.g. --map prompt=question --map completion=answer)"
        )
    if fmt not in FORMATS:
        raise DataError(f"{located.display}: unknown format {fmt!r}")
    examples: list[dict] = []
    roles = dict(source.roles or {})
    mapping = dict(source.columns or {})
    errors = 0
    for where, value in _iter_source(located, source):
        if source.max_rows is not None and report.rows >= source.max_rows:
            report.truncated = True
            break
        report.rows += 1
        if isinstance(value, Problem):
            value.source = located.display
            value.line, value.row = where.get("line"), where.get("row")
            found = [value]
            example = None
        else:
            row = apply_columns(value, mapping) if isinstance(value, dict) else value
            example, row_problems = convert_row(row, fmt, roles)
            found = [
                Problem(p.code, p.message, line=where.get("line"), row=where.get("row"),
                        field=mapping.get(p.field, p.field) if p.field else None, source=located.display)
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
                 on_bad_rows: str = "drop") -> DataReport:
    """Everything known about a source without training: format, rows, problems, audit.

    With ``on_bad_rows="drop"`` (the default) row problems are reported, never raised; with
    ``"stop"`` the first one raises ``DataError`` as ``load_examples`` does. With a tokenizer, the
    chat template is applied to every row too (template problems, e.g. roles a template forbids,
    are reported with the row's place) and ``audit`` holds the dataset-wide token audit.
    """
    examples, report = _scan(source, stop=on_bad_rows != "drop", progress=progress)
    if on_bad_rows != "drop":
        _raise_for_problems(report)
    if tokenizer is not None and examples:
        from sftwizard.core.audit import audit_dataset
        from sftwizard.core.config import RunConfig

        cfg = cfg or RunConfig()
        if template is None:
            from sftwizard.core.templates import resolve_template

            template = resolve_template(tokenizer, cfg.template)
        audit = audit_dataset(tokenizer, examples, template, cfg, progress=progress)
        for p in audit.pop("row_problems", []):
            origin = report.origin_of(p["row"])
            report.problems.append(Problem(p["code"], p["message"], line=origin.get("line"), row=origin.get("row"),
                                           field=p.get("field"), severity=p.get("severity", "error"),
                                           source=report.source))
        report.audit = audit
        if on_bad_rows != "drop":
            _raise_for_problems(report)  # rows the template refuses stop like malformed rows
    elif examples:
        report.audit = text_audit(examples)
    return report


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
    from sftwizard.core.audit import percentiles

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
