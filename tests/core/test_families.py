"""The masks on the REAL chat templates of the families people fine-tune (tests/fixtures/families/).

For every family, single- and multi-turn rows, with and without a system message (where the
template takes one) and with reasoning in each shape data brings it (where the family reasons):
the text trained on is the model's own rendering as at inference, every answer and the
end-of-turn token after it carry loss, and no user/system/tool text or assistant header does.
Then the trainer proof (preview flags == labels != -100) on every family, a few real training
steps on a sample, and the behaviours the Template step and `preview` report.
"""

from __future__ import annotations

import json

import pytest

from sftwizard.core.config import RunConfig, TemplateSection
from sftwizard.core.preview import render_preview
from sftwizard.core.templates import TemplateError, encode_examples, resolve_template
from tests.fixtures.families import (
    FAMILY_IDS,
    check_invariants,
    family_conversations,
    make_family_tokenizer,
    save_family_dir,
)
from tests.fixtures.trainer import build_trainer, isolated_home, train_in_process, trained_sequences

# Every family listed in the issue is vendored: none may quietly go missing.
REQUIRED = {"qwen2_5", "qwen3", "qwq", "deepseek_r1_distill", "llama3_1", "llama3_2", "gemma2", "gemma3",
            "mistral_v03", "mistral_nemo", "phi3_5", "phi4", "smollm2", "smollm3", "gpt_oss", "granite3",
            "olmo2", "command_r"}


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    isolated_home(tmp_path_factory)


def test_every_listed_family_is_vendored_with_its_source():
    assert REQUIRED <= set(FAMILY_IDS)
    sources = (FAMILY_IDS and open(__import__("tests.fixtures.families", fromlist=["x"]).FAMILY_DIR / "SOURCES.md")
               .read())
    for family in FAMILY_IDS:
        spec = json.loads((__import__("tests.fixtures.families", fromlist=["x"]).FAMILY_DIR
                           / f"{family}.json").read_text())
        src = spec["source"]["template"]
        assert src["repo"] and src["path"] and len(src["commit"]) == 40, family
        assert f"`{family}`" in sources or f"| {family} " in sources, f"{family} missing from SOURCES.md"


def _variants(family: str):
    tok = make_family_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    systems = [False] if template.behaviour.system == "refused" else [False, True]
    shapes = [None, "content", "reasoning_content", "thinking"] if template.behaviour.reasoning != "none" else [None]
    return [(s, r) for s in systems for r in shapes]


CASES = [(f, s, r) for f in FAMILY_IDS for s, r in _variants(f)]


@pytest.mark.parametrize("family,system,reasoning", CASES,
                         ids=[f"{f}-{'sys' if s else 'nosys'}-{r or 'plain'}" for f, s, r in CASES])
def test_invariants_hold_on_real_templates(family, system, reasoning):
    tok = make_family_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    rows = family_conversations(family, system=system, reasoning=reasoning)
    outs = encode_examples(tok, rows, template, assistant_only_loss=None, completion_only_loss=None, details=True)
    for row, out in zip(rows, outs):
        assert sum(out["assistant_masks"]) > 0
        assert check_invariants(tok, template, row, out) == [], (family, template.source, row)


def test_a_refused_system_message_is_one_sentence_per_row():
    tok = make_family_tokenizer("gemma2")
    template = resolve_template(tok, TemplateSection())
    assert template.behaviour.system == "refused"
    assert any(f["code"] == "system_role_refused" for f in template.behaviour.findings)
    with pytest.raises(TemplateError, match="System role not supported"):
        encode_examples(tok, family_conversations("gemma2", system=True), template,
                        assistant_only_loss=None, completion_only_loss=None)


# --------------------------------------------------------------------------- the trainer proof

