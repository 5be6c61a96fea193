"""User directories (config, data, cache), each overridable by one environment variable.

Tests point ``SFT_WIZARD_HOME`` at a temporary folder so nothing touches the real home.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

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


def unwritable_folder(path: str | os.PathLike) -> str | None:
    """Why files cannot be written in folder ``path`` (made when missing), in one clause; None when they can.

    The nearest existing folder is tried by making (and removing) an empty folder in it, so a
    read-only mount, a permission or an ACL all say so before a run or an export starts.
    """
    import tempfile

    here = Path(path).expanduser().absolute()
    while not here.exists():
        if here.is_symlink():
            return f"{here} is a link to {os.readlink(here)}, which does not exist"
        if here.parent == here:
            break
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sft-wizard-write-test-", dir=here))
    except OSError as exc:
        return f"cannot write in {here} ({(exc.strerror or type(exc).__name__).lower()})"
    return None


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file handle whose content replaces ``path`` only once the block ends without error.

    It writes a temporary file in the same folder (made if missing), flushes it to the disk, then
    renames it over the target: a reader sees the old file or the new one, never half of one; on
    an error the temporary file is removed and the target is left as it was.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see ``atomic_writer``) and return the path."""
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)
