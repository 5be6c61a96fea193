"""The GPU rules of issue 14, each decided in one place and checked without a GPU: bf16 from the
compute capability, fp32 master weights for full fine-tuning, what `auto` attention means, one
"runnable here?" check, and a recommender the doctor agrees with.

Hardware comes from the faithful fake NVML (tests/fixtures/fake_nvml.py) through the real
``probe_hardware``; where torch's own CUDA queries are the boundary, they are monkeypatched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sftwizard.core.config import RunConfig, apply_overrides, load_preset, resolved_precision
from sftwizard.core.hardware import auto_attention, probe_hardware, supports_bf16
from sftwizard.core.runnable import Environment, runnable_problems
from tests.fixtures import fake_nvml

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
# (compute capability, architecture): every generation from Pascal to Blackwell
CAPABILITIES = [(6, 0), (6, 1), (7, 0), (7, 2), (7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (10, 0), (12, 0)]
METHODS = ("full", "lora", "qlora")


def cfg(*sets: str) -> RunConfig:
    return apply_overrides(RunConfig(), list(sets))


def report(scenario, *, libraries=()):
    r = probe_hardware(scenario())
    r.torch_cuda = bool(r.gpus)  # the box's own CUDA torch (this test machine has a CPU build)
    r.notes = []
    r.libraries = {name: name in libraries for name in ("flash_attn", "bitsandbytes", "liger_kernel")}
    return r


# --------------------------------------------------------------------------- 5. bf16

@pytest.mark.parametrize("cc", CAPABILITIES)
def test_bf16_is_never_chosen_below_compute_capability_8(cc):
    assert supports_bf16(*cc) == (cc >= (8, 0))
    env = Environment(cuda=True, bf16_supported=supports_bf16(*cc), device_count=1)
    for method in METHODS:
        p = resolved_precision(cfg(f"method.type={method}"), env.bf16_supported, env.cuda)
        assert (p.weights == "bf16" or p.bf16) == (cc >= (8, 0)), (cc, method, p)


def test_a_t4_gets_no_bf16_anywhere(monkeypatch):
    """torch says bf16 is supported on a T4 (emulated); every decision still says no."""
    import torch

    from sftwizard.core import chat, distributed, recommend
    from sftwizard.core.merge import merge_dtype

    t4 = report(fake_nvml.t4)
    assert t4.gpus[0].bf16 is False and Environment.from_hardware(t4).bf16_supported is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    env = Environment.detect()
    assert env.cuda and not env.bf16_supported and not env.flash_attention_2
    assert chat._device_dtype() == ("cuda", torch.float16)
    assert distributed.Machine.detect().bf16_supported is False
    assert distributed._mixed_precision(cfg("method.type=full"), distributed.Machine.detect()) == "no"
    assert merge_dtype(cfg("method.type=lora"), True, env.bf16_supported) == "fp32"
    rec = recommend.recommend(cfg("method.type=lora"), hardware=t4, facts=None)
    assert rec.config.model.dtype != "bf16" and not rec.config.training.bf16


def test_bf16_weights_on_a_pre_ampere_gpu_are_refused():
    env = Environment.from_hardware(report(fake_nvml.t4, libraries=("bitsandbytes",)))
    assert runnable_problems(cfg("model.dtype=bf16"), env)[0].startswith("model.dtype: this GPU has no bf16")
    assert runnable_problems(cfg("training.bf16=true"), env)[0].startswith("training.bf16: this GPU has no bf16")
    assert runnable_problems(cfg("method.type=lora"), env) == []


def test_the_runnable_check_takes_the_hardware_report_as_it_is():
    """One check for the TUI, `validate` and `run`: the report needs no conversion by the caller."""
    from sftwizard.core.runnable import runnable_warnings

    t4 = report(fake_nvml.t4, libraries=("bitsandbytes",))
    assert runnable_problems(cfg("model.dtype=bf16"), t4) == runnable_problems(
        cfg("model.dtype=bf16"), Environment.from_hardware(t4)) != []
    fa2 = cfg("model.attn_implementation=flash_attention_2")
    [warning] = runnable_warnings(fa2, report(fake_nvml.t4, libraries=("flash_attn",)))
    assert warning["code"] == "not_runnable_here" and warning["setting"] == "model.attn_implementation"
    assert runnable_warnings(fa2, report(fake_nvml.h100x8, libraries=("flash_attn",))) == []


# --------------------------------------------------------------------------- 6. fp32 master weights

@pytest.mark.parametrize("method,dtype,weights,autocast", [
    ("full", "auto", "float32", True),   # fp32 master weights + bf16 autocast by default
    ("full", "bf16", "bfloat16", True),  # pure bf16 only when asked (the doctor warns)
    ("lora", "auto", "bfloat16", True),  # a frozen base loads in bf16
])
def test_full_finetuning_holds_fp32_weights_by_default(builtin_model_dir, method, dtype, weights, autocast):
    """The runner's real loading path on the builtin model, for an Ampere+ GPU environment."""
    import torch

    from sftwizard.core import runner

    env = Environment(cuda=True, bf16_supported=True, device_count=1, flash_attention_2=True, libraries={})
    c = cfg(f"method.type={method}", f"model.dtype={dtype}")
    model = runner.load_model(c, env, builtin_model_dir)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, weights)}
    kwargs = runner.sft_config_kwargs(c, env, "/tmp/unused")
    assert kwargs["bf16"] is autocast and kwargs["fp16"] is False


