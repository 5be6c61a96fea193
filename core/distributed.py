"""Multi-GPU and multi-node training through ``accelerate launch`` — never a launcher of our own.

From ``cfg.distributed`` this module writes an accelerate config file (DDP by default, FSDP or
DeepSpeed ZeRO-2/3 on request) and builds the command line that starts the training process
``python -m sftwizard.core.runner RUN_DIR`` under it, once per machine. The runner itself does
not change: the trainer reads the process group accelerate sets up.

On a CPU-only box (tests, laptops) the same DDP config starts the processes with accelerate's
torchrun launcher and the trainer joins them with the gloo backend. FSDP and DeepSpeed need
CUDA; asking for them without it is refused with one sentence.

No heavy imports here: the TUI shows the command without loading torch.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import DISTRIBUTED_STRATEGIES, RunConfig, resolved_precision
from .errors import UserError
from .paths import atomic_write

ACCELERATE_CONFIG_FILE = "accelerate.yaml"
RUNNER_MODULE = "sftwizard.core.runner"
STRATEGIES = DISTRIBUTED_STRATEGIES
# What each strategy splits across the processes (the estimator's `sharding` names match ours).
SHARDS = {
    "ddp": "nothing (every process holds full weights, gradients and optimizer state)",
    "zero2": "optimizer state and gradients",
    "fsdp": "weights, gradients and optimizer state",
    "zero3": "weights, gradients and optimizer state",
}


class DistributedError(UserError):
    """A distributed setup that cannot be launched as asked. One sentence."""


@dataclass
class Machine:
    """What this machine offers to a launch: CUDA devices and bf16 support."""

    cuda_devices: int = 0
    bf16_supported: bool = False

    @classmethod
    def detect(cls) -> "Machine":
        """CUDA devices visible to a launch, without importing torch (NVML; torch if already loaded)."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip() in ("", "-1"):
            return cls()
        torch = sys.modules.get("torch")
        if torch is not None:
            if not torch.cuda.is_available():
                return cls()
            from .hardware import supports_bf16, torch_device_capability

            return cls(torch.cuda.device_count(), supports_bf16(*torch_device_capability()))
        from .hardware import probe_hardware, visible_gpus

        gpus = visible_gpus(probe_hardware())  # NVML; CUDA_VISIBLE_DEVICES read as CUDA reads it
        return cls(len(gpus), bool(gpus) and all(g.bf16 for g in gpus))


def num_processes(cfg: RunConfig, machine: Machine | None = None) -> int:
    """Processes per machine: ``distributed.num_processes``, else one per visible GPU (at least 1)."""
    if cfg.distributed.num_processes:
        return int(cfg.distributed.num_processes)
    machine = machine or Machine.detect()
    return max(1, machine.cuda_devices)


def is_distributed(cfg: RunConfig, machine: Machine | None = None) -> bool:
    """True when training needs ``accelerate launch`` (several processes or several machines)."""
    return cfg.distributed.num_machines > 1 or num_processes(cfg, machine) > 1


