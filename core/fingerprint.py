"""What a checkpoint depends on, as digests: model, data, template, method.

The training process records ``fingerprint(cfg)`` in its ``start``/``resume`` event; ``resume``
recomputes it from the run's config and refuses when a part changed since the checkpoint was
written (``changed_parts``). Cheap enough to run in the CLI: small files are hashed, large ones
(weights, big datasets) are identified by size, mtime and their first and last MiB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .config import DataSource, RunConfig

PARTS = ("model", "data", "template", "method")
FULL_HASH_LIMIT = 64 * 1024 * 1024  # files up to this size are hashed whole
EDGE = 1024 * 1024


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """Content hash of a small file; size + mtime + first/last MiB of a large one."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            h.update(fh.read(EDGE))
            fh.seek(-EDGE, os.SEEK_END)
            h.update(fh.read(EDGE))
    return h.hexdigest()[:16]


def _path_items(label: str, path: Path) -> list[list[str]]:
    if path.is_file():
        return [[label, file_digest(path)]]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [[f"{label}/{p.relative_to(path)}", file_digest(p)] for p in files]
    return [[label, "missing"]]


def _builtin_data_path(name: str) -> Path | None:
    try:
        from . import data as data_mod

        table = getattr(data_mod, "BUILTIN_DATA", None)
        if table and name in table:
            return Path(table[name])
    except ImportError:
        pass
    assets = Path(__file__).parent / "assets" / "demo"
    return {"builtin:demo": assets / "train.jsonl", "builtin:demo-eval": assets / "eval.jsonl"}.get(name)


def _source_items(src: DataSource) -> list[list[str]]:
    settings = [f"{src.path} settings", _digest(dataclasses.asdict(src))]
    if src.path.startswith("builtin:"):
        path = _builtin_data_path(src.path)
        return [settings] + (_path_items(src.path, path) if path else [])
    local = Path(src.path).expanduser()
    if local.exists() or src.path.startswith(("/", "./", "../", "~")):
        return [settings] + _path_items(src.path, local)
    return [settings]  # a hub dataset: its id and settings are all we can know offline


def _model_items(cfg: RunConfig) -> tuple[list[list[str]], Path | None]:
    from .models import ModelError, resolve_model

    items = [["model.id", cfg.model.id], ["model.revision", str(cfg.model.revision)]]
    try:
        path = resolve_model(cfg.model.id, cfg.model.revision, allow_download=False).path
    except ModelError as exc:
        return items + [["model files", f"unavailable: {exc}"]], None
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return items + [[f"{cfg.model.id}/{p.name}", file_digest(p)] for p in files], path


def fingerprint(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """``{part: {"digest": str, "items": [[label, digest], ...]}}`` for model, data, template, method."""
    model_items, model_path = _model_items(cfg)
    data_items: list[list[str]] = [["data settings", _digest({
        "eval_fraction": cfg.data.eval_fraction, "on_bad_rows": cfg.data.on_bad_rows,
        "eval_source": cfg.data.eval_source is not None})]]
    for src in cfg.data.sources:
        data_items += _source_items(src)
    if cfg.data.eval_source is not None:
        data_items += _source_items(cfg.data.eval_source)
    template_items = [["template settings", _digest(dataclasses.asdict(cfg.template))]]
    if cfg.template.path:
        template_items += _path_items(cfg.template.path, Path(cfg.template.path).expanduser())
    if model_path is not None:
        from .models import chat_template_of

        template_items.append(["model chat template", _digest(chat_template_of(model_path))])
    method_items = [[f"method.{k}", json.dumps(v)] for k, v in sorted(dataclasses.asdict(cfg.method).items())]
    parts = {"model": model_items, "data": data_items, "template": template_items, "method": method_items}
    return {name: {"digest": _digest(items), "items": items} for name, items in parts.items()}


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One phrase per part that differs, naming what changed: ``data (/x/train.jsonl changed)``."""
    phrases = []
    for part in PARTS:
        a, b = old.get(part), new.get(part)
        if not a or not b or a.get("digest") == b.get("digest"):
            continue
        before = {label: d for label, d in a.get("items", [])}
        after = {label: d for label, d in b.get("items", [])}
        what = [label + (" missing" if after[label] == "missing" else " unavailable" if after[label].startswith("unavailable") else " changed")
                for label in after if label in before and before[label] != after[label]]
        what += [f"{label} added" for label in after if label not in before]
        what += [f"{label} removed" for label in before if label not in after]
        detail = ", ".join(what[:3]) + (f" and {len(what) - 3} more" if len(what) > 3 else "")
        phrases.append(f"{part} ({detail})" if detail else part)
    return phrases
