"""Sample answers while a run trains: watch the model learn.

Before the first step (the base model) and after every evaluation, the training process answers
a few held-out prompts of the eval split (``run.samples``, default 3; 0 turns it off) with the
template it trains with, greedily, up to a length cap, stopping at the template's end of turn.
Each answer is a ``sample`` event (docs/run-directory.md): ``prompt_id``, ``step``, ``text``,
``stopped``, ``new_tokens``, with the prompt and its reference answer, and ``generation_s``.

Generation must not change what is trained: the torch (and CUDA) RNG state is saved and
restored, the model goes back to the mode it was in, nothing keeps a graph (``torch.no_grad``),
and the time spent is taken out of the training throughput (``pause``) and reported on its own.

Readers: ``samples_by_prompt`` groups the events for the Run screen's Samples tab and ``report``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .held_out import HeldOutPrompt, held_out_prompts, spread
from .run_model import Kind

MIN_NEW_TOKENS = 32  # every prompt may say at least this much
MAX_NEW_TOKENS = 128  # the cap, however long the reference


@dataclass
class SamplePrompt:
    """One held-out prompt the run keeps answering (``id``: its ``prompt_id`` in the events), and
    the answer the data gives."""

    id: int
    messages: list[dict]
    reference: str | None

    @property
    def last_user(self) -> str:
        return HeldOutPrompt(self.messages, self.reference).last_user


def sample_prompts(eval_examples: list[dict], system_prompt: str | None, n: int) -> list[SamplePrompt]:
    """``n`` held-out conversations spread evenly over the eval split (so a split ordered by task
    shows more than one task), built as ``sft-wizard chat --compare`` and ``report`` build them
    (``held_out.held_out_prompts``: cut before the last answer, the system prompt as trained)."""
    if n <= 0 or not eval_examples:
        return []
    every = held_out_prompts(eval_examples, system_prompt, conversations_only=True)
    return [SamplePrompt(i, p.messages, p.reference) for i, p in enumerate(spread(every, n))]


def answer_cap(tokenizer, reference: str | None) -> int:
    """New tokens allowed for one prompt: twice its reference, within [32, 128]."""
    ref = len(tokenizer(reference or "", add_special_tokens=False)["input_ids"])
    return max(MIN_NEW_TOKENS, min(MAX_NEW_TOKENS, 2 * ref + 8))


class rng_kept:
    """Context manager: the torch CPU and CUDA RNG states, and Python's, are as they were after."""

    def __enter__(self):
        import random

        import torch

        self._py = random.getstate()
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return self

    def __exit__(self, *exc):
        import random

        import torch

        random.setstate(self._py)
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        return False


def generate_samples(model, tokenizer, template: str | None, prompts: list[SamplePrompt], step: int,
                     stop_ids: list[int]) -> list[dict[str, Any]]:
    """One answer per prompt from ``model`` as it is now, as ``sample`` event fields. The model's
    mode and the RNG states are left as found; no gradient is recorded."""
    from .chat_model import ChatModel

    chat = ChatModel(model, tokenizer, template, "the model in training", stop_ids)
    was_training = model.training
    out = []
    with rng_kept():
        model.eval()
        try:
            for prompt in prompts:
                began = time.perf_counter()
                reply = chat.generate(prompt.messages, max_new_tokens=answer_cap(tokenizer, prompt.reference))
                out.append({
                    "step": step, "prompt_id": prompt.id, "prompt": prompt.last_user, "reference": prompt.reference,
                    "text": reply.text, "stopped": reply.stopped, "new_tokens": reply.new_tokens,
                    "generation_s": round(time.perf_counter() - began, 3),
                })
        finally:
            model.train(was_training)
    return out


def samples_callback(writer, tokenizer, template: str | None, prompts: list[SamplePrompt],
                     paused: Callable[[float], None] | None = None, distributed_ok: bool = True):
    """A TrainerCallback writing ``sample`` events before the first step and after each evaluation.
    ``paused(seconds)`` hears how long generation took (the runner takes it out of tokens/s)."""
    from transformers import TrainerCallback

    from .stop_tokens import stop_token_ids

    class SamplesCallback(TrainerCallback):
        def __init__(self):
            self.stop_ids: list[int] | None = None
            self.sampled_steps: list[int] = []
            self.failed = False

        def _sample(self, model, step: int) -> None:
            if model is None or not prompts or not distributed_ok or self.failed or step in self.sampled_steps:
                return
            began = time.perf_counter()
            try:
                if self.stop_ids is None:
                    self.stop_ids = stop_token_ids(tokenizer, template, model)
                answers = generate_samples(model, tokenizer, template, prompts, step, self.stop_ids)
            except Exception as exc:  # noqa: BLE001 - sampling is a view on training, never a reason to stop it
                self.failed = True
                _release_cuda_cache()
                writer.emit("warning", step=step, source="samples", code="samples_failed",
                            message=f"sampling answers failed and is off for the rest of the run: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                answers = []
            for fields in answers:
                writer.emit(Kind.SAMPLE, **fields)
            self.sampled_steps.append(step)
            if paused is not None:
                paused(time.perf_counter() - began)

        def on_train_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 0:  # the base model; a resumed run already has its earlier samples
                self._sample(model, 0)

        def on_evaluate(self, args, state, control, model=None, **kw):
            self._sample(model, state.global_step)

    return SamplesCallback()


def _release_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- readers

@dataclass
class PromptSamples:
    """Everything sampled for one prompt: its text, reference, and the answers step by step."""

    prompt_id: int
    prompt: str
    reference: str | None
    answers: list[dict] = field(default_factory=list)  # {step, text, stopped, new_tokens, generation_s}

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "prompt": self.prompt, "reference": self.reference,
                "answers": list(self.answers)}


def samples_by_prompt(events: list[dict]) -> list[PromptSamples]:
    """``sample`` events grouped by prompt, answers in step order (a step sampled twice, as after
    a resume, keeps its last answer)."""
    found: dict[int, PromptSamples] = {}
    for ev in events:
        if ev.get("event") != Kind.SAMPLE or not isinstance(ev.get("prompt_id"), int):
            continue
        entry = found.setdefault(ev["prompt_id"], PromptSamples(ev["prompt_id"], str(ev.get("prompt") or ""),
                                                                ev.get("reference")))
        answer = {k: ev.get(k) for k in ("step", "text", "stopped", "new_tokens", "generation_s")}
        entry.answers = [a for a in entry.answers if a["step"] != answer["step"]] + [answer]
    for entry in found.values():
        entry.answers.sort(key=lambda a: a["step"] if isinstance(a["step"], int) else -1)
    return [found[k] for k in sorted(found)]


def generation_seconds(events: list[dict]) -> float:
    """Total time the run spent sampling (not training)."""
    return round(sum(ev.get("generation_s") or 0 for ev in events if ev.get("event") == Kind.SAMPLE), 3)
