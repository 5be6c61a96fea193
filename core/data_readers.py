"""Reading data sources as streams of (place, row) — place is {"line": n} or {"row": n}.

A row that cannot be read (invalid JSON, bytes that are not UTF-8, a short CSV record) comes
out as a ``Problem`` in its place, so the caller reports it and goes on. Nothing here reads a
file whole, except a JSON file whose top level is an object rather than an array.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .data_formats import DataError, Problem

ASSETS = Path(__file__).parent / "assets" / "demo"
BUILTIN_DATA = {"builtin:demo": ASSETS / "train.jsonl", "builtin:demo-eval": ASSETS / "eval.jsonl"}
JSON_CHUNK = 1 << 20  # characters of a JSON array read at a time
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how a lone surrogate gets into valid JSON
_COLON = re.compile(r"\s*:")
TOO_DEEP = "nested too deeply to read (arrays or objects inside each other about a thousand levels down)"
CSV_CELL_LIMIT = 16 << 20  # characters in one CSV cell (Python's csv stops at 128 KiB by default)
LOCAL_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                  ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}


# --------------------------------------------------------------------------- locating a source

@dataclass
class Located:
    kind: str  # jsonl | json | parquet | csv | hub | dir
    path: str  # file path, folder, or hub id
    display: str  # how problems name it


def locate(source) -> Located:
    raw = (source.path or "").strip()
    if not raw:
        raise DataError("data source: the path is empty")
    if raw in BUILTIN_DATA:
        return Located("jsonl", str(BUILTIN_DATA[raw]), raw)
    if raw.startswith("builtin:"):
        raise DataError(f"{raw}: no such builtin dataset (known: {', '.join(BUILTIN_DATA)})")
    p = Path(raw).expanduser()
    if p.is_dir():
        return Located("dir", str(p), str(p))
    if p.exists():
        suffix = p.suffix.lower()
        kind = LOCAL_SUFFIXES.get(suffix)
        if kind is None:
            raise DataError(f"{p}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .parquet or .csv")
        return Located(kind, str(p), str(p))
    looks_local = raw.startswith((".", "/", "~")) or p.suffix.lower() in LOCAL_SUFFIXES or raw.count("/") > 1
    if looks_local:
        raise DataError(f"{raw}: no such file")
    return Located("hub", raw, raw)


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
            except RecursionError:
                yield where, Problem("too_deep", TOO_DEEP, field=_nesting(text, len(text) - len(text.lstrip()))[1])
                continue
            if _SURROGATE_ESCAPE.search(text):
                problem = surrogate_problem(value)
                if problem is not None:
                    yield where, problem
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
            chunk = fh.read(JSON_CHUNK)
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
                except RecursionError:
                    end, field = _nesting(buf, pos)
                    if end is None and more():  # the row goes on in the next chunk
                        continue
                    if end is None:
                        line = line_base + buf.count("\n", 0, pos)
                        raise DataError(f"{path}: line {line}: invalid JSON in row {index}: the file ends "
                                        "inside it") from None
                    value = Problem("too_deep", TOO_DEEP, field=field)
                    break
                except json.JSONDecodeError as exc:
                    if more():  # the row may just continue in the next chunk
                        continue
                    line = line_base + buf.count("\n", 0, exc.pos)
                    raise DataError(f"{path}: line {line}: invalid JSON in row {index}: {exc.msg}") from None
            unusual = surrogate_problem(value) if not isinstance(value, Problem) and _SURROGATE_ESCAPE.search(
                buf, pos, end) else None
            pos = end
            yield {"row": index}, unusual or value
            index += 1


def surrogate_problem(value: Any) -> Problem | None:
    """A Problem naming the first string in ``value`` (keys included) that holds a lone surrogate
    (valid JSON, e.g. ``"\\ud800"``, but not text: no tokenizer or hash can encode it); else None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return Problem("lone_surrogate", f"a lone surrogate escape (\\u{ord(item[exc.start]):x}) at "
                                                 f"character {exc.start + 1}: not text; fix or remove it",
                               field=path or None)
        elif isinstance(item, dict):
            for k, v in reversed(list(item.items())):
                stack.append((v, f"{path}.{k}" if path else str(k)))
                stack.append((k, path))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def _nesting(text: str, start: int, depth_limit: int = 200) -> tuple[int | None, str | None]:
    """For the JSON value at ``text[start]``: (the index just past it, or None when ``text`` ends
    inside it; the key of its top-level object under which nesting passes ``depth_limit``)."""
    depth, key, in_string, escaped, begin, deep = 0, None, False, False, 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 1 and _COLON.match(text, i + 1):
                    key = text[begin:i]
        elif ch == '"':
            in_string, begin = True, i + 1
        elif ch in "[{":
            depth += 1
            if depth > depth_limit and deep is None:
                deep = key
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1, deep
    return None, deep


