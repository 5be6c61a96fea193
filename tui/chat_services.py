"""The chat screen's one door into the engine: thin wrappers over ``sftwizard.core.chat``.

Every function here is blocking (it loads a model or generates) and runs in a worker thread;
torch and transformers are imported inside, never when the TUI starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import services

if TYPE_CHECKING:
    from sftwizard.core import chat
    from sftwizard.core.config import RunConfig

MAX_NEW_TOKENS = 128
COMPARE_LIMIT = 3


@dataclass
class Turn:
    """One answer and its stop check (did it end with EOS / the end-of-turn token?)."""

    reply: chat.Reply
    stop: chat.StopReport


@dataclass
class Comparison:
    """Base and fine-tuned answers on held-out eval prompts, with a stop check for each side."""

    base_model: chat.ChatModel  # kept to answer the next comparison without reloading
    rows: list[chat.Comparison]
    base_stop: chat.StopReport
    tuned_stop: chat.StopReport


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is one sentence for the user (shown as is, not as a crash);
    ``ChatError`` and ``MergeError`` are among them (``UserError``s)."""
    return services.user_error_types()


def load_tuned(run_dir: Path) -> tuple[chat.ChatModel, RunConfig]:
    """The run's fine-tuned model (merged, adapter merged in memory, or full) and its config."""
    services._heavy_imports()
    from sftwizard.core.chat import load_chat_model
    from sftwizard.core.merge import run_artifacts

    cfg = run_artifacts(run_dir).cfg
    return load_chat_model(run_dir), cfg


def load_base(run_dir: Path) -> chat.ChatModel:
    """The run's base model, with the template the run trained with."""
    services._heavy_imports()
    from sftwizard.core.chat import load_chat_model

    return load_chat_model(run_dir, base=True)


def answer(model: chat.ChatModel, messages: list[dict], max_new_tokens: int = MAX_NEW_TOKENS) -> Turn:
    """The model's (greedy) answer to the conversation, and whether it stopped by itself."""
    from sftwizard.core.chat import stop_check

    reply = model.generate(messages, max_new_tokens=max_new_tokens)
    return Turn(reply, stop_check([reply], model, max_new_tokens))


def compare_on_eval(run_dir: Path, tuned: chat.ChatModel, cfg: RunConfig, base: chat.ChatModel | None = None, *,
                    limit: int = COMPARE_LIMIT, max_new_tokens: int = MAX_NEW_TOKENS) -> Comparison:
    """Base vs fine-tuned on the first ``limit`` held-out eval prompts of the run."""
    from sftwizard.core.chat import compare, eval_prompts, stop_check

    prompts = eval_prompts(cfg, limit)
    base = base if base is not None else load_base(run_dir)
    rows = compare(base, tuned, prompts, max_new_tokens=max_new_tokens)
    return Comparison(base, rows,
                      stop_check([r.base for r in rows], base, max_new_tokens),
                      stop_check([r.tuned for r in rows], tuned, max_new_tokens))


def last_user(messages: list[dict]) -> str:
    from sftwizard.core.chat import Prompt

    return Prompt(messages, None).last_user
