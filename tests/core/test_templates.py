"""Template resolution and the encode path: markers, TRL's training templates, inferred, ChatML."""

from __future__ import annotations

import pytest

from sftwizard.core.config import RunConfig, TemplateSection
from sftwizard.core.templates import (
    CHATML_TEMPLATE,
    TemplateError,
    build_dataset,
    encode_example,
    resolve_template,
    sft_mask_kwargs,
)
from tests.fixtures.tokenizers import (
    FOREIGN_FAMILIES,
    MULTI,
    NO_TOOL_FAMILIES,
    SINGLE,
    TOOL_CONVERSATION,
    TOOL_FAMILIES,
    TRL_FAMILIES,
    conversations,
    make_tokenizer,
)


def _trained_text(tok, out):
    return tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m])


def _strip_weights(messages):
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


# TRL's training version of these renders exactly what the model's own template renders; for Qwen3
# and the R1 distill it does not (think blocks in every turn), so the cross-check refuses it.
TRL_SAME_TEXT = [f for f in TRL_FAMILIES if f not in ("qwen3", "deepseek_r1_distill")]


@pytest.mark.parametrize("family", TRL_SAME_TEXT)
def test_auto_uses_trl_training_template_and_matches_apply_chat_template(family):
    """Same tokens as apply_chat_template; same mask, less the assistant header TRL's markers may cover."""
    tok = make_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    assert template.source == "trl-training" and template.has_generation_markers
    header = template.behaviour.header
    for example in SINGLE + MULTI[:2]:
        example = conversations(family)[(SINGLE + MULTI).index(example)]
        out = encode_example(tok, example, template, assistant_only_loss=True, completion_only_loss=None)
        ref = tok.apply_chat_template(example["messages"], chat_template=template.template, return_dict=True,
                                      return_assistant_tokens_mask=True)
        assert out["input_ids"] == ref["input_ids"]
        expected = list(ref["assistant_masks"])
        expected[0] = 0
        untrained = [i for i, (a, b) in enumerate(zip(out["assistant_masks"], expected)) if a != b]
        assert all(expected[i] == 1 and out["assistant_masks"][i] == 0 for i in untrained)
        dropped = tok.decode([out["input_ids"][i] for i in untrained])
        turns = sum(1 for m in example["messages"] if m["role"] == "assistant")
        assert dropped == ((header or "") * turns if untrained else ""), (family, dropped, header)


@pytest.mark.parametrize("family", ["qwen3", "deepseek_r1_distill"])
def test_trl_training_template_that_renders_other_text_is_refused(family):
    tok = make_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    assert template.source == "inferred" and template.template == tok.chat_template
    assert "TRL's training template was not used" in template.reason


def test_tokenizer_template_with_markers_is_used_as_is():
    tok = make_tokenizer("base")
    tok.chat_template = CHATML_TEMPLATE
    template = resolve_template(tok, TemplateSection())
    assert template.source == "tokenizer" and template.method == "markers"
    out = encode_example(tok, SINGLE[0], template, assistant_only_loss=None, completion_only_loss=None)
    assert _trained_text(tok, out) == "The capital of France is Paris.<|im_end|>"


@pytest.mark.parametrize("family", FOREIGN_FAMILIES)
def test_templates_trl_cannot_patch_are_inferred(family):
    tok = make_tokenizer(family)
    from trl.chat_template_utils import get_training_chat_template

    with pytest.raises(ValueError):
        get_training_chat_template(tok)
    template = resolve_template(tok, TemplateSection())
    assert template.source == "inferred" and template.method == "inferred"
    out = encode_example(tok, conversations(family)[1], template, assistant_only_loss=True, completion_only_loss=None)
    trained = _trained_text(tok, out)
    assert "12 + 30 = 42." in trained and "A sparrow can fly." in trained
    assert trained.count(tok.eos_token) == 2  # each turn's end-of-turn token is trained
    assert "Please add" not in trained and "Name an animal" not in trained


# Tokens TRL's training templates put inside {% generation %} that the generation prompt already
# supplies (so the model never produces them at inference) — the only allowed difference.
HEADER_TOKENS = {"qwen2_5": {"\n"}, "deepseekv3": {"<｜Assistant｜>"}, "deepseek_r1_distill": {"<｜Assistant｜>"}}


