"""The chat screen's one door into the engine: thin wrappers over ``sftwizard.core.chat``.

Every function here is blocking (it loads a model or generates) and runs in a worker thread;
torch and transformers are imported inside, never when the TUI starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import services

MAX_NEW_TOKENS = 128
COMPARE_LIMIT = 3


@dataclass
class Turn:
    """One answer and its stop check (did it end with EOS / the end-of-turn token?)."""

    reply: Any  # core.chat.Reply
    stop: Any  # core.chat.StopReport


@dataclass
class Comparison:
    """Base and fine-tuned answers on held-out eval prompts, with a stop check for each side."""

    base_model: Any  # core.chat.ChatModel, kept to answer the next comparison without reloading
    rows: list  # core.chat.Comparison
    base_stop: Any
    tuned_stop: Any


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is one sentence for the user (shown as is, not as a crash)."""
    from sftwizard.core.chat import ChatError
    from sftwizard.core.merge import MergeError

    return services.user_error_types() + (ChatError, MergeError)


def load_tuned(run_dir: Path):
    """The run's fine-tuned model (merged, adapter merged in memory, or full) and its config."""
    services._heavy_imports()
    from sftwizard.core import chat
    from sftwizard.core.merge import run_artifacts

    cfg = run_artifacts(run_dir).cfg
    return chat.load_chat_model(run_dir), cfg


def load_base(run_dir: Path):
    """The run's base model, with the template the run trained with."""
    services._heavy_imports()
    from sftwizard.core import chat

    return chat.load_chat_model(run_dir, base=True)


def answer(model, messages: list[dict], max_new_tokens: int = MAX_NEW_TOKENS) -> Turn:
    """The model's (greedy) answer to the conversation, and whether it stopped by itself."""
    from sftwizard.core import chat

    reply = model.generate(messages, max_new_tokens=max_new_tokens)
    return Turn(reply, chat.stop_check([reply], model, max_new_tokens))


def compare_on_eval(run_dir: Path, tuned, cfg, base=None, *, limit: int = COMPARE_LIMIT,
                    max_new_tokens: int = MAX_NEW_TOKENS) -> Comparison:
    """Base vs fine-tuned on the first ``limit`` held-out eval prompts of the run."""
    from sftwizard.core import chat

    prompts = chat.eval_prompts(cfg, limit)
    base = base if base is not None else load_base(run_dir)
    rows = chat.compare(base, tuned, prompts, max_new_tokens=max_new_tokens)
    return Comparison(base, rows,
                      chat.stop_check([r.base for r in rows], base, max_new_tokens),
                      chat.stop_check([r.tuned for r in rows], tuned, max_new_tokens))


def last_user(messages: list[dict]) -> str:
    from sftwizard.core.chat import Prompt

    return Prompt(messages, None).last_user
