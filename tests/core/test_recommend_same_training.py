"""No recommendation changes what is trained (issue 8, section 4).

The data goes through the real training path twice — ``runner.build_trainer`` (our
``templates.build_dataset`` masks, then a real SFTTrainer) — once with the config as given and
once with ``recommend()``'s config (bfd packing, padding-free, other micro-batch and
accumulation). Over one epoch of each trainer's own dataloader, every conversation must come out
with the same tokens and the same loss mask, so the trained tokens per epoch are equal. Once
with conversations longer than max_length (truncation), once with rows shortened to the longest
conversation (the SDPA rule).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from sftwizard.core.config import RunConfig, apply_overrides
from sftwizard.core.recommend import recommend
from sftwizard.core.runner import Environment, build_trainer

MAX_LENGTH = 160
CPU_ENV = Environment(cuda=False, bf16_supported=False, device_count=0)
CPU_HW = type("CpuReport", (), {"gpus": [], "torch_cuda": False, "cpu_count": 2, "libraries": {}})()


def mixed_conversations(n: int, seed: int = 0) -> list[dict]:
    """Demo conversations as they are (short) and several chained into long multi-turn ones."""
    from sftwizard.core.demo_data import TRAIN_FILE

    demo = [json.loads(line) for line in TRAIN_FILE.read_text().splitlines()]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 4:
            out.append(rng.choice(demo))
            continue
        turns = [m for row in rng.sample(demo, rng.randint(3, 9)) for m in row["messages"] if m["role"] != "system"]
        out.append({"messages": turns})
    return out


def documents(batch) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """(token ids, trained flags) of each conversation in a collated batch. A token is trained when
    it is a label the loss predicts: labels are shifted, so position 0 of a document never is."""
    ids, labels = batch["input_ids"], batch["labels"]
    docs = []
    if "attention_mask" in batch:
        for row in range(ids.shape[0]):
            n = int(batch["attention_mask"][row].sum())
            docs.append((ids[row, :n], labels[row, :n]))
    else:  # padding-free: one row, documents restart their position ids at 0
        assert ids.shape[0] == 1
        pos = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        docs = [(ids[0, a:b], labels[0, a:b]) for a, b in zip(starts, starts[1:])]
    return [(tuple(i.tolist()), tuple((lab[1:] != -100).tolist())) for i, lab in docs]


def epoch_documents(cfg: RunConfig, out: Path) -> tuple[Counter, int, object]:
    prepared = build_trainer(cfg, out, env=CPU_ENV)
    docs: Counter = Counter()
    trained = 0
    for batch in prepared.trainer.get_train_dataloader():
        for doc in documents(batch):
            trained += sum(doc[1])
            if any(doc[1]):  # unpacked TRL drops rows left without loss by truncation; packed keeps them
                docs[doc] += 1
    return docs, trained, prepared


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in mixed_conversations(160)) + "\n")
    return path


def real_audit(cfg: RunConfig) -> dict:
    from sftwizard.core.audit import audit_dataset
    from sftwizard.core.models import load_tokenizer, resolve_model
    from sftwizard.core.runner import resolve_data
    from sftwizard.core.templates import resolve_template

    tok = load_tokenizer(resolve_model(cfg.model.id).path)
    examples, _, _ = resolve_data(cfg)
    return audit_dataset(tok, examples, resolve_template(tok, cfg.template), cfg)


@pytest.mark.parametrize("max_length,assistant_only", [(MAX_LENGTH, "null"), (1024, "false")])
def test_recommendations_train_the_same_tokens_with_the_same_mask(tmp_path, data_file, builtin_model_dir,
                                                                   max_length, assistant_only):
    from sftwizard.core.models import model_facts

    cfg = apply_overrides(RunConfig(), [
        f"data.sources.0.path={data_file}", "method.type=full", "model.dtype=fp32",
        "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=2",
        f"training.max_length={max_length}", "training.save_strategy=no", "training.num_train_epochs=1",
        f"training.assistant_only_loss={assistant_only}",
    ])
    audit = real_audit(cfg)
    rec = recommend(cfg, hardware=CPU_HW, facts=model_facts(str(builtin_model_dir)), audit=audit)
    fast = rec.config
    assert fast.training.packing and fast.training.padding_free and not cfg.training.packing
    assert fast.training.per_device_train_batch_size != cfg.training.per_device_train_batch_size

    base_docs, base_trained, base = epoch_documents(cfg, tmp_path / "base")
    fast_docs, fast_trained, packed = epoch_documents(fast, tmp_path / "fast")

    assert not base.trainer.padding_free and packed.trainer.padding_free  # the two paths really differ
    assert base_trained > 0
    assert fast_trained == base_trained
    assert fast_docs == base_docs
    longest = max(len(ids) for ids, _ in base_docs)
    if max_length == MAX_LENGTH:
        assert longest == MAX_LENGTH  # some conversations were truncated, identically
    else:  # nothing truncated: packed rows were shortened to fit the longest conversation, cutting nothing
        assert longest == audit["token_length"]["max"] < fast.training.max_length < max_length