@pytest.mark.parametrize("family", TRL_FAMILIES)
def test_inferred_method_agrees_with_trl_masks(family):
    """On every template TRL can patch, our template-agnostic method finds the same assistant tokens."""
    tok = make_tokenizer(family)
    trl_tpl = resolve_template(tok, TemplateSection(source="trl-training"))
    inferred = resolve_template(tok, TemplateSection(source="inferred"))
    assert inferred.method == "inferred"
    inferred_on_trl = type(inferred)("inferred", trl_tpl.template, False)  # same text, markers unused
    tools = [TOOL_CONVERSATION] if family in TOOL_FAMILIES else []
    for example in conversations(family) + tools:
        ours = encode_example(tok, example, inferred_on_trl, assistant_only_loss=True, completion_only_loss=None)
        theirs = encode_example(tok, example, trl_tpl, assistant_only_loss=True, completion_only_loss=None)
        assert ours["input_ids"] == theirs["input_ids"]
        diff = [i for i, (a, b) in enumerate(zip(ours["assistant_masks"], theirs["assistant_masks"])) if a != b]
        extra = {tok.decode([ours["input_ids"][i]]) for i in diff}
        assert extra <= HEADER_TOKENS.get(family, set()), f"{family}: masks differ on {extra}"
        assert all(theirs["assistant_masks"][i] == 1 for i in diff)  # only TRL's header tokens
        # and on the original template (what users have), the trained text is the same
        own = encode_example(tok, example, inferred, assistant_only_loss=True, completion_only_loss=None)
        assert _trained_text(tok, own).replace("<think>\n\n</think>\n\n", "") == \
            _trained_text(tok, ours).replace("<think>\n\n</think>\n\n", "")


@pytest.mark.parametrize("family", TOOL_FAMILIES)
def test_tool_calls_are_trained_and_tool_results_are_not(family):
    tok = make_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    out = encode_example(tok, TOOL_CONVERSATION, template, assistant_only_loss=True, completion_only_loss=None)
    trained = _trained_text(tok, out)
    assert "get_weather" in trained and '"city"' in trained  # the call the assistant makes
    assert "sunny<" not in trained.replace("The weather today is sunny.", "")  # not the tool's result
    assert "The weather today is sunny." in trained


@pytest.mark.parametrize("family", NO_TOOL_FAMILIES)
def test_template_without_tool_support_refuses_tool_call_rows(family):
    """Llama 3.0 / Phi-3 render a tool-calling turn as an empty answer: a row problem, never silent."""
    tok = make_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    with pytest.raises(TemplateError, match="does not render tool calls.*'get_weather'"):
        encode_example(tok, TOOL_CONVERSATION, template, assistant_only_loss=True, completion_only_loss=None)
    cfg = RunConfig()
    cfg.data.on_bad_rows = "drop"
    report: list = []
    ds = build_dataset(tok, [TOOL_CONVERSATION, SINGLE[0]], template, cfg, report=report)
    assert len(ds) == 1 and [p.row for p in report if p.code == "template_error"] == [0]


def test_no_chat_template_offers_chatml_with_consequences():
    tok = make_tokenizer("base")
    template = resolve_template(tok, TemplateSection())
    assert template.source == "none"
    with pytest.raises(TemplateError, match="template.source: chatml"):
        encode_example(tok, SINGLE[0], template, assistant_only_loss=None, completion_only_loss=None)
    chatml = resolve_template(tok, TemplateSection(source="chatml"))
    assert chatml.source == "chatml"
    assert any("embedding" in n for n in chatml.notes)
    out = encode_example(tok, SINGLE[0], chatml, assistant_only_loss=None, completion_only_loss=None)
    assert "Paris" in _trained_text(tok, out)


