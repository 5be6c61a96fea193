"""Efficiency arithmetic, checked against what really runs: FLOPs against PyTorch's FLOP counter
on the builtin model, batch counts against TRL's own collator, event fields against a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sftwizard.core.efficiency import (
    BatchCounter,
    BatchCounts,
    FlopsModel,
    efficiency_fields,
    flops_per_token,
    mfu,
    padding_share,
    peak_tflops,
    rate,
    trained_tokens_per_s,
)


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA H100 NVL", "torch.bfloat16", 835.5),
    ("NVIDIA H200", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("NVIDIA A100 80GB PCIe", "float32", 19.5),
    ("NVIDIA L40S", "bf16", 362.05),
    ("NVIDIA L40", "bf16", 181.0),
    ("NVIDIA L4", "fp16", 121.0),
    ("Tesla T4", "fp16", 65.0),
    ("Tesla T4", "bf16", None),  # no bf16 tensor cores
    ("NVIDIA A10G", "bf16", None),  # no NVIDIA datasheet: unknown, not guessed
    ("NVIDIA B200", "bf16", 2250.0),
    (None, "bf16", None),
])
def test_peak_tflops_by_name_and_dtype(name, dtype, peak):
    assert peak_tflops(name, dtype) == peak


@pytest.fixture(scope="module")
def tiny_model(builtin_model_dir: Path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(builtin_model_dir, dtype=torch.float32, attn_implementation="eager")


def measured_flops(model, seq: int, batch: int = 2) -> float:
    """FLOPs PyTorch counts for one forward + backward over ``batch`` x ``seq`` tokens."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(5, model.config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


@pytest.mark.parametrize("seq", [32, 160])
def test_flops_per_token_matches_pytorch_flop_counter(tiny_model, builtin_model_dir, seq):
    from sftwizard.core.models import model_facts

    facts = model_facts(str(builtin_model_dir))
    predicted = flops_per_token(facts, context=seq)
    counted = measured_flops(tiny_model, seq) / (2 * seq)
    # the formula also counts the norm weights (not matmuls): a fraction of a percent here
    assert predicted == pytest.approx(counted, rel=0.01)
    # ModelFacts (config on the meta device) and the live model agree on N
    assert FlopsModel.from_facts(facts) == FlopsModel.from_model(tiny_model)


def test_lora_flops_skip_frozen_weight_gradients(tiny_model):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(tiny_model),
                                LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    m = FlopsModel.from_model(peft_model)
    assert 0 < m.trainable_matmul_params < m.matmul_params / 5
    predicted = flops_per_token(m, context=64)
    counted = measured_flops(peft_model, 64) / (2 * 64)
    # autograd also skips the input gradient of layer 0 (frozen embeddings): within a few percent
    assert predicted == pytest.approx(counted, rel=0.05)
    full = flops_per_token(FlopsModel.from_model(tiny_model), context=64)
    assert predicted < full * 0.8


def test_mfu_is_achieved_over_peak():
    m = FlopsModel(matmul_params=500_000_000, trainable_matmul_params=500_000_000, num_layers=24,
                   num_heads=14, head_dim=64)
    per_token = flops_per_token(m, context=1024)
    assert per_token == 6 * 500_000_000 + 12 * 24 * 14 * 64 * 1024
    tps = 0.4 * 989.4e12 / per_token
    assert mfu(tps, m, "NVIDIA H100 80GB HBM3", "bf16", context=1024) == pytest.approx(0.4)
    assert mfu(2 * tps, m, "NVIDIA H100 80GB HBM3", "bf16", context=1024, num_gpus=2) == pytest.approx(0.4)
    assert mfu(tps, m, None, "bf16") is None  # CPU
    moe = FlopsModel(1, 1, 1, 1, 1, moe=True)
    assert mfu(tps, moe, "NVIDIA H100 80GB HBM3", "bf16") is None


