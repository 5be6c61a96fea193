"""User directories (config, data, cache), each overridable by one environment variable.

Tests point ``SFT_WIZARD_HOME`` at a temporary folder so nothing touches the real home.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "sft-wizard"


def _base(xdg_var: str, fallback: str, sub: str) -> Path:
    home = os.environ.get("SFT_WIZARD_HOME")
    if home:
        return Path(home) / sub
    root = os.environ.get(xdg_var) or str(Path.home() / fallback)
    return Path(root) / APP


def config_dir() -> Path:
    """Where user presets live (``$XDG_CONFIG_HOME/sft-wizard``)."""
    return _base("XDG_CONFIG_HOME", ".config", "config")


def data_dir() -> Path:
    """Where runs and the run registry live (``$XDG_DATA_HOME/sft-wizard``)."""
    return _base("XDG_DATA_HOME", ".local/share", "data")


def cache_dir() -> Path:
    """Where the builtin model is built once (``$XDG_CACHE_HOME/sft-wizard``)."""
    return _base("XDG_CACHE_HOME", ".cache", "cache")


def user_presets_dir() -> Path:
    return config_dir() / "presets"


def default_runs_root() -> Path:
    return data_dir() / "runs"
