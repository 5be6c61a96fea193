"""Merge a real LoRA demo run, chat with it (stop check included), and push with the Hub unreachable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sftwizard.core.config import apply_overrides, load_preset
from sftwizard.core.events import read_events
from tests.fixtures.trainer import train_in_process

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def lora_run(repo_root, builtin_model_dir, tmp_path_factory) -> Path:
    """A real LoRA run of the demo (short), trained by the runner in this process."""
    cfg = apply_overrides(load_preset(repo_root / "presets" / "demo.yaml"), [
        "method.type=lora", "method.lora_r=8", "method.lora_alpha=16", "method.lora_dropout=0.0",
        "training.max_steps=15", "training.logging_steps=5", "training.per_device_train_batch_size=8",
        "training.max_length=128", "training.learning_rate=5e-3", "training.save_strategy=no",
        "training.eval_strategy=no", f"run.output_root={tmp_path_factory.mktemp('runs')}",
    ])
    run_dir = train_in_process(cfg)
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "finished"
    assert (run_dir / "final" / "adapter_config.json").exists()
    return run_dir


@pytest.fixture(scope="module")
def merged_dir(lora_run) -> Path:
    from sftwizard.core.merge import merge_run

    return merge_run(lora_run)


def test_merged_logits_equal_the_peft_models(lora_run, merged_dir, builtin_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged_dir)
    batch = tok(["Uppercase this: earth cloud", "What is 1 + 36?"], return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(builtin_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(**batch).logits
        peft_logits = PeftModel.from_pretrained(base, lora_run / "final").eval()(**batch).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        merged_logits = merged(**batch).logits
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (peft_logits - base_logits).abs().max() > 1e-3  # the adapter changed the model...
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=1e-4)  # ...and merging kept it
    # model + tokenizer + the training chat template, and generation stops at end-of-turn
    assert (merged_dir / "tokenizer.json").exists()
    assert tok.chat_template and "generation" in tok.chat_template
    gen = json.loads((merged_dir / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in ([gen["eos_token_id"]] if isinstance(gen["eos_token_id"], int)
                                                      else gen["eos_token_id"])


def test_end_of_turn_token_is_found_from_the_template(builtin_model_dir):
    from sftwizard.core.chat import end_of_turn_token, stop_token_ids
    from sftwizard.core.models import load_tokenizer

    tok = load_tokenizer(builtin_model_dir)
    assert end_of_turn_token(tok) == "<|im_end|>"
    assert stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_chat_with_the_merged_model_and_the_stop_check(merged_dir):
    from sftwizard.core.chat import load_path_model, stop_check

    chat = load_path_model(merged_dir)
    reply = chat.generate(PROMPT, max_new_tokens=24)
    assert reply.new_tokens > 0 and reply.text
    # a budget too short to finish: the stop check must flag it
    cut = chat.generate(PROMPT, max_new_tokens=1)
    if not cut.stopped:
        report = stop_check([cut], chat, 1)
        assert not report.ok and report.never_stopped == [0]
        assert "never emitted an end-of-turn token (<|im_end|>)" in report.message
    # a token the model does emit, declared a stop token: the answer ends there and passes
    if not reply.stopped and len(reply.token_ids) > 3:
        chat.stop_ids = [*chat.stop_ids, reply.token_ids[2]]
        reply = chat.generate(PROMPT, max_new_tokens=24)
        assert reply.stopped and reply.new_tokens <= 3
    assert stop_check([reply], chat).ok


def test_cli_chat_prompt_json_and_compare(lora_run, merged_dir, capsys):
    from sftwizard.cli.main import main

    assert main(["chat", str(lora_run), "--prompt", "What is 2 + 3?", "--max-new-tokens", "12", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model"].endswith("(merged)") and payload["reply"]["new_tokens"] > 0
    assert set(payload["stop_check"]) >= {"ok", "never_stopped", "message"}
    assert main(["chat", str(lora_run), "--compare", "--limit", "2", "--max-new-tokens", "12", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rows = payload["comparisons"]
    assert len(rows) == 2 and all(r["reference"] and r["prompt"][-1]["role"] == "user" for r in rows)
    assert any(r["base"]["text"] != r["tuned"]["text"] for r in rows)
    assert payload["base"].startswith("builtin:tiny-chat")


def test_chat_with_an_unmerged_adapter_run(lora_run, tmp_path):
    """Without `merge`, chat merges the adapter in memory; same greedy answer as the merged model."""
    from sftwizard.core.chat import load_chat_model, load_path_model

    copy = tmp_path / lora_run.name
    shutil.copytree(lora_run, copy, ignore=shutil.ignore_patterns("merged"))
    in_memory = load_chat_model(copy)
    assert "adapter merged in memory" in in_memory.description
    assert in_memory.generate(PROMPT, max_new_tokens=8).text == \
        load_path_model(lora_run / "merged").generate(PROMPT, max_new_tokens=8).text


def test_compare_holds_one_copy_of_an_adapter_runs_weights(lora_run, merged_dir):
    """chat --compare on a LoRA run: base and tuned share one model (adapter switched off for the
    base), and each answers exactly as the separately loaded base / merged model does."""
    from sftwizard.core.chat import load_chat_model, load_compare_pair, load_path_model

    base, tuned = load_compare_pair(lora_run)
    assert base.model is tuned.model and base.adapter_off and not tuned.adapter_off
    separate_base = load_chat_model(lora_run, base=True)
    assert base.generate(PROMPT, max_new_tokens=8).token_ids == separate_base.generate(PROMPT, max_new_tokens=8).token_ids
    merged = load_path_model(merged_dir)
    assert tuned.generate(PROMPT, max_new_tokens=8).text == merged.generate(PROMPT, max_new_tokens=8).text


def test_merge_of_a_full_run_is_one_sentence(tmp_path, builtin_model_dir, capsys):
    from sftwizard.cli.main import main
    from sftwizard.core.config import RunConfig, save_preset

    run_dir = tmp_path / "full-run"
    shutil.copytree(builtin_model_dir, run_dir / "final")
    save_preset(RunConfig(), run_dir / "config.yaml")
    cfg = load_preset(run_dir / "config.yaml")
    cfg.method.type = "full"
    save_preset(cfg, run_dir / "config.yaml")
    assert main(["merge", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no adapter to merge" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- hub

SECRET = "hf_sftwTestSecret0123456789abcdef"


def _all_text_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_push_with_the_hub_unreachable_is_one_sentence_and_leaks_no_token(lora_run, merged_dir, monkeypatch,
                                                                          capsys, sftw_home):
    import huggingface_hub.constants as hf_constants

    from sftwizard.cli.main import main

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert main(["push", str(lora_run), "--repo", "someone/tiny-chat-demo"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("sft-wizard: error: cannot reach the Hugging Face Hub") and "nothing was pushed" in err
    assert len(err.splitlines()) == 1
    assert SECRET not in captured.out + captured.err
    assert SECRET.encode() not in _all_text_under(lora_run)
    assert SECRET.encode() not in _all_text_under(sftw_home / "data")


def test_push_logged_out_and_offline(lora_run, merged_dir, monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    from sftwizard.core.hub import HubError, folder_to_push, push

    assert folder_to_push(lora_run) == (merged_dir, "merged")
    assert folder_to_push(lora_run, "adapter") == (lora_run / "final", "adapter")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match="not logged in"):
        push(lora_run, "someone/x")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE") as err:
        push(lora_run, "someone/x")
    assert SECRET not in str(err.value)


def test_a_qlora_adapter_merges_into_a_16_bit_base(lora_run, tmp_path):
    """QLoRA's base is loaded again unquantized, in its 16-bit compute dtype, for the merge."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sftwizard.core.config import save_preset
    from sftwizard.core.merge import merge_run
    from sftwizard.core.models import resolve_model

    copy = tmp_path / "qlora-run"
    shutil.copytree(lora_run, copy, ignore=shutil.ignore_patterns("merged"))
    cfg = load_preset(copy / "config.yaml")
    cfg.method.type = "qlora"  # the adapter files of a QLoRA run are LoRA files; its base was 4-bit
    save_preset(cfg, copy / "config.yaml")
    out = merge_run(copy)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model.id).path, dtype=torch.bfloat16)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, copy / "final").eval()(ids).logits.float()
        got = merged(ids).logits.float()
    torch.testing.assert_close(got, expected, atol=0.1, rtol=0.05)  # bf16 rounding of the merged weights


def test_merge_of_a_chatml_lora_run_on_a_base_model(tmp_path):
    """ChatML added tokens and LoRA trained the grown embeddings: the merge grows the base the same way."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from sftwizard.core.config import config_from_dict
    from sftwizard.core.merge import merge_run
    from tests.fixtures.tokenizers import conversations, save_model_dir

    model_dir = save_model_dir("base", tmp_path / "base", weights=True)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversations("qwen2_5")), encoding="utf-8")
    cfg = config_from_dict({
        "model": {"id": str(model_dir), "dtype": "fp32"}, "data": {"sources": [{"path": str(data)}]},
        "method": {"type": "lora", "lora_r": 4}, "template": {"source": "chatml"},
        "training": {"max_length": 128, "max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 2,
                     "learning_rate": 1e-2},
        "run": {"output_root": str(tmp_path / "runs")}})
    run_dir = train_in_process(cfg)
    merged_dir = merge_run(run_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(merged.get_input_embeddings().weight.shape[0])
    ids = torch.tensor([[1, 5, 9, merged.get_input_embeddings().weight.shape[0] - 1]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, run_dir / "final").eval()(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-4, rtol=1e-4)
