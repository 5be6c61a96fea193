"""The memory bar and `sft-wizard estimate --json` give one verdict: the same estimate, against the
memory of the same GPU, for a sharded preset on a box with two different GPUs.

Both faces get their inputs from ``estimator.estimate_for``; this drives them as a user does (the
real TUI headless, the real command line) on the faithful fake NVML, so it fails if either face
picks another GPU, another process count or another sharding than the launch would.
"""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from sftwizard.cli.main import main
from tests.fixtures.fake_nvml import GIB, FakeDevice, FakeNvml
from tests.tui.helpers import screen_text, settle

A100_40 = FakeDevice("NVIDIA A100-SXM4-40GB", (8, 0), 40 * GIB, used_bytes=2 * GIB,
                     uuid="GPU-a100a100-0000-0000-0000-000000000000")
H100_80 = FakeDevice("NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB, uuid="GPU-h100h100-0000-0000-0000-000000000001")


@pytest.fixture
def fsdp_preset(tmp_path, repo_root):
    """A full fine-tune of Qwen2.5-1.5B (its config only) sharded with FSDP over every visible GPU."""
    path = tmp_path / "qwen-fsdp.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"id": str(repo_root / "tests/fixtures/configs/qwen2.5-1.5b"), "dtype": "auto"},
        "data": {"sources": [{"path": "builtin:demo"}]},
        "method": {"type": "full"},
        "training": {"max_length": 2048, "per_device_train_batch_size": 4, "gradient_checkpointing": False},
        "distributed": {"strategy": "fsdp"},
    }), encoding="utf-8")
    return path


# CUDA_VISIBLE_DEVICES -> (the GPU the first process uses, processes sharing the FSDP shards).
# -1 hides every GPU: the launch runs on the CPU (distributed.Machine.detect), so no GPU verdict.
CASES = {"1": (H100_80, 1), None: (A100_40, 2), "1,0": (H100_80, 2), "-1": (None, 1)}


@pytest.mark.parametrize("visible", list(CASES), ids=lambda v: f"CUDA_VISIBLE_DEVICES={v}")
async def test_the_memory_bar_gives_the_verdict_estimate_gives(fsdp_preset, monkeypatch, capsys, visible):
    from sftwizard.core.config import load_preset
    from sftwizard.tui.app import SftWizardApp

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([A100_40, H100_80]))  # what both faces probe
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpu, processes = CASES[visible]

    assert main(["estimate", str(fsdp_preset), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)

    app = SftWizardApp(load_preset(fsdp_preset), str(fsdp_preset), start_step="method")  # probes as a user's would
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.wizard.current_step.step_id == "method"
        bar = app.wizard.current_step.query_one("MemoryBar")
        est = bar.estimate
        assert est is not None, bar.message
        text = screen_text(app)

    free_gib = None if gpu is None else round((gpu.total_bytes - gpu.used_bytes) / GIB, 2)
    assert cli["gpu_memory_gib"] == free_gib  # the first process's GPU: CUDA's device 0, not NVML's
    assert (cli["settings"]["num_gpus"], cli["settings"]["sharding"]) == (processes, "fsdp" if processes > 1 else None)
    assert est.total_gib == cli["total_gib"]
    assert est.gpu_memory_gib == cli["gpu_memory_gib"]
    assert (est.fits, est.headroom_gib, est.settings) == (cli["fits"], cli["headroom_gib"], cli["settings"])
    if gpu is None:
        assert f"total {cli['total_gib']:.2f} GiB · no GPU: training runs on the CPU" in text
    else:
        assert f"total {cli['total_gib']:.2f} GiB of {cli['gpu_memory_gib']:.1f} GiB" in text  # what the user reads
