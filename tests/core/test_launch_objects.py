"""Every shipped preset × strategy × method builds the real objects a multi-GPU launch builds, on CPU.

For each combination: sft-wizard writes the accelerate config and the launch command; accelerate's
own launcher parses and validates them and produces the environment its processes receive
(``prepare_multi_gpu_env`` / ``prepare_deepspeed_cmd_env``); with that environment, accelerate's
plugin (FSDP or DeepSpeed) is built from it and the runner's ``build_trainer`` builds the SFTConfig,
loads the model (the preset's real architecture config, shrunk) and constructs the SFTTrainer — so
the libraries' own validation runs. What cannot run is refused by ``validate`` in one sentence.

Without CUDA, accelerate (1.x) turns a launch into MULTI_CPU and never enables FSDP or DeepSpeed
on the trainer's accelerator, so the checks transformers makes after creating it are made here on
the same real objects (the plugin from the launch environment and the SFTConfig built under it).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sftwizard.core import distributed
from sftwizard.core.config import ConfigError, apply_overrides, load_preset
from sftwizard.core.distributed import Machine
from sftwizard.core.runner import Environment

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.name for p in (REPO / "presets").glob("*.yaml"))
STRATEGIES = distributed.STRATEGIES
METHODS = ("full", "lora", "qlora")
GPU_BOX = Machine(cuda_devices=8, bf16_supported=True)
CPU = Environment(cuda=False, bf16_supported=False, device_count=0)
ARCHITECTURES = {"meta-llama/Llama-3.1-8B-Instruct": ("llama-3.1-8b", "llama3"),
                 "Qwen/Qwen2.5-1.5B-Instruct": ("qwen2.5-1.5b", "qwen2_5")}
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def test_every_shipped_preset_is_covered():
    for name in PRESETS:
        model_id = load_preset(REPO / "presets" / name).model.id
        assert model_id.startswith("builtin:") or model_id in ARCHITECTURES, (name, model_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory, builtin_model_dir) -> dict[str, Path]:
    """Each preset's architecture (tests/fixtures/configs) shrunk to 2 layers of width 128 — rope
    scaling, tied embeddings, biases and the rest as in the real config — with its family's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.fixtures.tokenizers import make_tokenizer

    out: dict[str, Path] = {"builtin:tiny-chat": builtin_model_dir}
    for model_id, (config_dir, family) in ARCHITECTURES.items():
        path = tmp_path_factory.mktemp(config_dir)
        tok = make_tokenizer(family)
        tok.save_pretrained(str(path))
        real = json.loads((REPO / "tests" / "fixtures" / "configs" / config_dir / "config.json").read_text())
        shrunk = {**real, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "vocab_size": len(tok),
                  "max_window_layers": 2, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        (path / "config.json").write_text(json.dumps(shrunk))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path))).save_pretrained(str(path))
        out[model_id] = path
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from tests.fixtures.tokenizers import conversations

    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in conversations("qwen2_5") * 2), encoding="utf-8")
    return path


def preset_cfg(name: str, strategy: str, method: str, model_dir: Path, data: Path):
    return apply_overrides(load_preset(REPO / "presets" / name), [
        f"distributed.strategy={strategy}", "distributed.num_processes=2", f"method.type={method}",
        f"model.id={model_dir}", f"data.sources.0.path={data}", "data.eval_fraction=0.25",
        "training.max_length=128", "training.report_to=none"])


def launch_environment(cfg, run_dir: Path) -> dict[str, str]:
    """The environment ``accelerate launch`` gives each process of this run on an 8-GPU box,
    computed by accelerate's own launcher from the command sft-wizard builds."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = distributed.launch_command(cfg, run_dir, machine=GPU_BOX)
    args = launch_command_parser().parse_args(argv[3:])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if cfg.distributed.strategy.startswith("zero"):
        # as accelerate's launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config.keys()) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: str(v) for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def _reset_accelerate():
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, PartialState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    unset_hf_deepspeed_config()  # else later from_pretrained calls in this session would go through zero.Init
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_strategy_method_builds_the_real_launch_objects(preset, strategy, method, models, data, tmp_path,
                                                               monkeypatch):
    model_id = load_preset(REPO / "presets" / preset).model.id
    if method == "qlora" and strategy == "zero3":  # refused by validate, in one sentence
        with pytest.raises(ConfigError) as err:
            preset_cfg(preset, strategy, method, models[model_id], data)
        problem, = err.value.problems
        assert problem.startswith("method.type:") and "zero3" in problem and "\n" not in problem
        return
    cfg = preset_cfg(preset, strategy, method, models[model_id], data)
    if strategy.startswith("zero") and not HAS_DEEPSPEED:
        with pytest.raises(distributed.DistributedError, match="needs the deepspeed package"):
            distributed.launch_command(cfg, tmp_path, machine=GPU_BOX)
        pytest.skip("deepspeed is not installed: the launch is refused with one sentence, no objects to build")

    env = launch_environment(cfg, tmp_path)
    # rank 0 of a one-process world (ZeRO-3 partitions parameters while loading: it needs a process group)
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(distributed.free_port()))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _reset_accelerate()
    try:
        from sftwizard.core.runner import build_trainer

        plugin = None
        if strategy == "fsdp":
            from accelerate.utils import FullyShardedDataParallelPlugin

            plugin = FullyShardedDataParallelPlugin()  # reads the launch environment, validates it
            assert plugin.fsdp_version == 2
            assert plugin.activation_checkpointing == bool(cfg.training.gradient_checkpointing)
        elif strategy.startswith("zero"):
            from accelerate.utils import DeepSpeedPlugin

            plugin = DeepSpeedPlugin()
            assert plugin.zero_stage == int(strategy[-1])

        prepared = build_trainer(cfg, tmp_path / "out", env=CPU)
        args = prepared.trainer.args
        if strategy == "fsdp":
            # transformers' check once the trainer's accelerator runs FSDP (Trainer.__init__):
            # FSDP's own activation checkpointing and the training argument cannot both be on.
            assert not (plugin.activation_checkpointing and args.activation_checkpointing)
        if strategy.startswith("zero"):
            from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

            # what propagate_args_to_deepspeed does on the GPU box: "auto" values filled from the
            # SFTConfig, mismatches between the two raise
            HfTrainerDeepSpeedConfig(plugin.deepspeed_config).trainer_config_process(args)
        if method == "qlora":
            import bitsandbytes as bnb

            assert any(isinstance(m, bnb.nn.Linear4bit) for m in prepared.trainer.model.modules())
        trainable = [n for n, p in prepared.trainer.model.named_parameters() if p.requires_grad]
        assert trainable and (method == "full") == (not any("lora_" in n for n in trainable))
        assert not __import__("transformers").integrations.is_deepspeed_zero3_enabled() or strategy == "zero3"
    finally:
        _reset_accelerate()
    from transformers.integrations import is_deepspeed_zero3_enabled

    assert not is_deepspeed_zero3_enabled()
