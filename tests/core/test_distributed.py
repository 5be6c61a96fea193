"""accelerate configs and launch commands; the demo for real with 2 processes (gloo, CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sftwizard.core import distributed
from sftwizard.core.config import RunConfig, apply_overrides, load_preset
from sftwizard.core.distributed import DistributedError, Machine
from sftwizard.core.events import read_events

GPU_BOX = Machine(cuda_devices=8, bf16_supported=True)


def cfg_with(*overrides: str) -> RunConfig:
    return apply_overrides(RunConfig(), list(overrides))


def load_with_accelerate(path: Path):
    """accelerate's own reader of config files (what `accelerate launch --config_file` uses)."""
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(path))


@pytest.mark.parametrize("strategy, distributed_type", [
    ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"),
])
def test_each_strategy_writes_a_config_accelerate_reads(tmp_path, strategy, distributed_type):
    cfg = cfg_with(f"distributed.strategy={strategy}", "distributed.num_processes=4")
    path = distributed.write_accelerate_config(cfg, tmp_path / "acc.yaml", GPU_BOX, check=False)
    loaded = load_with_accelerate(path)
    assert loaded.distributed_type.value == distributed_type
    assert loaded.num_processes == 4 and loaded.num_machines == 1
    assert str(getattr(loaded.mixed_precision, "value", loaded.mixed_precision)) == "bf16"  # auto dtype on a bf16 GPU, as the runner resolves it
    if strategy == "fsdp":
        assert loaded.fsdp_config["fsdp_version"] == 2
        assert loaded.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if strategy.startswith("zero"):
        assert loaded.deepspeed_config["zero_stage"] == int(strategy[-1])
        assert ("zero3_init_flag" in loaded.deepspeed_config) == (strategy == "zero3")


def test_multinode_commands_carry_rank_and_main_address(tmp_path):
    cfg = cfg_with("distributed.num_processes=8", "distributed.num_machines=2",
                   "distributed.main_process_ip=10.1.2.3", "distributed.main_process_port=29555")
    conf_path = distributed.write_accelerate_config(cfg, tmp_path / "acc.yaml", GPU_BOX, check=False)
    loaded = load_with_accelerate(conf_path)
    assert (loaded.num_processes, loaded.num_machines) == (16, 2)  # accelerate counts every machine's processes
    assert (loaded.main_process_ip, loaded.main_process_port) == ("10.1.2.3", 29555)
    commands = distributed.multinode_commands(cfg, "/shared/runs/r1", conf_path)
    assert [c.machine_rank for c in commands] == [0, 1]
    from accelerate.commands.launch import launch_command_parser

    for c in commands:
        assert c.argv[1:3] == ["-m", "accelerate.commands.launch"]
        args = launch_command_parser().parse_args(c.argv[3:])
        assert args.machine_rank == c.machine_rank and args.config_file == str(conf_path)
        assert args.module and args.training_script == "sftwizard.core.runner"
        assert args.training_script_args == ["/shared/runs/r1"]
        assert f"--machine_rank {c.machine_rank}" in c.shell


def test_sharded_strategies_need_cuda_one_sentence():
    cfg = cfg_with("distributed.strategy=fsdp", "distributed.num_processes=2")
    with pytest.raises(DistributedError) as err:
        distributed.accelerate_config(cfg, Machine())
    msg = str(err.value)
    assert msg.startswith("distributed.strategy:") and "CUDA" in msg and "\n" not in msg


def test_training_command_and_estimator_hook(tmp_path):
    single = cfg_with()
    assert distributed.training_command(tmp_path, cfg=single, machine=Machine()) == [
        sys.executable, "-m", "sftwizard.core.runner", str(tmp_path)]
    assert distributed.estimator_sharding(single, Machine()) == (1, None)
    two = cfg_with("distributed.num_processes=2")
    cmd = distributed.training_command(tmp_path, "ckpt-5", cfg=two, machine=Machine())
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml")]
    assert cmd[-4:] == ["sftwizard.core.runner", str(tmp_path), "--resume", "ckpt-5"]
    assert (tmp_path / "accelerate.yaml").exists()
    zero3 = cfg_with("distributed.strategy=zero3", "distributed.num_machines=2", "distributed.main_process_ip=h0")
    assert distributed.estimator_sharding(zero3, GPU_BOX) == (16, "zero3")
    assert distributed.estimator_sharding(cfg_with(), GPU_BOX) == (8, "ddp")  # one process per visible GPU


