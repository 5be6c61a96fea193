"""Which PyTorch build a box's NVIDIA driver and GPUs can run, and from which wheel index.

``install.sh`` runs this file with the system ``python3`` before anything is installed, so it uses
the standard library only; ``hw`` imports it to explain a torch that sees no GPU. The driver is
read from ``nvidia-smi`` (its "CUDA Version", the newest CUDA the driver runs, and each GPU's
compute capability).

Facts (with their sources):

- PyTorch RELEASE.md, "Release Compatibility Matrix": torch 2.13 is built for CUDA 12.6 and 13.0
  (stable; 13.2 experimental). PyPI's default Linux wheel is the CUDA 13.0 build. "PyTorch CUDA
  Support Matrix" (2.12-2.14): CUDA 12.6 builds cover compute capability 5.0-9.0 (Maxwell to
  Hopper), CUDA 13.0 builds 7.5-12.0 (Turing to Blackwell): Maxwell, Pascal and Volta need 12.6,
  Blackwell needs 13.0.
- NVIDIA CUDA Toolkit release notes, "CUDA Toolkit 11.x, 12.x, and 13.x Driver Version Ranges"
  (minor version compatibility): CUDA 12.x applications run on drivers >= 525, CUDA 13.x on
  drivers >= 580. A driver says which CUDA it supports as "CUDA Version: 12.4" (535 -> 12.2,
  550 -> 12.4, 570 -> 12.8, 580 -> 13.0).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

TORCH_VERSION = "2.13.0"
INDEX = "https://download.pytorch.org/whl/"
CPU_INDEX = INDEX + "cpu"


@dataclass(frozen=True)
class Build:
    cuda: tuple[int, int]  # the CUDA the wheel is built with
    driver_cuda: tuple[int, int]  # the oldest driver CUDA that runs it (minor version compatibility)
    min_driver: int  # the same, as a driver branch
    capabilities: tuple[tuple[int, int], tuple[int, int]]  # compute capabilities it has kernels for

    @property
    def tag(self) -> str:
        return f"cu{self.cuda[0]}{self.cuda[1]}"

    @property
    def index(self) -> str:
        return INDEX + self.tag


# Newest first: the first that fits is chosen.
BUILDS = (
    Build((13, 0), (13, 0), 580, ((7, 5), (12, 0))),
    Build((12, 6), (12, 0), 525, ((5, 0), (9, 0))),
)


@dataclass(frozen=True)
class Choice:
    index: str  # the wheel index to install torch from
    cuda: tuple[int, int] | None  # None: the CPU build
    reason: str  # one line, printed by install.sh

    @property
    def label(self) -> str:
        return f"CUDA {self.cuda[0]}.{self.cuda[1]}" if self.cuda else "CPU"


def version_tuple(text: str | None) -> tuple[int, int] | None:
    """``"12.4"`` -> (12, 4); None for anything else."""
    m = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _show(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def choose_build(driver_cuda: tuple[int, int] | None, capabilities: list[tuple[int, int]]) -> Choice:
    """The newest torch build the driver runs with kernels for every GPU; the CPU build (and why)
    when none does or there is no GPU."""
    if driver_cuda is None or not capabilities:
        return Choice(CPU_INDEX, None, "no NVIDIA GPU or driver found: the CPU build of torch")
    lo, hi = min(capabilities), max(capabilities)
    for b in BUILDS:
        if driver_cuda >= b.driver_cuda and b.capabilities[0] <= lo and hi <= b.capabilities[1]:
            return Choice(b.index, b.cuda, f"driver supports CUDA {_show(driver_cuda)}, GPUs are sm "
                          f"{_show(lo)}-{_show(hi)}: torch {TORCH_VERSION} built for CUDA {_show(b.cuda)} ({b.tag})")
    runs = [b for b in BUILDS if b.capabilities[0] <= lo and hi <= b.capabilities[1]]
    if runs:
        need = runs[-1]  # the oldest build with kernels for these GPUs needs the least driver
        why = (f"driver CUDA {_show(driver_cuda)} is older than every torch {TORCH_VERSION} CUDA build for these "
               f"GPUs: update the NVIDIA driver to {need.min_driver} or newer (CUDA {_show(need.cuda)})")
    else:
        why = (f"no torch {TORCH_VERSION} CUDA build has kernels for both sm {_show(lo)} and sm {_show(hi)}: "
               "make only one kind of GPU visible, or set TORCH_INDEX_URL")
    return Choice(CPU_INDEX, None, why + "; installing the CPU build meanwhile")


def driver_cuda_of_torch(torch_cuda: tuple[int, int], driver_cuda: tuple[int, int]) -> str | None:
    """Why a torch built for ``torch_cuda`` cannot run on a driver that supports ``driver_cuda``,
    or None when it can (minor version compatibility within a major)."""
    build = next((b for b in BUILDS if b.cuda[0] == torch_cuda[0]), None)
    oldest = build.driver_cuda if build else torch_cuda
    if driver_cuda >= oldest:
        return None
    return f"driver CUDA {_show(driver_cuda)} is older than this torch's CUDA {_show(torch_cuda)}"


def probe_nvidia_smi() -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """(driver CUDA version, compute capability of each GPU) from ``nvidia-smi``; (None, []) without it."""
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        caps = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None, []
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", header)
    found = [version_tuple(line) for line in caps.splitlines()]
    return (version_tuple(m.group(1)) if m else None), [c for c in found if c]


def main() -> int:
    """Prints two lines for install.sh: the wheel index, then the reason."""
    choice = choose_build(*probe_nvidia_smi())
    print(choice.index)
    print(f"{choice.label}: {choice.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