def check_launchable(cfg: RunConfig, machine: Machine) -> None:
    d = cfg.distributed
    if d.strategy not in STRATEGIES:
        raise DistributedError(f"distributed.strategy: must be one of {', '.join(STRATEGIES)}, got {d.strategy!r}")
    if d.strategy != "ddp" and not machine.cuda_devices:
        what = "FSDP" if d.strategy == "fsdp" else "DeepSpeed ZeRO"
        raise DistributedError(
            f"distributed.strategy: {what} ({d.strategy}) needs CUDA GPUs and none is visible here; "
            "use ddp on CPU, or generate the config on the GPU machine"
        )
    if d.strategy in ("zero2", "zero3"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise DistributedError(
                f"distributed.strategy: {d.strategy} needs the deepspeed package: pip install deepspeed"
            )


def _mixed_precision(cfg: RunConfig, machine: Machine) -> str:
    """The precision accelerate announces; it matches what the runner gives SFTConfig."""
    p = resolved_precision(cfg, machine.bf16_supported, machine.cuda_devices > 0)
    return "bf16" if p.bf16 else ("fp16" if p.fp16 else "no")


def accelerate_config(cfg: RunConfig, machine: Machine | None = None, *, check: bool = True) -> dict[str, Any]:
    """The accelerate config (as written by ``accelerate config``) for ``cfg.distributed``.

    ``check=False`` writes the config for another machine (e.g. FSDP prepared on a laptop).
    """
    machine = machine or Machine.detect()
    if check:
        check_launchable(cfg, machine)
    d = cfg.distributed
    conf: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "downcast_bf16": "no",
        "machine_rank": d.machine_rank,
        "main_training_function": "main",
        "mixed_precision": _mixed_precision(cfg, machine),
        "num_machines": d.num_machines,
        # accelerate counts processes over all machines
        "num_processes": num_processes(cfg, machine) * d.num_machines,
        "rdzv_backend": "static",
        "same_network": True,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
        # The launcher always starts real processes; on a CPU-only box the trainer itself runs
        # on CPU (SFTConfig use_cpu) and joins them over gloo. use_cpu here would make accelerate
        # start a single process (its CPU launcher expects mpirun).
        "use_cpu": False,
    }
    if d.num_machines > 1:
        conf["main_process_ip"] = d.main_process_ip
        conf["main_process_port"] = d.main_process_port
    if d.strategy == "ddp":
        conf["distributed_type"] = "MULTI_GPU"
        if machine.cuda_devices:
            conf["gpu_ids"] = "all"
    elif d.strategy == "fsdp":
        conf["distributed_type"] = "FSDP"
        conf["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_activation_checkpointing": bool(cfg.training.gradient_checkpointing),
        }
    else:
        stage = 2 if d.strategy == "zero2" else 3
        ds: dict[str, Any] = {
            "zero_stage": stage,
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "gradient_accumulation_steps": cfg.training.gradient_accumulation_steps,
            "gradient_clipping": cfg.training.max_grad_norm,
        }
        if stage == 3:
            ds["zero3_init_flag"] = True
            ds["zero3_save_16bit_model"] = True
        conf["distributed_type"] = "DEEPSPEED"
        conf["deepspeed_config"] = ds
    return conf