def test_user_jinja_file(tmp_path):
    tok = make_tokenizer("qwen2_5")
    path = tmp_path / "t.jinja"
    path.write_text(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim + '<|im_end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    template = resolve_template(tok, TemplateSection(source="file", path=str(path)))
    assert template.source == "file" and template.method == "inferred"
    out = encode_example(tok, SINGLE[0], template, assistant_only_loss=True, completion_only_loss=None)
    assert _trained_text(tok, out) == "The capital of France is Paris.<|im_end|>"
    (tmp_path / "bad.jinja").write_text("{% for %}")
    with pytest.raises(TemplateError, match="not a valid Jinja template"):
        resolve_template(tok, TemplateSection(source="file", path=str(tmp_path / "bad.jinja")))


def test_loss_kinds_text_and_prompt_completion():
    tok = make_tokenizer("llama3")
    template = resolve_template(tok, TemplateSection())
    text = encode_example(tok, {"text": "The quick brown fox."}, template,
                          assistant_only_loss=None, completion_only_loss=None)
    assert text["input_ids"][0] == tok.bos_token_id and text["input_ids"][-1] == tok.eos_token_id
    assert text["assistant_masks"] == [0] + [1] * (len(text["input_ids"]) - 1)
    pc = encode_example(tok, {"prompt": "Translate hello to Spanish.", "completion": " Hola."}, template,
                        assistant_only_loss=None, completion_only_loss=None)
    assert _trained_text(tok, pc) == " Hola." + tok.eos_token
    conv = {"prompt": [{"role": "user", "content": "Translate hello to Spanish."}],
            "completion": [{"role": "assistant", "content": "Hola."}]}
    out = encode_example(tok, conv, template, assistant_only_loss=None, completion_only_loss=None)
    assert _trained_text(tok, out) == "Hola.<|eot_id|>"
    with pytest.raises(TemplateError, match="needs conversational data"):
        encode_example(tok, {"text": "x"}, template, assistant_only_loss=True, completion_only_loss=None)


def test_system_prompt_is_added_when_missing():
    tok = make_tokenizer("llama3")
    template = resolve_template(tok, TemplateSection())
    out = encode_example(tok, SINGLE[0], template, assistant_only_loss=True, completion_only_loss=None,
                         system_prompt="Answer briefly.")
    assert "Answer briefly." in tok.decode(out["input_ids"])


def test_build_dataset_and_mask_kwargs():
    tok = make_tokenizer("mistral")
    cfg = RunConfig()
    template = resolve_template(tok, cfg.template)
    ds = build_dataset(tok, conversations("mistral"), template, cfg)
    assert ds.column_names == ["input_ids", "assistant_masks"] and len(ds) == 4
    kwargs = sft_mask_kwargs(cfg, template)
    assert kwargs["assistant_only_loss"] is False and kwargs["completion_only_loss"] is False
    bad = [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "again"}]}]
    with pytest.raises(TemplateError, match="row 0: the chat template refused"):
        build_dataset(tok, bad + conversations("mistral"), template, cfg)
    cfg.data.on_bad_rows = "drop"
    report = []
    ds = build_dataset(tok, bad + conversations("mistral"), template, cfg, report=report)
    assert len(ds) == 4 and report[0].row == 0 and "alternate" in report[0].message


def test_templates_offered_to_a_base_model():
    from sftwizard.core.templates import offer_templates

    tok = make_tokenizer("base")
    offers = {o["name"]: o for o in offer_templates(tok)}
    assert set(offers) == {"chatml", "plain"}
    plain = resolve_template(tok, TemplateSection(source=offers["plain"]["source"], path=offers["plain"]["path"]))
    assert plain.source == "file" and plain.has_generation_markers
    before = len(tok)
    out = encode_example(tok, MULTI[0], plain, assistant_only_loss=None, completion_only_loss=None)
    assert len(tok) == before  # no new tokens
    assert _trained_text(tok, out) == "12 + 30 = 42.<|endoftext|>A sparrow can fly.<|endoftext|>"
    assert "no new tokens" in offers["plain"]["consequences"][0]


def test_inferred_method_on_templates_that_are_not_prefix_preserving():
    """Qwen3 re-renders earlier turns once a later user turn follows; DeepSeek-R1's generation
    prompt opens <think> that rendered turns drop. Turns are still found, and it is said how."""
    from sftwizard.core.config import RunConfig
    from sftwizard.core.preview import render_preview

    cfg = RunConfig()
    cfg.template.source = "inferred"
    for family, code in (("qwen3", "not_prefix_preserving"), ("deepseek_r1_distill", "generation_prompt_differs")):
        tok = make_tokenizer(family)
        preview = render_preview(cfg, 0, tokenizer=tok, examples=[conversations(family)[1]])
        trained = "".join(t["text"] for t in preview.tokens if t["trained"])
        assert "12 + 30 = 42." in trained and "A sparrow can fly." in trained
        assert "Please add" not in trained and trained.count(tok.eos_token) == 2
        assert code in {p["code"] for p in preview.problems}
