"""Live metrics the runner writes into ``log`` events: throughput, ETA, and GPU samples from NVML.

Everything a viewer shows (TUI, ``attach``, a script) comes from these fields, so every viewer
shows the same numbers. NVML (``pynvml``, from nvidia-ml-py) is imported lazily; without a
driver or a GPU the sampler is a no-op that returns ``{}``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

GIB = 1024 ** 3


def eta_seconds(step: int, max_steps: int | None, steps_per_s: float | None) -> float | None:
    """Seconds left at the current pace, or None when it cannot be known."""
    if not max_steps or max_steps <= 0 or not steps_per_s or steps_per_s <= 0:
        return None
    return max(0.0, (max_steps - step) / steps_per_s)


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m`` — or ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Throughput:
    """Rates between consecutive logs (tokens/s, samples/s) and an ETA from the pace since the
    process began training (evaluation and checkpoint time included, so the ETA is honest)."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self._begin: tuple[float, int] | None = None
        self._last: tuple[float, int, float | None] | None = None

    def begin(self, step: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._begin = (now, step)
        self._last = (now, step, None)

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` of non-training work (sampling answers) out of the next rates; the
        ETA keeps it, since the run will spend it again."""
        if self._last is not None and seconds > 0:
            last_time, last_step, last_tokens = self._last
            self._last = (last_time + seconds, last_step, last_tokens)

    def update(self, step: int, max_steps: int | None, num_tokens: float | None,
               now: float | None = None) -> dict[str, float | None]:
        now = time.time() if now is None else now
        if self._begin is None:
            self.begin(step, now)
        last_time, last_step, last_tokens = self._last
        dt = now - last_time
        out: dict[str, float | None] = {"tokens_per_s": None, "samples_per_s": None,
                                        "steps_per_s": None, "eta_s": None}
        if dt > 0 and step > last_step:
            out["samples_per_s"] = (step - last_step) * self.samples_per_step / dt
            if num_tokens is not None and last_tokens is not None:
                out["tokens_per_s"] = (num_tokens - last_tokens) / dt
        begin_time, begin_step = self._begin
        if now > begin_time and step > begin_step:
            out["steps_per_s"] = (step - begin_step) / (now - begin_time)
            out["eta_s"] = eta_seconds(step, max_steps, out["steps_per_s"])
        self._last = (now, step, num_tokens if num_tokens is not None else last_tokens)
        return out


def _visible_indices(nvml, count: int) -> list[Any]:
    """NVML handles of the GPUs this process may use (CUDA_VISIBLE_DEVICES honoured)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    handles = []
    for n, token in enumerate(t.strip() for t in visible.split(",")):
        if not token:
            continue
        if token.isdigit():
            if int(token) < count:
                handles.append((n, nvml.nvmlDeviceGetHandleByIndex(int(token))))
        else:  # GPU-/MIG- UUID
            try:
                handles.append((n, nvml.nvmlDeviceGetHandleByUUID(token)))
            except Exception:  # noqa: BLE001 - an unknown UUID is simply not sampled
                continue
    return handles


class GpuSampler:
    """Samples memory, utilisation and power of the visible GPUs on a background thread;
    ``snapshot()`` returns the means (utilisation, power) and peaks (memory) since the last call.

    ``nvml`` is the pynvml module (a faithful fake in tests); ``None`` imports it lazily."""

    def __init__(self, interval: float = 1.0, nvml: Any = None):
        self.interval = interval
        self._nvml = nvml
        self._handles: list[tuple[int, Any]] = []
        self._acc: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = False

    def start(self) -> "GpuSampler":
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._handles = _visible_indices(self._nvml, self._nvml.nvmlDeviceGetCount())
        except Exception:  # noqa: BLE001 - no driver, no GPU, no library: nothing to sample
            self._handles = []
        self.available = bool(self._handles)
        if self.available:
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval + 1)
        if self.available:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
        self.available = False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        nvml = self._nvml
        for index, handle in self._handles:
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # noqa: BLE001 - a device that stops answering is skipped this round
                continue
            # Utilisation and power are read on their own: a MIG instance answers memory but
            # NVMLError_NotSupported for both, and its memory must still be sampled.
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except Exception:  # noqa: BLE001 - MIG slices, some vGPUs
                util = None
            try:
                power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:  # noqa: BLE001 - some boards (and MIG slices) do not report power
                power_w = None
            with self._lock:
                acc = self._acc.setdefault(index, {"util": 0.0, "util_n": 0, "power": 0.0, "power_n": 0,
                                                   "mem_peak": 0})
                if util is not None:
                    acc["util"] += util
                    acc["util_n"] += 1
                if power_w is not None:
                    acc["power"] += power_w
                    acc["power_n"] += 1
                acc["mem_peak"] = max(acc["mem_peak"], mem.used)
                acc["mem_used"], acc["mem_total"] = mem.used, mem.total

    def snapshot(self) -> dict[str, Any]:
        """Fields for a ``log`` event: ``gpus`` (one dict per device) and totals over devices
        (``gpu_mem_gib`` = highest used, ``gpu_util_pct`` = mean, ``gpu_power_w`` = sum)."""
        if not self.available:
            return {}
        self._sample()
        with self._lock:
            acc, self._acc = self._acc, {}
        gpus = []
        for index, a in sorted(acc.items()):
            gpus.append({
                "index": index,
                "mem_used_gib": round(a["mem_used"] / GIB, 3),
                "mem_peak_gib": round(a["mem_peak"] / GIB, 3),
                "mem_total_gib": round(a["mem_total"] / GIB, 3),
                "util_pct": round(a["util"] / a["util_n"], 1) if a["util_n"] else None,
                "power_w": round(a["power"] / a["power_n"], 1) if a["power_n"] else None,
            })
        if not gpus:
            return {}
        powers = [g["power_w"] for g in gpus if g["power_w"] is not None]
        utils = [g["util_pct"] for g in gpus if g["util_pct"] is not None]
        return {
            "gpus": gpus,
            "gpu_mem_gib": max(g["mem_peak_gib"] for g in gpus),
            "gpu_mem_total_gib": max(g["mem_total_gib"] for g in gpus),
            "gpu_util_pct": round(sum(utils) / len(utils), 1) if utils else None,
            "gpu_power_w": round(sum(powers), 1) if powers else None,
        }
