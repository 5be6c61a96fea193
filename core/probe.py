"""The memory probe: run the exact configuration for 3 optimizer steps on a CUDA GPU, at the
longest sequence, and put the measured peak beside the estimate.

The trainer comes from ``runner.build_trainer`` (the one RunConfig → SFTTrainer path), so the
probe measures what a real run allocates. Only the data differ: every row is ``max_length``
tokens long (the worst case), and in each micro-batch one row is a token shorter so the batch
is padded like real batches are (that is what makes transformers build an attention mask).
Every token is trained (no masked prompt), which is the worst case for the LM head too.

What runs without CUDA (and is tested on CPU): ``probe_config`` and ``probe_rows``. What needs
CUDA raises ``ProbeError`` with one sentence before anything loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .paths import atomic_write

PROBE_STEPS = 3
PROBE_SUFFIX = ".probe.json"
GIB = 1024**3


class ProbeError(UserError):
    """The probe cannot run here (no CUDA). One sentence."""


@dataclass
class ProbeResult:
    status: str  # ok | oom | error
    model: str
    gpu_name: str | None
    gpu_total_gib: float | None
    date: str
    versions: dict[str, str]
    steps: int
    settings: dict[str, Any]
    measured_reserved_gib: float | None  # torch.cuda.max_memory_reserved()
    measured_allocated_gib: float | None  # torch.cuda.max_memory_allocated()
    estimated_total_gib: float
    estimated_reserved_gib: float
    estimated_allocated_gib: float
    error_pct: float | None  # (estimated - measured) / measured, on reserved memory
    seconds: float = 0.0
    message: str | None = None
    components: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_config(cfg: Any, steps: int = PROBE_STEPS) -> Any:
    """The configuration the probe trains: ``cfg`` unchanged where it matters for memory
    (model, method, batch, accumulation, length, checkpointing, optimizer, attention, packing),
    and stopped after ``steps`` optimizer steps, saving and evaluating nothing. Data come from
    the bundled demo (only to build the trainer); ``probe_rows`` replaces them."""
    t = dataclasses.replace(
        cfg.training, max_steps=steps, num_train_epochs=1.0, logging_steps=1, save_strategy="no",
        eval_strategy="no", eval_steps=None, report_to="none", warmup_steps=0, warmup_ratio=0.0,
        dataloader_num_workers=0,
    )
    rows = steps * cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    data = dataclasses.replace(
        cfg.data, sources=[dataclasses.replace(cfg.data.sources[0], path="builtin:demo", format="auto", split="train",
                                               name=None, columns={}, roles={}, max_rows=max(rows, 8))],
        eval_source=None, eval_fraction=0.0,
    )
    run = dataclasses.replace(cfg.run, name="memory-probe")
    return dataclasses.replace(cfg, training=t, data=data, run=run)


def probe_rows(vocab_size: int, batch: int, max_length: int, steps: int, grad_accum: int,
               padded: bool = True, seed: int = 0) -> list[dict[str, list[int]]]:
    """Token rows for ``steps`` optimizer steps: ``max_length`` tokens each; with ``padded`` and a
    micro-batch above 1, the last row of every micro-batch is one token shorter. Read in order
    (sequential sampling), so every micro-batch has that shape."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(steps * grad_accum):
        for j in range(batch):
            n = max_length - 1 if (padded and batch > 1 and j == batch - 1) else max_length
            rows.append({"input_ids": [rng.randrange(3, vocab_size) for _ in range(n)]})
    return rows


def require_cuda() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise ProbeError("the memory probe needs torch with CUDA; torch is not installed") from None
    if not torch.cuda.is_available():
        raise ProbeError("the memory probe needs a CUDA GPU and none is visible here (run `sft-wizard hw` to see why)")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "flash-attn", "sft-wizard"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    try:
        import torch

        out["cuda"] = str(torch.version.cuda)
    except Exception:
        pass
    return out


def train_probe_steps(cfg: Any, facts: Any, *, steps: int = PROBE_STEPS,
                      output_dir: str | os.PathLike | None = None) -> Any:
    """Build the real trainer for ``probe_config(cfg)``, feed it ``probe_rows`` in order, and
    train ``steps`` optimizer steps; returns the trainer. Device-neutral (tested on CPU);
    ``run_probe`` wraps it with the CUDA measurement."""
    from datasets import Dataset

    from .runner import build_trainer

    t = cfg.training
    padding_free = bool(t.padding_free or (t.packing and t.packing_strategy in ("bfd", "bfd_split")))
    full_rows = bool(t.packing and t.packing_strategy == "wrapped")
    workdir = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="sftw-probe-"))
    prepared = build_trainer(probe_config(cfg, steps), workdir)
    trainer = prepared.trainer
    vocab = min(len(prepared.tokenizer), int(facts.vocab_size))
    trainer.train_dataset = Dataset.from_list(probe_rows(
        vocab, t.per_device_train_batch_size, int(t.max_length or facts.max_position_embeddings or 4096), steps,
        t.gradient_accumulation_steps, padded=not (padding_free or full_rows)))
    trainer.args.train_sampling_strategy = "sequential"
    trainer.train()
    return trainer


def run_probe(cfg: Any, *, steps: int = PROBE_STEPS, output_dir: str | os.PathLike | None = None,
              facts: Any = None) -> ProbeResult:
    """Train ``cfg`` for ``steps`` optimizer steps on CUDA and measure its peak memory."""
    require_cuda()
    import torch

    from .estimator import estimate_memory
    from .hardware import probe_hardware
    from .models import model_facts

    facts = facts or model_facts(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)
    hardware = probe_hardware(check_torch=True)
    est = estimate_memory(facts, cfg, hardware=hardware, suggest=False)
    props = torch.cuda.get_device_properties(0)
    result = ProbeResult(
        status="error", model=cfg.model.id, gpu_name=props.name, gpu_total_gib=round(props.total_memory / GIB, 2),
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), versions=_versions(), steps=steps,
        settings=est.settings, measured_reserved_gib=None, measured_allocated_gib=None,
        estimated_total_gib=est.total_gib, estimated_reserved_gib=est.reserved_gib,
        estimated_allocated_gib=est.allocated_gib, error_pct=None, components=est.components,
    )
    started = time.time()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        train_probe_steps(cfg, facts, steps=steps, output_dir=output_dir)
        torch.cuda.synchronize()
        result.status = "ok"
    except torch.cuda.OutOfMemoryError as exc:
        result.status, result.message = "oom", str(exc).splitlines()[0]
    except Exception as exc:  # the measurement is reported, not raised: the harness goes on
        result.status, result.message = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
    result.seconds = round(time.time() - started, 1)
    if result.status == "ok":
        result.measured_reserved_gib = round(torch.cuda.max_memory_reserved() / GIB, 3)
        result.measured_allocated_gib = round(torch.cuda.max_memory_allocated() / GIB, 3)
        result.error_pct = round(100 * (est.reserved_gib - result.measured_reserved_gib) / result.measured_reserved_gib, 1)
    return result


def probe_path_for(preset: str | os.PathLike) -> Path:
    """Where a preset's measurement lives: ``NAME.probe.json`` beside ``NAME.yaml``."""
    p = Path(preset)
    return p.with_name(p.stem + PROBE_SUFFIX)


def save_probe(result: ProbeResult, preset: str | os.PathLike) -> Path:
    """Save the measurement beside the preset (atomically)."""
    path = probe_path_for(preset)
    return atomic_write(path, json.dumps(result.to_dict(), indent=2) + "\n")


def load_probe(preset: str | os.PathLike) -> dict[str, Any] | None:
    path = probe_path_for(preset)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
