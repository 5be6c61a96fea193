"""RunConfig → SFTTrainer, run inside a run directory, reporting through ``events.jsonl``.

This is the one place that turns a config into a trainer (the probe, the benchmark and the
detached job all call ``build_trainer``). Entry point of the training process:
``python -m sftwizard.core.runner RUN_DIR [--resume CHECKPOINT]``.
"""

from __future__ import annotations

import argparse
import faulthandler
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, load_preset, resolved_precision
from .diagnosis import classify_failure  # noqa: F401 - part of the runner's API
from .diskspace import (
    LOW_FREE_BYTES,
    RESERVE_BYTES,
    checkpoint_estimate,
    disk_full_message,
    free_bytes,
    lay_reserve,
    newest_checkpoint,
    release_reserve,
    weights_bytes,
)
from .efficiency import logical_numel, meter_fields, start_meter
from .errors import UserError
from .events import EventWriter
from .hardware import auto_attention
from .metrics import GpuSampler, Throughput
from .phases import PhaseReporter
from .run_model import Kind, Reason, Status
from .rundir import RunDir
from .runnable import Environment, runnable_notes, runnable_problems

GPU_EVENT_INTERVAL_S = 10.0  # a `gpu` event at least this often, whatever logging_steps is
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

# SFTConfig fields copied from `training` as they are (TRL's own names).
PASSTHROUGH = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "weight_decay", "max_grad_norm", "max_length", "packing", "packing_strategy", "padding_free",
    "optim", "seed", "logging_steps", "eval_strategy", "eval_steps",
    "save_strategy", "save_steps", "save_total_limit", "load_best_model_at_end", "report_to", "dataset_num_proc",
    "dataloader_num_workers",
)
# Not passed on: training.gradient_checkpointing goes to `activation_checkpointing` (transformers
# 5.24 deprecates `gradient_checkpointing*`, removed in 6); training.use_liger_kernel is applied by
# build_trainer (TRL 1.16 deprecates SFTTrainer's `use_liger_kernel`, removed in 2).


class RunnerError(UserError):
    """A configuration that cannot run here (e.g. QLoRA without CUDA). One sentence."""


def check_runnable(cfg: RunConfig, env: Environment) -> None:
    """Refuse, before anything loads, what this machine cannot run (``runnable_problems``)."""
    problems = runnable_problems(cfg, env)
    if problems:
        raise RunnerError(problems[0])


def quantized_device_map(env: Environment) -> dict[str, Any]:
    """Where a 4-bit model is placed: this process's CUDA device (LOCAL_RANK under a launcher),
    else the CPU (bitsandbytes' CPU backend). bitsandbytes quantizes while loading, so the
    device is chosen at load time, never moved afterwards."""
    if env.cuda:
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return {"": "cpu"}


def attn_implementation(cfg: RunConfig, env: Environment) -> str:
    """The attention kernel the model loads with; ``auto`` follows ``hardware.auto_attention``."""
    if cfg.model.attn_implementation != "auto":
        return cfg.model.attn_implementation
    compute = resolved_precision(cfg, env.bf16_supported, env.cuda).compute
    return auto_attention(env.cuda and env.flash_attention_2, env.has("flash_attn"), compute)[0]


