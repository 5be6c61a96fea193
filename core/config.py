"""RunConfig: the one typed schema behind presets, the wizard, the CLI and the runner.

A preset is a YAML file of this schema. Loading validates every field and reports every
problem with its dotted path; unknown keys are errors with a did-you-mean. Field names in
``training`` are TRL's ``SFTConfig`` names, so export to ``trl sft`` is a plain copy.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import UserError
from .paths import atomic_write

BUILTIN_MODEL = "builtin:tiny-chat"

Dtype = Literal["auto", "bf16", "fp16", "fp32"]
Attn = Literal["auto", "eager", "sdpa", "flash_attention_2"]
DataFormat = Literal[
    "auto", "messages", "prompt_completion", "conversational_prompt_completion",
    "alpaca", "sharegpt", "text",
]
TemplateSource = Literal["auto", "tokenizer", "trl-training", "file", "inferred", "chatml"]
MethodType = Literal["full", "lora", "qlora"]
OnBadRows = Literal["stop", "drop"]
Reasoning = Literal["template", "drop"]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
    "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
]
IntervalStrategy = Literal["no", "steps", "epoch"]  # when to evaluate / save (TrainingArguments' name)
DistributedStrategy = Literal["ddp", "fsdp", "zero2", "zero3"]
OomChange = Literal["max_length"]  # what run.on_oom: adapt may change beyond batch and checkpointing

# The choices, for every face that offers them (argparse choices, the wizard's lists): one home.
DTYPES: tuple[str, ...] = get_args(Dtype)
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(Attn)
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)
TEMPLATE_SOURCES: tuple[str, ...] = get_args(TemplateSource)
METHOD_TYPES: tuple[str, ...] = get_args(MethodType)
ON_BAD_ROWS: tuple[str, ...] = get_args(OnBadRows)
REASONING: tuple[str, ...] = get_args(Reasoning)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
INTERVAL_STRATEGIES: tuple[str, ...] = get_args(IntervalStrategy)
DISTRIBUTED_STRATEGIES: tuple[str, ...] = get_args(DistributedStrategy)


class ConfigError(UserError, ValueError):
    """A preset or override is invalid. ``problems`` lists every ``path: message``."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


def _check(fn, message: str):
    return {"check": fn, "message": message}


def positive(v):
    return v is None or v > 0


def non_negative(v):
    return v is None or v >= 0


@dataclass
class ModelSection:
    id: str = BUILTIN_MODEL
    revision: str | None = None
    dtype: Dtype = "auto"
    attn_implementation: Attn = "auto"
    trust_remote_code: bool = False


@dataclass
class DataSource:
    path: str = ""
    split: str = "train"
    format: DataFormat = "auto"
    name: str | None = None  # hub dataset config name
    columns: dict[str, str] = field(default_factory=dict)  # our field -> their column
    roles: dict[str, str] = field(default_factory=dict)  # their role -> ours (user/assistant/system/tool)
    max_rows: int | None = field(default=None, metadata=_check(positive, "must be > 0"))


@dataclass
class DataSection:
    sources: list[DataSource] = field(default_factory=lambda: [DataSource(path="builtin:demo")])
    eval_source: DataSource | None = None
    eval_fraction: float = field(
        default=0.0, metadata=_check(lambda v: 0.0 <= v < 1.0, "must be >= 0 and < 1")
    )
    on_bad_rows: OnBadRows = "stop"


@dataclass
class TemplateSection:
    source: TemplateSource = "auto"
    path: str | None = None  # a Jinja file, with source: file
    system_prompt: str | None = None
    # what happens to reasoning in the data (<think> in content, reasoning_content, thinking):
    # template = as the model's own template renders it; drop = removed, only answers train
    reasoning: Reasoning = "template"


@dataclass
class MethodSection:
    type: MethodType = "lora"
    lora_r: int = field(default=16, metadata=_check(positive, "must be > 0"))
    lora_alpha: int = field(default=32, metadata=_check(positive, "must be > 0"))
    lora_dropout: float = field(default=0.05, metadata=_check(lambda v: 0 <= v < 1, "must be >= 0 and < 1"))
    lora_target_modules: Union[str, list[str]] = "all-linear"
    use_dora: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


