"""install.sh's torch build choice (core/torch_build.py) over a table of drivers and GPUs, the
same file run as install.sh runs it (a fake nvidia-smi on PATH), install.sh itself with a
recording pip, and `hw`'s explanation when the driver is too old for the installed torch."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sftwizard.core.torch_build import CPU_INDEX, choose_build, driver_cuda_of_torch

REPO = Path(__file__).resolve().parents[2]
CU130 = "https://download.pytorch.org/whl/cu130"
CU126 = "https://download.pytorch.org/whl/cu126"

# (driver branch, the CUDA its nvidia-smi reports, GPUs' compute capabilities, index expected)
TABLE = [
    ("470", (11, 4), [(8, 0)], CPU_INDEX),      # older than CUDA 12: no torch 2.13 CUDA build
    ("525", (12, 0), [(8, 0)], CU126),
    ("535", (12, 2), [(7, 5)], CU126),          # T4 on the common 535 branch
    ("550", (12, 4), [(9, 0)] * 8, CU126),      # 8x H100 on 550: PyPI's CUDA 13 wheel would see no GPU
    ("570", (12, 8), [(8, 6)], CU126),
    ("580", (13, 0), [(9, 0)], CU130),
    ("580", (13, 0), [(7, 0)], CU126),          # V100: CUDA 13 builds dropped Volta
    ("580", (13, 0), [(6, 1)], CU126),          # Pascal too
    ("590", (13, 1), [(12, 0)], CU130),         # Blackwell workstation
    ("570", (12, 8), [(10, 0)], CPU_INDEX),     # B200 needs CUDA 13, i.e. driver >= 580
    ("580", (13, 0), [(7, 0), (10, 0)], CPU_INDEX),  # no single build has both
]


@pytest.mark.parametrize("branch,driver_cuda,caps,index", TABLE)
def test_choice_over_drivers_and_gpus(branch, driver_cuda, caps, index):
    choice = choose_build(driver_cuda, caps)
    assert choice.index == index, (branch, choice)
    assert "\n" not in choice.reason
    if index == CPU_INDEX:
        assert "driver" in choice.reason or "kernels" in choice.reason


def test_old_driver_says_which_driver_to_install():
    assert "update the NVIDIA driver to 525 or newer" in choose_build((11, 4), [(8, 0)]).reason
    assert "update the NVIDIA driver to 580 or newer" in choose_build((12, 8), [(10, 0)]).reason
    assert choose_build(None, []).reason.startswith("no NVIDIA GPU")


@pytest.mark.parametrize("torch_cuda,driver,too_old", [
    ((13, 0), (12, 4), True), ((13, 0), (13, 0), False), ((12, 6), (12, 2), False), ((12, 6), (11, 8), True),
])
def test_driver_too_old_for_a_torch_build(torch_cuda, driver, too_old):
    why = driver_cuda_of_torch(torch_cuda, driver)
    assert (why is not None) == too_old
    if too_old:
        assert why == f"driver CUDA {driver[0]}.{driver[1]} is older than this torch's CUDA {torch_cuda[0]}.{torch_cuda[1]}"


def _fake_nvidia_smi(folder: Path, cuda: str, caps: list[str]) -> None:
    script = folder / "nvidia-smi"
    lines = "\\n".join(caps)
    script.write_text(f"""#!/bin/sh
case "$1" in
  -L) echo "GPU 0: Fake (UUID: GPU-0)";;
  --query-gpu=compute_cap) printf '{lines}\\n';;
  *) echo "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: {cuda}     |";;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_file_install_sh_runs(tmp_path):
    _fake_nvidia_smi(tmp_path, "12.4", ["9.0", "9.0"])
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "core/torch_build.py"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == CU126 and out[1].startswith("CUDA 12.6: driver supports CUDA 12.4")


def _fake_venv(tmp_path: Path) -> Path:
    """A 'virtual environment' whose python has no torch and whose pip records its arguments."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    py = venv / "bin" / "python"
    py.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then
  case "$2" in *"import torch"*) exit 1;; esac
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then shift 2; echo "$@" >> {log}; exit 0; fi
exec {sys.executable} "$@"
""")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return venv


@pytest.mark.parametrize("cuda,caps,index", [("12.2", ["7.5"], CU126), ("13.0", ["9.0"], CU130)])
def test_install_sh_installs_the_chosen_build(tmp_path, cuda, caps, index):
    _fake_nvidia_smi(tmp_path, cuda, caps)
    venv = _fake_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX_URL"}
    env.update(PATH=f"{tmp_path}:{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    run = subprocess.run(["bash", "install.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    pip_calls = (tmp_path / "pip.log").read_text().splitlines()
    assert f"torch==2.13.0 --index-url {index}" in pip_calls[0], (run.stdout, run.stderr)
    assert f"installing torch 2.13.0 from {index}" in run.stdout
    env["TORCH_INDEX_URL"] = "https://example.invalid/whl/cu999"
    (tmp_path / "pip.log").unlink()
    subprocess.run(["bash", "install.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert "--index-url https://example.invalid/whl/cu999" in (tmp_path / "pip.log").read_text().splitlines()[0]


def test_hw_says_the_driver_is_older_than_torchs_cuda(monkeypatch):
    """A CUDA 13 torch on a 550 driver: NVML sees the H100s, torch sees nothing, and hw says why."""
    import torch

    from sftwizard.core.hardware import probe_hardware
    from tests.fixtures.fake_nvml import h100x8

    nvml = h100x8()
    nvml.driver, nvml.cuda = "550.54.15", 12040
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    report = probe_hardware(nvml, check_torch=True)  # this machine's torch sees no CUDA, as on that box
    note = next(n for n in report.notes if "torch" in n)
    assert note.startswith("driver CUDA 12.4 is older than this torch's CUDA 13.0: torch sees no GPU")
    assert f"--index-url {CU126}" in note
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu_note = next(n for n in probe_hardware(nvml, check_torch=True).notes if "torch" in n)
    assert "a CPU-only torch build is installed" in cpu_note
