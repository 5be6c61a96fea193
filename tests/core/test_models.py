"""Model resolution (builtin, local, HF cache, hub offline) and facts from config alone."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sftwizard.core.builtin_model import build_tiny_chat
from sftwizard.core.models import ModelError, load_tokenizer, model_facts, resolve_model


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_builtin_model_is_reproducible(tmp_path: Path, builtin_model_dir: Path):
    again = build_tiny_chat(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert _digest(again / name) == _digest(builtin_model_dir / name), name


def test_builtin_template_marks_assistant_turns_and_eos(builtin_model_dir: Path):
    tok = load_tokenizer(builtin_model_dir)
    out = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
    )
    trained = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(trained) == "Hello!<|im_end|>"
    assert trained[-1] == tok.eos_token_id


def test_facts_of_builtin(builtin_model_dir: Path):
    facts = model_facts("builtin:tiny-chat")
    assert facts.architecture == "LlamaForCausalLM" and facts.source == "builtin"
    assert 1_000_000 < facts.total_params < 10_000_000
    assert facts.num_kv_heads < facts.num_heads  # GQA, like the real models
    assert facts.has_chat_template
    assert set(facts.linear_shapes) == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    }
    # exact count against the real weights
    from safetensors import safe_open

    with safe_open(str(builtin_model_dir / "model.safetensors"), "pt") as f:
        real = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                   else _prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert facts.total_params == real


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def test_config_only_directory_is_enough(tmp_path: Path, builtin_model_dir: Path):
    """A folder with config.json + tokenizer files (no weights) answers every read-only question."""
    d = tmp_path / "just-config"
    d.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(builtin_model_dir / name, d / name)
    facts = model_facts(str(d))
    assert facts.source == "local" and facts.total_params == model_facts("builtin:tiny-chat").total_params
    assert load_tokenizer(str(d)).eos_token == "<|im_end|>"


def test_qwen2_config_facts_with_tied_embeddings(tmp_path: Path):
    d = tmp_path / "qwen-like"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    }))
    facts = model_facts(str(d))
    # Qwen2.5-0.5B has 494,032,768 parameters (its model card: "0.49B"); the config above is its shape.
    assert facts.total_params == 494_032_768
    assert facts.tie_word_embeddings and facts.lm_head_params == 0
    assert facts.linear_shapes["self_attn.k_proj"] == [896, 128]
    assert not facts.has_chat_template


def test_missing_local_path_is_one_sentence(tmp_path: Path):
    with pytest.raises(ModelError, match="no model folder at"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="holds no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_offline_and_not_cached_is_one_sentence():
    with pytest.raises(ModelError) as info:
        resolve_model("some-org/not-downloaded-model")
    assert "not in the local Hugging Face cache" in str(info.value)
    assert "\n" not in str(info.value)


def test_hub_id_found_in_local_cache_without_network(tmp_path: Path, builtin_model_dir: Path, monkeypatch):
    """The real hub code path (huggingface_hub's cache layout), fed by a local fixture."""
    hub = tmp_path / "hf" / "hub"
    repo = hub / "models--acme--tiny-chat"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(builtin_model_dir / name, snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    resolved = resolve_model("acme/tiny-chat")
    assert resolved.source == "cache" and resolved.path == snap
    assert model_facts("acme/tiny-chat").architecture == "LlamaForCausalLM"


# The file lists of real Hub repositories (as `HfApi().list_repo_files` gives them).
LLAMA31_8B_INSTRUCT = [
    ".gitattributes", "LICENSE", "README.md", "USE_POLICY.md", "config.json", "generation_config.json",
    "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
    "model-00004-of-00004.safetensors", "model.safetensors.index.json", "original/consolidated.00.pth",
    "original/params.json", "original/tokenizer.model", "special_tokens_map.json", "tokenizer.json",
    "tokenizer_config.json",
]
MISTRAL_7B_V03 = [
    ".gitattributes", "README.md", "config.json", "consolidated.safetensors", "generation_config.json",
    "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
    "model.safetensors.index.json", "params.json", "special_tokens_map.json", "tokenizer.json",
    "tokenizer.model", "tokenizer.model.v3", "tokenizer_config.json",
]
BIN_ONLY = [  # an older repo: pickled shards only
    ".gitattributes", "README.md", "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "special_tokens_map.json",
    "tokenizer.model", "tokenizer_config.json", "training_args.bin",
]


def test_weight_download_takes_only_what_loading_needs():
    from sftwizard.core.models import weight_files

    llama = weight_files(LLAMA31_8B_INSTRUCT)
    assert llama == ["config.json", "generation_config.json", "model-00001-of-00004.safetensors",
                     "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors",
                     "model-00004-of-00004.safetensors", "model.safetensors.index.json",
                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    mistral = weight_files(MISTRAL_7B_V03)
    assert "consolidated.safetensors" not in mistral and "model-00003-of-00003.safetensors" in mistral
    assert "tokenizer.model" in mistral
    assert weight_files(BIN_ONLY) == ["config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin",
                                      "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
                                      "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]


def test_hub_weight_download_leaves_original_checkpoints_out(tmp_path: Path, monkeypatch):
    """resolve_model(weights=True) through the real huggingface_hub code against the loopback Hub:
    a repo laid out like Llama 3.1's (safetensors shards + original/*.pth) downloads no .pth."""
    from tests.fixtures.fake_hub import FakeHub, FakeRepo, point_hub_at
    from tests.fixtures.tokenizers import save_model_dir

    folder = save_model_dir("llama3", tmp_path / "m", weights=True)
    (folder / "original").mkdir()
    (folder / "original" / "consolidated.00.pth").write_bytes(b"\0" * 4096)
    (folder / "original" / "params.json").write_text("{}")
    server = FakeHub(models={"org/llama-like": FakeRepo.from_folder(folder)}).start()
    try:
        point_hub_at(server, monkeypatch, tmp_path / "hf")
        resolved = resolve_model("org/llama-like", weights=True)
    finally:
        server.stop()
    fetched = {p.relative_to(resolved.path).as_posix() for p in Path(resolved.path).rglob("*") if p.is_file()}
    assert resolved.source == "hub"
    assert "model.safetensors" in fetched and "tokenizer.json" in fetched and "config.json" in fetched
    assert not any(name.startswith("original/") for name in fetched), fetched


def test_core_is_light():
    """Importing the core (and the CLI) loads no heavy library (textual and the TUI: tests/test_architecture.py)."""
    code = (
        "import sys, sftwizard.core.config, sftwizard.core.models, sftwizard.cli.main, sftwizard.core.runs, "
        "sftwizard.core.presets, sftwizard.core.events\n"
        "import sftwizard.cli.main as c; c.build_parser()\n"
        "bad = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
