"""Hardware probe: NVML scenarios through a faithful fake, the real no-driver path, CLI, import cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.fixtures, whatever way pytest was started

from sftwizard.core import hardware  # noqa: E402
from sftwizard.core.hardware import architecture_of, capabilities_of, probe_hardware  # noqa: E402
from tests.fixtures import fake_nvml  # noqa: E402
from tests.fixtures.fake_nvml import FakeDevice, FakeNvml  # noqa: E402

MIB = 1024**2
HW_SCHEMA_GPU_KEYS = {"index", "name", "architecture", "compute_capability", "memory_total_mib",
                      "memory_free_mib", "bf16", "flash_attention_2", "fp8"}
HW_SCHEMA_KEYS = {"gpus", "driver_version", "cuda_driver_version", "torch_cuda", "reason", "cpu_count",
                  "ram_total_mib"}


def test_fake_raises_the_real_pynvml_error_classes():
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        fake_nvml.no_driver().nvmlInit()
    nvml = fake_nvml.t4()
    nvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(0))
    assert isinstance(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)), pynvml.c_nvmlMemory_t)


@pytest.mark.parametrize("scenario, words", [
    (fake_nvml.no_driver, "no NVIDIA driver"),
    (fake_nvml.driver_not_loaded, "not loaded"),
])
def test_no_driver_gives_cpu_mode_with_a_reason(scenario, words):
    report = probe_hardware(scenario())
    assert report.mode == "cpu"
    assert report.gpus == []
    assert words in report.reason
    assert report.cpu_count >= 1
    assert report.ram_total_mib and report.ram_total_mib > 0


def test_t4_is_turing_without_bf16_flash_attention_or_fp8():
    report = probe_hardware(fake_nvml.t4())
    assert report.reason is None and report.mode == "gpu"
    (gpu,) = report.gpus
    assert (gpu.name, gpu.architecture, gpu.compute_capability) == ("Tesla T4", "Turing", "7.5")
    assert (gpu.bf16, gpu.flash_attention_2, gpu.fp8) == (False, False, False)
    assert gpu.memory_total_mib == 15360 and gpu.memory_free_mib == 15357
    assert gpu.mig_mode is None  # the driver says NotSupported
    assert report.driver_version == "535.104.05" and report.cuda_driver_version == "12.2"


def test_a100_80gb_is_ampere_with_bf16_and_flash_attention_but_no_fp8():
    nvml = fake_nvml.a100_80gb()
    report = probe_hardware(nvml)
    (gpu,) = report.gpus
    assert (gpu.architecture, gpu.compute_capability) == ("Ampere", "8.0")
    assert (gpu.bf16, gpu.flash_attention_2, gpu.fp8) == (True, True, False)
    assert gpu.mig_mode is False and gpu.mig_devices == []
    assert gpu.usable_memory_mib == 81916
    assert nvml.shutdown_calls == 1 and not nvml.initialized  # NVML is shut down after the probe


def test_eight_h100_are_all_listed_as_hopper_with_fp8():
    report = probe_hardware(fake_nvml.h100x8())
    assert [g.index for g in report.gpus] == list(range(8))
    assert {g.architecture for g in report.gpus} == {"Hopper"}
    assert all(g.fp8 and g.bf16 for g in report.gpus)
    assert len({g.uuid for g in report.gpus}) == 8
    assert report.cuda_driver_version == "12.8"


def test_mig_slice_is_what_a_process_can_use():
    report = probe_hardware(fake_nvml.a100_mig())
    (gpu,) = report.gpus
    assert gpu.mig_mode is True
    (slice_,) = gpu.mig_devices  # six empty slots raised NotFound and were skipped
    assert slice_.memory_total_mib == 40192 and "3g.40gb" in slice_.name
    assert gpu.usable_memory_mib == 40192 - 13
    assert gpu.processes == []  # NoPermission on the parent is not an error
    assert report.to_dict()["gpus"][0]["usable_memory_mib"] == 40179


def test_mig_mode_without_instances_leaves_nothing_usable():
    nvml = fake_nvml.a100_mig()
    nvml.devices[0].mig_children.clear()
    (gpu,) = probe_hardware(nvml).gpus
    assert gpu.mig_mode is True and gpu.mig_devices == [] and gpu.usable_memory_mib == 0


def test_busy_gpu_shows_the_other_process_and_less_free_memory():
    report = probe_hardware(fake_nvml.busy_a100())
    (gpu,) = report.gpus
    (proc,) = gpu.processes
    assert (proc.pid, proc.used_mib, proc.name) == (4242, 61 * 1024, "other_training.py")
    assert gpu.memory_used_mib == 61 * 1024 + 200
    assert gpu.usable_memory_mib == gpu.memory_free_mib == 81920 - 61 * 1024 - 200


def test_a_lost_gpu_is_left_out_with_a_note_and_the_others_kept():
    nvml = FakeNvml([FakeDevice("NVIDIA H100 80GB HBM3", (9, 0), 80 * 1024 * MIB, lost=True),
                     FakeDevice("NVIDIA H100 80GB HBM3", (9, 0), 80 * 1024 * MIB)])
    report = probe_hardware(nvml)
    assert [g.index for g in report.gpus] == [1]
    assert report.reason is None
    assert any("GPU 0" in n and "GpuIsLost" in n for n in report.notes)


def test_driver_with_zero_gpus_and_unexpected_errors_never_crash():
    assert "no GPU" in probe_hardware(FakeNvml([])).reason

    class Broken(FakeNvml):
        def nvmlDeviceGetCount(self):
            raise OSError("ioctl failed")

    report = probe_hardware(Broken([]))
    assert report.mode == "cpu" and "OSError" in report.reason


def test_real_pynvml_on_this_machine_does_not_crash():
    report = probe_hardware()  # the real library: no driver here, a GPU on a lent machine
    assert (report.reason is None) == bool(report.gpus)
    json.dumps(report.to_dict())


@pytest.mark.parametrize("cc, arch", [
    ((6, 1), "Pascal"), ((7, 0), "Volta"), ((7, 5), "Turing"), ((8, 0), "Ampere"), ((8, 6), "Ampere"),
    ((8, 7), "Ampere"), ((8, 9), "Ada"), ((9, 0), "Hopper"), ((10, 0), "Blackwell"), ((12, 0), "Blackwell"),
])
def test_architecture_from_compute_capability(cc, arch):
    assert architecture_of(*cc) == arch


def test_capabilities_thresholds():
    assert capabilities_of(7, 5) == {"bf16": False, "flash_attention_2": False, "fp8": False}
    assert capabilities_of(8, 6) == {"bf16": True, "flash_attention_2": True, "fp8": False}
    assert capabilities_of(8, 9)["fp8"] and capabilities_of(12, 0)["fp8"]


def test_ram_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree: 100 kB\nMemAvailable:    8192000 kB\n")
    assert hardware.ram_mib(str(meminfo)) == (16000, 8000)
    total, available = hardware.ram_mib(str(tmp_path / "missing"))  # falls back to sysconf
    assert total and total > 0 and available is None


def test_to_dict_matches_the_hw_json_schema():
    d = probe_hardware(fake_nvml.a100_80gb()).to_dict()
    assert HW_SCHEMA_KEYS <= set(d)
    assert HW_SCHEMA_GPU_KEYS <= set(d["gpus"][0])
    assert set(d["libraries"]) == {"flash_attn", "bitsandbytes", "liger_kernel"}
    json.dumps(d)


def test_hw_command_json(capsys):
    from sftwizard.cli.main import main

    assert main(["hw", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert HW_SCHEMA_KEYS <= set(d)
    assert d["torch_cuda"] in (True, False)  # the command does ask torch
    assert main(["hw"]) == 0
    assert "torch sees CUDA" in capsys.readouterr().out


def test_importing_hardware_and_estimator_loads_neither_torch_nor_nvml():
    code = ("import sys, sftwizard.core.hardware as h, sftwizard.core.estimator\n"
            "h.probe_hardware(nvml=None) if False else None\n"
            "print(sorted(m for m in ('torch', 'pynvml', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_probe_without_check_torch_does_not_import_torch():
    code = ("import sys\nfrom sftwizard.core.hardware import probe_hardware\n"
            "r = probe_hardware()\nprint('torch' in sys.modules, r.torch_cuda)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "None"]


def test_the_run_lands_on_the_first_visible_gpu(monkeypatch):
    report = probe_hardware(fake_nvml.h100x8())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert report.best_gpu().index == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    assert report.best_gpu().index == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-h100-6")
    assert report.best_gpu().index == 6
