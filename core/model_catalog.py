"""The models a user can start from, each with "will it fit?" for the settings chosen so far.

Candidates: the builtin demo, every model in the local Hugging Face cache, folders the user
named, and a short list of well-known instruct models offered by id. Each gets its parameters
(from its config on the meta device), its size on disk and a fit badge from the memory
estimator with the current settings on this machine's GPU (``estimator.estimate_for``, the
same call `sft-wizard estimate` makes). Nothing here downloads weights; a well-known model's
``config.json`` (a few KB) is fetched only when asked (``fetch=True``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from .config import BUILTIN_MODEL, RunConfig

# Well-known instruct models of a few sizes, offered on a fresh box by id (their Hub names).
WELL_KNOWN = (
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "google/gemma-2-2b-it",
    "google/gemma-2-9b-it",
    "microsoft/Phi-3.5-mini-instruct",
)


def format_params(n: int | None) -> str:
    """1.54B, 135M, 2.09M parameters; ? when unknown."""
    if not n:
        return "?"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


@dataclass
class ModelChoice:
    """One row of the picker (``to_dict`` is the ``models --json`` schema of a model)."""

    id: str
    source: str  # builtin | cache | local | known
    params: int | None = None
    size_bytes: int | None = None  # on disk here; None for a well-known model not downloaded
    fit: str | None = None  # fits | tight | does not fit; None without a GPU or without a config
    fits: bool | None = None  # the estimator's verdict, as `estimate --json` gives it
    total_gib: float | None = None
    headroom_gib: float | None = None
    problem: str | None = None  # why there is no badge (config not here, not a causal LM, …)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth")


@dataclass
class CachedModel:
    id: str
    size_bytes: int
    has_weights: bool = True  # False: only its config/tokenizer were fetched (read-only commands)


def cached_models() -> list[CachedModel]:
    """Models in the local Hugging Face cache (no network), largest first."""
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:  # pragma: no cover - comes with transformers
        return []
    try:
        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one: nothing to offer
        return []
    out = [CachedModel(r.repo_id, r.size_on_disk,
                       any(f.file_name.endswith(WEIGHT_SUFFIXES) for rev in r.revisions for f in rev.files))
           for r in info.repos if r.repo_type == "model"]
    return sorted(out, key=lambda m: -m.size_bytes)


def _folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def candidates(folders: Iterable[str] = (), known: bool = True,
               cached: list[CachedModel] | None = None) -> list[ModelChoice]:
    """Every model to offer, without reading any config yet: builtin, cache, folders, well-known.
    A cached model without weights (only its config was read) has no size on disk yet."""
    out = [ModelChoice(BUILTIN_MODEL, "builtin")]
    seen = {BUILTIN_MODEL}
    for m in cached_models() if cached is None else cached:
        if not getattr(m, "has_weights", True) and m.id in WELL_KNOWN:
            continue  # offered below, by id, like the other well-known ones
        out.append(ModelChoice(m.id, "cache", size_bytes=m.size_bytes if getattr(m, "has_weights", True) else None))
        seen.add(m.id)
    for folder in folders:
        path = Path(folder).expanduser()
        if folder and folder not in seen and path.is_dir():
            out.append(ModelChoice(folder, "local", size_bytes=_folder_size(path)))
            seen.add(folder)
    if known:
        out += [ModelChoice(mid, "known") for mid in WELL_KNOWN if mid not in seen]
    return out


def _config_folder(choice: ModelChoice, fetch: bool) -> Path | None:
    """A folder holding the model's config.json: resolved locally, or (``fetch``) the config
    alone fetched from the Hub into the cache."""
    from .models import ModelError, _find_in_cache, resolve_model

    if choice.source != "known":
        try:
            return resolve_model(choice.id, allow_download=False).path
        except ModelError as exc:
            choice.problem = str(exc)
            return None
    cached = _find_in_cache(choice.id, None)
    if cached is not None:
        return cached
    if not fetch:
        choice.problem = "config not in the cache (`sft-wizard models --fetch` reads it: a few KB)"
        return None
    from huggingface_hub import hf_hub_download

    from .hub_download import explain_hub_error

    try:
        return Path(hf_hub_download(choice.id, "config.json")).parent
    except Exception as exc:  # noqa: BLE001 - gated, offline, missing: the row says why
        choice.problem = explain_hub_error(exc, choice.id)
        return None


def assess(choice: ModelChoice, cfg: RunConfig, hardware: Any, *, gpu_memory_gib: float | None = None,
           fetch: bool = False) -> ModelChoice:
    """Fill in the parameters and the fit badge of ``choice`` for ``cfg``'s settings on ``hardware``."""
    from .estimator import estimate_for, fit_badge
    from .models import ModelError, _facts_for_path

    folder = _config_folder(choice, fetch)
    if folder is None:
        return choice
    try:
        facts = _facts_for_path(str(folder), choice.id, choice.source, cfg.model.trust_remote_code)
    except ModelError as exc:
        choice.problem = str(exc)
        return choice
    choice.params = facts.total_params
    if choice.size_bytes is None and choice.source == "builtin":
        choice.size_bytes = _folder_size(folder)
    model_cfg = replace(cfg, model=replace(cfg.model, id=choice.id))
    est = estimate_for(model_cfg, hardware, facts, gpu_memory_gib=gpu_memory_gib, suggest=False)
    choice.fits, choice.fit = est.fits, fit_badge(est)
    choice.total_gib, choice.headroom_gib = est.total_gib, est.headroom_gib
    return choice


def list_models(cfg: RunConfig, *, hardware: Any = None, folders: Iterable[str] = (), fetch: bool = False,
                gpu_memory_gib: float | None = None, known: bool = True,
                cached: list[CachedModel] | None = None) -> list[ModelChoice]:
    """The picker's rows for ``cfg`` (its method and settings) on this machine."""
    if hardware is None:
        from .hardware import probe_hardware

        hardware = probe_hardware()
    return [assess(c, cfg, hardware, gpu_memory_gib=gpu_memory_gib, fetch=fetch)
            for c in candidates(folders, known=known, cached=cached)]
