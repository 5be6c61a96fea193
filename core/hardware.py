"""What this machine can train on: GPUs through NVML, the libraries that matter, CPU and RAM.

Cheap to import (the TUI imports it at start-up): ``pynvml`` is imported inside
``probe_hardware``; torch is only asked whether it sees CUDA when it is already imported, or when
the caller passes ``check_torch=True`` (the ``hw`` command does); flash-attn, bitsandbytes and
liger-kernel are looked up with ``importlib.util.find_spec``, which finds a package without
importing it.

No GPU, no driver, or any NVML error gives a report in CPU mode with ``reason`` saying why —
``probe_hardware`` never raises.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024

# Optional libraries the wizard recommends when present: distribution-free import names.
OPTIONAL_LIBRARIES = ("flash_attn", "bitsandbytes", "liger_kernel")

# A command that installs each optional library, for every "needs X" message. The ranges are
# pyproject.toml's `gpu` extra (a test keeps them equal). flash-attn is an sdist whose setup.py
# imports torch, so pip must build it without isolation, next to the installed torch; its setup
# then fetches a prebuilt wheel matching torch/CUDA/Python when the project published one, and
# compiles (nvcc, long) otherwise.
INSTALL_COMMANDS = {
    "bitsandbytes": "pip install 'bitsandbytes>=0.50,<1'",
    "liger_kernel": "pip install 'liger-kernel>=0.5,<1'",
    "flash_attn": "pip install packaging wheel ninja && pip install --no-build-isolation 'flash-attn>=2.6,<3'",
    "deepspeed": "pip install deepspeed",
}


def install_command(import_name: str) -> str:
    """How to install an optional library, as a command that works (``pip install X`` otherwise)."""
    return INSTALL_COMMANDS.get(import_name, f"pip install {import_name.replace('_', '-')}")


def architecture_of(major: int, minor: int) -> str:
    """NVIDIA architecture name from a CUDA compute capability (CUDA C Programming Guide, table
    "Compute Capabilities": 7.0/7.2 Volta, 7.5 Turing, 8.0/8.6/8.7 Ampere, 8.9 Ada Lovelace,
    9.0 Hopper, 10.x/12.x Blackwell)."""
    if major >= 10:
        return "Blackwell"
    if major == 9:
        return "Hopper"
    if major == 8:
        return "Ada" if minor >= 9 else "Ampere"
    if major == 7:
        return "Turing" if minor >= 5 else "Volta"
    if major == 6:
        return "Pascal"
    return "unknown"


def supports_bf16(major: int, minor: int) -> bool:
    """bf16 tensor cores: Ampere (8.0) and newer. The one bf16 rule for the TUI, the recommender,
    the runner, chat, merge and accelerate configs. Not ``torch.cuda.is_bf16_supported()``: that
    is True on a T4 or V100 too, where bf16 is emulated (slower than fp16, no tensor cores)."""
    return (major, minor) >= (8, 0)


def supports_flash_attention_2(major: int, minor: int) -> bool:
    """FlashAttention-2 runs on Ampere and newer (its README: "Ampere, Ada, or Hopper GPUs")."""
    return (major, minor) >= (8, 0)


def capabilities_of(major: int, minor: int) -> dict[str, bool]:
    """Derived capabilities: bf16 and FlashAttention-2 from Ampere (8.0); FP8 tensor cores from Ada (8.9)."""
    return {"bf16": supports_bf16(major, minor), "flash_attention_2": supports_flash_attention_2(major, minor),
            "fp8": (major, minor) >= (8, 9)}


def torch_device_capability() -> tuple[int, int] | None:
    """Compute capability of the GPU torch trains on (its current device); None without CUDA.
    Imports torch: for the training process and the commands that load a model."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def auto_attention(gpu_flash_attention_2: bool, flash_attn_installed: bool, compute_dtype: str) -> tuple[str, str]:
    """(implementation, reason) that ``model.attn_implementation: auto`` stands for: FlashAttention-2
    when flash-attn is installed, the GPU supports it (sm80+) and the compute dtype is 16-bit;
    PyTorch SDPA otherwise. One rule for the runner, the estimator and the recommender."""
    if not gpu_flash_attention_2:
        return "sdpa", "no GPU with FlashAttention-2 support (it needs sm80+, Ampere or newer): PyTorch SDPA"
    if not flash_attn_installed:
        return "sdpa", f"flash-attn is not installed ({install_command('flash_attn')}): PyTorch SDPA"
    if compute_dtype not in ("bf16", "fp16"):
        return "sdpa", "training computes in fp32, which FlashAttention-2 does not support: PyTorch SDPA"
    return "flash_attention_2", "flash-attn is installed and the GPU is sm80+: fused varlen attention, no padding computed"