@dataclass
class TrainingSection:
    num_train_epochs: float = field(default=1.0, metadata=_check(positive, "must be > 0"))
    max_steps: int = -1
    per_device_train_batch_size: int = field(default=8, metadata=_check(positive, "must be > 0"))
    per_device_eval_batch_size: int = field(default=8, metadata=_check(positive, "must be > 0"))
    gradient_accumulation_steps: int = field(default=1, metadata=_check(positive, "must be > 0"))
    learning_rate: float = field(default=2e-4, metadata=_check(positive, "must be > 0"))
    lr_scheduler_type: Scheduler = "linear"
    warmup_ratio: float = field(default=0.0, metadata=_check(lambda v: 0 <= v < 1, "must be >= 0 and < 1"))
    warmup_steps: int = field(default=0, metadata=_check(non_negative, "must be >= 0"))
    weight_decay: float = field(default=0.0, metadata=_check(non_negative, "must be >= 0"))
    max_grad_norm: float = field(default=1.0, metadata=_check(non_negative, "must be >= 0"))
    max_length: int | None = field(default=1024, metadata=_check(positive, "must be > 0"))
    packing: bool = False
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    padding_free: bool = False
    assistant_only_loss: bool | None = None  # None: yes for conversational data
    completion_only_loss: bool | None = None  # None: yes for prompt-completion data
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # None: follows model.dtype
    fp16: bool | None = None
    optim: str = "adamw_torch"
    seed: int = field(default=42, metadata=_check(lambda v: 0 <= v < 2 ** 32, "must be >= 0 and < 2**32 (numpy's range)"))
    logging_steps: float = field(default=10, metadata=_check(positive, "must be > 0"))
    eval_strategy: IntervalStrategy = "no"
    eval_steps: float | None = field(default=None, metadata=_check(positive, "must be > 0"))
    save_strategy: IntervalStrategy = "steps"
    save_steps: float = field(default=500, metadata=_check(positive, "must be > 0"))
    save_total_limit: int | None = field(default=2, metadata=_check(positive, "must be > 0"))
    load_best_model_at_end: bool = False  # the final model is the checkpoint with the lowest eval loss
    report_to: Union[str, list[str]] = "none"
    dataset_num_proc: int | None = field(default=None, metadata=_check(positive, "must be > 0"))
    dataloader_num_workers: int = field(default=0, metadata=_check(non_negative, "must be >= 0"))
    use_liger_kernel: bool = False


@dataclass
class DistributedSection:
    """Multi-GPU / multi-node through `accelerate launch` (never a launcher of our own)."""

    num_processes: int | None = field(default=None, metadata=_check(positive, "must be > 0"))  # None: visible GPUs
    strategy: DistributedStrategy = "ddp"
    num_machines: int = field(default=1, metadata=_check(positive, "must be > 0"))
    machine_rank: int = field(default=0, metadata=_check(non_negative, "must be >= 0"))
    main_process_ip: str | None = None
    main_process_port: int = field(default=29500, metadata=_check(lambda v: 0 < v < 65536, "must be a port number"))


