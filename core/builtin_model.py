"""``builtin:tiny-chat``: a small Llama-architecture model built locally, reproducibly.

Its byte-level BPE tokenizer is trained on the bundled demo data; its chat template is
ChatML-style and marks assistant turns with ``{% generation %}`` so assistant-only loss works
out of the box. Weights are random (seeded): the demo fine-tunes it from scratch in a minute on
a CPU. Built once into the cache dir; a build goes to a temp folder and is renamed into place,
so a crash never leaves half a model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .paths import cache_dir

VERSION = 2  # bump when anything below changes what is built
BUILTIN_NAMES = ("tiny-chat",)

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

MODEL_CONFIG = dict(
    vocab_size=2048,  # rounded to the trained tokenizer's size below
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.02,
)


def builtin_path(name: str = "tiny-chat") -> Path:
    return cache_dir() / "models" / f"{name}-v{VERSION}"


def ensure_builtin(name: str = "tiny-chat") -> Path:
    """The folder of the builtin model, building it on first use."""
    target = builtin_path(name)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_tiny_chat(tmp)
        tmp.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "model.safetensors").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _training_texts() -> list[str]:
    from .demo_data import TRAIN_FILE

    texts = []
    with open(TRAIN_FILE, encoding="utf-8") as fh:
        for line in fh:
            for message in json.loads(line)["messages"]:
                texts.append(message["role"] + "\n" + message["content"])
    return texts


def build_tokenizer(out_dir: Path):
    """Train a byte-level BPE on the demo data and wrap it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MODEL_CONFIG["vocab_size"],
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        bos_token=None,
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_chat(out_dir: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    vocab = len(tokenizer)
    vocab = (vocab + 63) // 64 * 64  # a multiple of 64 keeps matmuls aligned
    config = LlamaConfig(
        **{**MODEL_CONFIG, "vocab_size": vocab},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        architectures=["LlamaForCausalLM"],
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # built on the side of `estimate`, `preview`...: no bar in their output
    try:
        model.save_pretrained(str(out_dir), safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out_dir
