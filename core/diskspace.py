"""Disk space for runs: how much a checkpoint will take, how much is free, and naming a full disk.

A run writes checkpoints (weights + optimizer state), then ``final/``, and always ``end`` in
``events.jsonl``. On a full disk each of these failed in its own way: a checkpoint write raised
``RuntimeError [enforce fail at inline_container.cc]`` or a safetensors I/O error, then the ``end``
line itself could not be written and the run showed as ``lost``. Here:

- ``free_bytes(path)``: what the filesystem holding ``path`` has free (``shutil.disk_usage``).
- ``checkpoint_estimate(...)``: the newest checkpoint's size when there is one, else weights plus
  AdamW's two fp32 states per trainable parameter.
- ``is_disk_full(exc)``: ENOSPC/EDQUOT anywhere in the exception chain, or the texts torch and
  safetensors wrap it in.
- ``RESERVE_FILE``: a small file of ``RESERVE_BYTES`` the training process lays down at its start
  next to ``events.jsonl``; a writer that meets a full disk deletes it and writes its last events
  into the room it frees.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

RESERVE_FILE = ".events-reserve"
RESERVE_BYTES = 256 * 1024  # room for the final events (error, end) once the disk is full
LOW_FREE_BYTES = 1024 * 1024  # a write that failed with less than this free: the disk is full
LAUNCH_MIN_BYTES = 8 * 1024 * 1024  # config, logs and events of a run, before any checkpoint
ENOSPC_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded")


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes (for this user) on the filesystem holding ``path`` or its nearest existing parent."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def newest_checkpoint(checkpoints_dir: Path) -> Path | None:
    found = []
    for p in Path(checkpoints_dir).glob("checkpoint-*"):
        try:
            found.append((int(p.name.rsplit("-", 1)[1]), p))
        except ValueError:
            continue
    return max(found)[1] if found else None


def checkpoint_estimate(checkpoints_dir: Path, model=None) -> int:
    """Bytes the next checkpoint will take: the newest one's size, else the model's weights plus
    two fp32 optimizer states per trainable parameter."""
    newest = newest_checkpoint(checkpoints_dir)
    if newest is not None:
        size = tree_bytes(newest)
        if size > 0:
            return size
    if model is None:
        return 0
    weights = trainable = 0
    for p in model.parameters():
        weights += p.numel() * p.element_size()
        if p.requires_grad:
            trainable += p.numel()
    if any(not p.requires_grad for p in model.parameters()):  # adapters: only trained weights are saved
        weights = trainable * 4
    return weights + trainable * 8


def weights_bytes(model) -> int:
    """Bytes ``save_model`` writes: all weights, or the trained ones for adapters."""
    params = list(model.parameters())
    if any(not p.requires_grad for p in params):
        return sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return sum(p.numel() * p.element_size() for p in params)


def exception_chain(exc: BaseException | None):
    """``exc`` and the exceptions it was raised from or during, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if any(t in text for t in ENOSPC_TEXTS):
            return True
    return False


def disk_full_message(where: str | os.PathLike, need: int | None = None, what: str | None = None,
                      fix: str = "free space there, or set run.output_root to a larger disk") -> str:
    """One sentence: the disk holding ``where`` is full, how much is free and (when known) needed."""
    free = free_bytes(where)
    have = f"{format_bytes(free)} free" if free is not None else "free space unknown"
    needs = f"; about {format_bytes(need)} needed for {what or 'it'}" if need else ""
    return f"the disk holding {where} is full ({have}{needs}): {fix}"


def lay_reserve(directory: Path) -> None:
    """Write the reserve file (best effort: on a disk already too full there is none)."""
    path = Path(directory) / RESERVE_FILE
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        try:
            path.unlink()
        except OSError:
            pass


def release_reserve(directory: Path) -> bool:
    """Delete the reserve file; True when there was one (room was freed)."""
    try:
        (Path(directory) / RESERVE_FILE).unlink()
        return True
    except OSError:
        return False
