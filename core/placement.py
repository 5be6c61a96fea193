"""Where a launch of a config lands on this machine: its GPUs, its processes, what it shards.

The estimator's inputs that depend on the machine rather than the model: which GPU the run's
first process uses (its free memory is what the run must fit in, and its bf16 / FlashAttention
support is what ``auto`` settings resolve to), how many processes share the sharded state, and
the strategy that shards it. ``estimator.estimate_for`` reads this; so do the memory bar,
``sft-wizard estimate``, the recommender and the out-of-memory advice, through it.

No torch here: the GPUs are the ``HardwareReport``'s (NVML), ordered as CUDA shows them to a
launched process.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .distributed import Machine, estimator_sharding
from .hardware import GpuInfo, HardwareReport, visible_gpus


@dataclass(frozen=True)
class Placement:
    """A launch of one config on this machine."""

    gpus: tuple[GpuInfo, ...]  # the GPUs this machine's processes use, in rank order (empty: CPU)
    num_gpus: int  # processes over all machines sharing what the strategy shards (1: nothing shared)
    sharding: str | None  # ddp, zero2, zero3, fsdp; None for one process

    @property
    def gpu(self) -> GpuInfo | None:
        """The first process's GPU (CUDA device 0): the memory the run must fit in."""
        return self.gpus[0] if self.gpus else None

    @property
    def gpu_memory_gib(self) -> float | None:
        """The free memory of that GPU (its largest free MIG slice in MIG mode), GiB; None on a CPU."""
        return None if self.gpu is None else self.gpu.usable_memory_mib / 1024


def placement(cfg: RunConfig, hardware: HardwareReport | None) -> Placement:
    """Where ``cfg`` lands when launched here (``hardware`` None: nothing known, a CPU run).

    Processes per machine are ``distributed.num_processes``, else one per visible GPU; a
    single-process run is pinned to the first visible GPU (``distributed.pinned_device``), a
    launched one gives rank r the r-th. Sharding spans every process of every machine.
    """
    visible = visible_gpus(hardware)
    machine = Machine(cuda_devices=len(visible), bf16_supported=bool(visible) and all(g.bf16 for g in visible))
    num_gpus, sharding = estimator_sharding(cfg, machine)
    per_machine = cfg.distributed.num_processes or max(1, len(visible))
    return Placement(tuple(visible[:per_machine]), num_gpus, sharding)
