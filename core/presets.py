"""Shipped and user presets: listing and finding them by name or path."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .config import ConfigError, RunConfig, apply_overrides, load_preset
from .paths import user_presets_dir


def shipped_presets_dir() -> Path:
    import sftwizard.presets

    return Path(sftwizard.presets.__file__).parent


@dataclass
class PresetInfo:
    name: str
    path: str
    origin: str  # shipped | user
    model: str
    method: str
    description: str | None
    valid: bool
    problem: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _description(path: Path) -> str | None:
    """The preset's first comment line, if it starts with one."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline(500).strip()  # a preset's first line; never a whole one-line file
    except OSError:
        return None
    return first.lstrip("#").strip() or None if first.startswith("#") else None


def _info(path: Path, origin: str) -> PresetInfo:
    try:
        cfg = load_preset(path)
        return PresetInfo(path.stem, str(path), origin, cfg.model.id, cfg.method.type, _description(path), True)
    except ConfigError as exc:
        return PresetInfo(path.stem, str(path), origin, "?", "?", _description(path), False, "; ".join(exc.problems))


def list_presets() -> list[PresetInfo]:
    out = []
    for origin, folder in (("shipped", shipped_presets_dir()), ("user", user_presets_dir())):
        if folder.is_dir():
            out.extend(_info(p, origin) for p in sorted(folder.glob("*.yaml")))
    return out


def find_preset(name_or_path: str) -> Path:
    """A path as given when it exists; else a user preset, then a shipped one, by name."""
    p = Path(name_or_path).expanduser()
    if p.exists() or p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return p
    for folder in (user_presets_dir(), shipped_presets_dir()):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    return p


def load(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, RunConfig]:
    """(path, config) of a preset found by ``find_preset``, with ``--set``-style overrides applied.

    Raises ConfigError naming the file (or the override) when it does not load or validate.
    """
    path = find_preset(name_or_path)
    cfg = load_preset(path)
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    return path, cfg
