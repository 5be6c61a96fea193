"""The TUI's one door into the engine.

Every call the wizard makes into ``sftwizard.core`` goes through a function here, so each
step's core call lives in one place, typed with the core's own dataclasses. Heavy modules
(torch, transformers, datasets) and most of core are only imported inside these functions,
which run in worker threads — never at start-up.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sftwizard.core.config import BUILTIN_MODEL, RunConfig

if TYPE_CHECKING:
    from sftwizard.core.compare import Comparison
    from sftwizard.core.data import DataReport
    from sftwizard.core.estimator import Estimate
    from sftwizard.core.follower import RunFollower
    from sftwizard.core.hardware import HardwareReport
    from sftwizard.core.model_catalog import CachedModel, ModelChoice
    from sftwizard.core.models import ModelFacts
    from sftwizard.core.presets import PresetInfo
    from sftwizard.core.preview import Preview
    from sftwizard.core.recommend import Recommendations
    from sftwizard.core.runs import Launched, RunInfo

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


def _resolve_first(model_id: str, revision: str | None = None) -> None:
    """Resolve the model once under a lock, so that parallel workers do not each build the
    builtin model (or fetch the same files) at the same time."""
    from sftwizard.core.models import resolve_model

    with _MODEL_LOCK:
        resolve_model(model_id, revision)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is a sentence for the user (shown inline, not as a crash)."""
    from sftwizard.core.errors import UserError

    return (UserError,)


# --------------------------------------------------------------------------- presets

def list_presets() -> list[PresetInfo]:
    from sftwizard.core.presets import list_presets

    return list_presets()


def find_preset(name_or_path: str) -> Path:
    from sftwizard.core.presets import find_preset

    return find_preset(name_or_path)


def load_preset(path: str | Path) -> RunConfig:
    from sftwizard.core.config import load_preset

    return load_preset(path)


def user_presets_dir() -> Path:
    from sftwizard.core.paths import user_presets_dir

    return user_presets_dir()


def save_user_preset(cfg: RunConfig, name: str) -> Path:
    """Save ``cfg`` as ``NAME.yaml`` in the user presets folder; returns the path."""
    from sftwizard.core.config import save_preset

    return save_preset(cfg, user_presets_dir() / f"{name}.yaml")


def dump_preset(cfg: RunConfig) -> str:
    from sftwizard.core.config import dump_preset

    return dump_preset(cfg)


# --------------------------------------------------------------------------- hardware & models

def probe_hardware() -> HardwareReport:
    from sftwizard.core.hardware import probe_hardware

    return probe_hardware()


def model_facts(cfg: RunConfig) -> ModelFacts:
    _heavy_imports()
    _resolve_first(cfg.model.id, cfg.model.revision)
    from sftwizard.core.models import model_facts

    return model_facts(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)


def cached_models() -> list[CachedModel]:
    """Models in the local Hugging Face cache (no network), largest first."""
    from sftwizard.core.model_catalog import cached_models

    return cached_models()


def model_choices(cfg: RunConfig, hardware: HardwareReport | None) -> list[ModelChoice]:
    """The Model step's rows (parameters, size on disk, fit badge) for the draft's settings on
    ``hardware``: builtin, cache, the folder typed, well-known ids (their configs are fetched, a
    few KB each, unless the Hub is off)."""
    _heavy_imports()
    from huggingface_hub import constants

    from sftwizard.core.model_catalog import list_models

    folder = cfg.model.id if Path(cfg.model.id).expanduser().is_dir() else None
    _resolve_first(BUILTIN_MODEL)  # the builtin model is built on first use: by one thread, then only found
    return list_models(cfg, hardware=hardware, folders=[folder] if folder else [],
                       fetch=not constants.is_offline_mode(), cached=cached_models())


# --------------------------------------------------------------------------- data & templates

def inspect_data(cfg: RunConfig) -> DataReport:
    """A quick report on the first training source: format, rows, problems by line (no tokenizer)."""
    from sftwizard.core.data import inspect_data

    return inspect_data(cfg.data.sources[0], cfg=cfg)


