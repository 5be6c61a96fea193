"""Fixtures for the TUI tests: a fixed, machine-independent hardware report and app factory."""

from __future__ import annotations

import pytest

from sftwizard.core.hardware import GpuInfo, HardwareReport

SIZES = {"small": (80, 24), "large": (120, 40)}


def cpu_report() -> HardwareReport:
    """This machine as the tests pretend it is: 2 cores, no GPU — the same everywhere."""
    return HardwareReport(gpus=[], driver_version=None, cuda_driver_version=None, torch_cuda=None,
                          reason="no NVIDIA driver found; training runs on the CPU", cpu_count=2, ram_total_mib=8192)


def gpu_report() -> HardwareReport:
    """One NVIDIA L4 (22.5 GiB free), 2 cores."""
    l4 = GpuInfo(index=0, name="NVIDIA L4", uuid=None, architecture="Ada", compute_capability="8.9",
                 memory_total_mib=23034, memory_used_mib=0, memory_free_mib=23034, bf16=True, flash_attention_2=True,
                 fp8=True)
    return HardwareReport(gpus=[l4], driver_version="550.54", cuda_driver_version="12.4", torch_cuda=None,
                          reason=None, cpu_count=2, ram_total_mib=8192)


@pytest.fixture
def make_app():
    from sftwizard.tui.app import SftWizardApp

    def factory(config=None, preset_path=None, *, start_step=None, hardware=None, theme=None):
        report = hardware if hardware is not None else cpu_report()
        return SftWizardApp(config, preset_path, start_step=start_step, hardware_probe=lambda: report, theme=theme)

    return factory

