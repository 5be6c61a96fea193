"""The TUI's one door into the engine.

Every call the wizard makes into ``sftwizard.core`` goes through a function here, so each
step's core call lives in one place. Heavy modules (torch, transformers, datasets) are only
imported inside these functions, which run in worker threads — never at start-up.

A part of the engine that is not installed yet raises :class:`NotAvailable`; the step says so
instead of failing.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from sftwizard.core.config import BUILTIN_MODEL, RunConfig

_IMPORT_LOCK = threading.Lock()
_imported = False


def _heavy_imports() -> None:
    """Import transformers (and torch) once, under a lock: worker threads that import it at the
    same time can see a half-initialised module (``cannot import name ...``)."""
    global _imported
    if _imported:
        return
    with _IMPORT_LOCK:
        if not _imported:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            from transformers import AutoConfig, AutoTokenizer, GenerationConfig  # noqa: F401

            _imported = True


_MODEL_LOCK = threading.Lock()


def _resolve_first(cfg: RunConfig) -> None:
    """Resolve the model once under a lock, so that parallel workers do not each build the
    builtin model (or fetch the same files) at the same time."""
    with _MODEL_LOCK:
        _core("models", "resolve_model")(cfg.model.id, cfg.model.revision)


class NotAvailable(Exception):
    """This engine feature is not part of this installation (yet)."""


def _core(module: str, name: str) -> Any:
    try:
        mod = importlib.import_module(f"sftwizard.core.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"sftwizard.core.{module}":
            raise NotAvailable(f"sftwizard.core.{module} is not installed") from None
        raise
    try:
        return getattr(mod, name)
    except AttributeError:
        raise NotAvailable(f"sftwizard.core.{module}.{name} is not available") from None


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is a sentence for the user (shown inline, not as a crash)."""
    from sftwizard.core.errors import UserError

    return (UserError, NotAvailable)


# --------------------------------------------------------------------------- presets

def list_presets() -> list:
    return _core("presets", "list_presets")()


def find_preset(name_or_path: str) -> Path:
    return _core("presets", "find_preset")(name_or_path)


def load_preset(path: str | Path) -> RunConfig:
    return _core("config", "load_preset")(path)


def user_presets_dir() -> Path:
    return _core("paths", "user_presets_dir")()


def save_user_preset(cfg: RunConfig, name: str) -> Path:
    """Save ``cfg`` as ``NAME.yaml`` in the user presets folder; returns the path."""
    return _core("config", "save_preset")(cfg, user_presets_dir() / f"{name}.yaml")


def dump_preset(cfg: RunConfig) -> str:
    return _core("config", "dump_preset")(cfg)


# --------------------------------------------------------------------------- hardware & models

def probe_hardware():
    return _core("hardware", "probe_hardware")()


def model_facts(cfg: RunConfig):
    _heavy_imports()
    _resolve_first(cfg)
    return _core("models", "model_facts")(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)


def cached_models() -> list:
    """Models in the local Hugging Face cache (no network), largest first (``CachedModel``s)."""
    return _core("model_catalog", "cached_models")()


def CachedModel(model_id: str, size_bytes: int, has_weights: bool = True):  # noqa: N802 - the core's type
    return _core("model_catalog", "CachedModel")(model_id, size_bytes, has_weights)


def model_choices(cfg: RunConfig, hardware) -> list:
    """The Model step's rows (``ModelChoice``: parameters, size on disk, fit badge) for the draft's
    settings on ``hardware``: builtin, cache, the folder typed, well-known ids (their configs are
    fetched, a few KB each, unless the Hub is off)."""
    _heavy_imports()
    from pathlib import Path as _Path

    from huggingface_hub import constants

    folder = cfg.model.id if _Path(cfg.model.id).expanduser().is_dir() else None
    with _MODEL_LOCK:  # the builtin model is built on first use: by one thread, then only found
        _core("models", "resolve_model")(BUILTIN_MODEL)
    return _core("model_catalog", "list_models")(
        cfg, hardware=hardware, folders=[folder] if folder else [], fetch=not constants.is_offline_mode(),
        cached=cached_models())


# --------------------------------------------------------------------------- data & templates