@dataclass
class RunSection:
    name: str | None = None
    output_root: str | None = None  # None: the data dir's runs/
    # held-out prompts answered at each evaluation and before the first step (`sample` events); 0: off
    samples: int = field(default=3, metadata=_check(lambda v: 0 <= v <= 20, "must be between 0 and 20"))
    # a CUDA out-of-memory error: fail (as always), or adapt (resume with a smaller micro-batch...)
    on_oom: Literal["fail", "adapt"] = "fail"
    on_oom_allow: list[OomChange] = field(default_factory=list)  # adapt may also shorten: [max_length]


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    template: TemplateSection = field(default_factory=TemplateSection)
    method: MethodSection = field(default_factory=MethodSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> "RunConfig":
        return dataclasses.replace(self, **sections)


# --------------------------------------------------------------------------- parsing

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 4, 4, 60, 60, 40
SHOWN_CHARS = 120


def _shown(value: Any) -> str:
    """``repr(value)`` bounded: a value echoed in a message never grows the message past a line."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Check ``value`` against type ``tp``; return the converted value (or None after recording a problem)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping, got {_shown(value)}")
            return None
        return _build(tp, value, path, problems)
    if origin is Literal:
        if isinstance(value, bool) and "no" in get_args(tp):
            value = "no" if value is False else value  # YAML 1.1 reads a bare `no` as false
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(value, [str(a) for a in get_args(tp)], n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{path}: must be {_type_name(tp)}, got {_shown(value)}{hint}")
        return None
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        trials: list[tuple[Any, list[str]]] = []
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _coerce(value, arg, path, trial)
            if not trial:
                return out
            trials.append((arg, trial))
        # A mapping given for a section (or a list for a list): its own problems (an unknown key,
        # a bad value inside) say more than "must be a mapping or null".
        shaped = [t for arg, t in trials if (isinstance(value, dict) and (dataclasses.is_dataclass(arg)
                                                                          or get_origin(arg) is dict))
                  or (isinstance(value, list) and get_origin(arg) is list)]
        if len(shaped) == 1:
            problems.extend(shaped[0])
            return None
        problems.append(f"{path}: must be {_type_name(tp)}, got {_shown(value)}")
        return None
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{path}: must be a list, got {_shown(value)}")
            return None
        return [_coerce(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping, got {_shown(value)}")
            return None
        return {str(k): _coerce(v, get_args(tp)[1], f"{path}.{k}", problems) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if math.isfinite(number):
                return number
            problems.append(f"{path}: must be a finite number, got {_shown(value)}")
            return None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    problems.append(f"{path}: must be {_type_name(tp)}, got {_shown(value)}")
    return None


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"{path}: unknown key{hint}")
            continue
        before = len(problems)
        converted = _coerce(value, hints[key], path, problems)
        if len(problems) > before:
            continue
        meta = fields[key].metadata
        if "check" in meta and converted is not None and not meta["check"](converted):
            problems.append(f"{path}: {meta['message']}, got {_shown(value)}")
            continue
        kwargs[key] = converted
    return cls(**kwargs)


def _cross_checks(cfg: RunConfig) -> list[str]:
    problems = []
    if not cfg.data.sources:
        problems.append("data.sources: at least one source is needed")
    for i, src in enumerate(cfg.data.sources):
        if not src.path:
            problems.append(f"data.sources[{i}].path: must not be empty")
    if cfg.template.source == "file" and not cfg.template.path:
        problems.append("template.path: needed when template.source is 'file'")
    if cfg.training.bf16 and cfg.training.fp16:
        problems.append("training.fp16: bf16 and fp16 cannot both be on")
    if cfg.training.padding_free and not cfg.training.packing and cfg.training.max_length is not None:
        problems.append("training.padding_free: without packing TRL cannot enforce max_length; turn on "
                        "training.packing, or set training.max_length: null (rows already short enough)")
    if cfg.training.max_steps == 0 or cfg.training.max_steps < -1:
        problems.append(f"training.max_steps: must be -1 (use epochs) or > 0, got {cfg.training.max_steps}")
    if cfg.training.eval_strategy != "no" and cfg.data.eval_source is None and cfg.data.eval_fraction == 0:
        problems.append("training.eval_strategy: evaluation needs data.eval_source or data.eval_fraction > 0")
    problems += _step_count_checks(cfg.training) + _best_model_checks(cfg.training)
    d = cfg.distributed
    if d.machine_rank >= d.num_machines:
        problems.append(f"distributed.machine_rank: must be < num_machines ({d.num_machines}), got {d.machine_rank}")
    if d.num_machines > 1 and not d.main_process_ip:
        problems.append("distributed.main_process_ip: needed when num_machines > 1")
    if cfg.method.type == "qlora" and d.strategy == "zero3":
        problems.append("method.type: QLoRA cannot run under distributed.strategy zero3 (ZeRO-3 partitions the "
                        "weights while loading, which 4-bit quantization does not support); use zero2, fsdp or ddp")
    if cfg.method.type == "full" and cfg.method.use_dora:
        problems.append("method.use_dora: DoRA needs method.type lora or qlora")
    return problems


def _step_count_checks(t: TrainingSection) -> list[str]:
    """Intervals above 1 are step counts and must be whole (below 1 they are fractions of the run)."""
    problems = []
    for name in ("logging_steps", "eval_steps", "save_steps"):
        value = getattr(t, name)
        if value is not None and value > 1 and value != int(value):
            problems.append(f"training.{name}: above 1 it counts steps and must be whole (below 1 it is a "
                            f"fraction of the run), got {value:g}")
    return problems


def _best_model_checks(t: TrainingSection) -> list[str]:
    """What transformers requires of load_best_model_at_end, said before a run rather than by its traceback."""
    if not t.load_best_model_at_end:
        return []
    if t.eval_strategy == "no":
        return ["training.load_best_model_at_end: needs evaluations to pick the best checkpoint; set "
                "training.eval_strategy to steps or epoch"]
    if t.save_strategy != t.eval_strategy:
        return [f"training.save_strategy: with load_best_model_at_end, checkpoints must be saved when evaluations "
                f"run: set it to {t.eval_strategy!r} (now {t.save_strategy!r})"]
    if t.eval_strategy != "steps":
        return []
    every = t.eval_steps if t.eval_steps is not None else t.logging_steps  # transformers' default
    what = "eval_steps" if t.eval_steps is not None else "logging_steps, which eval_steps defaults to"
    save = t.save_steps
    if (save < 1) != (every < 1):
        return [f"training.save_steps: with load_best_model_at_end it must be a multiple of {what} ({every:g}); "
                "a fraction of the run and a step count cannot be compared"]
    million = 1_000_000  # fractions compared in whole millionths, as transformers does
    if round(save * million) % round(every * million):
        return [f"training.save_steps: with load_best_model_at_end it must be a multiple of {what} ({every:g}), "
                f"got {save:g}"]
    return []


def config_from_dict(data: Any, source: str | None = None) -> RunConfig:
    """Validate a plain mapping into a RunConfig; raise ConfigError with every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"top level: must be a mapping of sections, got {type(data).__name__}"], source)
    problems: list[str] = []
    cfg = _build(RunConfig, data, "", problems)
    if not problems:
        problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _parse_scalar(text: str) -> Any:
    try:
        value = safe_yaml(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()  # `no`, `off`, `yes`: strings here, not YAML 1.1 booleans
    return value


MAX_PRESET_BYTES = 1 << 20  # a preset is a page of settings; a bigger file is not one
MAX_YAML_VALUES = 100_000  # values after aliases are expanded: far beyond any preset, far below an alias bomb


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing documents whose aliases expand past ``MAX_YAML_VALUES`` values,
    that refer to themselves, or that nest too deep to read — an alias bomb is refused, not expanded."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(["YAML nested too deeply to read"]) from None
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise ConfigError(["a YAML alias refers to the value that contains it"])
        open_.add(key)
        items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += size(item)
            if total > MAX_YAML_VALUES:
                raise ConfigError([f"YAML aliases expand to more than {MAX_YAML_VALUES:,} values; "
                                   "write the settings out instead of nesting aliases"])
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        size(data)
    except RecursionError:
        raise ConfigError(["YAML nested too deeply to read"]) from None
    return data


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars) and re-validate.

    Every override lands or is refused naming its path: a list is indexed by number
    (``data.sources.0.path``), a value has no keys below it, and an optional section that is
    null (``data.eval_source``) is built from its defaults before the key is set.
    """
    data = cfg.to_dict()
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item}: expected section.key=value")
            continue
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        if not all(parts):
            problems.append(f"--set {item}: expected section.key=value")
            continue
        try:
            problem = _set_path(data, RunConfig, parts, _parse_scalar(raw))
        except ConfigError as exc:
            problem = f"{dotted.strip()}: {exc.problems[0]}"
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError(problems, "--set")
    return config_from_dict(data, "--set")


def _section_type(tp: Any) -> Any:
    """The dataclass behind ``tp`` (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    dcs = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] if get_origin(tp) is not Literal else []
    return dcs[0] if len(dcs) == 1 else None


