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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sftwizard.core.data_formats import DataError, Problem

ASSETS = Path(__file__).parent / "assets" / "demo"
BUILTIN_DATA = {"builtin:demo": ASSETS / "train.jsonl", "builtin:demo-eval": ASSETS / "eval.jsonl"}
JSON_CHUNK = 1 << 20  # characters of a JSON array read at a time
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
    from sftwizard.core.hub_download import watching
    from sftwizard.core.phases import active_reporter

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

    from sftwizard.core.hub_download import DownloadError, plan_dataset

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
    from sftwizard.core.hub_download import explain_hub_error

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
    if located.kind == "jsonl":
        return _iter_jsonl(located.path)
    if located.kind == "json":
        return _iter_json(located.path)
    if located.kind == "csv":
        return _iter_csv(located.path)
    if located.kind == "parquet":
        return _iter_parquet(located.path)
    return _iter_hub(located, source)
