"""Recommended settings: each rule, on CPU and on several GPUs, with real ModelFacts.

Hardware reports are the hardware module's own dataclasses; memory comes from the real estimator where the test is about it, and from
a small linear estimate where the test is about the decision rule itself.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from sftwizard.core import recommend as recommend_mod
from sftwizard.core.config import DataSource, RunConfig, apply_overrides, config_from_dict
from sftwizard.core.hardware import GpuInfo, HardwareReport
from sftwizard.core.recommend import HEADROOM, Recommendations, cpu_bf16_instructions, recommend

QWEN_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "torch_dtype": "bfloat16",
}

# An audit of 1,000 examples that pack into 250 rows of max_length (what audit_dataset reports).
AUDIT = {"rows": 1000, "rows_encoded": 1000, "tokens": 240_000, "max_length": 1024,
         "token_length": {"p50": 150, "max": 1000}, "padding": {"packed_sequences": 250}}


def gpu(name, cc, total_gib, *, free_gib=None):
    major, minor = (int(x) for x in cc.split("."))
    free = int((free_gib if free_gib is not None else total_gib - 0.5) * 1024)
    fields = dict(index=0, name=name, uuid=None, architecture="?", compute_capability=cc,
                  memory_total_mib=int(total_gib * 1024), memory_used_mib=int(total_gib * 1024) - free,
                  memory_free_mib=free, bf16=(major, minor) >= (8, 0), flash_attention_2=(major, minor) >= (8, 0),
                  fp8=(major, minor) >= (8, 9))
    return GpuInfo(**fields)


def machine(*gpus, libraries=(), cpu_count=16):
    fields = dict(gpus=list(gpus), driver_version="550.0" if gpus else None, cuda_driver_version=None,
                  torch_cuda=bool(gpus), reason=None if gpus else "no NVIDIA driver", cpu_count=cpu_count,
                  ram_total_mib=128 * 1024,
                  libraries={name: name in libraries for name in ("flash_attn", "bitsandbytes", "liger_kernel")})
    return HardwareReport(**fields)


CPU = machine(cpu_count=2)
H100 = gpu("NVIDIA H100 80GB HBM3", "9.0", 80)
T4 = gpu("Tesla T4", "7.5", 15)


@pytest.fixture(scope="module")
def qwen_facts(tmp_path_factory):
    from sftwizard.core.models import model_facts

    folder = tmp_path_factory.mktemp("qwen05b")
    (folder / "config.json").write_text(json.dumps(QWEN_05B))
    return model_facts(str(folder))


@pytest.fixture(scope="module")
def tiny_facts(builtin_model_dir):
    from sftwizard.core.models import model_facts

    return model_facts(str(builtin_model_dir))


def linear_estimate(fixed_gib: float, per_row_gib: float, *, optimizer_gib: float = 0.0):
    """total = fixed + optimizer states (a quarter with 8-bit) + activations (a fifth with checkpointing)."""
    calls = []

    def estimate(facts, cfg, gpu_memory_gib=None):
        t = cfg.training
        act = per_row_gib * t.per_device_train_batch_size * (0.2 if t.gradient_checkpointing else 1.0)
        opt = optimizer_gib * (0.25 if "8bit" in t.optim else 1.0)
        calls.append(t.per_device_train_batch_size)
        total = fixed_gib + opt + act
        return SimpleNamespace(total_gib=total, fits=gpu_memory_gib is None or total <= gpu_memory_gib)

    estimate.calls = calls
    return estimate


def full(**overrides) -> RunConfig:
    sets = ["method.type=full"] + [f"{k}={v}" for k, v in overrides.items()]
    return apply_overrides(RunConfig(), sets)


def check_well_formed(rec: Recommendations, cfg: RunConfig) -> None:
    assert config_from_dict(rec.config.to_dict()) == rec.config  # the result validates as a preset
    for item in rec.items:
        section, name = item.setting.split(".")
        assert getattr(getattr(rec.config, section), name) == item.value
        assert item.reason and "\n" not in item.reason and len(item.reason) < 200
        assert item.changed == (getattr(getattr(cfg, section), name) != item.value)
    assert rec.changes() == {i.setting: i.value for i in rec.items if i.changed}


def test_cpu_packs_one_row_per_forward_in_fp32(tiny_facts, monkeypatch):
    monkeypatch.setattr(recommend_mod, "cpu_bf16_instructions", lambda: None)
    cfg = full(**{"training.per_device_train_batch_size": 8, "training.gradient_accumulation_steps": 2,
                  "training.gradient_checkpointing": "true"})
    rec = recommend(cfg, hardware=CPU, facts=tiny_facts, audit=AUDIT, estimate_fn=linear_estimate(1, 1))
    check_well_formed(rec, cfg)
    t = rec.config.training
    assert rec.config.model.attn_implementation == "sdpa" and "no CUDA GPU" in rec.reason("model.attn_implementation")
    assert rec.config.model.dtype == "fp32" and t.bf16 is False and t.fp16 is False
    assert t.packing and t.packing_strategy == "bfd" and t.padding_free
    # 16 examples per step = 4 packed rows (1000 examples -> 250 rows); SDPA: one row per forward
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (1, 4)
    assert t.per_device_eval_batch_size == 1
    assert "16 examples" in rec.reason("training.gradient_accumulation_steps")
    assert t.gradient_checkpointing is False
    assert t.use_liger_kernel is False and t.dataset_num_proc is None
    assert t.optim == "adamw_torch_fused"


def test_cpu_with_bf16_instructions_autocasts_to_bf16(tiny_facts, monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_bf16_instructions(str(info)) == "avx512_bf16"
    info.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_bf16_instructions(str(info)) is None
    assert cpu_bf16_instructions(str(tmp_path / "missing")) is None

    monkeypatch.setattr(recommend_mod, "cpu_bf16_instructions", lambda: "avx512_bf16")
    rec = recommend(full(), hardware=CPU, facts=tiny_facts, audit=AUDIT)
    assert rec.config.model.dtype == "fp32" and rec.config.training.bf16 is True
    assert "avx512_bf16" in rec.reason("training.bf16")


def test_h100_with_flash_attn_gets_bf16_fa2_and_the_largest_micro_batch(qwen_facts):
    cfg = full(**{"training.per_device_train_batch_size": 4, "training.gradient_accumulation_steps": 16})
    est = linear_estimate(fixed_gib=8, per_row_gib=6)  # 79.5 GiB free, 90%: up to 10 rows
    rec = recommend(cfg, hardware=machine(H100, libraries=("flash_attn",)), facts=qwen_facts, audit=AUDIT,
                    estimate_fn=est)
    check_well_formed(rec, cfg)
    t = rec.config.training
    assert rec.config.model.attn_implementation == "flash_attention_2"
    assert rec.config.model.dtype == "fp32" and t.bf16 and not t.fp16  # full: fp32 master weights, bf16 autocast
    assert t.packing and t.padding_free and not t.gradient_checkpointing
    # 64 examples per step = 16 rows; largest fitting micro-batch is 10 -> 2 x 8
    largest = int((79.5 * (1 - HEADROOM) - 8) // 6)
    assert largest == 10
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 16
    assert t.per_device_train_batch_size <= largest and t.gradient_accumulation_steps == 2
    assert {largest, largest + 1} <= set(est.calls)  # the search tried both sides of the boundary
    assert rec.estimate is not None and rec.estimate.total_gib <= 79.5 * (1 - HEADROOM)


def test_flash_attn_not_installed_or_old_gpu_falls_back_to_sdpa(qwen_facts):
    rec = recommend(full(), hardware=machine(H100), facts=qwen_facts, audit=AUDIT,
                    estimate_fn=linear_estimate(8, 2))
    assert rec.config.model.attn_implementation == "sdpa"
    assert "not installed" in rec.reason("model.attn_implementation")
    assert rec.config.training.per_device_train_batch_size == 1  # packed rows, one per SDPA forward

    rec = recommend(full(), hardware=machine(T4, libraries=("flash_attn",)), facts=qwen_facts, audit=AUDIT,
                    estimate_fn=linear_estimate(4, 1))
    assert rec.config.model.attn_implementation == "sdpa" and "sm80" in rec.reason("model.attn_implementation")
    assert rec.config.model.dtype == "fp32" and rec.config.training.fp16 and not rec.config.training.bf16


def test_checkpointing_and_8bit_optimizer_only_when_memory_requires(qwen_facts):
    hw = machine(gpu("NVIDIA A100-SXM4-40GB", "8.0", 40, free_gib=40), libraries=("flash_attn", "bitsandbytes"))
    usable = 40 * (1 - HEADROOM)  # 36 GiB
    roomy = recommend(full(), hardware=hw, facts=qwen_facts, audit=AUDIT, estimate_fn=linear_estimate(10, 5))
    assert roomy.config.training.gradient_checkpointing is False
    assert roomy.config.training.optim == "adamw_torch_fused"
    assert "not needed" in roomy.reason("training.gradient_checkpointing")

    # micro-batch 1 needs 10 + 30 = 40 > 36 without checkpointing; 10 + 6 = 16 with it
    tight = recommend(full(), hardware=hw, facts=qwen_facts, audit=AUDIT, estimate_fn=linear_estimate(10, 30))
    assert tight.config.training.gradient_checkpointing is True
    assert tight.config.training.optim == "adamw_torch_fused"
    assert "needed" in tight.reason("training.gradient_checkpointing")

    # optimizer states alone overflow: 8-bit states (a quarter) make micro-batch 1 fit with checkpointing
    states = recommend(full(), hardware=hw, facts=qwen_facts, audit=AUDIT,
                       estimate_fn=linear_estimate(10, 10, optimizer_gib=28))
    assert states.config.training.optim == "adamw_8bit"
    assert states.config.training.gradient_checkpointing is True
    assert states.estimate.total_gib <= usable

    # nothing fits: the wizard says so and does not switch to LoRA or cut max_length for the user
    hopeless = recommend(full(), hardware=hw, facts=qwen_facts, audit=AUDIT, estimate_fn=linear_estimate(50, 1))
    assert hopeless.config.method.type == "full" and hopeless.config.training.max_length == 1024
    assert any("does not fit" in n for n in hopeless.notes)


def test_no_8bit_optimizer_without_bitsandbytes(qwen_facts):
    hw = machine(gpu("NVIDIA A100-SXM4-40GB", "8.0", 40, free_gib=40), libraries=("flash_attn",))
    rec = recommend(full(), hardware=hw, facts=qwen_facts, audit=AUDIT,
                    estimate_fn=linear_estimate(10, 10, optimizer_gib=28))
    assert rec.config.training.optim == "adamw_torch_fused" and rec.notes


def test_real_estimator_on_h100_for_a_05b_full_finetune(qwen_facts):
    estimator = pytest.importorskip("sftwizard.core.estimator")
    cfg = full(**{"training.max_length": 2048, "training.per_device_train_batch_size": 8,
                  "training.gradient_accumulation_steps": 4})
    rec = recommend(cfg, hardware=machine(H100, libraries=("flash_attn",)), facts=qwen_facts, audit=AUDIT,
                    estimate_fn=estimator.estimate_memory)
    t = rec.config.training
    assert t.gradient_checkpointing is False and t.per_device_train_batch_size >= 2
    assert rec.estimate.total_gib <= 79.5 * (1 - HEADROOM)


def test_packing_needs_a_length_and_respects_custom_code(tiny_facts):
    no_len = full(**{"training.max_length": "null"})
    rec = recommend(no_len, hardware=CPU, facts=tiny_facts, audit=AUDIT)
    assert rec.config.training.max_length == 1000 and rec.config.training.packing  # longest: nothing truncated
    rec = recommend(no_len, hardware=CPU, facts=tiny_facts, audit=None)
    assert rec.config.training.packing is False and rec.config.training.max_length is None

    custom = full(**{"model.trust_remote_code": "true"})
    rec = recommend(custom, hardware=CPU, facts=tiny_facts, audit=AUDIT)
    assert rec.config.training.packing is False and "custom code" in rec.reason("training.packing")

    wrapped = full(**{"training.packing": "true", "training.packing_strategy": "wrapped"})
    rec = recommend(wrapped, hardware=CPU, facts=tiny_facts, audit=AUDIT)
    assert rec.config.training.packing_strategy == "wrapped"  # what is trained stays the user's choice


def test_sdpa_rows_shrink_to_the_longest_example_when_that_cuts_nothing(tiny_facts):
    short = {**AUDIT, "token_length": {"max": 300}}
    rec = recommend(full(), hardware=CPU, facts=tiny_facts, audit=short)
    assert rec.config.training.max_length == 320 and "nothing is cut" in rec.reason("training.max_length")
    # 8 examples of 240 tokens = 1,920 tokens = 6 rows of 320
    assert rec.config.training.gradient_accumulation_steps == 6
    with_eval = full()
    with_eval = with_eval.replace(data=dataclasses.replace(with_eval.data, eval_source=DataSource("builtin:demo-eval")))
    assert recommend(with_eval, hardware=CPU, facts=tiny_facts, audit=short).config.training.max_length == 1024
    fa2 = recommend(full(), hardware=machine(H100, libraries=("flash_attn",)), facts=tiny_facts, audit=short,
                    estimate_fn=linear_estimate(1, 1))
    assert fa2.config.training.max_length == 1024  # varlen attention: row length costs nothing


def test_without_audit_packed_rows_stand_for_examples_and_a_note_says_so(tiny_facts):
    rec = recommend(full(), hardware=CPU, facts=tiny_facts)
    t = rec.config.training
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 8
    assert any("no data audit" in n for n in rec.notes)


def test_liger_only_on_gpu_when_importable(qwen_facts):
    rec = recommend(full(), hardware=machine(H100, libraries=("flash_attn", "liger_kernel")), facts=qwen_facts,
                    audit=AUDIT, estimate_fn=linear_estimate(8, 2))
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        assert rec.config.training.use_liger_kernel is False and "cannot be imported" in rec.reason(
            "training.use_liger_kernel")
    else:
        assert rec.config.training.use_liger_kernel is True
    rec = recommend(full(), hardware=machine(H100, libraries=("flash_attn",)), facts=qwen_facts, audit=AUDIT)
    assert rec.config.training.use_liger_kernel is False and "not installed" in rec.reason("training.use_liger_kernel")


@pytest.mark.parametrize("cores,rows,procs", [(2, 500_000, None), (16, 5_000, None), (16, 50_000, 5),
                                             (64, 10_000_000, 16), (8, 1_000_000, 7)])
def test_dataset_num_proc_by_cores_and_rows(tiny_facts, cores, rows, procs):
    rec = recommend(full(), hardware=machine(cpu_count=cores), facts=tiny_facts, audit={**AUDIT, "rows": rows})
    assert rec.config.training.dataset_num_proc == procs


def test_recommend_and_efficiency_import_without_torch():
    """The wizard imports both at start-up: no heavy module may come with them."""
    import subprocess
    import sys

    code = ("import sys, sftwizard.core.recommend, sftwizard.core.efficiency\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_recommender_sizes_for_the_launch_on_the_gpu_the_run_lands_on(qwen_facts, monkeypatch):
    """The TUI's recommender gets the estimator's inputs from estimate_for, as `estimate` does: the
    GPU of CUDA_VISIBLE_DEVICES (not gpus[0]) and the launch's processes and sharding."""
    from sftwizard.core.estimator import estimate_for, estimate_memory
    from sftwizard.tui import services

    busy = dataclasses.replace(gpu("NVIDIA H100 80GB HBM3", "9.0", 80, free_gib=12), index=0)
    free = dataclasses.replace(gpu("NVIDIA H100 80GB HBM3", "9.0", 80), index=1)
    box = machine(busy, free, libraries=("flash_attn",))
    cfg = full(**{"training.max_length": 2048, "training.per_device_train_batch_size": 8,
                  "distributed.strategy": "zero3", "distributed.num_processes": 2})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    rec = services.recommend_settings(cfg, box, qwen_facts, AUDIT)
    assert rec.estimate.gpu_memory_gib == pytest.approx(free.usable_memory_mib / 1024, abs=0.01)  # GPU 1's room
    same = estimate_for(rec.config, box, qwen_facts, gpu_memory_gib=rec.estimate.gpu_memory_gib)
    assert rec.estimate.total_gib == same.total_gib
    alone = estimate_memory(qwen_facts, rec.config, gpu_memory_gib=rec.estimate.gpu_memory_gib)  # one process
    assert same.components["optimizer"] == pytest.approx(alone.components["optimizer"] / 2, rel=0.01)  # ZeRO-3 over 2
    bar = services.estimate_memory(rec.config, box, qwen_facts)  # the TUI's memory bar
    assert bar.total_gib == same.total_gib and bar.gpu_memory_gib == same.gpu_memory_gib
