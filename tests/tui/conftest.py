"""Fixtures for the TUI tests: a fixed, machine-independent hardware report and app factory."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

SIZES = {"small": (80, 24), "large": (120, 40)}


@dataclass
class FakeGpu:
    """The fields the TUI reads, as ``sftwizard.core.hardware.GpuInfo`` has them."""

    index: int = 0
    name: str = "NVIDIA L4"
    architecture: str = "Ada"
    compute_capability: str = "8.9"
    memory_total_mib: int = 23034
    memory_used_mib: int = 0
    memory_free_mib: int = 23034
    bf16: bool = True
    flash_attention_2: bool = True
    fp8: bool = True

    @property
    def usable_memory_mib(self) -> int:
        return self.memory_free_mib


@dataclass
class FakeReport:
    gpus: list = field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    torch_cuda: bool | None = None
    reason: str | None = "no NVIDIA driver found"
    cpu_count: int = 2
    ram_total_mib: int | None = 8192
    notes: list = field(default_factory=list)

    def best_gpu(self):  # as HardwareReport: CUDA's device 0 (no CUDA_VISIBLE_DEVICES in the tests)
        return self.gpus[0] if self.gpus else None


def cpu_report():
    """This machine as the tests pretend it is: 2 cores, no GPU — the same everywhere."""
    try:
        from sftwizard.core.hardware import HardwareReport

        return HardwareReport(gpus=[], driver_version=None, cuda_driver_version=None, torch_cuda=None,
                              reason="no NVIDIA driver found; training runs on the CPU", cpu_count=2,
                              ram_total_mib=8192)
    except ImportError:
        return FakeReport(reason="no NVIDIA driver found; training runs on the CPU")


def gpu_report():
    return FakeReport(gpus=[FakeGpu()], driver_version="550.54", cuda_driver_version="12.4", reason=None)


@pytest.fixture
def make_app():
    from sftwizard.tui.app import SftWizardApp

    def factory(config=None, preset_path=None, *, start_step=None, hardware=None, theme=None):
        report = hardware if hardware is not None else cpu_report()
        return SftWizardApp(config, preset_path, start_step=start_step, hardware_probe=lambda: report, theme=theme)

    return factory