def inspect_data(cfg: RunConfig):
    """A quick report on the first training source: format, rows, problems by line (no tokenizer)."""
    return _core("data", "inspect_data")(cfg.data.sources[0], cfg=cfg)


def audit_data(cfg: RunConfig, progress=None):
    """The full report: the scan plus the token audit through the model's tokenizer and template
    (length percentiles, trained-token share, truncation, end-of-turn coverage, padding)."""
    _heavy_imports()
    _resolve_first(cfg)
    tokenizer = _core("preview", "load_preview_tokenizer")(cfg)  # its own: encoding mutates a tokenizer
    return _core("data", "inspect_data")(cfg.data.sources[0], tokenizer=tokenizer, cfg=cfg, progress=progress)


def render_preview(cfg: RunConfig, row: int):
    _heavy_imports()
    _resolve_first(cfg)
    return _core("preview", "render_preview")(cfg, row)


def doctor_warnings(cfg: RunConfig) -> list[dict]:
    """The pre-launch doctor's warnings (dicts: code, message, setting, suggested); never blocking."""
    _heavy_imports()
    _resolve_first(cfg)
    from sftwizard.core.doctor_inputs import doctor_warnings

    return doctor_warnings(cfg)


# --------------------------------------------------------------------------- estimate

def estimate_memory(facts, cfg: RunConfig, gpu_memory_gib: float | None, hardware=None):
    """The estimate as the launch will run: the GPU it lands on and its processes' sharding."""
    _heavy_imports()
    return _core("estimator", "estimate_for")(facts, cfg, hardware, gpu_memory_gib=gpu_memory_gib)


# --------------------------------------------------------------------------- runs

def launch(cfg: RunConfig, preset_path: str | None):
    """Start a run (a ``runs.Launched``: ``run_dir``, ``process``)."""
    from sftwizard.core.config import ConfigError, output_root_problem
    from sftwizard.core.runs import launch as launch_run

    if problem := output_root_problem(cfg):
        raise ConfigError([problem])
    return launch_run(cfg, preset_path)


def stop_run(run_dir: Path) -> None:
    """Ask a run to stop gracefully (it finishes the step and saves a checkpoint)."""
    from sftwizard.core.rundir import RunDir

    RunDir(run_dir).request_stop()


def resume_run(run_dir: Path):
    """Continue a stopped, failed or lost run from its newest complete checkpoint (a ``Launched``:
    ``run_dir``, ``process``, ``checkpoint``); RunsError, a sentence, when it cannot."""
    from sftwizard.core.runs import resume

    return resume(run_dir)


def run_alive(run_dir: Path) -> bool:
    """Whether the run's processes are alive (the run registry's own test: lock, then pid)."""
    from sftwizard.core.runs import is_alive

    return is_alive(run_dir)


def list_runs() -> list:
    """Every run, newest first: ``runs.RunInfo`` (the fold of each run's events)."""
    from sftwizard.core.runs import list_runs as runs

    return runs()


def follow_run(run_dir: Path, process=None, *, resumed: bool = False):
    """A ``RunFollower`` on the run: its events, folded state and liveness, polled on a timer."""
    from sftwizard.core.follower import RunFollower

    return RunFollower(run_dir, process, resumed=resumed)


# --------------------------------------------------------------------------- recommendations

def recommend_settings(cfg: RunConfig, hardware, facts, audit: dict | None = None):
    """The recommended settings for ``cfg`` on ``hardware`` (``Recommendations``: items with reasons,
    notes, ``changes()``), sized against the memory estimator."""
    _heavy_imports()
    import functools

    estimate = functools.partial(_core("estimator", "estimate_for"), hardware=hardware)
    return _core("recommend", "recommend")(cfg, hardware=hardware, facts=facts, audit=audit, estimate_fn=estimate)


def available_trackers() -> list[str]:
    """``training.report_to`` choices installed here, ending with ``none`` (no import of the trackers)."""
    return _core("trackers", "available_trackers")()


def compare_runs(run_dirs: list[Path]):
    """Two or more runs side by side (core/compare.py): curves, results, the settings that differ."""
    from sftwizard.core.compare import compare_runs as compare

    return compare([str(d) for d in run_dirs])
