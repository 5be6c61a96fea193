"""Every run this machine knows: status, step, loss; Enter attaches."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from sftwizard.core.event_lines import run_status_text
from sftwizard.core.run_model import RESUMABLE_STATUSES, Status

from .. import services


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "attach", "Attach", id="attach"),
        Binding("c", "chat", "Chat", id="chat"),
        Binding("u", "resume", "Resume", id="resume"),
        Binding("r", "reload", "Reload", id="reload"),
        Binding("space", "mark", "Mark", id="mark"),
        Binding("o", "compare", "Compare marked", id="compare"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs-screen")
        self.dirs: dict[str, Path] = {}
        self.statuses: dict[str, str] = {}
        self.marked: list[str] = []  # run ids, in the order they were marked (space)

    def compose(self) -> ComposeResult:
        yield Static("[b]Runs[/b] — Enter: attach · u: resume a stopped run · c: chat with a finished run · "
                     "space: mark, o: compare marked · r: reload · Esc: back", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("", key="mark", width=1)
        table.add_column("run", key="run")
        table.add_columns("status", "step", "loss", "model", "why")
        self.action_reload()

    def action_reload(self) -> None:
        self.run_worker(services.list_runs, name="runs", group="runs", thread=True, exclusive=True,
                        exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "runs" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        note = ""
        infos = []  # runs.RunInfo: the fold of each run's events
        if event.state == WorkerState.SUCCESS:
            infos = list(event.worker.result or [])
        else:
            note = f"Could not list runs: {event.worker.error}"
        table = self.query_one(DataTable)
        table.clear()
        self.dirs = {}
        self.statuses = {}
        for info in infos:
            self.dirs[info.id] = Path(info.dir)
            self.statuses[info.id] = info.status
            step = info.step if info.step is not None else "?"
            table.add_row("●" if info.id in self.marked else "", info.id, run_status_text(info.status, info.phase),
                          f"{step}/{info.max_steps or '?'}",
                          f"{info.last_loss:.4f}" if info.last_loss is not None else "—", info.model or "",
                          (info.message or info.reason or "")[:80], key=info.id)
        if event.state != WorkerState.SUCCESS:  # at least this session's runs, to attach to
            for path in self.app.session_runs:
                self.dirs[path.name], self.statuses[path.name] = path, "?"
                table.add_row("", path.name, "?", "?", "—", "", "", key=path.name)
        self.marked = [m for m in self.marked if m in self.dirs]
        self.query_one("#runs-note", Static).update(note or ("" if self.dirs else "No runs yet."))

    def action_mark(self) -> None:
        key = self._highlighted()
        if key not in self.dirs:
            return
        self.marked = [m for m in self.marked if m != key] if key in self.marked else [*self.marked, key]
        table = self.query_one(DataTable)
        table.update_cell(key, "mark", "●" if key in self.marked else "")
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)  # mark the next with one more space
        self.query_one("#runs-note", Static).update(
            f"{len(self.marked)} marked" + (" — o: compare them" if len(self.marked) >= 2 else " — mark at least two"))

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("Mark two or more runs with space, then press o to compare them.", severity="warning")
            return
        from .compare import CompareScreen

        self.app.push_screen(CompareScreen([self.dirs[m] for m in self.marked]))

    def _highlighted(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_attach(self) -> None:
        key = self._highlighted()
        if key in self.dirs:
            from .run import RunScreen

            self.app.push_screen(RunScreen(self.dirs[key]))

    def action_chat(self) -> None:
        key = self._highlighted()
        if key not in self.dirs:
            return
        if self.statuses.get(key) != Status.FINISHED:
            self.notify(f"{key} is {self.statuses.get(key, '?')}: only a finished run has a model to chat with.",
                        severity="warning")
            return
        from .chat import ChatScreen

        self.app.push_screen(ChatScreen(self.dirs[key]))

    def action_resume(self) -> None:
        key = self._highlighted()
        if key not in self.dirs:
            return
        status = self.statuses.get(key)
        if status not in RESUMABLE_STATUSES:
            self.notify(f"{key} is {status}: only a stopped, failed or lost run can be resumed.",
                        severity="warning")
            return
        from .run import RunScreen

        self.app.push_screen(RunScreen(self.dirs[key], resume=True))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()