@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", FAMILY_IDS)
def test_preview_flags_equal_trainer_labels_on_real_templates(family, packing, tmp_path):
    tok = make_family_tokenizer(family)
    system = resolve_template(tok, TemplateSection()).behaviour.system != "refused"
    reasoning = "content" if family in ("qwen3", "qwq", "deepseek_r1_distill") else None
    examples = family_conversations(family, system=system, reasoning=reasoning)
    cfg = RunConfig()
    cfg.training.max_length = 1024
    cfg.training.packing = packing
    cfg.training.per_device_train_batch_size = 2
    trainer = build_trainer(tok, examples, cfg, tmp_path)
    sequences = trained_sequences(trainer)
    for row in range(len(examples)):
        preview = render_preview(cfg, row, tokenizer=tok, examples=examples)
        ids = [t["id"] for t in preview.tokens if not t.get("truncated")]
        match = [flags for seq, flags in sequences if seq == ids]
        assert match, f"{family} row {row} is not among the trained sequences"
        assert match[0] == preview.trained_flags


@pytest.mark.parametrize("family", ["mistral_nemo", "qwen3", "gpt_oss", "smollm3"])
def test_a_few_real_training_steps(family, tmp_path):
    """The runner's own path, from a model folder with the family's tokenizer and real template."""
    from sftwizard.core.events import read_events

    model_dir = save_family_dir(family, tmp_path / "model", weights=True)
    rows = family_conversations(family, system=True, reasoning="content" if family == "qwen3" else None) * 4
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig()
    cfg.model.id = str(model_dir)
    cfg.data.sources[0].path = str(data)
    cfg.method.type = "full"
    cfg.training.max_steps = 3
    cfg.training.per_device_train_batch_size = 2
    cfg.training.max_length = 1024
    cfg.training.eval_strategy = "no"
    cfg.training.save_strategy = "no"
    cfg.training.logging_steps = 1
    cfg.run.output_root = str(tmp_path / "runs")
    run_dir = train_in_process(cfg)
    events = read_events(run_dir / "events.jsonl")
    assert events[-1]["status"] == "finished"
    assert [e["step"] for e in events if e["event"] == "log" and e.get("loss") is not None][-1] == 3


# --------------------------------------------------------------------------- what the template does, said

def _preview(family, example, **template):
    cfg = RunConfig()
    for k, v in template.items():
        setattr(cfg.template, k, v)
    return render_preview(cfg, 0, tokenizer=make_family_tokenizer(family), examples=[example])


def _trained(preview) -> str:
    return "".join(t["text"] for t in preview.tokens if t["trained"])


def test_mistral_nemo_trains_with_the_system_prompt_where_inference_puts_it():
    """The template writes the system prompt only before the last user turn: a row ending in an answer
    would render without it, so the inferred method found no turn and the row trained nothing."""
    row = family_conversations("mistral_nemo", system=True)[1]
    preview = _preview("mistral_nemo", row)
    assert preview.counts["trained"] > 0 and "no_trained_tokens" not in {p["code"] for p in preview.problems}
    text = preview.text
    last_user = text.rfind("[INST]")
    assert text.find("You are a helpful assistant.") > last_user > 0  # before the last user turn, as served
    assert "A sparrow can fly." in _trained(preview) and "12 + 30 = 42." in _trained(preview)
    assert "system_before_last_user" in {p["code"] for p in preview.problems}


def test_a_template_that_drops_the_system_prompt_is_warned_about():
    tok = make_family_tokenizer("mistral_v03")
    template = resolve_template(tok, TemplateSection())
    if template.behaviour.system == "dropped":
        assert any(f["code"] == "system_prompt_dropped" and f["severity"] == "warning"
                   for f in template.behaviour.findings)
    else:
        assert template.behaviour.system in ("rendered", "last_user")


@pytest.mark.parametrize("family,dated", [("llama3_1", False), ("llama3_2", True), ("qwen2_5", False)])
def test_date_warning_only_when_the_date_changes_with_the_day(family, dated):
    preview = _preview(family, family_conversations(family, system=False)[0])
    assert ("template_injects_date" in {p["code"] for p in preview.problems}) is dated


