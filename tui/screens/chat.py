"""Talk to a finished run's model with the template it trained with; compare it with its base.

The model loads, answers and compares in thread workers (``chat_services``); the screen only
writes what comes back into the transcript. An answer that never emitted EOS / the end-of-turn
token gets a flag line: the model may not have learned to stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static
from textual.worker import Worker, WorkerState

from .. import chat_services

if TYPE_CHECKING:
    from sftwizard.core.chat import ChatModel, Reply
    from sftwizard.core.config import RunConfig


class ChatScreen(Screen):
    CSS = """
    ChatScreen #chat-status { color: $text-muted; }
    ChatScreen #chat-log { height: 1fr; border: round $primary; }
    """
    BINDINGS = [
        # priority: a focused Input would take ctrl+d (delete right) and ctrl+l for itself
        Binding("ctrl+d", "compare", "Compare with base", id="chat-compare", priority=True),
        Binding("ctrl+l", "new_conversation", "New conversation", id="chat-reset", priority=True),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__(id="chat-screen")
        self.run_dir = Path(run_dir)
        self.model: ChatModel | None = None  # once loaded
        self.base_model: ChatModel | None = None
        self.cfg: RunConfig | None = None
        self.messages: list[dict] = []
        self.busy = True  # loading

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Chat with {self.run_dir.name}[/b]", id="chat-title")
        yield Static("Loading the model…", id="chat-status")
        yield RichLog(id="chat-log", wrap=True, markup=False, highlight=False)
        yield Input(placeholder="Type a message; Enter sends", id="chat-input", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load_model()

    # ------------------------------------------------------------------ workers (core only)
    @work(thread=True, exclusive=True, group="chat-load", exit_on_error=False)
    def load_model(self):
        return chat_services.load_tuned(self.run_dir)

    @work(thread=True, exclusive=True, group="chat-reply", exit_on_error=False)
    def generate_reply(self, model, messages: list[dict]):
        return chat_services.answer(model, messages)

    @work(thread=True, exclusive=True, group="chat-compare", exit_on_error=False)
    def run_comparison(self, model, cfg, base):
        return chat_services.compare_on_eval(self.run_dir, model, cfg, base)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        group = event.worker.group
        if group not in ("chat-load", "chat-reply", "chat-compare") or \
                event.state not in (WorkerState.ERROR, WorkerState.SUCCESS):
            return
        if event.state == WorkerState.ERROR:
            self._failed(group, event.worker.error)
        elif group == "chat-load":
            self._loaded(*event.worker.result)
        elif group == "chat-reply":
            self._answered(event.worker.result)
        else:
            self._compared(event.worker.result)

    def _failed(self, group: str, error: BaseException | None) -> None:
        what = {"chat-load": "Could not load the model", "chat-reply": "Could not answer",
                "chat-compare": "Could not compare"}[group]
        known = isinstance(error, chat_services.user_error_types())
        message = f"{what}: {error}" if known else f"{what}: {type(error).__name__}: {error}"
        self._write(Text(message, style="bold red"))
        self.notify(message, severity="error")
        if group == "chat-load":
            self.busy = False  # nothing more will come; the input stays disabled
            self._status("The model could not be loaded. Esc: back")
            return
        self._ready()

    def _loaded(self, model: ChatModel, cfg: RunConfig) -> None:
        self.model, self.cfg = model, cfg
        system = self.cfg.template.system_prompt if self.cfg is not None else None
        self.messages = [{"role": "system", "content": system}] if system else []
        self._write(Text(f"Loaded {self.model.description}. Greedy answers, up to "
                         f"{chat_services.MAX_NEW_TOKENS} new tokens.", style="dim"))
        self._ready()

    def _answered(self, turn: chat_services.Turn) -> None:
        self.messages.append({"role": "assistant", "content": turn.reply.text})
        self._write(self._line("model", turn.reply.text or "(empty answer)", "bold green"))
        if not turn.stop.ok:
            self._write(Text(f"⚠ {turn.stop.message}", style="bold yellow"))
        self._ready()

    def _compared(self, result: chat_services.Comparison) -> None:
        self.base_model = result.base_model
        self._write(Text(f"Base vs fine-tuned on {len(result.rows)} held-out eval prompts", style="bold"))
        for i, row in enumerate(result.rows, 1):
            table = Table(title=f"[{i}] {chat_services.last_user(row.prompt)}", title_justify="left",
                          expand=True, show_lines=False)
            table.add_column(f"base · {result.base_model.description}", ratio=1, overflow="fold")
            table.add_column(f"fine-tuned · {self.model.description}", ratio=1, overflow="fold")
            table.add_row(self._answer_text(row.base), self._answer_text(row.tuned))
            self._write(table)
            if row.reference is not None:
                self._write(self._line("expected", row.reference, "dim"))
        for side, report in (("base", result.base_stop), ("fine-tuned", result.tuned_stop)):
            style = "green" if report.ok else "bold yellow"
            self._write(Text(f"{'✓' if report.ok else '⚠'} {side}: {report.message}", style=style))
        self._ready()

    # ------------------------------------------------------------------ actions
    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.busy or self.model is None:
            return
        event.input.value = ""
        self.messages.append({"role": "user", "content": text})
        self._write(self._line("you", text, "bold cyan"))
        self._working("Answering…")
        self.generate_reply(self.model, list(self.messages))

    def action_compare(self) -> None:
        if self.busy or self.model is None:
            self.notify("Wait for the model to finish." if self.busy else "The model did not load.",
                        severity="warning")
            return
        self._working("Comparing with the base model on held-out eval prompts…")
        self.run_comparison(self.model, self.cfg, self.base_model)

    def action_new_conversation(self) -> None:
        if self.busy:
            return
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self._write(Text("— new conversation —", style="dim"))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _line(who: str, text: str, style: str) -> Text:
        line = Text(f"{who}> ", style=style)
        line.append(text)
        return line

    @staticmethod
    def _answer_text(reply: Reply) -> Text:
        text = Text(reply.text or "(empty answer)")
        if not reply.stopped:
            text.append(f"\n⚠ no end-of-turn within {reply.new_tokens} tokens", style="yellow")
        return text

    def _write(self, renderable) -> None:
        self.query_one("#chat-log", RichLog).write(renderable, expand=True)  # the log's width, not 80

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    def _working(self, text: str) -> None:
        self.busy = True
        self._status(text)
        self.query_one("#chat-input", Input).disabled = True

    def _ready(self) -> None:
        self.busy = False
        description = self.model.description if self.model is not None else self.run_dir.name
        self._status(f"{description} · Enter: send · ctrl+d: compare with base · ctrl+l: new conversation")
        field = self.query_one("#chat-input", Input)
        field.disabled = False
        field.focus()