def test_the_estimate_follows_the_precision(builtin_model_dir):
    from sftwizard.core.estimator import estimate_memory
    from sftwizard.core.models import model_facts

    facts = model_facts(str(CONFIGS / "qwen2.5-1.5b"))
    a100 = report(fake_nvml.a100_80gb)
    auto = estimate_memory(facts, cfg("method.type=full"), hardware=a100)
    pure = estimate_memory(facts, cfg("method.type=full", "model.dtype=bf16"), hardware=a100)
    assert auto.settings["dtype"] == "fp32" and auto.settings["autocast"] and pure.settings["dtype"] == "bf16"
    assert auto.components["weights"] == pytest.approx(2 * pure.components["weights"], rel=0.01)


# --------------------------------------------------------------------------- 7. auto attention

@pytest.mark.parametrize("gpu_fa2,installed,compute,expected", [
    (True, True, "bf16", "flash_attention_2"),
    (True, True, "fp16", "flash_attention_2"),
    (True, True, "fp32", "sdpa"),
    (True, False, "bf16", "sdpa"),
    (False, True, "bf16", "sdpa"),
    (False, True, "fp16", "sdpa"),
])
def test_auto_attention_rule(gpu_fa2, installed, compute, expected):
    assert auto_attention(gpu_fa2, installed, compute)[0] == expected


@pytest.mark.parametrize("scenario,installed,method,expected", [
    (fake_nvml.h100x8, True, "lora", "flash_attention_2"),
    (fake_nvml.h100x8, True, "full", "flash_attention_2"),  # fp32 weights, bf16 autocast: 16-bit compute
    (fake_nvml.h100x8, False, "lora", "sdpa"),
    (fake_nvml.t4, True, "lora", "sdpa"),
    (fake_nvml.no_driver, True, "lora", "sdpa"),
])
def test_runner_and_estimator_resolve_auto_the_same_way(scenario, installed, method, expected):
    from sftwizard.core import runner
    from sftwizard.core.estimator import estimate_memory
    from sftwizard.core.models import model_facts

    hw = report(scenario, libraries=("flash_attn",) if installed else ())
    c = cfg(f"method.type={method}")
    assert runner.attn_implementation(c, Environment.from_hardware(hw)) == expected
    if hw.gpus:
        est = estimate_memory(model_facts(str(CONFIGS / "qwen2.5-1.5b")), c, hardware=hw)
        assert est.settings["attn_implementation"] == expected


def test_explicit_fp32_compute_keeps_sdpa():
    env = Environment(cuda=True, bf16_supported=True, device_count=1, flash_attention_2=True,
                      libraries={"flash_attn": True})
    from sftwizard.core import runner

    assert runner.attn_implementation(cfg("model.dtype=fp32", "training.bf16=false"), env) == "sdpa"


# --------------------------------------------------------------------------- 18. runnable here?

def test_runnable_problems_name_the_setting_and_a_command_that_works():
    cpu_bare = Environment(cuda=False, bf16_supported=False, device_count=0, libraries={})
    problems = runnable_problems(cfg("method.type=qlora", "model.attn_implementation=flash_attention_2",
                                     "training.optim=paged_adamw_8bit", "training.use_liger_kernel=true"), cpu_bare)
    assert [p.split(":", 1)[0] for p in problems] == [
        "method.type", "training.optim", "model.attn_implementation", "model.attn_implementation",
        "training.use_liger_kernel", "training.use_liger_kernel"]
    assert "pip install 'bitsandbytes>=0.50,<1'" in problems[0]  # with it, QLoRA runs on CPU too (slowly)
    assert "pip install --no-build-isolation 'flash-attn" in problems[3]
    h100 = Environment.from_hardware(report(fake_nvml.h100x8, libraries=("flash_attn", "bitsandbytes",
                                                                          "liger_kernel")))
    assert runnable_problems(cfg("method.type=qlora", "model.attn_implementation=flash_attention_2",
                                 "training.use_liger_kernel=true"), h100) == []
    t4 = Environment.from_hardware(report(fake_nvml.t4, libraries=("flash_attn",)))
    assert runnable_problems(cfg("model.attn_implementation=flash_attention_2"), t4) == [
        "model.attn_implementation: FlashAttention-2 needs an Ampere or newer GPU (sm80+); use sdpa or auto"]