def _list_item_type(tp: Any) -> Any:
    """The item type of ``list[X]`` (also inside a union), else None."""
    for t in (tp, *get_args(tp)):
        if get_origin(t) is list:
            return get_args(t)[0]
    return None


def _set_path(data: dict, cls: Any, parts: list[str], value: Any) -> str | None:
    """Put ``value`` at ``parts`` under ``data`` (a mapping of dataclass ``cls``); a sentence when it cannot."""
    node: Any = data
    tp: Any = cls
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit():
                return (f"{here}: is a list ({len(node)} item{'s' if len(node) != 1 else ''}); "
                        f"name an item by number, e.g. {here}.0.{'.'.join(parts[depth:])}")
            index = int(part)
            if index >= len(node):
                return (f"{here}.{index}: {here} has {len(node)} item{'s' if len(node) != 1 else ''} "
                        f"(numbered from 0), so there is no item {index}")
            tp = _list_item_type(tp)
            if last:
                node[index] = value
                return None
            key: Any = index
        elif isinstance(node, dict):
            section = _section_type(tp)
            if section is not None:
                hints = typing.get_type_hints(section)
                tp = hints.get(part, Any)  # an unknown key is reported by validation, with a did-you-mean
            else:
                tp = get_args(tp)[1] if get_origin(tp) is dict else Any
            if last:
                node[part] = value
                return None
            key = part
        else:
            return f"{here}: is a value ({_shown(node)}), not a section; it has no {part!r}"
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None and (_section_type(tp) is not None or isinstance(node, dict) and key not in node):
            child = {}  # a null optional section is built from its defaults; an unknown key fails validation
            node[key] = child
        if child is None:
            return f"{'.'.join(parts[:depth + 1])}: is null here, not a section; it has no {parts[depth + 1]!r}"
        node = child
    return None