@pytest.mark.parametrize("family,behaviour", [("qwen3", "last_turn"), ("qwq", "last_turn"),
                                              ("deepseek_r1_distill", "dropped"), ("gpt_oss", "last_turn")])
def test_reasoning_handling_is_reported(family, behaviour):
    template = resolve_template(make_family_tokenizer(family), TemplateSection())
    assert template.behaviour.reasoning == behaviour
    preview = _preview(family, family_conversations(family, system=False, reasoning="content")[1])
    reasoning = [p for p in preview.problems if p["code"] == "reasoning"]
    assert reasoning and "template.reasoning" in reasoning[0]["message"]


def test_qwen3_trains_the_last_turns_reasoning_and_not_earlier_ones():
    single, multi = family_conversations("qwen3", system=False, reasoning="reasoning_content")
    assert "The user asks for a capital" in _trained(_preview("qwen3", single))
    text = _preview("qwen3", multi).text  # reasoning only in turns 1 and 2 of 3: the template drops both
    assert "The user asks for a capital" not in text and "Add the numbers" not in text


def test_reasoning_drop_trains_answers_only():
    row = family_conversations("qwen3", system=False, reasoning="content")[0]
    kept = _preview("qwen3", row)
    dropped = _preview("qwen3", row, reasoning="drop")
    assert "The user asks for a capital" in _trained(kept)
    assert "The user asks for a capital" not in dropped.text
    assert "The capital of France is Paris." in _trained(dropped)


@pytest.mark.parametrize("shape", ["thinking", "reasoning_content", "content"])
def test_every_shape_of_reasoning_reaches_gpt_oss(shape):
    row = family_conversations("gpt_oss", system=False, reasoning=shape)[0]
    preview = _preview("gpt_oss", row)
    assert "The user asks for a capital" in _trained(preview)


def test_reasoning_a_template_cannot_show_is_reported():
    row = family_conversations("llama3_1", system=False, reasoning="reasoning_content")[0]
    preview = _preview("llama3_1", row)
    assert "reasoning_not_rendered" in {p["code"] for p in preview.problems}


def test_cross_check_reason_is_in_preview_json():
    """TRL's copy of the Qwen3 template is the one its training version patches; that version renders
    think blocks in every turn, so the cross-check refuses it and says why."""
    from tests.fixtures.tokenizers import make_tokenizer

    row = family_conversations("qwen3", system=False)[1]
    data = render_preview(RunConfig(), 0, tokenizer=make_tokenizer("qwen3"), examples=[row]).to_dict()
    assert data["template_source"] == "inferred"
    assert "TRL's training template was not used" in data["template_reason"]
    assert data["template"]["behaviour"]["reasoning"] == "last_turn"


def test_docs_templates_md_is_what_the_tests_measure():
    from tests.fixtures.families import DOCS, render_docs

    assert DOCS.read_text(encoding="utf-8") == render_docs(), (
        "docs/templates.md is out of date: run `python -m tests.fixtures.families`")
    assert "INVARIANTS FAIL" not in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("family,expected,absent", [
    ("mistral_v03", {"system_prompt_dropped"}, {"template_injects_date"}),
    ("llama3_2", {"template_injects_date"}, {"system_prompt_dropped"}),
    ("llama3_1", set(), {"template_injects_date", "system_prompt_dropped"}),
    ("mistral_nemo", set(), {"system_prompt_dropped"}),  # rendered as at inference instead
])
def test_doctor_warns_about_what_the_template_does_to_rows(family, expected, absent, tmp_path):
    from sftwizard.core.doctor_inputs import doctor_warnings

    model_dir = save_family_dir(family, tmp_path / "model")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in family_conversations(family, system=True) * 3))
    cfg = RunConfig()
    cfg.model.id = str(model_dir)
    cfg.data.sources[0].path = str(data)
    codes = {w["code"] for w in doctor_warnings(cfg)}
    assert expected <= codes and not (absent & codes), codes