def test_available_trackers_follow_what_is_installed(tmp_path, monkeypatch):
    from sftwizard.core import trackers

    before = trackers.available_trackers()
    assert before[-1] == "none"
    if "trackio" not in before:
        (tmp_path / "trackio").mkdir()
        (tmp_path / "trackio" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
        assert "trackio" in trackers.available_trackers()
    if "wandb" not in before:
        assert trackers.missing_trackers(["wandb", "none"]) == ["wandb"]
        assert "pip install wandb" in trackers.tracker_problem("wandb")
    assert trackers.tracker_problem("none") is None


def _why_it_failed(log: Path) -> str:
    """The lines of a failed multi-process run's log that say why (a rank's fatal error or abort
    comes long before the launcher's summary at the end), then the end of the log."""
    text = log.read_text(errors="replace")
    keys = ("Fatal Python error", "terminate called", "Error", "error:", "Abort", "Traceback", "Thread 0x",
            "File \"")
    why = [line for line in text.splitlines() if any(k in line for k in keys)][:60]
    return "\n".join(why) + "\n--- end of the log ---\n" + text[-2500:]


def test_two_processes_through_accelerate_launch_on_cpu(repo_root, builtin_model_dir, tmp_path):
    """The demo with 2 processes (torchrun launcher, gloo): finishes, loss falls, one event stream."""
    from sftwizard.core import runs

    cfg = apply_overrides(load_preset(repo_root / "presets" / "demo.yaml"), [
        "distributed.num_processes=2", "training.max_steps=20", "training.logging_steps=5",
        "training.per_device_train_batch_size=8", "training.max_length=128",
        "training.eval_strategy=no", "training.save_strategy=no", f"run.output_root={tmp_path}",
    ])
    launched = runs.launch(cfg)  # what `sft-wizard run` does: a detached supervisor starts the training
    run_dir = launched.run_dir
    assert launched.process.wait(timeout=300) == 0, _why_it_failed(run_dir / "train.log")
    assert (run_dir / "accelerate.yaml").exists()  # the supervisor went through `accelerate launch`
    events = read_events(run_dir / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("end") == 1, kinds  # rank 0 alone reports
    assert events[-1]["status"] == "finished"
    begin = next(e for e in events if e["event"] == "train_begin")
    assert (begin["world_size"], begin["distributed_type"]) == (2, "MULTI_CPU")  # what the launch really did
    logs = [e for e in events if e["event"] == "log"]
    assert [e["step"] for e in logs] == [1, 5, 10, 15, 20]
    assert logs[-1]["loss"] < logs[0]["loss"] * 0.8, [e["loss"] for e in logs]
    # two processes: each step consumed 2 x 8 rows of the 1200
    assert logs[-1]["epoch"] == pytest.approx(20 * 8 * 2 / 1200, rel=0.02)
    assert (run_dir / "final" / "model.safetensors").exists()


def test_estimator_divides_sharded_state_per_gpu(tmp_path):
    """The estimator's sharding hook, fed from cfg.distributed: what a strategy shards shrinks per GPU."""
    import json

    from sftwizard.core.estimator import estimate_memory
    from sftwizard.core.models import model_facts

    (tmp_path / "config.json").write_text(json.dumps({  # a 1B-class Llama: config alone is enough
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16"}))
    facts = model_facts(str(tmp_path))
    parts = {}
    for strategy in ("ddp", "zero2", "zero3"):
        cfg = cfg_with("method.type=full", "model.dtype=bf16", f"distributed.strategy={strategy}",
                       "distributed.num_processes=8")
        num_gpus, sharding = distributed.estimator_sharding(cfg, GPU_BOX)
        assert (num_gpus, sharding) == (8, strategy)
        parts[strategy] = estimate_memory(facts, cfg, gpu_memory_gib=80, num_gpus=num_gpus, sharding=sharding,
                                          suggest=False).components
    assert parts["zero2"]["optimizer"] < parts["ddp"]["optimizer"] / 4
    assert parts["zero3"]["weights"] < parts["zero2"]["weights"] / 4


def test_interop_modules_import_no_torch():
    """The TUI imports these at start-up: no torch, transformers, trl or peft."""
    code = ("import sys; import sftwizard.cli.interop, sftwizard.core.distributed, sftwizard.core.trackers, "
            "sftwizard.core.export, sftwizard.core.merge, sftwizard.core.chat, sftwizard.core.hub; "
            "from sftwizard.core.trackers import available_trackers; available_trackers(); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_stop_seen_by_one_rank_stops_every_rank(tmp_path):
    """Graceful stop in a multi-process run: ranks agree (gloo all-reduce), so none is left waiting."""
    script = (
        "import sys, torch.distributed as dist\n"
        "from sftwizard.core.runner import _stop_agreed\n"
        "rank = int(sys.argv[1])\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path}/rendezvous', rank=rank, world_size=2)\n"
        "print(_stop_agreed(rank == 0), _stop_agreed(False))\n"
        "dist.destroy_process_group()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["True False", "True False"]
    assert distributed_free_stop_is_plain()


def distributed_free_stop_is_plain() -> bool:
    from sftwizard.core.runner import _stop_agreed

    return _stop_agreed(True) is True and _stop_agreed(False) is False


def test_one_process_on_a_multi_gpu_box_is_pinned_to_one_device():
    """num_processes: 1 with 8 GPUs visible: the plain runner must see one (else DataParallel, which TRL refuses)."""
    one = cfg_with("distributed.num_processes=1")
    assert not distributed.is_distributed(one, GPU_BOX)
    assert distributed.training_env(one, GPU_BOX, {})["CUDA_VISIBLE_DEVICES"] == "0"
    assert distributed.training_env(one, GPU_BOX, {"CUDA_VISIBLE_DEVICES": "3,5", "X": "1"}) == {
        "CUDA_VISIBLE_DEVICES": "3", "X": "1"}  # the first of the GPUs this box exposes to us
    assert "CUDA_VISIBLE_DEVICES" not in distributed.training_env(one, Machine(1, True), {})  # one GPU: nothing to pin
    assert "CUDA_VISIBLE_DEVICES" not in distributed.training_env(cfg_with(), GPU_BOX, {})  # launched: one per GPU


def on_a_fake_8_gpu_box(body: str, visible: str | None = None) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter (torch not loaded) whose pynvml answers as an 8×H100 box,
    with ``CUDA_VISIBLE_DEVICES`` set to ``visible`` (unset for None); it must exit 0."""
    import os

    code = ("import sys, pynvml\n"
            "from tests.fixtures import fake_nvml\n"
            "fake = fake_nvml.h100x8()\n"
            "for name in dir(fake):\n"
            "    if name.startswith('nvml'): setattr(pynvml, name, getattr(fake, name))\n" + body)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[2]), env=env)
    assert out.returncode == 0, out.stderr
    return out


def test_the_supervisor_starts_a_one_process_run_on_one_gpu_of_eight(tmp_path):
    """What the supervisor hands the training process, on an 8-GPU box (NVML faked, in a fresh interpreter
    so that torch is not loaded and the launch reads NVML as it does for real)."""
    from sftwizard.core.config import save_preset

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_preset(cfg_with("distributed.num_processes=1"), run_dir / "config.yaml")
    out = on_a_fake_8_gpu_box(
        "from sftwizard.core.supervisor import training_env\n"
        f"env = training_env(__import__('pathlib').Path({str(run_dir)!r}))\n"
        "print(env.get('CUDA_VISIBLE_DEVICES'), 'torch' in sys.modules)\n")
    assert out.stdout.split() == ["0", "False"]
    assert "pinned to GPU 0" in out.stderr


@pytest.mark.parametrize("visible, processes", [("2,9", 1), ("GPU-h100-3,1", 2), ("-1", 0), (None, 8)])
def test_the_launch_counts_the_gpus_cuda_shows(visible, processes):
    """Machine.detect reads CUDA_VISIBLE_DEVICES as CUDA does (hardware.visible_gpus): ``2,9`` on
    an 8-GPU box is one device — CUDA stops at the first entry it cannot match — not two; a UUID
    names a GPU. (Fresh interpreter, NVML faked, torch not loaded.)"""
    out = on_a_fake_8_gpu_box(
        "from sftwizard.core.distributed import Machine\n"
        "m = Machine.detect()\n"
        "print(m.cuda_devices, m.bf16_supported, 'torch' in sys.modules)\n", visible=visible)
    assert out.stdout.split() == [str(processes), str(processes > 0), "False"]