def test_a_gpu_torch_cannot_see_is_no_gpu():
    hw = report(fake_nvml.a100_80gb, libraries=("bitsandbytes",))
    hw.torch_cuda = False  # a CPU-only torch build next to a driver
    env = Environment.from_hardware(hw)
    assert env.cuda is False
    from sftwizard.core.runnable import QLORA_ON_CPU, bnb_has_cpu_backend, runnable_notes

    if bnb_has_cpu_backend():  # QLoRA would run, on the CPU: said to be slow
        assert runnable_problems(cfg("method.type=qlora"), env) == []
        assert runnable_notes(cfg("method.type=qlora"), env) == [QLORA_ON_CPU]
    else:
        assert any("CPU backend" in p for p in runnable_problems(cfg("method.type=qlora"), env))


def test_validate_warns_and_run_refuses_before_a_run_dir(tmp_path, monkeypatch, capsys):
    """The same check: validate lists it as a warning (exit 0), run refuses it (exit 2) with no run dir."""
    import json

    from sftwizard.cli.main import main

    monkeypatch.setenv("SFT_WIZARD_HOME", str(tmp_path / "home"))
    preset = tmp_path / "fa2.yaml"
    preset.write_text("model:\n  id: builtin:tiny-chat\n  attn_implementation: flash_attention_2\n"
                      "data:\n  sources:\n    - path: builtin:demo\ntraining:\n  max_steps: 1\n"
                      f"run:\n  output_root: {tmp_path / 'runs'}\n")
    assert main(["validate", str(preset), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    codes = [w for w in out["warnings"] if w["code"] == "not_runnable_here"]
    assert codes and codes[0]["setting"] == "model.attn_implementation"
    assert main(["run", str(preset)]) == 2
    err = capsys.readouterr().err
    assert "model.attn_implementation: flash_attention_2 needs a CUDA GPU" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------------- 7. recommender vs doctor

SHIPPED = {"qwen2.5-1.5b-full-24gb": "qwen2.5-1.5b", "llama3.1-8b-lora-48gb": "llama-3.1-8b",
           "llama3.1-8b-qlora-24gb": "llama-3.1-8b"}
PROFILES = {
    "h100x8+fa": (fake_nvml.h100x8, ("flash_attn", "bitsandbytes", "liger_kernel")),
    "h100x8": (fake_nvml.h100x8, ("bitsandbytes",)),
    "a100-80gb": (fake_nvml.a100_80gb, ("bitsandbytes",)),
    "a100-mig": (fake_nvml.a100_mig, ("flash_attn", "bitsandbytes")),
    "busy-a100": (fake_nvml.busy_a100, ("bitsandbytes",)),
    "t4": (fake_nvml.t4, ("bitsandbytes",)),
    "cpu": (fake_nvml.no_driver, ()),
}
AUDIT = {"rows": 1000, "rows_encoded": 1000, "tokens": 600_000, "max_length": 2048,
         "token_length": {"p50": 500, "p95": 1500, "max": 2000}, "padding": {"packed_sequences": 320},
         "rows_over_max_length": 0}


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("preset", sorted(SHIPPED))
def test_the_doctor_never_warns_about_a_recommendation(repo_root, preset, profile):
    from sftwizard.core.doctor import check_config
    from sftwizard.core.estimator import estimate_memory
    from sftwizard.core.models import model_facts
    from sftwizard.core.recommend import recommend

    scenario, libraries = PROFILES[profile]
    hw = report(scenario, libraries=libraries)
    facts = model_facts(str(CONFIGS / SHIPPED[preset]))
    c = load_preset(repo_root / "presets" / f"{preset}.yaml")
    c = dataclasses.replace(c, model=dataclasses.replace(c.model, id=str(CONFIGS / SHIPPED[preset])))

    def estimate(f, conf, gpu_memory_gib=None):
        return estimate_memory(f, conf, gpu_memory_gib=gpu_memory_gib, hardware=hw, suggest=False)

    rec = recommend(c, hardware=hw, facts=facts, audit=AUDIT, estimate_fn=estimate)
    decided = {item.setting for item in rec.items}
    warned = [w for w in check_config(rec.config, audit=AUDIT, facts=facts) if w.setting in decided
              or w.code in ("padding_free_attention", "pure_half_full_finetune")]
    assert warned == [], [(w.code, w.message) for w in warned]


# --------------------------------------------------------------------------- 4. no deprecated names

def test_sft_config_gets_no_name_transformers_6_or_trl_2_removes(tmp_path):
    """training.gradient_checkpointing goes to `activation_checkpointing` (transformers 5.24
    deprecates `gradient_checkpointing*`); Liger is applied by build_trainer, not through TRL's
    deprecated `use_liger_kernel`. SFTConfig is built with FutureWarnings as errors."""
    import warnings

    from trl import SFTConfig

    from sftwizard.core import runner

    env = Environment(cuda=False, bf16_supported=False, device_count=0, libraries={})
    kwargs = runner.sft_config_kwargs(cfg("training.gradient_checkpointing=true", "training.use_liger_kernel=true"),
                                      env, tmp_path)
    assert not {"gradient_checkpointing", "gradient_checkpointing_kwargs", "use_liger_kernel"} & set(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = SFTConfig(**kwargs)
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert not args.use_liger_kernel
