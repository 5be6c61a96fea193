"""PROOF: the preview's trained flags are ``labels != -100`` in the batches a real SFTTrainer trains on.

For each tokenizer family (six TRL can patch, three it cannot, and the builtin model), with
packing off and on, single- and multi-turn rows (one with a weight-0 turn) and a max_length that
truncates some rows: build the trainer exactly as the runner does, pull every batch through its
dataloader and collator, and compare sequence by sequence with ``render_preview``.
"""

from __future__ import annotations

import pytest

from sftwizard.core.config import RunConfig
from sftwizard.core.preview import render_preview
from sftwizard.core.templates import TemplateError, resolve_template
from tests.fixtures.tokenizers import FOREIGN_FAMILIES, TRL_FAMILIES, conversations, make_tokenizer
from tests.fixtures.trainer import build_trainer, isolated_home, trained_sequences


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    isolated_home(tmp_path_factory)


@pytest.fixture(scope="module")
def builtin_tokenizer(_home):
    from sftwizard.core.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("builtin:tiny-chat").path)


def _config(packing: bool, max_length: int) -> RunConfig:
    cfg = RunConfig()
    cfg.training.max_length = max_length
    cfg.training.packing = packing
    cfg.training.per_device_train_batch_size = 2
    return cfg


def _check(tokenizer, examples, cfg, tmp_path):
    trainer = build_trainer(tokenizer, examples, cfg, tmp_path)
    sequences = trained_sequences(trainer)
    previews = [render_preview(cfg, row=i, tokenizer=tokenizer, examples=examples) for i in range(len(examples))]
    unmatched = list(sequences)
    for preview in previews:
        kept_ids = [t["id"] for t in preview.tokens if not t.get("truncated")]
        if preview.dropped_by_trainer:
            assert all(ids != kept_ids for ids, _ in sequences), f"row {preview.row} should have been dropped"
            continue
        match = next((s for s in unmatched if s[0] == kept_ids), None)
        assert match is not None, f"row {preview.row} is not among the trained sequences"
        unmatched.remove(match)
        assert match[1] == preview.trained_flags, f"row {preview.row}: preview flags differ from labels != -100"
    assert not unmatched, "the trainer trained on sequences no preview accounts for"
    return previews


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", TRL_FAMILIES + FOREIGN_FAMILIES)
def test_preview_flags_equal_trainer_labels(family, packing, tmp_path):
    tokenizer = make_tokenizer(family)
    examples = conversations(family)
    previews = _check(tokenizer, examples, _config(packing, max_length=256), tmp_path)
    # every row trains its assistant answers (the weight-0 turn excepted) and nothing is cut here
    for preview in previews:
        trained = "".join(t["text"] for t in preview.tokens if t["trained"])
        assert preview.counts["truncated_tokens"] == 0
        assert trained, f"{family} row {preview.row} trains nothing"
    weighted = previews[-1]
    trained = "".join(t["text"] for t in weighted.tokens if t["trained"])
    assert "A sparrow." in trained and "A fox." not in trained


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", ["qwen2_5", "llama3", "mistral"])
def test_truncation_matches_trainer(family, packing, tmp_path):
    """A max_length that cuts into assistant turns, and leaves some rows with nothing trained."""
    tokenizer = make_tokenizer(family)
    examples = conversations(family)
    whole = [render_preview(_config(packing, 4096), i, tokenizer=tokenizer, examples=examples)
             for i in range(len(examples))]
    limit = sorted(len(p.tokens) for p in whole)[1] - 3
    cfg = _config(packing, max_length=limit)
    if any(not any(t["trained"] for t in p.tokens[:limit]) for p in whole):
        # rows left with no trained token are an error at the first one, or left out with a report
        with pytest.raises(TemplateError, match=r"row \d+: no token carries loss within training.max_length"):
            _check(tokenizer, examples, cfg, tmp_path)
    cfg.data.on_bad_rows = "drop"
    previews = _check(tokenizer, examples, cfg, tmp_path)
    codes = {p["code"] for preview in previews for p in preview.problems}
    assert "truncated_assistant" in codes or "truncated" in codes


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_builtin_model_preview_equals_trainer(builtin_tokenizer, packing, tmp_path):
    from sftwizard.core.config import DataSource
    from sftwizard.core.data import load_examples

    examples, _ = load_examples(DataSource(path="builtin:demo", max_rows=12))
    cfg = _config(packing, max_length=64)
    previews = _check(builtin_tokenizer, examples, cfg, tmp_path)
    assert all(p.template_source == "tokenizer" for p in previews)
    assert any(len(p.tokens) > 0 and p.counts["trained"] for p in previews)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_base_model_with_chatml_added_tokens(packing, tmp_path):
    """A tokenizer without a chat template, given ChatML: its markers become new tokens."""
    from sftwizard.core.templates import sft_mask_kwargs

    tokenizer = make_tokenizer("base")
    before = len(tokenizer)
    cfg = _config(packing, max_length=256)
    cfg.template.source = "chatml"
    previews = _check(tokenizer, conversations("base"), cfg, tmp_path)
    assert len(tokenizer) == before + 2
    assert all(p.template_source == "chatml" for p in previews)
    trained = [t["text"] for t in previews[0].tokens if t["trained"]]
    assert trained[-1] == "<|im_end|>"
    assert sft_mask_kwargs(cfg, resolve_template(tokenizer, cfg.template))["eos_token"] == "<|im_end|>"


