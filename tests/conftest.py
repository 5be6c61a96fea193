"""Test isolation: every test session gets its own user dirs and never touches the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="sftw-test-home-"))
# Set at import time so subprocesses started by any test inherit them too.
os.environ["SFT_WIZARD_HOME"] = str(_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HOME", str(_HOME / "hf"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sftw_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def builtin_model_dir() -> Path:
    """The builtin tiny-chat model, built once per session."""
    from sftwizard.core.models import resolve_model

    return resolve_model("builtin:tiny-chat").path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