def test_padding_and_rates():
    assert padding_share(75, 100) == pytest.approx(0.25)
    assert padding_share(0, 0) is None
    assert rate(100, 4) == 25 and rate(100, 0) is None and rate(None, 2) is None
    assert trained_tokens_per_s(1000, 0.3) == pytest.approx(300)


def _collate(tokenizer, rows, padding_free):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    return collator(rows)


@pytest.mark.parametrize("padding_free", [False, True])
def test_batch_counter_counts_what_the_model_sees(tiny_model, builtin_model_dir, padding_free):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(builtin_model_dir)
    lengths, trained_spans = [5, 12, 30], [(2, 5), (4, 12), (10, 30)]
    rows = []
    for n, (a, b) in zip(lengths, trained_spans):
        ids = list(range(10, 10 + n))
        rows.append({"input_ids": ids, "labels": [t if a <= i < b else -100 for i, t in enumerate(ids)]})
    batch = _collate(tok, rows, padding_free)
    counter = BatchCounter().attach(tiny_model)
    try:
        tiny_model.train()
        with torch.no_grad():
            tiny_model(**batch)
        tiny_model.eval()
        with torch.no_grad():
            tiny_model(**batch)  # eval forwards are not counted
    finally:
        counter.detach()
    counts = counter.take()
    assert counts.micro_batches == 1
    assert counts.tokens == sum(lengths)
    assert counts.positions == (sum(lengths) if padding_free else 3 * max(lengths))
    assert counts.trained == sum(b - a for a, b in trained_spans)
    assert counts.context == pytest.approx(sum(n * n for n in lengths) / sum(lengths))
    assert counter.take().tokens == 0  # take() resets


def test_efficiency_fields_of_one_log_interval():
    counts = BatchCounts(positions=1000, tokens=800, trained=200, context_sq=800 * 400, micro_batches=4)
    m = FlopsModel(10**9, 10**9, 24, 16, 64)
    fields = efficiency_fields({"tokens_per_s": 5000.0}, counts=counts, flops=m,
                               gpu_name="NVIDIA A100-SXM4-80GB", dtype="bf16")
    assert fields["padding_share"] == 0.2
    assert fields["trained_share"] == 0.25
    assert fields["trained_tokens_per_s"] == 1250.0
    assert fields["attention_context"] == 400.0
    assert fields["mfu"] == pytest.approx(5000 * flops_per_token(m, 400) / 312e12, abs=1e-4)
    cpu = efficiency_fields({"tokens_per_s": 5000.0}, counts=counts, flops=m, gpu_name=None)
    assert cpu["mfu"] is None and cpu["padding_share"] == 0.2
    assert efficiency_fields(None)["trained_share"] is None


def test_runner_log_events_carry_efficiency(tmp_path: Path, builtin_model_dir):
    """The runner's events callback writes the fields into `log` events of a real (short) run."""
    from sftwizard.core.config import RunConfig, apply_overrides
    from sftwizard.core.events import EventWriter, read_events
    from sftwizard.core.runner import Environment, _events_callback, build_trainer

    cfg = apply_overrides(RunConfig(), [
        "model.dtype=fp32", "method.type=full", "training.max_steps=3", "training.logging_steps=1",
        "training.per_device_train_batch_size=4", "training.save_strategy=no", "training.max_length=64",
        "data.sources.0.max_rows=64",
    ])
    writer = EventWriter(tmp_path / "events.jsonl")
    prepared = build_trainer(cfg, tmp_path / "out", callbacks=[_events_callback(writer, tmp_path)],
                             env=Environment(cuda=False, bf16_supported=False, device_count=0))
    prepared.trainer.train()
    writer.close()
    logs = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "log"]
    assert len(logs) == 3
    for e in logs:
        assert 0 < e["trained_share"] <= 1
        assert 0 <= e["padding_share"] < 1
        assert e["attention_context"] > 1
        assert e["mfu"] is None  # CPU: no peak to compare with
    assert any(e["trained_tokens_per_s"] for e in logs[1:])