def audit_data(cfg: RunConfig, progress: Callable[[int, int | None], None] | None = None) -> DataReport:
    """The full report: the scan plus the token audit through the model's tokenizer and template
    (length percentiles, trained-token share, truncation, end-of-turn coverage, padding)."""
    _heavy_imports()
    _resolve_first(cfg.model.id, cfg.model.revision)
    from sftwizard.core.data import inspect_data
    from sftwizard.core.preview import load_preview_tokenizer

    tokenizer = load_preview_tokenizer(cfg)  # its own: encoding mutates a tokenizer
    return inspect_data(cfg.data.sources[0], tokenizer=tokenizer, cfg=cfg, progress=progress)


def render_preview(cfg: RunConfig, row: int) -> Preview:
    _heavy_imports()
    _resolve_first(cfg.model.id, cfg.model.revision)
    from sftwizard.core.preview import render_preview

    return render_preview(cfg, row)


def doctor_warnings(cfg: RunConfig) -> list[dict]:
    """The pre-launch doctor's warnings (dicts: code, message, setting, suggested); never blocking."""
    _heavy_imports()
    _resolve_first(cfg.model.id, cfg.model.revision)
    from sftwizard.core.doctor_inputs import doctor_warnings

    return doctor_warnings(cfg)


# --------------------------------------------------------------------------- estimate

def estimate_memory(cfg: RunConfig, hardware: HardwareReport | None, facts: ModelFacts) -> Estimate:
    """The estimate `sft-wizard estimate` gives for ``cfg`` on ``hardware`` (``estimator.estimate_for``:
    the GPU the launch lands on, its processes and what they shard)."""
    from sftwizard.core.estimator import estimate_for

    return estimate_for(cfg, hardware, facts)


# --------------------------------------------------------------------------- runs

def launch(cfg: RunConfig, preset_path: str | None) -> Launched:
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


def resume_run(run_dir: Path) -> Launched:
    """Continue a stopped, failed or lost run from its newest complete checkpoint (a ``Launched``:
    ``run_dir``, ``process``, ``checkpoint``); RunsError, a sentence, when it cannot."""
    from sftwizard.core.runs import resume

    return resume(run_dir)


def run_alive(run_dir: Path) -> bool:
    """Whether the run's processes are alive (the run registry's own test: lock, then pid)."""
    from sftwizard.core.runs import is_alive

    return is_alive(run_dir)


def list_runs() -> list[RunInfo]:
    """Every run, newest first: ``runs.RunInfo`` (the fold of each run's events)."""
    from sftwizard.core.runs import list_runs as runs

    return runs()


def follow_run(run_dir: Path, process=None, *, resumed: bool = False) -> RunFollower:
    """A ``RunFollower`` on the run: its events, folded state and liveness, polled on a timer."""
    from sftwizard.core.follower import RunFollower

    return RunFollower(run_dir, process, resumed=resumed)


# --------------------------------------------------------------------------- recommendations

def recommend_settings(cfg: RunConfig, hardware: HardwareReport, facts: ModelFacts,
                       audit: dict | None = None) -> Recommendations:
    """The recommended settings for ``cfg`` on ``hardware`` (items with reasons, notes,
    ``changes()``), sized against the estimate `sft-wizard estimate` gives (``estimate_on``)."""
    _heavy_imports()
    from sftwizard.core.recommend import estimate_on, recommend

    return recommend(cfg, hardware=hardware, facts=facts, audit=audit, estimate_fn=estimate_on(hardware))


def available_trackers() -> list[str]:
    """``training.report_to`` choices installed here, ending with ``none`` (no import of the trackers)."""
    from sftwizard.core.trackers import available_trackers

    return available_trackers()


def compare_runs(run_dirs: list[Path]) -> Comparison:
    """Two or more runs side by side (core/compare.py): curves, results, the settings that differ."""
    from sftwizard.core.compare import compare_runs as compare

    return compare([str(d) for d in run_dirs])
