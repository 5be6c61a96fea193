"""`sft-wizard models`: every model to start from with a fit badge that is `estimate`'s verdict."""

from __future__ import annotations

import json
import sys

import pytest

from sftwizard.cli.main import main
from tests.fixtures import fake_nvml

LLAMA_8B = "tests/fixtures/configs/llama-3.1-8b"
QWEN_1_5B = "tests/fixtures/configs/qwen2.5-1.5b"


@pytest.fixture
def t4(monkeypatch):
    """This machine, as NVML reports it, is a Tesla T4 (15 GiB)."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.t4())


def cli_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("flags", [
    ["--method", "lora"],  # the 1.5B does not fit at micro-batch 8 x 1024 without checkpointing
    ["--method", "qlora", "--max-length", "512", "--batch-size", "2", "--gradient-checkpointing"],  # it fits
    ["--method", "full", "--batch-size", "1", "--gradient-checkpointing"],
])
def test_each_badge_is_the_verdict_of_estimate_for_the_same_settings(t4, capsys, repo_root, monkeypatch, flags):
    monkeypatch.chdir(repo_root)
    listed = cli_json(capsys, "models", "--folder", LLAMA_8B, "--folder", QWEN_1_5B, *flags)
    assert listed["gpu"]["name"] == "Tesla T4" and listed["settings"]["method"] == flags[1]
    rows = {r["id"]: r for r in listed["models"]}
    assert {"builtin:tiny-chat", LLAMA_8B, QWEN_1_5B} <= set(rows)
    for model in ("builtin:tiny-chat", LLAMA_8B, QWEN_1_5B):
        est = cli_json(capsys, "estimate", "--model", model, *flags)
        row = rows[model]
        assert row["fits"] == est["fits"] and row["total_gib"] == est["total_gib"], (model, row, est)
        assert (row["fit"] == "fits") == est["fits"]
        assert row["fit"] == ("fits" if est["fits"] else "tight" if est["headroom_gib"] >= 0 else "does not fit")
        assert row["params"] == est["total_params"]
    expected = "fits" if flags[1] == "qlora" else "does not fit"  # QLoRA at 512 x 2 fits even the 8B on a T4
    assert rows["builtin:tiny-chat"]["fit"] == "fits" and rows[LLAMA_8B]["fit"] == rows[QWEN_1_5B]["fit"] == expected


def test_well_known_models_are_offered_by_id_and_say_why_they_have_no_badge_offline(t4, capsys):
    rows = cli_json(capsys, "models")["models"]
    known = [r for r in rows if r["source"] == "known"]
    names = " ".join(r["id"] for r in known)
    for family in ("Qwen", "Llama", "gemma", "SmolLM", "Phi"):
        assert family in names
    assert all(r["fit"] is None and "config not in the cache" in r["problem"] for r in known)


def test_without_a_gpu_there_is_no_badge_and_the_text_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.no_driver())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("no GPU here (pass --gpu-memory-gib to check the fit)")
    assert main(["models", "--gpu-memory-gib", "0.001", "--method", "full"]) == 0
    assert "builtin:tiny-chat" in (out := capsys.readouterr().out) and "does not fit" in out
    assert main(["models", "--folder", "/nowhere"]) == 2
    assert capsys.readouterr().err.strip() == "sft-wizard: error: --folder /nowhere: no config.json there"