def _iter_csv(path: str) -> Iterator[tuple[dict, Any]]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    bad_lines: set[int] = set()
    record_lines: list[str] = []  # the raw lines of the record being read

    def lines() -> Iterator[str]:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad_lines.add(lineno)
                    text = raw.decode("utf-8", errors="replace")
                text = text.lstrip("\ufeff") if lineno == 1 else text
                record_lines.append(text)
                yield text

    if csv.field_size_limit() < CSV_CELL_LIMIT:
        csv.field_size_limit(CSV_CELL_LIMIT)
    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: the header cannot be read as CSV ({exc})") from None
    last = reader.line_num
    while True:
        record_lines.clear()
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a cell past CSV_CELL_LIMIT, a NUL byte: this record only
            start, last = last + 1, reader.line_num
            yield {"line": start}, Problem("invalid_csv", _csv_error(exc, last - start))
            continue
        start, last = last + 1, reader.line_num
        where = {"line": start}
        if last > start:
            unclosed = _unclosed_quote(record_lines, delimiter)
            if unclosed is not None:
                opened, cell = unclosed
                swallowed = last - start - opened
                yield {"line": start + opened}, Problem(
                    "unclosed_quote", f"a quote opened on this line is never closed: the {swallowed} line"
                    f"{'s' if swallowed != 1 else ''} after it, to the end of the file, would be read as one "
                    "cell (close the quote, or double a quote meant literally)",
                    field=header[cell] if cell < len(header) else None)
                continue
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


def _csv_error(exc: csv.Error, spanned: int) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        more = f"; it runs over {spanned + 1} lines, so a quote may be left open here" if spanned else ""
        return f"a cell longer than {CSV_CELL_LIMIT:,} characters{more}"
    return f"cannot be read as CSV: {text}"


def _unclosed_quote(lines: list[str], delimiter: str) -> tuple[int, int] | None:
    """(line index, cell index) in a record's ``lines`` of a quoted cell that never closes, by the CSV
    rules (a quote opens a cell only at its start; ``""`` inside it is one quote); None when all close."""
    quoted = closing = False
    at_start = True
    opened = None
    cell = 0
    for i, line in enumerate(lines):
        for ch in line:
            if quoted:
                if closing:
                    closing = False
                    if ch == '"':
                        continue  # a doubled quote inside the cell
                    quoted = False  # the cell's quote closed before this character
                elif ch == '"':
                    closing = True
                    continue
                else:
                    continue
            if ch == '"' and at_start:
                quoted, opened, at_start = True, (i, cell), False
                continue
            if ch == delimiter:
                cell += 1
            at_start = ch in (delimiter, "\n", "\r")
    return opened if quoted and not closing else None


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


def _iter_hub(located: Located, source) -> Iterator[tuple[dict, Any]]:
    dataset = _load_hub(located, source)
    for i, row in enumerate(dataset):
        yield {"row": i}, row


