"""Export to `trl sft`: only TRL's keys, the data next to it, and `trl sft --config` really trains."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftwizard.core.config import apply_overrides, load_preset
from sftwizard.core.export import ExportError, build_trl_export, export_trl, trl_sft_keys

TRL = Path(sys.executable).parent / "trl"


def demo_cfg(repo_root: Path, *overrides: str):
    return apply_overrides(load_preset(repo_root / "presets" / "demo.yaml"), list(overrides))


def trl_parse(path: Path):
    """TRL's own parser on the file: (its dataclasses, keys it would not take)."""
    from trl.scripts.sft import make_parser

    *parsed, config_remaining, _ = make_parser().parse_args_and_config(
        ["--config", str(path)], return_remaining_strings=True, separate_remaining_strings=True)
    return parsed, config_remaining


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo_export(repo_root, builtin_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "demo-trl.yaml"
    cfg = demo_cfg(repo_root, "training.max_steps=6", "training.logging_steps=1", "training.eval_steps=6",
                   "training.save_strategy=no", "training.per_device_train_batch_size=8",
                   "training.max_length=128")
    return build_trl_export(cfg, out, source="presets/demo.yaml"), builtin_model_dir


def test_demo_export_holds_only_trl_keys_and_its_data(demo_export):
    result, model_dir = demo_export
    text = result.config_path.read_text(encoding="utf-8")
    assert text.startswith("# trl sft config exported by sft-wizard")
    assert "Differences from `sft-wizard run`:" in text and "events.jsonl" in text
    config = yaml.safe_load(text)
    assert set(config) <= trl_sft_keys()
    (script, training, model, _mixture), remaining = trl_parse(result.config_path)
    assert remaining == []  # trl would reject any unknown key here
    # the builtin model by its resolved local folder; the demo data converted next to the YAML
    assert model.model_name_or_path == str(model_dir.resolve())
    assert Path(script.dataset_name) == result.data_dir and result.data_mode == "messages"
    train = read_jsonl(result.data_dir / "train.jsonl")
    test = read_jsonl(result.data_dir / "test.jsonl")
    assert (len(train), len(test)) == (1200, 64) == (result.train_rows, result.eval_rows)
    assert train[0]["messages"][-1]["role"] == "assistant"
    # our loss choice is TRL's here: the builtin template has {% generation %} markers
    assert training.assistant_only_loss is True and training.completion_only_loss is False
    assert (training.max_steps, training.learning_rate, training.max_length) == (6, 3e-3, 128)
    assert model.dtype == "float32" and training.use_cpu is True


def test_trl_sft_runs_the_exported_demo_as_is(demo_export, tmp_path):
    """`trl sft --config OUT.yaml`, the real console script: it trains, logs loss, saves the model."""
    result, _ = demo_export
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_DATASETS_CACHE": str(tmp_path / "ds-cache")}
    out = subprocess.run([str(TRL), "sft", "--config", str(result.config_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    logs = [ast.literal_eval(m) for m in re.findall(r"\{'loss': [^}]*\}", out.stdout + out.stderr)]
    losses = [float(entry["loss"]) for entry in logs]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses), losses
    assert min(losses[-2:]) < losses[0], losses
    assert re.search(r"\{'eval_loss': '[0-9.]+'", out.stdout + out.stderr)  # the test split was used
    output_dir = Path(result.config["output_dir"])
    assert (output_dir / "model.safetensors").exists() and (output_dir / "tokenizer.json").exists()


def test_trl_renders_the_exported_messages_into_the_wizards_tokens(demo_export, repo_root):
    """messages mode is only chosen when TRL's own rendering and masking equal ours: check it, row by row."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from sftwizard.core import templates
    from sftwizard.core.models import load_tokenizer
    from sftwizard.core.runner import resolve_data

    result, model_dir = demo_export
    (script, training, model_args, _), _ = trl_parse(result.config_path)
    rows = load_dataset(script.dataset_name, split="train").select(range(24))
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path),
                         args=training, train_dataset=rows, eval_dataset=rows.select(range(2)))
    theirs = trainer.train_dataset
    cfg = demo_cfg(repo_root, "training.max_length=128")
    tok = load_tokenizer(model_dir)
    ours = templates.build_dataset(tok, resolve_data(cfg)[0][:24], templates.resolve_template(tok, cfg.template), cfg)
    assert len(theirs) == len(ours) == 24
    for t, ids, mask in zip(theirs, ours["input_ids"], ours["assistant_masks"]):
        assert t["input_ids"] == ids[:128]
        assert t["labels"] == [i if m else -100 for i, m in zip(ids, mask)][:128]


def test_alpaca_and_mapped_columns_are_exported_converted(builtin_model_dir, tmp_path):
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("\n".join(json.dumps({"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)})
                                 for i in range(6)) + "\n")
    mapped = tmp_path / "qa.csv"
    mapped.write_text("question,answer\nWhat is up?,The sky.\nName a color.,Blue.\n")
    cfg = apply_overrides(load_preset(Path(__file__).resolve().parents[2] / "presets" / "demo.yaml"), [
        f"data.sources.0.path={alpaca}", "data.eval_source=null", "training.eval_strategy=no"])
    cfg.data.sources.append(type(cfg.data.sources[0])(path=str(mapped), columns={"user": "question",
                                                                                  "assistant": "answer"}))
    result = build_trl_export(cfg, tmp_path / "conv.yaml")
    rows = read_jsonl(result.data_dir / "train.jsonl")
    assert result.data_mode == "messages" and len(rows) == 8 and not (result.data_dir / "test.jsonl").exists()
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "0"}
    assert rows[-1]["messages"][0]["content"] == "Name a color." and rows[-1]["messages"][-1]["content"] == "Blue."
    assert result.config["eval_strategy"] == "no" and trl_parse(result.config_path)[1] == []


def test_tokens_mode_holds_the_wizards_exact_tokens_and_masks(repo_root, builtin_model_dir, tmp_path):
    from sftwizard.core import templates
    from sftwizard.core.models import load_tokenizer
    from sftwizard.core.runner import resolve_data

    cfg = demo_cfg(repo_root, "training.max_length=128")
    result = build_trl_export(cfg, tmp_path / "t.yaml", data_mode="tokens")
    rows = read_jsonl(result.data_dir / "train.jsonl")
    tok = load_tokenizer(builtin_model_dir)
    train, _, _ = resolve_data(cfg)
    expected = templates.build_dataset(tok, train[:3], templates.resolve_template(tok, cfg.template), cfg)
    assert [r["input_ids"] for r in rows[:3]] == expected["input_ids"]
    assert [r["assistant_masks"] for r in rows[:3]] == expected["assistant_masks"]
    assert result.config["assistant_only_loss"] is False  # TRL takes our masks as they are
    assert "pre-tokenized" in result.config_path.read_text()
    assert trl_parse(result.config_path)[1] == []


def test_a_template_without_markers_is_exported_as_tokens(repo_root, builtin_model_dir, tmp_path):
    """Our inferred assistant masks cannot be said in TRL's config: auto picks tokens and says why."""
    model = tmp_path / "model"
    shutil.copytree(builtin_model_dir, model)
    jinja = model / "chat_template.jinja"
    jinja.write_text(re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", jinja.read_text()))
    cfg = demo_cfg(repo_root, f"model.id={model}", "training.max_length=64", "data.sources.0.max_rows=20")
    with pytest.raises(ExportError) as err:
        build_trl_export(cfg, tmp_path / "m.yaml", data_mode="messages")
    assert "generation" in str(err.value) and "\n" not in str(err.value)
    result = build_trl_export(cfg, tmp_path / "a.yaml")
    assert result.data_mode == "tokens"
    assert any("template-agnostic masks" in d for d in result.differences)
    assert result.config["model_name_or_path"] == str(model.resolve())


def test_lora_and_system_prompt_are_carried_over(repo_root, builtin_model_dir, tmp_path):
    cfg = demo_cfg(repo_root, "method.type=lora", "method.lora_r=4", "method.lora_target_modules=[q_proj, v_proj]",
                   "template.system_prompt=Be brief.", "data.sources.0.max_rows=10", "training.eval_strategy=no")
    path = export_trl(cfg, tmp_path / "lora.yaml")
    (_, training, model, _), remaining = trl_parse(path)
    assert remaining == []
    assert model.use_peft and model.lora_r == 4 and model.lora_target_modules == ["q_proj", "v_proj"]
    assert training.eval_strategy.value == "no"
    rows = read_jsonl(tmp_path / "lora.data" / "train.jsonl")
    assert all(r["messages"][0]["role"] == "system" for r in rows)
    assert sum(r["messages"][0]["content"] == "Be brief." for r in rows) >= 1


def test_cli_export_json_and_bad_target(repo_root, builtin_model_dir, tmp_path, capsys):
    from sftwizard.cli.main import main

    out = tmp_path / "x.yaml"
    rc = main(["export", str(repo_root / "presets" / "demo.yaml"), "--to", "trl", str(out), "--json",
               "--set", "data.sources.0.max_rows=5"])
    assert rc == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["config_path"] == str(out)
    assert payload["train_rows"] == len(read_jsonl(tmp_path / "x.data" / "train.jsonl")) > 0
    assert payload["command"] == ["trl", "sft", "--config", str(out)]
    rc = main(["export", str(repo_root / "presets" / "demo.yaml"), "--to", "trl", str(tmp_path / "x.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and "must be a .yaml file" in err and "Traceback" not in err


def test_chatml_on_a_base_model_exports_a_tokenizer_trl_clones(tmp_path):
    """A template that adds tokens: TRL clones our tokenizer folder, grows the embeddings, and
    tokenizes the exported rows into the wizard's ids and labels."""
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from sftwizard.core import templates
    from sftwizard.core.config import config_from_dict
    from sftwizard.core.models import load_tokenizer
    from tests.fixtures.tokenizers import conversations, save_model_dir

    model_dir = save_model_dir("base", tmp_path / "base", weights=True)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversations("qwen2_5")), encoding="utf-8")
    cfg = config_from_dict({
        "model": {"id": str(model_dir), "dtype": "fp32"}, "data": {"sources": [{"path": str(data)}]},
        "method": {"type": "lora"}, "template": {"source": "chatml"},
        "training": {"max_length": 128, "max_steps": 1, "save_strategy": "no"}})
    result = build_trl_export(cfg, tmp_path / "c.yaml")
    # one row has an assistant turn with weight 0: only the wizard's own masks can say that
    assert result.data_mode == "tokens" and any("weight 0" in d for d in result.differences)
    assert result.chat_template_path == tmp_path / "c.tokenizer"
    assert result.config["lora_modules_to_save"] == ["embed_tokens", "lm_head"]
    assert "eos_token" not in result.config
    (script, training, model_args, _), remaining = trl_parse(result.config_path)
    assert remaining == []
    from datasets import load_dataset

    rows = load_dataset(script.dataset_name, split="train")
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    before = model.get_input_embeddings().weight.shape[0]
    trainer = SFTTrainer(model=model, args=training, train_dataset=rows)
    assert trainer.model.get_input_embeddings().weight.shape[0] >= len(trainer.processing_class) > before
    assert trainer.processing_class.eos_token == "<|im_end|>"
    tok = load_tokenizer(model_dir)
    template = templates.resolve_template(tok, cfg.template)
    ours = templates.build_dataset(tok, [json.loads(l) for l in data.read_text().splitlines()], template, cfg)
    assert [r["input_ids"] for r in trainer.train_dataset] == [ids[:128] for ids in ours["input_ids"]]
    assert [r["labels"] for r in trainer.train_dataset] == [
        [i if m else -100 for i, m in zip(ids, mask)][:128] for ids, mask in zip(ours["input_ids"], ours["assistant_masks"])]
    # without the weighted row TRL renders the rows itself, with the cloned ChatML tokenizer: same tokens
    plain = [r for r in map(json.loads, data.read_text().splitlines()) if "weight" not in json.dumps(r)]
    data.write_text("".join(json.dumps(r) + "\n" for r in plain), encoding="utf-8")
    result = build_trl_export(cfg, tmp_path / "m.yaml")
    assert result.data_mode == "messages" and result.chat_template_path == tmp_path / "m.tokenizer"
    (script, training, model_args, _), _ = trl_parse(result.config_path)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path), args=training,
                         train_dataset=load_dataset(script.dataset_name, split="train"))
    ours = templates.build_dataset(tok, plain, template, cfg)
    assert [r["input_ids"] for r in trainer.train_dataset] == [ids[:128] for ids in ours["input_ids"]]
    assert [r["labels"] for r in trainer.train_dataset] == [
        [i if m else -100 for i, m in zip(ids, mask)][:128] for ids, mask in zip(ours["input_ids"], ours["assistant_masks"])]


def test_the_exported_loss_flags_are_the_trainers(repo_root, builtin_model_dir, tmp_path):
    """export used its own rule: `completion_only_loss: true` on conversations was written as true,
    while the trainer masks such rows assistant-only (completion-only applies to prompt-completion
    rows only); and `assistant_only_loss: true` on plain text was exported although training refuses it."""
    from sftwizard.core import templates
    from sftwizard.core.runner import resolve_data

    cfg = demo_cfg(repo_root, "training.completion_only_loss=true", "data.sources.0.max_rows=10",
                   "training.eval_strategy=no")
    result = build_trl_export(cfg, tmp_path / "col.yaml")
    train, _, _ = resolve_data(cfg)
    trainer = templates.effective_loss_flags(cfg, train[0])
    assert trainer == (True, False)
    assert result.data_mode == "messages"
    assert (result.config["assistant_only_loss"], result.config["completion_only_loss"]) == trainer

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"Line {i} of plain text."}) + "\n" for i in range(4)))
    cfg = demo_cfg(repo_root, f"data.sources.0.path={text}", "data.eval_source=null",
                   "training.eval_strategy=no", "training.assistant_only_loss=true")
    with pytest.raises(templates.TemplateError) as trained:
        templates.effective_loss_flags(cfg, {"text": "x"})
    with pytest.raises(templates.TemplateError) as exported:
        build_trl_export(cfg, tmp_path / "text.yaml")
    assert str(exported.value) == str(trained.value) and "assistant_only_loss" in str(exported.value)
