"""Where a launch lands: the GPUs CUDA shows it (CUDA_VISIBLE_DEVICES), its processes, its sharding.

Hardware comes from the faithful fake NVML through the real probe. CUDA_VISIBLE_DEVICES as the
CUDA runtime reads it (CUDA C Programming Guide, "CUDA Environment Variables"): a comma-separated
list of device indices or UUIDs (``GPU-…``, ``MIG-…``); the devices before the first entry it
cannot match are visible, the rest are not; ``-1`` (an invalid index) hides all of them.
"""

from __future__ import annotations

import pytest

from sftwizard.core.config import RunConfig, apply_overrides
from sftwizard.core.hardware import probe_hardware, visible_gpus
from sftwizard.core.placement import placement
from tests.fixtures import fake_nvml

BOX = probe_hardware(fake_nvml.h100x8())


@pytest.mark.parametrize("visible, indices", [
    (None, list(range(8))),
    ("3,1", [3, 1]),  # CUDA's order is the variable's
    ("GPU-h100-6", [6]),
    ("2,9,4", [2]),  # no GPU 9: it and every entry after it are ignored
    ("-1", []),
    ("", []),
    (" 5 , 5", [5]),
])
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(monkeypatch, visible, indices):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [g.index for g in visible_gpus(BOX)] == indices
    assert visible_gpus(None) == []


def test_a_mig_slice_names_its_gpu(monkeypatch):
    box = probe_hardware(fake_nvml.a100_mig())
    slice_uuid = box.gpus[0].mig_devices[0].uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", slice_uuid)
    assert visible_gpus(box) == [box.gpus[0]]


@pytest.mark.parametrize("overrides, visible, gpus, num_gpus, sharding", [
    ([], "4,5,6", [4, 5, 6], 3, "ddp"),  # one process per visible GPU, in CUDA's order
    (["distributed.strategy=fsdp"], "4,5", [4, 5], 2, "fsdp"),
    (["distributed.strategy=zero3", "distributed.num_processes=2"], None, [0, 1], 2, "zero3"),
    (["distributed.strategy=fsdp", "distributed.num_machines=2", "distributed.main_process_ip=10.0.0.1"], "0,1",
     [0, 1], 4, "fsdp"),  # shards span machines
    (["distributed.strategy=fsdp"], "7", [7], 1, None),  # one process shares nothing
    (["distributed.num_processes=1"], None, [0], 1, None),  # pinned to the first visible GPU
    (["distributed.strategy=fsdp"], "-1", [], 1, None),  # the CPU
])
def test_placement_gives_the_processes_their_gpus_and_the_sharding(monkeypatch, overrides, visible, gpus,
                                                                  num_gpus, sharding):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    where = placement(apply_overrides(RunConfig(), overrides), BOX)
    assert [g.index for g in where.gpus] == gpus
    assert (where.num_gpus, where.sharding) == (num_gpus, sharding)
    first = BOX.gpus[gpus[0]] if gpus else None
    assert where.gpu is first
    assert where.gpu_memory_gib == (None if first is None else first.usable_memory_mib / 1024)