@dataclass
class GpuProcess:
    pid: int
    used_mib: int | None  # None where the driver does not say (e.g. inside some containers)
    name: str | None = None


@dataclass
class MigDevice:
    """One MIG instance of a GPU in MIG mode: what a process placed on it can use."""

    index: int
    name: str
    uuid: str | None
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int


@dataclass
class GpuInfo:
    index: int
    name: str
    uuid: str | None
    architecture: str
    compute_capability: str  # "8.0"
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    bf16: bool
    flash_attention_2: bool
    fp8: bool
    mig_mode: bool | None = None  # None: the GPU has no MIG support
    mig_devices: list[MigDevice] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def usable_memory_mib(self) -> int:
        """Free memory one training process can use: the largest free MIG slice in MIG mode."""
        if self.mig_mode and self.mig_devices:
            return max(d.memory_free_mib for d in self.mig_devices)
        if self.mig_mode:
            return 0  # MIG on but no instance created: CUDA sees no device here
        return self.memory_free_mib


@dataclass
class HardwareReport:
    gpus: list[GpuInfo]
    driver_version: str | None
    cuda_driver_version: str | None  # "12.4": the newest CUDA the driver supports
    torch_cuda: bool | None  # None: not checked (torch was not imported; see module doc)
    reason: str | None  # why there is no GPU mode; None when GPUs were found
    cpu_count: int
    ram_total_mib: int | None
    ram_available_mib: int | None = None
    libraries: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "gpu" if self.gpus else "cpu"

    def best_gpu(self) -> GpuInfo | None:
        """The GPU a single-process run lands on: CUDA's device 0, i.e. the first entry of
        CUDA_VISIBLE_DEVICES (an NVML index or a GPU-/MIG- UUID) when it is set, else index 0."""
        if not self.gpus:
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        for gpu in self.gpus:
            if visible and (visible == str(gpu.index) or (gpu.uuid and visible == gpu.uuid)
                            or any(visible == m.uuid for m in gpu.mig_devices)):
                return gpu
        return self.gpus[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode
        for gpu, raw in zip(self.gpus, d["gpus"]):
            raw["usable_memory_mib"] = gpu.usable_memory_mib
        return d


# --------------------------------------------------------------------------- CPU side

def cpu_count() -> int:
    """Cores this process may run on (respects taskset / container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ram_mib(meminfo_path: str = "/proc/meminfo") -> tuple[int | None, int | None]:
    """(total, available) RAM in MiB from /proc/meminfo, else total from sysconf."""
    total = available = None
    try:
        with open(meminfo_path, encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    kib = int(rest.split()[0])
                    if key == "MemTotal":
                        total = kib // 1024
                    else:
                        available = kib // 1024
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
        except (AttributeError, ValueError, OSError):
            total = None
    return total, available


def libraries_available() -> dict[str, bool]:
    """Whether each optional library is importable, without importing it."""
    out = {}
    for name in OPTIONAL_LIBRARIES:
        try:
            out[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            out[name] = False
    return out


def torch_sees_cuda(check_torch: bool = False) -> bool | None:
    """``torch.cuda.is_available()`` when torch is already imported or ``check_torch`` asks for it;
    None otherwise (importing torch costs seconds and the TUI must start fast)."""
    if "torch" not in sys.modules and not check_torch:
        return None
    try:
        import torch
    except Exception:  # torch missing or broken: it certainly does not see CUDA
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


# --------------------------------------------------------------------------- NVML side

def _cuda_version_string(value: int | None) -> str | None:
    """NVML gives the CUDA driver version as 1000*major + 10*minor (12040 -> "12.4")."""
    if not value:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reason_for(nvml: Any, exc: BaseException) -> str:
    """One sentence for an NVML failure at start-up."""
    name = type(exc).__name__
    if name == "NVMLError_LibraryNotFound":
        return "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) was not found; training runs on the CPU"
    if name == "NVMLError_DriverNotLoaded":
        return "the NVIDIA driver is installed but not loaded (reboot or load the kernel module); training runs on the CPU"
    if name == "NVMLError_NoPermission":
        return "no permission to query the NVIDIA driver (NVML); training runs on the CPU"
    if name == "NVMLError_LibRmVersionMismatch":
        return "the NVIDIA driver and its NVML library versions differ (a driver update needs a reboot); training runs on the CPU"
    return f"NVML error ({name}: {exc}); training runs on the CPU"


def _optional(nvml: Any, fn: str, *args: Any, default: Any = None) -> Any:
    """Call an NVML query that some GPUs or drivers do not support; ``default`` on any NVML error."""
    try:
        return getattr(nvml, fn)(*args)
    except nvml.NVMLError:
        return default
    except AttributeError:  # an older nvidia-ml-py without this function
        return default


def _memory_mib(mem: Any) -> tuple[int, int, int]:
    return int(mem.total) // MIB, int(mem.used) // MIB, int(mem.free) // MIB


def _processes(nvml: Any, handle: Any) -> list[GpuProcess]:
    procs = _optional(nvml, "nvmlDeviceGetComputeRunningProcesses", handle, default=[]) or []
    out = []
    for p in procs:
        used = getattr(p, "usedGpuMemory", None)
        name = _optional(nvml, "nvmlSystemGetProcessName", p.pid)
        out.append(GpuProcess(
            pid=int(p.pid),
            used_mib=int(used) // MIB if used is not None else None,
            name=_text(name) if name is not None else None,
        ))
    return out


def _mig_devices(nvml: Any, handle: Any) -> list[MigDevice]:
    count = _optional(nvml, "nvmlDeviceGetMaxMigDeviceCount", handle, default=0) or 0
    out = []
    for i in range(int(count)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except nvml.NVMLError:  # NVMLError_NotFound: this slot holds no instance
            continue
        try:
            total, used, free = _memory_mib(nvml.nvmlDeviceGetMemoryInfo(mig))
        except nvml.NVMLError:
            continue
        uuid = _optional(nvml, "nvmlDeviceGetUUID", mig)
        name = _optional(nvml, "nvmlDeviceGetName", mig, default="MIG device")
        out.append(MigDevice(len(out), _text(name), _text(uuid) if uuid else None, total, used, free))
    return out


def _gpu(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    total, used, free = _memory_mib(nvml.nvmlDeviceGetMemoryInfo(handle))
    uuid = _optional(nvml, "nvmlDeviceGetUUID", handle)
    mig = _optional(nvml, "nvmlDeviceGetMigMode", handle)  # [current, pending]; NotSupported: no MIG
    mig_mode = None if mig is None else bool(mig[0])
    caps = capabilities_of(major, minor)
    return GpuInfo(
        index=index,
        name=name,
        uuid=_text(uuid) if uuid else None,
        architecture=architecture_of(major, minor),
        compute_capability=f"{major}.{minor}",
        memory_total_mib=total,
        memory_used_mib=used,
        memory_free_mib=free,
        mig_mode=mig_mode,
        mig_devices=_mig_devices(nvml, handle) if mig_mode else [],
        processes=_processes(nvml, handle),
        **caps,
    )


def _probe_nvml(nvml: Any) -> tuple[list[GpuInfo], str | None, str | None, str | None, list[str]]:
    """(gpus, driver, cuda driver, reason, notes). Raises only what the caller turns into a reason."""
    nvml.nvmlInit()
    notes: list[str] = []
    try:
        driver = _optional(nvml, "nvmlSystemGetDriverVersion")
        cuda = _optional(nvml, "nvmlSystemGetCudaDriverVersion")
        count = int(nvml.nvmlDeviceGetCount())
        gpus = []
        for i in range(count):
            try:
                gpus.append(_gpu(nvml, i))
            except nvml.NVMLError as exc:  # e.g. GPU is lost: skip it, say so
                notes.append(f"GPU {i} could not be queried ({type(exc).__name__}: {exc}) and is left out")
        reason = None
        if count == 0:
            reason = "the NVIDIA driver is loaded but reports no GPU; training runs on the CPU"
        elif not gpus:
            reason = f"none of the {count} GPUs could be queried; training runs on the CPU"
        return gpus, _text(driver) if driver else None, _cuda_version_string(cuda), reason, notes
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def torch_without_cuda_note(driver_cuda: str | None, gpus: list[GpuInfo]) -> str:
    """Why torch sees no GPU that NVML sees: a CPU-only build, or a CUDA build the driver is too
    old for (with the build to install instead, from ``torch_build``)."""
    from .torch_build import choose_build, driver_cuda_of_torch, version_tuple

    torch = sys.modules.get("torch")
    built = version_tuple(getattr(getattr(torch, "version", None), "cuda", None))
    driver = version_tuple(driver_cuda)
    caps = [c for c in (version_tuple(g.compute_capability) for g in gpus) if c]
    fix = choose_build(driver, caps)
    how = (f"pip install --force-reinstall torch==2.13.0 --index-url {fix.index} ({fix.label})" if fix.cuda
           else fix.reason)
    if built is None:
        return f"NVML sees GPUs but torch does not see CUDA: a CPU-only torch build is installed; {how}"
    why = driver_cuda_of_torch(built, driver) if driver else None
    if why:
        return f"{why}: torch sees no GPU; {how}"
    return (f"NVML sees GPUs but torch (built for CUDA {built[0]}.{built[1]}) does not see CUDA: check "
            "CUDA_VISIBLE_DEVICES and that the driver is loaded")


def visible_gpus(hardware: "HardwareReport | None", environ: dict[str, str] | None = None) -> "list[GpuInfo]":
    """The GPUs a process started here can use, in CUDA's order: all of them, or those named by
    ``CUDA_VISIBLE_DEVICES`` (NVML index, ``GPU-`` or ``MIG-`` UUID). CUDA ignores the first entry
    it cannot match and every entry after it; ``-1`` or an empty value hides every GPU."""
    gpus = list(hardware.gpus) if hardware is not None else []
    raw = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return gpus
    out: list[GpuInfo] = []
    for entry in (e.strip() for e in raw.split(",")):
        gpu = next((g for g in gpus if entry and (entry == str(g.index) or entry == g.uuid
                                                   or any(entry == m.uuid for m in g.mig_devices))), None)
        if gpu is None:
            break
        if gpu not in out:
            out.append(gpu)
    return out


def probe_hardware(nvml: Any = None, *, check_torch: bool = False) -> HardwareReport:
    """Everything the wizard needs to know about this machine. Never raises.

    ``nvml`` is the NVML binding (the ``pynvml`` module by default; tests pass a fake with the
    same functions raising the real ``pynvml.NVMLError`` subclasses). ``check_torch`` imports torch
    (seconds) to ask whether it sees CUDA; otherwise that is only answered if torch is loaded.
    """
    gpus: list[GpuInfo] = []
    driver = cuda = None
    notes: list[str] = []
    reason: str | None
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            nvml = None
    if nvml is None:
        reason = "nvidia-ml-py (pynvml) is not installed, so GPUs cannot be queried; training runs on the CPU"
    else:
        try:
            gpus, driver, cuda, reason, notes = _probe_nvml(nvml)
        except Exception as exc:  # NVMLError subclasses, and anything else: never a crash
            error_type = getattr(nvml, "NVMLError", None)
            if isinstance(error_type, type) and isinstance(exc, error_type):
                reason = _reason_for(nvml, exc)
            else:
                reason = f"GPU query failed ({type(exc).__name__}: {exc}); training runs on the CPU"
    total, available = ram_mib()
    torch_cuda = torch_sees_cuda(check_torch)
    if gpus and torch_cuda is False:
        notes.append(torch_without_cuda_note(cuda, gpus))
    return HardwareReport(
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        torch_cuda=torch_cuda,
        reason=reason,
        cpu_count=cpu_count(),
        ram_total_mib=total,
        ram_available_mib=available,
        libraries=libraries_available(),
        notes=notes,
    )