def _load_hub(located: Located, source):
    import datasets

    split = source.split or "train"
    try:
        if located.kind == "dir" and (Path(located.path) / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(located.path)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if located.kind == "hub" and not _offline():
            return _load_hub_checked(located.path, source.name, split)
        # not streamed: a dataset downloaded once is memory-mapped from the cache, and works offline after
        return datasets.load_dataset(located.path, source.name, split=split)
    except DataError:
        raise
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


SPLIT_WORDS = ("train", "test", "validation", "valid", "eval", "dev")


def folder_shards(folder: str, split: str | None) -> list[Path] | None:
    """The data files of a plain folder for ``split``, in order, when we can read them ourselves
    (so a bad line is named by file and line); None for a saved dataset or anything else, which
    ``datasets`` loads. Files named after splits are picked by name; otherwise every file is train."""
    root = Path(folder)
    if (root / "dataset_info.json").exists() or (root / "dataset_dict.json").exists():
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    data = [p for p in files if p.suffix.lower() in LOCAL_SUFFIXES]
    if not data or any(p.suffix.lower() not in LOCAL_SUFFIXES and p.suffix.lower() not in (".md", ".txt", ".yaml")
                       for p in files):
        return None
    split = split or "train"
    named = [p for p in data if any(w in p.relative_to(root).as_posix().lower() for w in SPLIT_WORDS)]
    if not named:
        return data if split == "train" else None
    wanted = [p for p in named if split.lower() in p.relative_to(root).as_posix().lower()]
    return wanted or None


def _iter_shards(shards: list[Path]) -> Iterator[tuple[dict, Any]]:
    """Every shard's rows, each place naming its file (``{"file", "line"}`` or ``{"file", "row"}``)."""
    for shard in shards:
        kind = LOCAL_SUFFIXES[shard.suffix.lower()]
        for where, value in iter_source(Located(kind, str(shard), str(shard)), None):
            yield {**where, "file": str(shard)}, value


def _offline() -> bool:
    return any(os.environ.get(k, "0").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_hub_dataset(source) -> None:
    """Before a run starts: a Hub dataset's config, split and the disk room for it (DataError, one
    sentence); nothing for local files, builtin data or in offline mode. Downloads no data file."""
    try:
        located = locate(source)
    except DataError:
        return  # a local path's own problem: the run's preflight says it
    if located.kind == "hub" and not _offline():
        _checked_builder(located.path, source.name, source.split or "train")


def _load_hub_checked(repo_id: str, name: str | None, split: str):
    """A Hub dataset: its config and split checked (a sentence listing the ones that exist), the
    disk checked for its files, then loaded with a ``download`` phase when a run is reporting."""
    from .hub_download import watching
    from .phases import active_reporter

    builder, plan = _checked_builder(repo_id, name, split)
    reporter = active_reporter()
    phase = (reporter.begin("download", total=plan.need_bytes, unit="bytes", what=repo_id)
             if reporter is not None and plan.missing else None)
    with watching(plan.storage, phase):
        builder.download_and_prepare()  # what load_dataset does, with the bytes watched
    if phase is not None:
        phase.end()
    return builder.as_dataset(split=split)


def _checked_builder(repo_id: str, name: str | None, split: str):
    """(datasets builder, hub_download.DownloadPlan) of a Hub dataset whose config and split exist
    and whose files fit on the disk; DataError otherwise."""
    import datasets

    from .hub_download import DownloadError, plan_dataset

    try:
        builder = datasets.load_dataset_builder(repo_id, name)
    except Exception as exc:  # noqa: BLE001 - a missing or unknown config, a missing repo: one sentence
        raise DataError(_dataset_problem(repo_id, name, split, exc)) from exc
    splits = list((getattr(builder.config, "data_files", None) or {}).keys()) or list(builder.info.splits or {})
    if splits and split not in [str(s) for s in splits]:
        raise DataError(f"{repo_id}: no split {split!r}{_in_config(name)}; it has {_names(splits)} "
                        "(set data.sources[].split)")
    try:
        return builder, plan_dataset(builder, repo_id)
    except DownloadError as exc:
        raise DataError(str(exc)) from exc


def _in_config(name: str | None) -> str:
    return f" in config {name!r}" if name else ""


def _names(items) -> str:
    return ", ".join(repr(str(i)) for i in items)


def _dataset_problem(repo_id: str, name: str | None, split: str, exc: Exception) -> str:
    """One sentence for a Hub dataset that cannot be built: the config names when one is missing
    or unknown, the Hub's answer otherwise."""
    from .hub_download import explain_hub_error

    text = str(exc)
    if "config" in text.lower():
        try:
            import datasets

            configs = datasets.get_dataset_config_names(repo_id)
        except Exception:  # noqa: BLE001 - the list is a help, not the point
            configs = []
        if configs:
            if name is None:
                return f"{repo_id}: this dataset needs a config name; set data.sources[].name to one of {_names(configs)}"
            return f"{repo_id}: no config {name!r}; it has {_names(configs)} (set data.sources[].name)"
    hub_error = explain_hub_error(exc, repo_id, "dataset")
    if not hub_error.startswith("cannot download"):
        return hub_error if hub_error.startswith(repo_id) else f"{repo_id}: {hub_error}"
    return f"{repo_id}: cannot load split {split!r}: {text.splitlines()[0] if text else type(exc).__name__}"


def iter_source(located: Located, source) -> Iterator[tuple[dict, Any]]:
    if located.kind == "dir":
        shards = folder_shards(located.path, getattr(source, "split", None))
        if shards:
            return _iter_shards(shards)
    if located.kind == "jsonl":
        return _iter_jsonl(located.path)
    if located.kind == "json":
        return _iter_json(located.path)
    if located.kind == "csv":
        return _iter_csv(located.path)
    if located.kind == "parquet":
        return _iter_parquet(located.path)
    return _iter_hub(located, source)