# --------------------------------------------------------------------------- presets I/O

def load_preset(path: str | os.PathLike) -> RunConfig:
    """Load and validate a YAML preset. Raises ConfigError naming the file and line or field."""
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_PRESET_BYTES:
            raise ConfigError([f"{p.stat().st_size:,} bytes is too big for a preset "
                               f"(at most {MAX_PRESET_BYTES:,})"], str(p))
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["no such preset file"], str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(p)) from None
    try:
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}YAML syntax error: {problem}"], str(p)) from None
    except ConfigError as exc:
        raise ConfigError(exc.problems, str(p)) from None
    return config_from_dict(data, str(p))


def dump_preset(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def save_preset(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write atomically (``paths.atomic_write``): a reader never sees half a preset."""
    return atomic_write(path, dump_preset(cfg))


def output_root_problem(cfg: RunConfig) -> str | None:
    """Why runs cannot be written where ``run.output_root`` says (a file, a dangling link, a
    read-only folder), as one ``run.output_root: …`` sentence; None when they can."""
    from .paths import default_runs_root, unwritable_folder

    root = cfg.run.output_root or default_runs_root()
    why = unwritable_folder(root)
    return f"run.output_root: runs cannot be written under {root}: {why}" if why else None



@dataclass(frozen=True)
class Precision:
    """How a run computes: the dtype weights are loaded in and SFTConfig's autocast flags."""

    weights: str  # bf16 | fp16 | fp32
    bf16: bool
    fp16: bool

    @property
    def compute(self) -> str:
        """The dtype matmuls (and attention) run in: the autocast dtype, else the weights'."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else self.weights


def resolved_precision(cfg: RunConfig, bf16_supported: bool, cuda: bool) -> Precision:
    """The one precision rule (runner, estimator, accelerate configs, export).

    ``model.dtype: auto`` on a bf16 GPU (``hardware.supports_bf16``): LoRA/QLoRA load the frozen
    base in bf16; full fine-tuning keeps fp32 weights (the optimizer's master copy) and computes in
    bf16 autocast, because in pure bf16 an update smaller than about 1/256 of a weight rounds away
    (measured on the builtin model, lr 2e-5, 60 steps: 27% of the weights ever changed against 93%
    with fp32 weights). Pure bf16 full fine-tuning only when ``model.dtype: bf16`` asks for it (the
    doctor says what it costs). Elsewhere ``auto`` is fp32. ``training.bf16``/``fp16`` override
    the autocast flags; by default they follow the weights (and bf16 for fp32 full fine-tuning)."""
    t = cfg.training
    if cfg.model.dtype != "auto":
        weights = cfg.model.dtype
    elif cuda and bf16_supported:
        weights = "fp32" if cfg.method.type == "full" else "bf16"
    else:
        weights = "fp32"
    default_bf16 = weights == "bf16" or (cfg.model.dtype == "auto" and weights == "fp32" and cuda
                                         and bf16_supported and cfg.method.type == "full")
    bf16 = t.bf16 if t.bf16 is not None else default_bf16
    fp16 = t.fp16 if t.fp16 is not None else weights == "fp16"
    return Precision(weights, bool(bf16), bool(fp16))


def resolved_dtype(cfg: RunConfig, bf16_supported: bool, cuda: bool) -> str:
    """The dtype weights are loaded in (see ``resolved_precision``)."""
    return resolved_precision(cfg, bf16_supported, cuda).weights
