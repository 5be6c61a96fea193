"""Experiment trackers for ``training.report_to``: which ones this environment can use.

The run directory keeps our own ``events.jsonl`` whatever is chosen here; a tracker is an
extra copy of the metrics. Detection looks for the package without importing it (fast enough
for the TUI's start-up).
"""

from __future__ import annotations

import importlib.util

# report_to name -> importable module that transformers' integration needs
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",),
    "wandb": ("wandb",),
}
NONE = "none"


def _installed(modules: tuple[str, ...]) -> bool:
    for name in modules:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def available_trackers() -> list[str]:
    """``report_to`` choices installed here, in a fixed order, always ending with ``none``."""
    return [name for name, modules in TRACKERS.items() if _installed(modules)] + [NONE]


def requested_trackers(report_to: str | list[str] | None) -> list[str]:
    """The tracker names a ``report_to`` value asks for (``none``/empty: no tracker)."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        return [n for n in available_trackers() if n != NONE]
    return [n for n in names if n and n != NONE]


def missing_trackers(report_to: str | list[str] | None) -> list[str]:
    """Trackers ``report_to`` asks for whose package is not installed. Names transformers knows
    beyond ours (mlflow, comet_ml, ...) are looked up as a module of the same name."""
    return [n for n in requested_trackers(report_to) if not _installed(TRACKERS.get(n, (n,)))]


def tracker_problem(report_to: str | list[str] | None) -> str | None:
    """One sentence when ``training.report_to`` names a tracker this environment lacks, else None."""
    missing = missing_trackers(report_to)
    if not missing:
        return None
    return (f"training.report_to: {missing[0]} is not installed: pip install {missing[0]} "
            f"(installed: {', '.join(available_trackers())})")
