"""Model resolution and facts — without loading weights.

A model is named by ``builtin:tiny-chat``, a local directory, or a Hugging Face hub id (found in
the local cache without network, or downloaded when online). Facts come from the config alone:
the model is instantiated on PyTorch's ``meta`` device, so a directory holding only
``config.json`` (+ tokenizer files) is enough for every read-only command.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import UserError

BUILTIN_PREFIX = "builtin:"

# Files enough to describe and tokenize a model (no weights): what read-only commands fetch.
METADATA_PATTERNS = ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]


class ModelError(UserError):
    """A model cannot be found or read. The message is one sentence for the user."""


@dataclass
class ResolvedModel:
    id: str
    path: Path
    source: str  # builtin | local | cache | hub


@dataclass
class ModelFacts:
    id: str
    path: str
    source: str
    architecture: str
    model_type: str
    total_params: int
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int | None
    tie_word_embeddings: bool
    has_chat_template: bool
    chat_template: str | None
    torch_dtype: str | None
    embedding_params: int
    lm_head_params: int
    linear_shapes: dict[str, list[int]] = field(default_factory=dict)
    num_experts: int = 0

    def to_dict(self, with_template: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_template:
            d.pop("chat_template")
        return d


# --------------------------------------------------------------------------- resolution

def _looks_like_path(model_id: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a slash is meant as a folder."""
    return model_id.startswith(("/", "./", "../", "~", ".")) or model_id.rstrip("/").count("/") > 1


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _find_in_cache(model_id: str, revision: str | None) -> Path | None:
    """The snapshot folder of ``model_id`` in the local Hugging Face cache, without network."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        path = Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None
    except Exception:  # repo-id validation errors and the like: not in the cache
        return None
    return path if (path / "config.json").exists() else None


def resolve_model(
    model_id: str, revision: str | None = None, *, allow_download: bool = True, weights: bool = False,
    phases=None,
) -> ResolvedModel:
    """Find a model's folder. ``weights=False`` downloads only config and tokenizer files.
    A download is checked first (repo, access, free disk) and reported as a ``download`` phase
    on ``phases`` (a phases.PhaseReporter) when given."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise ModelError("model.id: no model given")
    if model_id.startswith(BUILTIN_PREFIX):
        from .builtin_model import BUILTIN_NAMES, ensure_builtin

        name = model_id[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_NAMES:
            raise ModelError(f"model.id: unknown builtin model {model_id!r} (known: {', '.join('builtin:' + n for n in BUILTIN_NAMES)})")
        return ResolvedModel(model_id, ensure_builtin(name), "builtin")
    expanded = Path(model_id).expanduser()
    if expanded.is_dir():
        if not (expanded / "config.json").exists():
            raise ModelError(f"model.id: {model_id} is a folder but holds no config.json")
        return ResolvedModel(model_id, expanded.resolve(), "local")
    if _looks_like_path(model_id) or expanded.exists():
        raise ModelError(f"model.id: no model folder at {model_id}")
    cached = _find_in_cache(model_id, revision)
    if cached is not None and (not weights or _has_weights(cached)):
        return ResolvedModel(model_id, cached, "cache")
    if not allow_download or _offline():
        raise ModelError(
            f"model.id: {model_id!r} is not in the local Hugging Face cache and downloads are off "
            "(HF_HUB_OFFLINE is set); download it on a connected machine or give a local folder"
        )
    return ResolvedModel(model_id, _download(model_id, revision, weights, phases), "hub")


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin"))


def weight_files(repo_files: list[str]) -> list[str]:
    """The files of a Hub repository that loading the model needs, from its file list.

    Top-level metadata (config, generation config, tokenizer, chat templates, remote code) and the
    weights ``from_pretrained`` reads: ``model.safetensors`` or the index and its
    ``model-*.safetensors`` shards; ``pytorch_model*.bin`` only when the repo has no safetensors.
    Left out: other checkpoints the repo may carry (Llama 3.1's ``original/*.pth``, 16 GB for 8B;
    Mistral's ``consolidated.safetensors``), sub-folders and docs."""
    from fnmatch import fnmatch

    top = [f for f in repo_files if "/" not in f]
    wanted = [f for f in top if any(fnmatch(f, p) for p in METADATA_PATTERNS)]
    wanted += [f for f in repo_files if f.startswith("additional_chat_templates/") and f.endswith(".jinja")]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    weights = [f for f in safetensors if f == "model.safetensors" or fnmatch(f, "model-*.safetensors")]
    if not weights:
        weights = safetensors  # an unusual shard name: every top-level safetensors file
    if not weights:
        weights = [f for f in top if f == "pytorch_model.bin" or fnmatch(f, "pytorch_model-*.bin")]
    else:  # a .bin index is useless (and confusing) next to safetensors
        wanted = [f for f in wanted if not f.startswith("pytorch_model")]
    return sorted(set(wanted + weights))



def _allow_patterns(weights: bool) -> list[str] | None:
    """The patterns a download starts from: everything (then ``weight_files`` picks what loading
    needs from the repo's file list), or only what describes and tokenizes."""
    return None if weights else METADATA_PATTERNS


def _select(weights: bool):
    return weight_files if weights else None


def _download(model_id: str, revision: str | None, weights: bool, phases=None) -> Path:
    from .hub_download import DownloadError, fetch

    try:
        return fetch(model_id, revision, allow_patterns=_allow_patterns(weights), select=_select(weights),
                     phases=phases)
    except DownloadError as exc:  # missing, gated, unreachable, no room: one sentence, details in the log
        raise ModelError(f"model.id: {exc}") from exc


def check_download(model_id: str, revision: str | None = None, *, weights: bool = True):
    """Before a run starts: None when the model is local, cached or downloads are off; else the
    hub_download.DownloadPlan of what it will fetch. ModelError (one sentence) when the repo is
    missing or gated for this user, or the files do not fit on the disk."""
    model_id = (model_id or "").strip()
    if (not model_id or model_id.startswith(BUILTIN_PREFIX) or Path(model_id).expanduser().exists()
            or _looks_like_path(model_id) or _offline()):
        return None
    cached = _find_in_cache(model_id, revision)
    if cached is not None and (not weights or _has_weights(cached)):
        return None
    from .hub_download import DownloadError, plan_download

    try:
        return plan_download(model_id, revision, allow_patterns=_allow_patterns(weights), select=_select(weights))
    except DownloadError as exc:
        raise ModelError(f"model.id: {exc}") from exc


# --------------------------------------------------------------------------- tokenizer & facts

def load_tokenizer(model: str | os.PathLike, revision: str | None = None, trust_remote_code: bool = False):
    """The model's tokenizer, from a resolved folder or anything ``resolve_model`` accepts."""
    from transformers import AutoTokenizer

    path = Path(model) if Path(model).is_dir() else resolve_model(str(model), revision).path
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"model.id: cannot load a tokenizer from {path}: {exc}".splitlines()[0]) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc


