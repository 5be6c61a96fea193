"""Is a checkpoint usable? Read before resuming from it, without loading torch.

A checkpoint directory holds ``trainer_state.json`` (written last by the trainer), the weights
(``model.safetensors`` or sharded ``model-*.safetensors`` with an index; ``adapter_model.safetensors``
for LoRA; ``*.bin`` in older layouts) and the training state (``optimizer.pt``, ``scheduler.pt``,
``rng_state*.pth``: torch's zip format). ``checkpoint_problem`` reads the safetensors headers and
the zip directories — what a truncated or overwritten file breaks — in milliseconds.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

STATE_FILE = "trainer_state.json"
TORCH_ZIP_FILES = ("optimizer.pt", "scheduler.pt", "training_args.bin")
MAX_HEADER = 100 * 1024 * 1024


def _safetensors_problem(path: Path) -> str | None:
    """None when the file's header parses and its data is all there."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is {size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", raw)
            if n > min(MAX_HEADER, size - 8):
                return f"{path.name} has a header length ({n} bytes) beyond its size ({size} bytes)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{path.name} cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(header, dict):
        return f"{path.name} has no tensor table"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{path.name} is truncated ({size:,} of {need:,} bytes)"
    return None


def _zip_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"{path.name} cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, in a few words; None when its
    state file, weights and training state read whole."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
            return f"{STATE_FILE} has no global_step"
    except FileNotFoundError:
        return f"no {STATE_FILE} (the save did not finish)"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{STATE_FILE} cannot be read ({type(exc).__name__})"
    weights = sorted(path.glob("*.safetensors"))
    bins = sorted(p for p in path.glob("*.bin") if p.name != "training_args.bin")
    if not weights and not bins:
        return "no weights file (model.safetensors, adapter_model.safetensors or *.bin)"
    for file in weights:
        problem = _safetensors_problem(file)
        if problem:
            return problem
    for file in [*bins, *(path / name for name in TORCH_ZIP_FILES), *sorted(path.glob("rng_state*.pth"))]:
        if file.exists():
            problem = _zip_problem(file)
            if problem:
                return problem
    return None
