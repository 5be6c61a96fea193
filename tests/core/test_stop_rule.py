"""One rule for what ends an assistant turn (core/stop_tokens.py) and one held-out-prompt builder
(core/held_out.py), on the real chat templates of the families people fine-tune.

Before: the preview and the audit counted any added token or EOS as a turn end, chat counted EOS
and the template's end-of-turn, and ``report`` only EOS and the model's generation EOS — so for a
family whose turn ends with a token that is not its EOS (Gemma's ``<end_of_turn>``, Phi-3.5's
``<|end|>``) the preview said "the end-of-turn is trained" while the report said every answer "did
not stop". And ``report`` generated without the training system prompt.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from sftwizard.core.config import DataSource, RunConfig, TemplateSection, save_preset
from sftwizard.core.stop_tokens import BlankTokens, end_of_turn_token, stop_index, stop_token_ids, stop_token_trained
from tests.fixtures.families import FAMILY_IDS, family_conversations, make_family_tokenizer, save_family_dir

CORE = Path(__file__).resolve().parents[2] / "core"
# families whose assistant turn ends with a token that is not the tokenizer's EOS
TURN_END_NOT_EOS = {"gemma2": "<end_of_turn>", "gemma3": "<end_of_turn>", "gemma4": "<turn|>", "phi3_5": "<|end|>"}


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_the_token_that_ends_a_trained_turn_is_a_stop_token_for_every_family(family):
    from sftwizard.core.audit import audit_dataset
    from sftwizard.core.preview import render_preview
    from sftwizard.core.templates import encode_examples, resolve_template

    tok = make_family_tokenizer(family)
    template = resolve_template(tok, TemplateSection())
    rows = family_conversations(family, system=False)
    stop = stop_token_ids(tok, template.template)
    blank = BlankTokens(tok)
    for out in encode_examples(tok, rows, template, assistant_only_loss=None, completion_only_loss=None):
        assert stop_token_trained(out["input_ids"], out["assistant_masks"], stop, blank), family
    cfg = RunConfig()
    preview = render_preview(cfg, 1, tokenizer=tok, examples=rows, template=template)
    assert "eos_not_trained" not in {p["code"] for p in preview.problems}
    assert audit_dataset(tok, rows, template, cfg)["eos_coverage"] == 1.0
    if family in TURN_END_NOT_EOS:  # where the rules used to disagree
        assert end_of_turn_token(tok, template.template) == TURN_END_NOT_EOS[family] != tok.eos_token
        eot = tok.convert_tokens_to_ids(TURN_END_NOT_EOS[family])
        words = tok("Paris is", add_special_tokens=False)["input_ids"]
        assert eot in stop and stop_index(words + [eot] + words, stop) == len(words)


def test_chats_never_trained_hint_is_the_preview_rule():
    """chat's "this template leaves the end-of-turn outside the mask" hint (it asked TRL's helper)
    now asks stop_tokens, and agrees with the preview on the same template."""
    from sftwizard.core.chat import stop_check
    from sftwizard.core.chat_model import ChatModel, Reply
    from sftwizard.core.preview import render_preview
    from sftwizard.core.stop_tokens import end_of_turn_trained
    from tests.fixtures.tokenizers import CHATML_MARKERS_CONTENT_ONLY, SINGLE, make_tokenizer

    tok = make_tokenizer("qwen2_5")
    assert end_of_turn_trained(tok, CHATML_MARKERS_CONTENT_ONLY) is False
    assert end_of_turn_trained(tok, tok.chat_template) is None  # no markers: the turn is inferred, end included
    tok.chat_template = CHATML_MARKERS_CONTENT_ONLY
    assert "eos_not_trained" in {p["code"] for p in render_preview(RunConfig(), 0, tokenizer=tok, examples=SINGLE).problems}
    chat = ChatModel(None, tok, CHATML_MARKERS_CONTENT_ONLY, "probe", stop_token_ids(tok, CHATML_MARKERS_CONTENT_ONLY))
    report = stop_check([Reply("Paris", 4, False, None)], chat, 4)
    assert not report.ok and "outside the assistant mask" in report.message
    good = make_family_tokenizer("qwen2_5")
    from sftwizard.core.templates import resolve_template

    assert end_of_turn_trained(good, resolve_template(good, TemplateSection()).template) is True


def test_a_generation_that_never_emits_a_stop_token_did_not_stop():
    tok = make_family_tokenizer("phi3_5")
    stop = stop_token_ids(tok)
    assert stop_index(tok("Paris is", add_special_tokens=False)["input_ids"], stop) is None
    assert stop_index([], stop) is None
    # the trained rule reads past whitespace to the last real token, and only a stop token counts
    space = tok(" ", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|end|>")
    word = tok("Paris", add_special_tokens=False)["input_ids"]
    assert stop_token_trained(word + [end] + space, [1] * (len(word) + 1 + len(space)), stop, BlankTokens(tok))
    assert not stop_token_trained(word + [end], [1] * len(word) + [0], stop, BlankTokens(tok))


@pytest.mark.parametrize("module", ["preview", "audit", "chat", "chat_model", "samples", "report", "merge"])
def test_every_caller_asks_the_one_rule(module):
    """No caller keeps a stop rule of its own: they import stop_tokens (or chat, which does) and none
    reads EOS ids or the added vocabulary to decide what ends a turn."""
    tree = ast.parse((CORE / f"{module}.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported & {"stop_tokens", "chat"}, module
    reads = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)}
    assert not reads & {"eos_token_id", "get_added_vocab"}, module


# --------------------------------------------------------------------------- a run the report answers for

def _always_ends_its_turn(tok, token: str):
    """A real tiny Llama whose every next token is ``token`` (a model that learned to stop at once):
    the layers add nothing, every embedding is the same vector, and only ``token``'s output row
    points along it."""
    import torch

    from tests.fixtures.tokenizers import tiny_llama

    model = tiny_llama(tok)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.convert_tokens_to_ids(token)] = 10.0
    model.generation_config.eos_token_id = tok.eos_token_id  # as the base model declares it: EOS only
    return model


SYSTEM = "You are a terse geography tutor."


def _run_dir(tmp_path: Path, family: str, token: str) -> Path:
    from sftwizard.core.events import EventWriter

    model_dir = save_family_dir(family, tmp_path / "model")
    tok = make_family_tokenizer(family)
    run = tmp_path / "runs" / "20260101-000000-stop"
    _always_ends_its_turn(tok, token).save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    rows = [{"messages": [{"role": "user", "content": f"Capital number {i}?"},
                          {"role": "assistant", "content": f"City {i}."}]} for i in range(4)]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RunConfig()
    cfg = cfg.replace(
        model=cfg.model.__class__(id=str(model_dir)),
        method=cfg.method.__class__(type="full"),
        template=TemplateSection(system_prompt=SYSTEM),
        data=cfg.data.__class__(sources=[DataSource(path=str(data))], eval_source=DataSource(path=str(data))),
    )
    save_preset(cfg, run / "config.yaml")
    w = EventWriter(run / "events.jsonl")
    w.emit("start", 0)
    w.emit("end", 1, status="finished", final_dir=str(run / "final"))
    w.close()
    return run


def test_report_stops_where_chat_stops_and_prompts_with_the_training_system_prompt(tmp_path):
    """phi3_5 ends a turn with <|end|>, its EOS is <|endoftext|>: the report used to generate past
    <|end|> to the token limit and call it 'did not stop', and left the system prompt out."""
    from sftwizard.core.chat import eval_prompts, load_chat_model
    from sftwizard.core.config import load_preset
    from sftwizard.core.report import build_report
    from sftwizard.core.samples import sample_prompts

    run = _run_dir(tmp_path, "phi3_5", "<|end|>")
    report = build_report(run, generations=2, max_new_tokens=5)
    assert report["generation_error"] is None and len(report["generations"]) == 2
    for g in report["generations"]:
        assert g["stopped"] and g["new_tokens"] == 1, g
        assert g["prompt"][0] == {"role": "system", "content": SYSTEM}
        assert g["prompt"][-1]["role"] == "user" and g["reference"].startswith("City ")
    chat = load_chat_model(run)
    reply = chat.generate(report["generations"][0]["prompt"], max_new_tokens=5)
    assert reply.stopped and reply.stop_token == "<|end|>"
    # one builder: chat --compare, the samples taken while training and the report ask the same prompts
    cfg = load_preset(run / "config.yaml")
    assert [p.messages for p in eval_prompts(cfg, 2)] == [g["prompt"] for g in report["generations"]]
    samples = sample_prompts([json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()],
                             SYSTEM, 4)
    assert [s.messages for s in samples[:2]] == [g["prompt"] for g in report["generations"]]


def test_held_out_prompts_keep_the_datas_own_system_prompt_and_plain_prompts():
    from sftwizard.core.held_out import held_out_prompts
    from sftwizard.core.masks import _conversation

    own = {"messages": [{"role": "system", "content": "Own."}, {"role": "user", "content": "Q"},
                        {"role": "assistant", "content": "A"}]}
    bare = {"messages": [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "weight": 1}]}
    pc = {"prompt": [{"role": "user", "content": "Q3"}], "completion": [{"role": "assistant", "content": "A3"}]}
    text = {"prompt": "2 + 2 =", "completion": " 4"}
    no_answer = {"messages": [{"role": "user", "content": "alone"}]}
    got = held_out_prompts([own, bare, pc, text, no_answer], "Sys.")
    assert [p.messages for p in got[:3]] == [
        [{"role": "system", "content": "Own."}, {"role": "user", "content": "Q"}],
        [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Q2"}],
        [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Q3"}],
    ]
    assert [p.reference for p in got] == ["A", "A2", "A3", " 4"]
    assert got[3].messages is None and got[3].text == "2 + 2 =" and got[3].last_user == "2 + 2 ="
    # the prompt is exactly the start of what training renders for the row
    for row, prompt in zip((own, bare, pc), got):
        assert _conversation(row, "Sys.")[0][:len(prompt.messages)] == prompt.messages
    assert len(held_out_prompts([own, text], None, conversations_only=True)) == 1