def chat_template_of(path: Path) -> str | None:
    """The chat template shipped with a model folder (chat_template.jinja or tokenizer_config.json)."""
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    tpl = _read_json(path / "tokenizer_config.json").get("chat_template")
    if isinstance(tpl, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default") or next(iter(named.values()), None)
    if tpl is None:
        tpl = _read_json(path / "chat_template.json").get("chat_template")
    return tpl if isinstance(tpl, str) else None


def model_facts(model: str, revision: str | None = None, trust_remote_code: bool = False) -> ModelFacts:
    """Architecture and sizes of a model, from its config alone (meta device, no weights)."""
    resolved = resolve_model(model, revision)
    return _facts_for_path(str(resolved.path), resolved.id, resolved.source, trust_remote_code)


@lru_cache(maxsize=32)
def _facts_for_path(path_str: str, model_id: str, source: str, trust_remote_code: bool) -> ModelFacts:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path_str)
    try:
        config = AutoConfig.from_pretrained(path_str, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"model.id: {model_id} needs custom code from its repository; set model.trust_remote_code: true "
                "only if you trust it"
            ) from exc
        raise ModelError(f"{path / 'config.json'}: not a config transformers can read ({exc})".splitlines()[0]) from exc
    except OSError as exc:
        raise ModelError(f"{path / 'config.json'}: cannot be read ({exc})".splitlines()[0]) from exc
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"model.id: {model_id} is not a causal language model transformers can build ({exc})".splitlines()[0]) from exc

    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    embedding_params = sum(p.numel() for p in emb.parameters()) if emb is not None else 0
    tied = bool(out is not None and emb is not None and out.weight is emb.weight)
    lm_head_params = 0 if tied or out is None else sum(p.numel() for p in out.parameters())
    linear_shapes = _first_layer_linears(model)

    hidden = int(getattr(text_config, "hidden_size", 0) or 0)
    heads = int(getattr(text_config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text_config, "head_dim", None) or (hidden // heads if heads else 0))
    template = chat_template_of(path)
    experts = getattr(text_config, "num_local_experts", None) or getattr(text_config, "num_experts", None) or 0
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return ModelFacts(
        id=model_id,
        path=path_str,
        source=source,
        architecture=(config.architectures or [type(model).__name__])[0],
        model_type=str(getattr(config, "model_type", "")),
        total_params=int(total),
        num_layers=int(getattr(text_config, "num_hidden_layers", 0) or 0),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=int(getattr(text_config, "intermediate_size", 0) or 0),
        vocab_size=int(getattr(text_config, "vocab_size", 0) or 0),
        max_position_embeddings=getattr(text_config, "max_position_embeddings", None),
        tie_word_embeddings=tied,
        has_chat_template=template is not None,
        chat_template=template,
        torch_dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        embedding_params=int(embedding_params),
        lm_head_params=int(lm_head_params),
        linear_shapes=linear_shapes,
        num_experts=int(experts),
    )


def _first_layer_linears(model) -> dict[str, list[int]]:
    """Leaf name -> [in, out] for every nn.Linear in the first decoder layer."""
    import torch

    shapes: dict[str, list[int]] = {}
    prefix = None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if "0" not in parts:
            continue
        idx = parts.index("0")
        layer_prefix = ".".join(parts[: idx + 1])
        if prefix is None:
            prefix = layer_prefix
        if layer_prefix != prefix:
            continue
        leaf = ".".join(parts[idx + 1:])
        shapes[leaf] = [module.in_features, module.out_features]
    return shapes
