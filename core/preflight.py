"""The cheap checks before a run's process is started, so a bad input is one sentence, not a crash.

``preflight(cfg)`` raises a ``UserError`` for the first of: a runs folder that cannot be written, a
local model that does not exist (or a Hub model that cannot be downloaded here: not in the cache
and the repository missing, gated or too big for the disk), what this machine cannot run
(``runnable.runnable_problems``), a data file that is missing or empty, a Hub dataset whose config,
split or size does not work. ``sft-wizard run`` calls it before it makes a run directory.
"""

from __future__ import annotations

from pathlib import Path

from .config import RunConfig, output_root_problem
from .errors import UserError

LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt")


def preflight(cfg: RunConfig) -> None:
    """Raise a UserError (one sentence) for the first thing that would make a launch of ``cfg`` fail."""
    from .models import check_download, resolve_model
    from .runnable import Environment, runnable_problems, runs_anywhere

    if problem := output_root_problem(cfg):
        raise UserError(problem)
    if cfg.model.id.startswith(("/", "./", "../", "~", "builtin:")):
        resolve_model(cfg.model.id, allow_download=False)  # ModelError
    else:  # a hub model not in the cache: the repo exists, we may read it, and it fits on the disk
        check_download(cfg.model.id, cfg.model.revision, weights=True)  # ModelError
    if not runs_anywhere(cfg):  # only then is torch imported to look at this machine
        problems = runnable_problems(cfg, Environment.detect())
        if problems:
            raise UserError(problems[0])
    for src in list(cfg.data.sources) + ([cfg.data.eval_source] if cfg.data.eval_source else []):
        if src.path.startswith("builtin:"):
            continue
        p = Path(src.path).expanduser()
        local_like = src.path.startswith(("/", "./", "../", "~")) or p.suffix.lower() in LOCAL_DATA_SUFFIXES
        if local_like and not p.exists():
            raise UserError(f"{src.path}: no such data file")
        if p.is_file() and p.stat().st_size == 0:
            raise UserError(f"{src.path}: the data file is empty")
        if not local_like and not p.exists():
            from .data_readers import check_hub_dataset

            check_hub_dataset(src)  # a Hub dataset: its config, split and room on the disk (DataError)
