"""The runner's own build_trainer (not a re-creation of it) trains what the preview shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftwizard.core.config import config_from_dict
from sftwizard.core.preview import render_preview
from sftwizard.core.runner import Environment, build_trainer
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


def test_load_best_model_at_end_makes_the_final_model_the_lowest_eval_loss_checkpoint(tmp_path: Path):
    """A learning rate that overshoots makes a late eval worse than an early one; the model the
    trainer ends with is then the saved checkpoint with the lowest eval loss, not the last step."""
    import torch
    from safetensors.torch import load_file

    model_dir = save_model_dir("qwen2_5", tmp_path / "m", weights=True)
    rows = conversations("qwen2_5")
    data = _write(tmp_path / "d.jsonl", rows * 4)
    cfg = config_from_dict({
        "model": {"id": str(model_dir), "dtype": "fp32"},
        "method": {"type": "full"},
        "data": {"sources": [{"path": str(data)}], "eval_source": {"path": str(_write(tmp_path / "e.jsonl", rows))}},
        "training": {"per_device_train_batch_size": 2, "max_length": 128, "max_steps": 6, "report_to": "none",
                     "learning_rate": 1.0, "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "seed": 1,
                     "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "save_total_limit": 1,
                     "load_best_model_at_end": True},
    })
    prepared = build_trainer(cfg, tmp_path / "out", env=CPU)
    trainer = prepared.trainer
    assert trainer.args.load_best_model_at_end and trainer.args.metric_for_best_model == "eval_loss"
    trainer.train()
    evals = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    best_step = min(evals, key=evals.get)
    assert best_step < 6, evals  # the case that matters: the last step is not the best
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    saved = load_file(str(Path(trainer.state.best_model_checkpoint) / "model.safetensors"))
    live = dict(trainer.model.named_parameters())
    assert all(torch.equal(live[name].detach().cpu(), tensor) for name, tensor in saved.items() if name in live)