def fsdp_checkpoints_activations(environ: dict[str, str] | None = None) -> bool:
    """True in a process that ``accelerate launch`` started with FSDP activation checkpointing on
    (it passes the accelerate config to its processes as environment variables)."""
    environ = os.environ if environ is None else environ
    return (environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
            and environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true")


def sft_config_kwargs(cfg: RunConfig, env: Environment, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything SFTConfig receives, derived from the RunConfig alone."""
    t = cfg.training
    kwargs = {name: getattr(t, name) for name in PASSTHROUGH}
    if t.warmup_ratio and not t.warmup_steps:
        kwargs["warmup_steps"] = t.warmup_ratio  # transformers 5: a float < 1 is a ratio of total steps
    precision = resolved_precision(cfg, env.bf16_supported, env.cuda)
    kwargs["bf16"], kwargs["fp16"] = precision.bf16, precision.fp16
    if not env.cuda:
        kwargs["use_cpu"] = True
    checkpointing = bool(t.gradient_checkpointing)
    if checkpointing and fsdp_checkpoints_activations():
        # Launched under FSDP with fsdp_activation_checkpointing (distributed.accelerate_config sets it
        # from this same setting): FSDP checkpoints each wrapped layer, and transformers refuses a
        # second, model-level checkpointing on top (it would also all-gather every layer twice).
        checkpointing = False
    kwargs["activation_checkpointing"] = checkpointing
    if checkpointing:
        kwargs["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    kwargs.update(
        output_dir=str(output_dir),
        ddp_find_unused_parameters=False,  # decoder LMs use every parameter; True costs a pass per step
        logging_first_step=True,
        disable_tqdm=True,
        save_only_model=False,
        remove_unused_columns=True,
    )
    if kwargs["eval_strategy"] == "no":
        kwargs.pop("eval_steps")
        kwargs.pop("load_best_model_at_end")
    else:
        # Tracks the best evaluation so checkpoint rotation (save_total_limit) never deletes it:
        # the curve doctor points users at it when eval loss turns up.
        kwargs.update(metric_for_best_model="eval_loss", greater_is_better=False)
    return kwargs


def resolve_data(cfg: RunConfig):
    from . import data as data_mod

    train: list[dict] = []
    reports = []
    for source in cfg.data.sources:
        examples, report = data_mod.load_examples(source, on_bad_rows=cfg.data.on_bad_rows)
        train.extend(examples)
        reports.append(report)
    evals: list[dict] = []
    if cfg.data.eval_source is not None:
        evals, report = data_mod.load_examples(cfg.data.eval_source, on_bad_rows=cfg.data.on_bad_rows)
        reports.append(report)
    elif cfg.data.eval_fraction > 0:
        import random

        rng = random.Random(cfg.training.seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        n_eval = max(1, int(len(train) * cfg.data.eval_fraction))
        held = set(order[:n_eval])
        evals = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
    return train, evals, reports


def load_model(cfg: RunConfig, env: Environment, model_path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = resolved_precision(cfg, env.bf16_supported, env.cuda).weights
    kwargs: dict[str, Any] = dict(
        dtype=getattr(torch, TORCH_DTYPES[dtype]),
        attn_implementation=attn_implementation(cfg, env),
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if cfg.model.revision and not model_path.is_dir():
        kwargs["revision"] = cfg.model.revision
    if cfg.method.type == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.method.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=cfg.method.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=getattr(torch, TORCH_DTYPES[cfg.method.bnb_4bit_compute_dtype]),
            bnb_4bit_quant_storage=getattr(torch, TORCH_DTYPES[dtype]),
        )
        kwargs["device_map"] = quantized_device_map(env)
    return AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)


def peft_config(cfg: RunConfig):
    if cfg.method.type == "full":
        return None
    from peft import LoraConfig

    targets = cfg.method.lora_target_modules
    return LoraConfig(
        r=cfg.method.lora_r,
        lora_alpha=cfg.method.lora_alpha,
        lora_dropout=cfg.method.lora_dropout,
        target_modules=targets,
        use_dora=cfg.method.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


@dataclass
class Prepared:
    """What build_trainer assembled, for callers that want to look inside."""

    trainer: Any
    tokenizer: Any
    template: Any
    train_rows: int
    eval_rows: int
    problems: list = None  # rows left out (data loading or template), as data.Problem
    resized_embeddings: int | None = None  # new vocabulary size when the template added tokens
    eval_examples: list | None = None  # the held-out examples, canonical (samples are drawn from them)


def _grow_embeddings(model, tokenizer) -> int | None:
    """A template that added tokens (ChatML on a base model) needs embedding rows for them."""
    size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= size:
        return None
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    return model.get_input_embeddings().weight.shape[0]


def _apply_liger(model) -> None:
    """Liger's layer kernels (RMSNorm, SwiGLU, RoPE) patched into the model, as TRL 1.16 does for
    ``use_liger_kernel`` (which it deprecates): without the fused linear cross-entropy, which would
    replace the model's forward and with it TRL's own fused LM head."""
    from transformers.integrations.liger import apply_liger_kernel

    apply_liger_kernel(model, {"fused_linear_cross_entropy": False})


def _embedding_module_names(model) -> list[str]:
    """Leaf names of the input and output embeddings (``embed_tokens``, ``lm_head``...)."""
    names = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for name, candidate in model.named_modules():
            if candidate is module and name:
                names.append(name.rsplit(".", 1)[-1])
                break
    return sorted(set(names))


def build_trainer(cfg: RunConfig, output_dir: str | os.PathLike, callbacks: list | None = None,
                  env: Environment | None = None, phases: PhaseReporter | None = None) -> Prepared:
    """The single RunConfig → SFTTrainer path (runner, probe and benchmarks use it). With
    ``phases``, the download, tokenize, load (quantize for 4-bit) and pack phases are reported."""
    from trl import SFTConfig, SFTTrainer

    from . import templates
    from .models import load_tokenizer, resolve_model

    phases = phases or PhaseReporter(None)
    env = env or Environment.detect()
    check_runnable(cfg, env)
    resolved = resolve_model(cfg.model.id, cfg.model.revision, weights=True, phases=phases)
    tokenizer = load_tokenizer(resolved.path, trust_remote_code=cfg.model.trust_remote_code)
    template = templates.resolve_template(tokenizer, cfg.template)
    with phases.active():  # a Hub dataset's download is reported from deep in the readers
        train_examples, eval_examples, reports = resolve_data(cfg)
    problems = [p for r in reports if r is not None for p in r.problems]
    # The data is tokenized before the weights load: a bad row stops the run in seconds, not after minutes.
    tokenize = phases.begin("tokenize", total=len(train_examples) + len(eval_examples), unit="rows")
    train_ds = templates.build_dataset(tokenizer, train_examples, template, cfg, report=problems,
                                       progress=lambda done, total: tokenize.update(done))
    eval_ds = (templates.build_dataset(tokenizer, eval_examples, template, cfg, report=problems,
                                       progress=lambda done, total: tokenize.update(len(train_examples) + done))
               if eval_examples else None)
    tokenize.end()

    kwargs = sft_config_kwargs(cfg, env, output_dir)
    kwargs.update(templates.sft_mask_kwargs(cfg, template))
    if eval_ds is None:
        kwargs["eval_strategy"] = "no"
        for key in ("eval_steps", "metric_for_best_model", "greater_is_better", "load_best_model_at_end"):
            kwargs.pop(key, None)
    args = SFTConfig(**kwargs)
    shards = _weight_shards(resolved.path)
    load = phases.begin("quantize" if cfg.method.type == "qlora" else "load", total=shards, unit="shards")
    model = load_model(cfg, env, resolved.path)
    load.end()
    resized = _grow_embeddings(model, tokenizer)
    if cfg.training.use_liger_kernel:
        _apply_liger(model)
    lora = peft_config(cfg)
    if resized and lora is not None:
        # New token rows start untrained: with LoRA the embeddings must be trained (and saved) too.
        lora.modules_to_save = _embedding_module_names(model)
    pack = phases.begin("pack", total=len(train_ds), unit="rows") if args.packing else None
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks or [],
    )
    if pack is not None:
        pack.end()
    return Prepared(trainer, tokenizer, template, len(train_ds), len(eval_ds) if eval_ds is not None else 0,
                    problems, resized, eval_examples)


def _weight_shards(path: Path) -> int:
    """How many weight files loading reads (safetensors first, as transformers prefers them)."""
    for pattern in ("*.safetensors", "*.bin"):
        found = [p for p in path.glob(pattern) if not p.name.startswith("training_args")]
        if found:
            return len(found)
    return 1


# --------------------------------------------------------------------------- the training process

def _samples_per_step(args) -> int:
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * world


def _finite(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def _events_callback(writer: EventWriter, run_dir: Path, gpu: GpuSampler | None = None,
                     phases: PhaseReporter | None = None):
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        """Turns trainer logs into events with live metrics; honours the STOP file (graceful
        stop: finish the step, save a checkpoint, stop); stops at once on a NaN/inf loss."""

        def __init__(self):
            self._run = RunDir(run_dir)
            self._throughput: Throughput | None = None
            self.diverged: dict[str, Any] | None = None
            self.disk_full: dict[str, Any] | None = None
            self.stop_requested = False
            self._gpu_emitted = time.time()

        def on_train_begin(self, args, state, control, **kw):
            from .oom_adapt import injected_oom_step

            self._oom_at = injected_oom_step(args.per_device_train_batch_size)  # test-only hook
            self._throughput = Throughput(_samples_per_step(args))
            self._throughput.begin(state.global_step)
            writer.emit(Kind.TRAIN_BEGIN, step=state.global_step, max_steps=state.max_steps,
                        num_train_epochs=args.num_train_epochs, samples_per_step=_samples_per_step(args),
                        world_size=int(getattr(args, "world_size", 1) or 1), distributed_type=_distributed_type())
            self._efficiency = start_meter(args, kw.get("model"))  # efficiency fields of `log` events
            self._train_phase = (phases.begin("train", total=state.max_steps, unit="steps", done=state.global_step)
                                 if phases else None)  # resumed: from the checkpoint's step

        def on_train_end(self, args, state, control, **kw):
            if getattr(self, "_train_phase", None) is not None:
                self._train_phase.end()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if any(k.startswith("eval_") for k in logs):
                self._check_finite(state, control, "eval_loss", logs.get("eval_loss"))
                writer.emit(Kind.EVAL, step=state.global_step, epoch=logs.get("epoch"),
                            eval_loss=_json_number(logs.get("eval_loss")),
                            **{k: v for k, v in logs.items() if k.startswith("eval_") and k != "eval_loss"})
                return
            if "loss" not in logs:
                if "train_runtime" in logs:
                    durations = phases.durations() if phases is not None else {}
                    writer.emit(Kind.SUMMARY, step=state.global_step, **logs, phase_durations_s=durations)
                return
            if self._throughput is None:
                self._throughput = Throughput(_samples_per_step(args))
            tokens = logs.get("num_tokens")
            rates = self._throughput.update(state.global_step, state.max_steps, tokens)
            extra = self._gpu_fields()
            writer.emit(
                Kind.LOG, step=state.global_step, max_steps=state.max_steps, loss=_json_number(logs.get("loss")),
                learning_rate=logs.get("learning_rate"), grad_norm=_json_number(logs.get("grad_norm")),
                epoch=logs.get("epoch"), num_tokens=tokens, **rates,
                mean_token_accuracy=logs.get("mean_token_accuracy"), **extra,
                **meter_fields(getattr(self, "_efficiency", None), logs, rates.get("tokens_per_s")),
            )
            self._check_finite(state, control, "loss", logs.get("loss"))

        def _gpu_fields(self) -> dict[str, Any]:
            fields = gpu.snapshot() if gpu is not None else {}
            if fields:
                fields.update(_torch_cuda_peak())
                self._gpu_emitted = time.time()
            return fields

        def _emit_gpu(self, step: int) -> None:
            fields = self._gpu_fields()
            if fields:
                writer.emit(Kind.GPU, step=step, **fields)

        def _check_finite(self, state, control, name: str, value: Any) -> None:
            if _finite(value) or self.diverged:
                return
            self.diverged = {"step": state.global_step, "name": name, "value": str(value)}
            control.should_training_stop = True
            control.should_save = False  # never checkpoint NaN weights
            control.should_evaluate = False

        def on_step_begin(self, args, state, control, **kw):
            if getattr(self, "_oom_at", None) == state.global_step + 1:
                import torch  # a real OutOfMemoryError, as CUDA raises it (oom_adapt.TEST_OOM_ENV)

                raise torch.OutOfMemoryError(f"CUDA out of memory (injected at step {self._oom_at} by "
                                             "SFT_WIZARD_TEST_OOM_AT, a test-only hook)")

        def on_step_end(self, args, state, control, **kw):
            if getattr(self, "_train_phase", None) is not None:
                self._train_phase.update(state.global_step)
            if gpu is not None and gpu.available and time.time() - self._gpu_emitted >= GPU_EVENT_INTERVAL_S:
                self._emit_gpu(state.global_step)  # between logs too, however far apart they are
            if _stop_agreed(self._run.stop_requested()) and not self.diverged:
                self.stop_requested = True
                control.should_save = True
                control.should_training_stop = True
            if control.should_save and _is_main_process():
                self._check_room(state, control, kw.get("model"))

        def _check_room(self, state, control, model) -> None:
            """A checkpoint is only started when the disk can hold it (and the final events)."""
            checkpoints = self._run.checkpoints
            need = checkpoint_estimate(checkpoints, model) + RESERVE_BYTES
            free = free_bytes(checkpoints)
            if free is None or free >= need:
                return
            control.should_save = False
            control.should_training_stop = True
            kept = newest_checkpoint(checkpoints)
            self.disk_full = {
                "step": state.global_step, "need_bytes": need, "free_bytes": free,
                "message": disk_full_message(
                    run_dir, need, f"checkpoint-{state.global_step}",
                    fix=(f"training stopped at step {state.global_step} without saving; "
                         + (f"{kept.name} is the last complete checkpoint; " if kept else "")
                         + f"free space there, then `sft-wizard resume {run_dir.name}`")),
            }

        def pause(self, seconds: float) -> None:
            """Time spent sampling answers: not training, so out of tokens/s."""
            if self._throughput is not None:
                self._throughput.pause(seconds)

        def on_save(self, args, state, control, **kw):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            writer.emit(Kind.CHECKPOINT, step=state.global_step, path=str(path))

    return EventsCallback()


def _distributed_type() -> str | None:
    """How accelerate runs this process (``NO``, ``MULTI_GPU``, ``MULTI_CPU``, ``FSDP``, ``DEEPSPEED``):
    what the launch really did, whatever the config asked for."""
    try:
        from accelerate.state import AcceleratorState

        return str(AcceleratorState().distributed_type.value)
    except Exception:  # noqa: BLE001 - informative only
        return None


def _add_samples(trainer, prepared: Prepared, cfg: RunConfig, writer, events_callback) -> None:
    """``run.samples`` held-out prompts answered before the first step and after each evaluation
    (core/samples.py). Only the main process samples, and only when it holds the whole model
    (DDP; not FSDP/DeepSpeed, whose wrapped or sharded weights generate only together)."""
    from .samples import sample_prompts, samples_callback

    prompts = sample_prompts(prepared.eval_examples or [], cfg.template.system_prompt, cfg.run.samples)
    if not prompts:
        return
    whole_model = trainer.args.world_size <= 1 or cfg.distributed.strategy == "ddp"
    trainer.add_callback(samples_callback(writer, prepared.tokenizer, prepared.template.template, prompts,
                                          paused=events_callback.pause,
                                          distributed_ok=_is_main_process() and whole_model))


def _json_number(value: Any) -> Any:
    """NaN/inf are not JSON: written as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _torch_cuda_peak() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"cuda_max_allocated_gib": round(torch.cuda.max_memory_allocated() / 1024 ** 3, 3)}


def _checkpoint_step(path: str | None) -> int:
    try:
        return int(Path(path).name.rsplit("-", 1)[1]) if path else 0
    except (IndexError, ValueError):
        return 0


def _checkpoint_reached_the_end(trainer, checkpoint: str) -> bool:
    """True when ``checkpoint`` was saved at the run's last step (``max_steps``, or the recorded
    last step of the same number of epochs)."""
    import json

    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        done = int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    args = trainer.args
    if args.max_steps and args.max_steps > 0:
        return done >= args.max_steps
    same_epochs = state.get("num_train_epochs") == args.num_train_epochs
    return same_epochs and isinstance(state.get("max_steps"), int) and 0 < state["max_steps"] <= done


# ---- multi-process runs (accelerate launch, issue 7): only the main process writes events and files.
def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _shutdown_distributed(wait: bool) -> None:
    """Leave the process group together: a rank that exits while another still saves tears the
    gloo/NCCL connections down under it (SIGABRT at exit). Only waits after a clean finish, so a
    rank that failed never leaves the others blocked in a barrier."""
    import sys as _sys

    torch = _sys.modules.get("torch")
    if torch is None:
        return
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort at exit; the events already say how the run ended
        pass


def _stop_agreed(seen: bool) -> bool:
    """Every rank stops at the same step: stop when any rank saw the STOP file (a rank that left
    the step loop alone would hang the others in their next all-reduce)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return seen
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if seen else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class _NoEvents:
    def emit(self, event: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
# ---- end multi-process


def execute(run_dir: str | os.PathLike, resume_from: str | None = None) -> int:
    """Train the run in ``run_dir`` (config.yaml inside). Returns the process exit code.

    Appends to the run's ``events.jsonl``: ``start`` (or ``resume``, with the checkpoint), then
    ``prepared``, ``train_begin``, ``log``/``eval``/``checkpoint``, and always one ``end``."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    writer = EventWriter(rd.events) if _is_main_process() else _NoEvents()
    cfg: RunConfig | None = None

    def on_signal(signum, frame):  # graceful: finish the step, save, stop
        rd.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.time()
    if _is_main_process():
        lay_reserve(run_dir)  # room for the last events if the disk fills up (core/diskspace.py)
    phases = PhaseReporter(writer.emit)  # download, load, tokenize … train, save: `phase` events
    gpu: GpuSampler | None = None
    clean_exit = False
    trainer = None

    def _current_step() -> int | None:
        return trainer.state.global_step if trainer is not None else None

    try:
        from . import curve_doctor
        from .fingerprint import fingerprint

        cfg = load_preset(rd.config)
        writer = curve_doctor.watch(writer, cfg)  # loss-curve warnings go into the events as they happen
        writer.emit(Kind.RESUME if resume_from else Kind.START, step=_checkpoint_step(resume_from), pid=os.getpid(),
                    run_dir=str(run_dir), model=cfg.model.id, method=cfg.method.type, resume_from=resume_from,
                    fingerprint=fingerprint(cfg))
        env = Environment.detect()
        for note in runnable_notes(cfg, env):
            writer.emit(Kind.WARNING, step=0, source="runner", code="qlora_on_cpu", message=note)
        gpu = GpuSampler().start() if env.cuda else None
        callback = _events_callback(writer, run_dir, gpu, phases)
        prepared = build_trainer(cfg, rd.checkpoints, callbacks=[callback], env=env, phases=phases)
        trainer = prepared.trainer
        trainer.args.logging_nan_inf_filter = False  # a NaN loss must show, not be averaged away
        _add_samples(trainer, prepared, cfg, writer, callback)
        writer.emit(Kind.PREPARED, step=0, train_rows=prepared.train_rows, eval_rows=prepared.eval_rows,
                    template_source=prepared.template.source,
                    trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                    total_params=sum(logical_numel(p) for p in trainer.model.parameters()),
                    gpu_sampling=bool(gpu and gpu.available), resized_embeddings=prepared.resized_embeddings)
        if prepared.problems:
            # Nothing is dropped silently: say how many rows were left out and why (first few).
            first = "; ".join(str(p.to_dict().get("message")) for p in prepared.problems[:3])
            writer.emit(Kind.WARNING, step=0, source="data", code="rows_left_out",
                        message=f"{len(prepared.problems)} rows left out of training: {first}",
                        problems=[p.to_dict() for p in prepared.problems[:50]])
        if resume_from and _checkpoint_reached_the_end(trainer, resume_from):
            # Saved at max_steps: train() would still run one more step; the checkpoint is the result.
            trainer._load_from_checkpoint(resume_from)
            trainer.state.global_step = _checkpoint_step(resume_from)
            trainer.state.max_steps = trainer.state.global_step
        else:
            trainer.train(resume_from_checkpoint=resume_from)
        step = trainer.state.global_step
        duration = round(time.time() - started, 2)
        if callback.diverged:
            d = callback.diverged
            line = (f"the {d['name'].replace('_', ' ')} became {d['value']} at step {d['step']}: lower "
                    f"training.learning_rate (now {cfg.training.learning_rate:g}) or max_grad_norm, or check the data")
            writer.emit(Kind.ERROR, step=step, reason=Reason.NAN, message=line)
            writer.emit(Kind.END, step=step, status=Status.FAILED, reason=Reason.NAN, message=line, duration_s=duration)
            return 1
        if callback.disk_full:
            d = callback.disk_full
            writer.emit(Kind.ERROR, step=step, reason=Reason.DISK_FULL, message=d["message"],
                        need_bytes=d["need_bytes"], free_bytes=d["free_bytes"])
            writer.emit(Kind.END, step=step, status=Status.FAILED, reason=Reason.DISK_FULL, message=d["message"],
                        duration_s=round(time.time() - started, 2))
            clean_exit = True
            return 1
        stop_asked = callback.stop_requested or rd.stop_requested()
        rd.clear_stop()
        if stop_asked and step < trainer.state.max_steps:
            checkpoint = rd.checkpoint(step)
            writer.emit(Kind.END, step=step, status=Status.STOPPED, reason=Reason.STOPPED,
                        message=f"on request, checkpoint-{step} saved", duration_s=duration,
                        checkpoint=str(checkpoint) if checkpoint.is_dir() else None)
            clean_exit = True
            return 0
        final = rd.final
        need = weights_bytes(trainer.model) + RESERVE_BYTES
        free = free_bytes(run_dir)
        if free is not None and free < need:
            kept = newest_checkpoint(rd.checkpoints)
            line = disk_full_message(run_dir, need, "the final model", fix=(
                f"trained to step {step} but not saved; " + (f"{kept.name} holds the last checkpoint; " if kept else "")
                + "free space there, then `sft-wizard resume " + run_dir.name + "`"))
            writer.emit(Kind.ERROR, step=step, reason=Reason.DISK_FULL, message=line, need_bytes=need,
                        free_bytes=free)
            writer.emit(Kind.END, step=step, status=Status.FAILED, reason=Reason.DISK_FULL, message=line,
                        duration_s=round(time.time() - started, 2))
            clean_exit = True
            return 1
        save = phases.begin("save", total=1, unit="files")
        trainer.save_model(str(final))
        if _is_main_process():
            prepared.tokenizer.save_pretrained(str(final))
        save.end()
        best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
        writer.emit(Kind.END, step=step, status=Status.FINISHED, final_dir=str(final),
                    duration_s=round(time.time() - started, 2), phase_durations_s=phases.durations(),
                    **({"best_checkpoint": best, "best_eval_loss": trainer.state.best_metric} if best else {}))
        clean_exit = True
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then re-raised as an exit code
        reason, line = classify_failure(exc, cfg)
        if reason == Reason.CRASH and _is_main_process() and (free_bytes(run_dir) or 0) < LOW_FREE_BYTES:
            reason = Reason.DISK_FULL  # torch's writer reports ENOSPC as "inline_container.cc … unexpected pos"
        if reason == Reason.DISK_FULL:
            line = disk_full_message(run_dir, fix="the last complete checkpoint is kept; free space there, then "
                                                  f"`sft-wizard resume {run_dir.name}`")
        traceback.print_exc()
        if reason == Reason.OOM and cfg is not None and cfg.run.on_oom == "adapt":
            # run.on_oom: adapt — no end: the supervisor changes the config and trains on (core/oom_adapt.py)
            from .oom_adapt import ADAPT_EXIT

            writer.emit(Kind.ERROR, step=_current_step(), reason=reason, message=line, exception=type(exc).__name__,
                        adapting=True)
            return ADAPT_EXIT
        writer.emit(Kind.ERROR, step=None, reason=reason, message=line, exception=type(exc).__name__)
        writer.emit(Kind.END, step=None, status=Status.FAILED, reason=reason, message=line,
                    duration_s=round(time.time() - started, 2))
        return 1
    finally:
        if gpu is not None:
            gpu.stop()
        writer.close()
        if _is_main_process():
            release_reserve(run_dir)  # the end is written (a killed process leaves it to the supervisor)
        _shutdown_distributed(wait=clean_exit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftwizard.core.runner")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    faulthandler.enable()  # a native crash leaves its stack in train.log
    return execute(args.run_dir, args.resume)


if __name__ == "__main__":
    sys.exit(main())
