"""Failure diagnosis: one reason code and one line for whatever ended a run badly.

``classify_failure`` reads an exception raised in the training process (out of memory with
what to change, missing optional packages, data and config errors, anything else as a crash);
``describe_exit`` reads the exit status of a training process that died without saying why
(a signal, a native crash). The traceback itself always goes to the run's ``train.log``.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

from .diskspace import exception_chain
from .run_model import Reason

if TYPE_CHECKING:
    from .config import RunConfig


OPTIONAL_PACKAGES = {"bitsandbytes": "bitsandbytes", "flash_attn": "flash-attn", "liger_kernel": "liger-kernel",
                     "deepspeed": "deepspeed"}


def oom_advice(cfg: RunConfig | None, gpu_memory_gib: float | None = None) -> str:
    """What to change after an out-of-memory: the estimator's cheapest suggestion that fits this
    GPU (with the ``--set`` flags that apply it), else the levers that cut memory the most."""
    if cfg is None:
        return "lower per_device_train_batch_size or max_length, or turn on gradient checkpointing / LoRA / QLoRA"
    if gpu_memory_gib is None:
        gpu_memory_gib = _cuda_memory_gib()
    if gpu_memory_gib is not None:
        try:
            from .estimator import estimate_for
            from .hardware import probe_hardware
            from .models import model_facts

            facts = model_facts(cfg.model.id, cfg.model.revision, cfg.model.trust_remote_code)
            suggestions = estimate_for(cfg, probe_hardware(), facts, gpu_memory_gib=gpu_memory_gib).suggestions
            picks = [s for s in suggestions if s.fits] or list(suggestions)
            if picks:
                flags = " ".join(f"--set {k}={v}" for k, v in picks[0].changes.items())
                more = f"; or: {picks[1].text}" if len(picks) > 1 else ""
                return f"{picks[0].text} ({flags}){more}"
        except Exception:  # noqa: BLE001 - advice must never hide the failure itself
            pass
    t, tips = cfg.training, []
    if t.per_device_train_batch_size > 1:
        b, g = t.per_device_train_batch_size, t.gradient_accumulation_steps
        tips.append(f"training.per_device_train_batch_size {b} → {max(1, b // 2)} with "
                    f"gradient_accumulation_steps {g} → {g * 2} (same effective batch)")
    if not t.gradient_checkpointing:
        tips.append("training.gradient_checkpointing: true")
    if cfg.method.type == "full":
        tips.append("method.type: lora")
    elif cfg.method.type == "lora":
        tips.append("method.type: qlora")
    if t.max_length and t.max_length > 512:
        tips.append(f"training.max_length {t.max_length} → {t.max_length // 2}")
    return "try " + "; ".join(tips[:3]) if tips else "use a GPU with more memory"


def _cuda_memory_gib() -> float | None:
    """Total memory of the first visible GPU, when this process already uses torch with CUDA."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024 ** 3
    except Exception:  # noqa: BLE001 - a broken CUDA state after the OOM: no number
        pass
    return None


def classify_failure(exc: BaseException, cfg: RunConfig | None = None) -> tuple[str, str]:
    """(reason code, one line) for an exception raised while training.

    Codes: oom, nan, missing_dependency, disk_full, data, config, crash."""
    chain = list(exception_chain(exc))
    names = {type(e).__name__ for e in chain}
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "OutOfMemoryError" in names or "out of memory" in low:
        return Reason.OOM, f"CUDA out of memory: {oom_advice(cfg)} (see `sft-wizard estimate`)"
    for e in chain:
        if isinstance(e, ImportError):
            missing = getattr(e, "name", None) or next((m for m in OPTIONAL_PACKAGES if m in str(e)), None)
            if missing:
                from .hardware import install_command

                top = missing.split(".")[0]
                return Reason.MISSING_DEPENDENCY, f"missing package {top!r}: {install_command(top)}"
    from .diskspace import disk_full_message, is_disk_full

    if is_disk_full(exc):
        from .paths import default_runs_root

        root = getattr(getattr(cfg, "run", None), "output_root", None) or default_runs_root()
        return Reason.DISK_FULL, disk_full_message(root)
    if names & {"DataError", "TemplateError"}:
        return Reason.DATA, _first_line(next(e for e in chain if type(e).__name__ in {"DataError", "TemplateError"}))
    if names & {"ModelError", "RunnerError", "ConfigError"}:
        return Reason.CONFIG, _first_line(next(e for e in chain if type(e).__name__ in {"ModelError", "RunnerError", "ConfigError"}))
    if _raised_while_loading_data(exc):
        return Reason.DATA, f"the data could not be read: {_first_line(exc)}"
    return Reason.CRASH, text.splitlines()[0][:300] if text.strip() else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


DATA_FRAMES = ("resolve_data", "build_dataset", "load_examples")


def _raised_while_loading_data(exc: BaseException) -> bool:
    """A library error (JSON, Arrow, datasets) raised under our data-loading functions."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in DATA_FRAMES or "/sftwizard/core/data" in code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False



SIGNAL_REASONS = {signal.SIGKILL: Reason.KILLED, signal.SIGTERM: Reason.KILLED, signal.SIGINT: Reason.KILLED}


def describe_exit(returncode: int) -> tuple[str, str, str]:
    """(reason, phrase, hint) for a training process that ended without writing ``end``."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (if nobody killed it, the kernel's out-of-memory killer did: host RAM)" if sig == signal.SIGKILL else ""
        return SIGNAL_REASONS.get(sig, Reason.CRASH), f"the training process was killed by {name} (signal {sig})", hint
    return Reason.CRASH, f"the training process exited with code {returncode}", ""
