"""QLoRA end to end on CPU with real bitsandbytes 4-bit layers (its CPU backend, bitsandbytes >= 0.50):
build, train, evaluate, checkpoint, resume, grow the embeddings for ChatML, merge and chat."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from sftwizard.core.config import config_from_dict
from sftwizard.core.events import read_events
from sftwizard.core.runner import Environment

pytest.importorskip("bitsandbytes", reason="QLoRA on CPU needs bitsandbytes >= 0.50 (pip install -e '.[test]')")

CPU = Environment(cuda=False, bf16_supported=False, device_count=0)
HIDDEN = 128  # bitsandbytes quantizes in blocks of 64 values: every linear's input size is a multiple


def _model_dir(path: Path) -> Path:
    """A base model (no chat template) whose linears bitsandbytes' CPU kernels accept: 2 layers, hidden 128."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures.tokenizers import make_tokenizer

    tok = make_tokenizer("base")
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(path))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    return path


def _cfg(model_dir: Path, data: Path, out: Path, **training):
    return config_from_dict({
        "model": {"id": str(model_dir), "dtype": "auto"},
        "data": {"sources": [{"path": str(data)}], "eval_source": {"path": str(data)}},
        "method": {"type": "qlora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
        "template": {"source": "chatml"},  # a base model: ChatML adds tokens, so embeddings grow
        "training": {"per_device_train_batch_size": 2, "per_device_eval_batch_size": 4, "max_length": 96,
                     "max_steps": 4, "logging_steps": 1, "learning_rate": 1e-3, "eval_strategy": "steps",
                     "eval_steps": 2, "save_strategy": "steps", "save_steps": 2, "report_to": "none",
                     "seed": 7, **training},
        "run": {"name": "qlora-cpu", "output_root": str(out)},
    })


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.fixtures.tokenizers import conversations

    root = tmp_path_factory.mktemp("qlora")
    model_dir = _model_dir(root / "model")
    data = root / "d.jsonl"
    rows = conversations("qwen2_5") * 4
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return model_dir, data, root / "runs"


def _execute(run_dir: Path, resume_from: str | None = None) -> None:
    from sftwizard.core.runner import execute

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = execute(run_dir, resume_from)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert code == 0, (run_dir / "events.jsonl").read_text()[-3000:]


def test_build_trainer_places_real_4bit_layers_on_cpu_and_counts_them_unpacked(setup, tmp_path):
    import bitsandbytes as bnb

    from sftwizard.core.efficiency import FlopsModel
    from sftwizard.core.models import model_facts
    from sftwizard.core.runner import build_trainer

    model_dir, data, _ = setup
    cfg = _cfg(model_dir, data, tmp_path)
    prepared = build_trainer(cfg, tmp_path / "out", env=CPU)
    model = prepared.trainer.model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each layer
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    packed = layers[0].weight
    assert packed.numel() < packed.quant_state.shape.numel()  # storage is packed...
    # ...and what the run reports counts weights, as the config says (grown embeddings included)
    from sftwizard.core.efficiency import logical_numel

    facts = model_facts(str(model_dir))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n)
    grown = (prepared.resized_embeddings - facts.vocab_size) * HIDDEN * (1 if facts.tie_word_embeddings else 2)
    assert sum(logical_numel(p) for p in model.parameters()) == facts.total_params + grown + lora
    flops = FlopsModel.from_model(model)
    assert flops.matmul_params >= facts.total_params - facts.embedding_params


def test_qlora_trains_resumes_merges_and_chats_on_cpu(setup):
    from sftwizard.core import runs
    from sftwizard.core.chat import load_chat_model
    from sftwizard.core.merge import merge_run

    model_dir, data, out = setup
    cfg = _cfg(model_dir, data, out)
    run_dir = runs.create_run(cfg)
    _execute(run_dir)
    events = read_events(run_dir / "events.jsonl")
    warning = next(e for e in events if e["event"] == "warning")
    assert warning["code"] == "qlora_on_cpu" and "slow" in warning["message"]  # the output says so
    prepared = next(e for e in events if e["event"] == "prepared")
    assert prepared["resized_embeddings"]  # ChatML tokens got embedding rows
    logs = {e["step"]: e["loss"] for e in events if e["event"] == "log"}
    assert [e["step"] for e in events if e["event"] == "eval"] == [2, 4]
    assert events[-1]["status"] == "finished"
    assert (run_dir / "final" / "adapter_config.json").exists()
    adapter = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    assert set(adapter["modules_to_save"] or []) >= {"embed_tokens", "lm_head"}
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").exists()

    # resume from the step-2 checkpoint: the same steps 3 and 4, with the same losses
    _execute(run_dir, str(checkpoint))
    resumed = read_events(run_dir / "events.jsonl")[len(events):]
    assert resumed[0]["event"] == "resume" and resumed[-1]["status"] == "finished"
    again = {e["step"]: e["loss"] for e in resumed if e["event"] == "log"}
    assert sorted(again) == [3, 4]
    for step in (3, 4):
        assert again[step] == pytest.approx(logs[step], rel=1e-3)

    # merge into the unquantized base (16-bit, grown as in training) and chat with the result
    merged = merge_run(run_dir)
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["vocab_size"] == prepared["resized_embeddings"]
    chat = load_chat_model(run_dir)
    assert "merged" in chat.description
    reply = chat.generate([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=8)
    assert reply.new_tokens > 0
