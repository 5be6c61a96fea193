"""bench/overhead.py compares like with like (issue 15 item 17): the plain TRL script and the
wizard get the same SFTConfig and the same tokenized rows. The old plain script left TRL's
defaults (gradient checkpointing on, fused AdamW) where the wizard sets a value, which made the
wizard look faster than plain TRL."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.fixtures.trainer import isolated_home


@pytest.fixture(scope="module")
def bench(repo_root, tmp_path_factory):
    isolated_home(tmp_path_factory)
    spec = importlib.util.spec_from_file_location("bench_overhead", repo_root / "bench" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_overhead"] = module
    spec.loader.exec_module(module)
    return module


def test_both_sides_get_the_same_sft_config(bench, tmp_path):
    wizard = bench.wizard_sft_args(80, tmp_path)
    assert bench.differences(bench.plain_sft_args(bench.PLAIN_ARGS, tmp_path, 80), wizard) == {}
    old = bench.differences(bench.plain_sft_args(bench.OLD_PLAIN_ARGS, tmp_path, 80), wizard)
    assert old["gradient_checkpointing"] == ("True", "False") and old["optim"] == ("adamw_torch_fused", "adamw_torch")


def test_both_sides_train_on_the_same_tokens(bench, tmp_path, repo_root):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sftwizard.core.config import apply_overrides, load_preset
    from sftwizard.core.demo_data import TRAIN_FILE
    from sftwizard.core.models import resolve_model
    from sftwizard.core.runner import build_trainer

    path = resolve_model("builtin:tiny-chat").path
    plain = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(path), processing_class=AutoTokenizer.from_pretrained(path),
                       args=SFTConfig(output_dir=str(tmp_path / "p"), max_steps=1, **bench.PLAIN_ARGS),
                       train_dataset=load_dataset("json", data_files=str(TRAIN_FILE), split="train"))
    cfg = apply_overrides(load_preset(repo_root / "presets" / "demo.yaml"),
                          [o.format(steps=1) for o in bench.OVERRIDES])
    wizard = build_trainer(cfg, tmp_path / "w").trainer
    assert plain.train_dataset["input_ids"] == wizard.train_dataset["input_ids"]
    assert plain.train_dataset["labels"] == wizard.train_dataset["labels"]  # the same trained tokens
