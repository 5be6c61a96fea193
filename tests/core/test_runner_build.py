"""The runner's own build_trainer (not a re-creation of it) trains what the preview shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftwizard.core.config import config_from_dict
from sftwizard.core.runner import Environment, build_trainer
from sftwizard.core.templates import render_preview
from tests.fixtures.tokenizers import conversations, save_model_dir
from tests.fixtures.trainer import trained_sequences

CPU = Environment(cuda=False, bf16_supported=False, device_count=0)


def _cfg(model_dir: Path, data: Path, **training) -> object:
    return config_from_dict({
        "model": {"id": str(model_dir), "dtype": "fp32"},
        "data": {"sources": [{"path": str(data)}]},
        "method": {"type": training.pop("method", "full")},
        "template": {"source": training.pop("template", "auto")},
        "training": {"per_device_train_batch_size": 2, "max_length": 128, "max_steps": 1, "report_to": "none",
                     "save_strategy": "no", **training},
    })


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("family,packing", [("qwen2_5", False), ("llama3", True), ("mistral", False)])
def test_build_trainer_batches_equal_the_preview(tmp_path: Path, family: str, packing: bool):
    model_dir = save_model_dir(family, tmp_path / family, weights=True)
    rows = conversations(family)
    data = _write(tmp_path / "d.jsonl", rows)
    cfg = _cfg(model_dir, data, packing=packing, max_length=128)
    prepared = build_trainer(cfg, tmp_path / "out", env=CPU)
    seen = trained_sequences(prepared.trainer)
    expected = []
    for i in range(len(rows)):
        preview = render_preview(cfg, row=i)
        kept = [t for t in preview.tokens if not t.get("truncated")]  # the preview also shows what is cut
        expected.append(([t["id"] for t in kept], [t["trained"] for t in kept]))
    # packing may reorder rows: compare as multisets of (ids, flags)
    assert sorted(map(repr, seen)) == sorted(map(repr, expected))


def test_chatml_on_a_base_model_grows_embeddings_and_trains_them_with_lora(tmp_path: Path):
    model_dir = save_model_dir("base", tmp_path / "base", weights=True)
    data = _write(tmp_path / "d.jsonl", conversations("qwen2_5"))
    cfg = _cfg(model_dir, data, method="lora", template="chatml")
    prepared = build_trainer(cfg, tmp_path / "out", env=CPU)
    assert prepared.resized_embeddings and prepared.resized_embeddings >= len(prepared.tokenizer)
    trainable = {n for n, p in prepared.trainer.model.named_parameters() if p.requires_grad}
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    # The estimator counts what the runner built: grown embeddings, and their trainable copies.
    from sftwizard.core.estimator import estimate_memory
    from sftwizard.core.models import model_facts

    facts = model_facts(str(model_dir))
    named = list(prepared.trainer.model.named_parameters())
    base = sum(p.numel() for n, p in named if "lora_" not in n and "modules_to_save" not in n)
    est = estimate_memory(facts, cfg, gpu_memory_gib=80)
    assert est.total_params == base > facts.total_params
    assert est.trainable_params == sum(p.numel() for _, p in named if p.requires_grad)
    assert any("trained in full (modules_to_save)" in a for a in est.assumptions)
    assert estimate_memory(facts, cfg.replace(template=cfg.template.__class__(source="auto")),
                           gpu_memory_gib=80).trainable_params < est.trainable_params
    prepared.trainer.train()  # a real step with the new token ids in range
    assert prepared.trainer.state.global_step == 1