def write_accelerate_config(cfg: RunConfig, path: str | os.PathLike, machine: Machine | None = None,
                            *, check: bool = True) -> Path:
    """Write the accelerate config YAML to ``path`` (atomic replace) and return it."""
    path = Path(path)
    conf = accelerate_config(cfg, machine, check=check)
    header = (
        f"# accelerate config written by sft-wizard: strategy {cfg.distributed.strategy} "
        f"(shards {SHARDS[cfg.distributed.strategy]}).\n"
        "# mixed_precision follows the preset as resolved on the machine that wrote this file.\n"
        "# Use it with: accelerate launch --config_file THIS_FILE -m sftwizard.core.runner RUN_DIR\n"
    )
    return atomic_write(path, header + yaml.safe_dump(conf, sort_keys=False))


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch_argv(config_file: Path, run_dir: Path, *, machine_rank: int | None = None,
                 python: str | None = None, resume_from: str | None = None,
                 local_port: int | None = None) -> list[str]:
    argv = [python or sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    if machine_rank is not None:
        argv += ["--machine_rank", str(machine_rank)]
    if local_port is not None:
        argv += ["--main_process_port", str(local_port)]
    argv += ["-m", RUNNER_MODULE, str(run_dir)]
    if resume_from:
        argv += ["--resume", str(resume_from)]
    return argv


def launch_command(cfg: RunConfig, run_dir: str | os.PathLike, *, resume_from: str | None = None,
                   machine: Machine | None = None) -> list[str]:
    """argv that trains ``run_dir`` under ``accelerate launch`` on this machine.

    Writes ``RUN_DIR/accelerate.yaml`` (the run keeps the exact launch settings) and returns
    ``python -m accelerate.commands.launch --config_file RUN_DIR/accelerate.yaml -m
    sftwizard.core.runner RUN_DIR [--resume CKPT]``. The machine rank is the config's.
    """
    run_dir = Path(run_dir)
    config_file = write_accelerate_config(cfg, run_dir / ACCELERATE_CONFIG_FILE, machine)
    # On one machine the processes meet on a free local port, not the fixed default (29500): two
    # runs on one box (two 2-GPU jobs on an 8-GPU server) must not collide.
    port = free_port() if cfg.distributed.num_machines == 1 else None
    return _launch_argv(config_file, run_dir, resume_from=resume_from, local_port=port)


def training_command(run_dir: str | os.PathLike, resume_from: str | None = None,
                     cfg: RunConfig | None = None, machine: Machine | None = None) -> list[str]:
    """The command that trains ``run_dir``: the plain runner for one process, else
    ``accelerate launch`` (see ``launch_command``). What ``runs`` spawns."""
    from .config import load_preset
    from .rundir import RunDir

    run_dir = Path(run_dir)
    cfg = cfg or load_preset(RunDir(run_dir).config)
    if is_distributed(cfg, machine):
        return launch_command(cfg, run_dir, resume_from=resume_from, machine=machine)
    cmd = [sys.executable, "-m", RUNNER_MODULE, str(run_dir)]
    if resume_from:
        cmd += ["--resume", str(resume_from)]
    return cmd


def pinned_device(cfg: RunConfig, machine: Machine | None = None,
                  environ: dict[str, str] | None = None) -> str | None:
    """The one CUDA device a single-process run is pinned to when several are visible, else None.

    A plain (not launched) trainer that sees several GPUs wraps the model in DataParallel, which
    TRL refuses; ``distributed.num_processes: 1`` means one device. It is the first visible one
    (the first entry of ``CUDA_VISIBLE_DEVICES`` when set, else index 0)."""
    machine = machine or Machine.detect()
    if is_distributed(cfg, machine) or machine.cuda_devices <= 1:
        return None
    environ = os.environ if environ is None else environ
    visible = [v.strip() for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[0] if visible else "0"


def training_env(cfg: RunConfig, machine: Machine | None = None,
                 environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the training process: this one's, with a single-process run pinned to
    one device (``CUDA_VISIBLE_DEVICES``, see ``pinned_device``)."""
    env = dict(os.environ if environ is None else environ)
    device = pinned_device(cfg, machine, env)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


@dataclass
class MachineCommand:
    machine_rank: int
    argv: list[str]

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)

    def to_dict(self) -> dict[str, Any]:
        return {"machine_rank": self.machine_rank, "argv": self.argv, "shell": self.shell}


def multinode_commands(cfg: RunConfig, run_dir: str | os.PathLike, config_file: str | os.PathLike,
                       *, python: str = "python") -> list[MachineCommand]:
    """One command per machine (rank 0 is the main process at ``main_process_ip``).

    Every machine runs the same config file with its own ``--machine_rank``; ``RUN_DIR`` must be
    the same path on every machine (a shared filesystem), since every process reads its
    ``config.yaml`` and rank 0 writes events and checkpoints there.
    """
    return [
        MachineCommand(rank, _launch_argv(Path(config_file), Path(run_dir), machine_rank=rank, python=python))
        for rank in range(cfg.distributed.num_machines)
    ]


def estimator_sharding(cfg: RunConfig, machine: Machine | None = None) -> tuple[int, str | None]:
    """``(num_gpus, sharding)`` for ``estimator.estimate_memory``: the per-GPU share of sharded state.

    Sharding spans every process of every machine; one process means nothing is shared.
    """
    total = num_processes(cfg, machine) * cfg.distributed.num_machines
    if total <= 1:
        return 1, None
    return total, cfg.distributed.strategy


def describe(cfg: RunConfig, machine: Machine | None = None) -> dict[str, Any]:
    """A plain summary for the TUI and ``--json``: processes, machines, strategy, what is sharded."""
    machine = machine or Machine.detect()
    per_machine = num_processes(cfg, machine)
    d = cfg.distributed
    return {
        "distributed": is_distributed(cfg, machine),
        "strategy": d.strategy,
        "shards": SHARDS[d.strategy],
        "processes_per_machine": per_machine,
        "num_machines": d.num_machines,
        "world_size": per_machine * d.num_machines,
        "machine_rank": d.machine_rank,
        "main_process_ip": d.main_process_ip,
        "main_process_port": d.main_process_port,
        "cuda_devices": machine.cuda_devices,
        "backend": "nccl" if machine.cuda_devices else "gloo",
    }