def test_bfd_split_packing_pieces_match_trainer(tmp_path):
    """bfd_split cuts long rows into max_length pieces; the first token of each piece carries no loss."""
    tokenizer = make_tokenizer("llama3")
    examples = conversations("llama3")
    cfg = _config(True, max_length=24)
    cfg.training.packing_strategy = "bfd_split"
    trainer = build_trainer(tokenizer, examples, cfg, tmp_path)
    sequences = trained_sequences(trainer)
    expected = []
    for i in range(len(examples)):
        preview = render_preview(cfg, row=i, tokenizer=tokenizer, examples=examples)
        assert not any(t.get("truncated") for t in preview.tokens)
        for start in range(0, len(preview.tokens), 24):
            piece = preview.tokens[start:start + 24]
            expected.append(([t["id"] for t in piece], [t["trained"] for t in piece]))
    assert sorted(expected) == sorted(sequences)


MIXED = [
    {"prompt": "Translate hello to Spanish.", "completion": " Hola."},
    {"prompt": [{"role": "user", "content": "Please add 12 and 30."}],
     "completion": [{"role": "assistant", "content": "12 + 30 = 42."}]},
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"messages": [{"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "A fox."}]},
]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", ["llama3", "mistral"])
def test_prompt_completion_and_text_rows_match_trainer(family, packing, tmp_path):
    """Default losses per kind: completion-only, assistant-only, and whole text, in one dataset."""
    tokenizer = make_tokenizer(family)
    previews = _check(tokenizer, MIXED, _config(packing, max_length=256), tmp_path)
    trained = ["".join(t["text"] for t in p.tokens if t["trained"]) for p in previews]
    assert trained[0] == " Hola." + tokenizer.eos_token
    assert trained[1].strip().startswith("12 + 30 = 42.") and "Please add" not in trained[1]
    assert trained[2] == MIXED[2]["text"] + tokenizer.eos_token  # all but the BOS nothing predicts
    assert [p.kind for p in previews] == ["prompt_completion", "conversational_prompt_completion", "text",
                                          "messages"]


def test_whole_conversation_loss_still_skips_weight_zero_turns(tmp_path):
    tokenizer = make_tokenizer("qwen2_5")
    examples = conversations("qwen2_5")
    cfg = _config(False, max_length=512)
    cfg.training.assistant_only_loss = False
    previews = _check(tokenizer, examples, cfg, tmp_path)
    trained = "".join(t["text"] for t in previews[-1].tokens if t["trained"])
    assert "Name an animal." in trained and "A sparrow." in trained and "A fox." not in trained
