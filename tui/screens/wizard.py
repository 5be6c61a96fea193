"""The wizard: one draft RunConfig, eight steps, Back/Next, and every worker the steps need.

The draft lives here and only here. Steps get it (with what the workers found) as their
``context`` attribute and post ``XStep.Changed(changes)`` with the settings an edit changed, which
the wizard folds into the draft; it writes values into fields only when someone else changed them
(``set_draft``). The engine work derived from the draft is one table, ``JOBS``. Every blocking call
into the engine runs in a thread worker that only calls ``services``; results and failures come
back through ``on_worker_state_changed`` — the one place they are handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, ContentSwitcher, Footer, Input, Static
from textual.worker import Worker, WorkerState

from sftwizard.core.config import ConfigError, RunConfig, config_from_dict

from .. import services
from ..steps.base import Step, WizardContext, owns, with_changes
from ..steps.dataset import DatasetStep
from ..steps.fields import get_path
from ..steps.hardware import HardwareStep
from ..steps.method import MethodStep
from ..steps.model import ModelStep
from ..steps.review import ReviewStep
from ..steps.run import RunStep
from ..steps.template import TemplateStep
from ..steps.training import TrainingStep
from ..widgets.step_bar import StepBar

STEPS: list[type[Step]] = [HardwareStep, ModelStep, DatasetStep, TemplateStep, MethodStep, TrainingStep,
                           ReviewStep, RunStep]
STEP_IDS = [s.step_id for s in STEPS]
DEBOUNCE_S = 0.15
START_WORK_AFTER_S = 0.3


MODEL = ("model.id", "model.revision", "model.trust_remote_code")  # what names the model's files
FIRST_SOURCE = "data.sources.0"  # the steps, the preview and the audit read the first source


@dataclass(frozen=True)
class Job:
    """A piece of engine work derived from the draft, re-run when what it reads changes.

    ``reads``: the settings (dotted paths or sections; ``""`` is the whole draft) and ``inputs``:
    what other workers found (``WizardContext`` fields). ``ready`` says whether it can run now;
    ``after`` names jobs whose new run makes this one run again, its results cleared meanwhile
    (their results are its inputs: new facts, a new estimate).
    ``run`` is called in a thread with the draft and the context; its result lands in the context
    field ``result`` (``done`` sets more fields), an expected failure in ``error``. ``clears``: the
    fields that go stale the moment it starts. ``delay``: wait this long for the typing to stop.
    """

    name: str
    reads: tuple[str, ...]
    run: Callable[["WizardScreen", RunConfig, WizardContext], Any]
    result: str
    inputs: tuple[str, ...] = ()
    ready: Callable[["WizardScreen"], bool] = lambda wizard: True
    after: tuple[str, ...] = ()
    error: str | None = None
    clears: tuple[str, ...] = ()
    done: tuple[tuple[str, Any], ...] = ()
    delay: float = 0.0

    def key(self, cfg: RunConfig, context: WizardContext) -> tuple:
        return (tuple(cfg if path == "" else get_path(cfg, path) for path in self.reads),
                tuple(getattr(context, name) for name in self.inputs))


def _visited(step_id: str) -> Callable[["WizardScreen"], bool]:
    return lambda wizard: STEP_IDS.index(step_id) in wizard.visited


def _seen_from(step_id: str) -> Callable[["WizardScreen"], bool]:
    return lambda wizard: any(i >= STEP_IDS.index(step_id) for i in wizard.visited)


JOBS: tuple[Job, ...] = (
    Job("facts", MODEL, lambda w, cfg, ctx: services.model_facts(cfg), result="facts", error="facts_error",
        clears=("facts", "facts_error")),
    Job("data", (FIRST_SOURCE, "data.on_bad_rows"), lambda w, cfg, ctx: services.inspect_data(cfg),
        result="data_report", error="data_error", clears=("data_report", "data_error", "data_progress")),
    # The token audit reads every row through the tokenizer: only once the Dataset step was seen,
    # on the quick report; its failure is a note on that report (see worker_failed).
    Job("audit", (*MODEL, FIRST_SOURCE, "template", "training.max_length", "training.assistant_only_loss",
                  "training.completion_only_loss", "training.packing", "training.per_device_train_batch_size",
                  "training.padding_free"),
        lambda w, cfg, ctx: services.audit_data(cfg, progress=w.audit_progress), result="data_report",
        ready=lambda w: w.context.data_report is not None and _visited("dataset")(w), after=("data",),
        done=(("data_error", None), ("data_progress", None))),
    Job("preview", (*MODEL, FIRST_SOURCE, "data.on_bad_rows", "template", "training.max_length",
                    "training.assistant_only_loss", "training.completion_only_loss"),
        lambda w, cfg, ctx: services.render_preview(cfg, ctx.preview_row), result="preview", inputs=("preview_row",),
        ready=_seen_from("template"), error="preview_error", clears=("preview_error",)),
    # The doctor reads the data and audits a sample: only once the draft is mostly set, and once
    # the typing stops rather than per keystroke.
    Job("doctor", ("",), lambda w, cfg, ctx: services.doctor_warnings(cfg), result="doctor",
        ready=lambda w: w.step_index >= STEP_IDS.index("template"), delay=0.8),
    # The Model step's fit badges: every setting but the model, on this GPU, for the cached models.
    Job("choices", ("model.dtype", "model.attn_implementation", "model.trust_remote_code", "template", "method",
                    "training", "distributed"),
        lambda w, cfg, ctx: services.model_choices(cfg, ctx.hardware), result="model_choices",
        inputs=("hardware", "cached_models", "typed_folder"),
        ready=lambda w: (w.context.hardware is not None or bool(w.context.hardware_error))
        and "models" not in w.context.busy),
    # As the launch will run: the GPU(s) it lands on and its processes' sharding (core's estimate_for).
    Job("estimate", ("model.dtype", "model.attn_implementation", "template", "method", "training", "distributed"),
        lambda w, cfg, ctx: services.estimate_memory(cfg, ctx.hardware, ctx.facts),
        result="estimate", inputs=("facts", "hardware"), ready=lambda w: w.context.facts is not None,
        after=("facts",), error="estimate_error", clears=("estimate", "estimate_error")),
    # The Training step's recommended settings: the whole draft, on this machine, for this model and data.
    Job("recommend", ("",), lambda w, cfg, ctx: (cfg, services.recommend_settings(cfg, ctx.hardware, ctx.facts,
                                                                             ctx.audit)),
        result="recommended", inputs=("hardware", "facts", "audit"),
        ready=lambda w: w.context.facts is not None and (w.context.hardware is not None
                                                         or bool(w.context.hardware_error)) and _visited("training")(w),
        error="recommend_error", clears=("recommend_error",), delay=0.3),
)
JOB_NAMES = {job.name: job for job in JOBS}


def doctor_by_step(warnings: list | None) -> dict[str, list]:
    """Each doctor warning on the steps whose fields edit its setting (``Step.edits``); Review lists
    them all, so one about a setting no step edits is still shown there."""
    routed = {cls.step_id: [w for w in warnings or [] if owns(cls.edits, str(w.get("setting") or ""))]
              for cls in STEPS}
    routed["review"] = list(warnings or [])
    return routed


class WizardScreen(Screen):
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", id="next", priority=True),
        Binding("ctrl+b", "back", "Back", id="back", priority=True),
        Binding("ctrl+s", "save_preset", "Save preset", id="save-preset", priority=True),
        Binding("ctrl+o", "open_preset", "Presets", id="open-preset"),
        # Step keys live here (focus may be on the nav buttons); check_action shows them on their step.
        Binding("ctrl+down,ctrl+f", "row(1)", "Next row", id="next-row"),
        Binding("ctrl+up,ctrl+g", "row(-1)", "Prev row", id="prev-row", show=False),
        # The mask view's keys: the toggle in the footer, the jumps named in the view's own border.
        Binding("f2,ctrl+y", "toggle_tokens", "Tokens", id="toggle-tokens", key_display="F2"),
        Binding("shift+down", "jump('turn', 1)", "Next trained span", id="next-turn", show=False),
        Binding("shift+up", "jump('turn', -1)", "Prev trained span", id="prev-turn", show=False),
        Binding("f3", "jump('problem', 1)", "Next problem", id="next-problem", show=False),
        Binding("shift+f3", "jump('problem', -1)", "Prev problem", id="prev-problem", show=False),
        Binding("s", "stop", "Stop run", id="stop-run"),
        Binding("u", "resume", "Resume run", id="resume-run"),
        Binding("ctrl+t", "apply_suggestion", "Apply tip", id="apply-suggestion"),
        # A step longer than the terminal scrolls with the keyboard too (80x24 over SSH).
        Binding("pagedown", "scroll_step(1)", "Scroll", id="scroll-down", key_display="PgDn"),
        Binding("pageup", "scroll_step(-1)", "Scroll up", id="scroll-up", show=False),
    ]
    STEP_ACTIONS = {"row": ("template",), "toggle_tokens": ("template",), "jump": ("template",), "stop": ("run",), "resume": ("run",), "apply_suggestion": ("method", "training")}

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        step_ids = self.STEP_ACTIONS.get(action)
        if step_ids is None:
            return True
        if not self.is_mounted or self.current_step.step_id not in step_ids:
            return False
        if action == "apply_suggestion":
            return bool(self.suggestions())
        return True

    def suggestions(self) -> list:
        """The estimator's suggestions for the draft, cheapest first (each with apply-ready changes)."""
        estimate = self.context.estimate
        return [s for s in estimate.suggestions if s.changes] if estimate is not None else []

    def action_apply_suggestion(self) -> None:
        """Apply the estimator's first suggestion to the draft (validated like any edit)."""
        found = self.suggestions()
        if not found:
            return
        tip = found[0]
        try:
            cfg = with_changes(self.draft, tip.changes)
        except ConfigError as exc:
            self.notify("; ".join(exc.problems), title="Cannot apply the tip", severity="error")
            return
        self.set_draft(cfg)
        self.notify(tip.text, title="Applied")

    def action_scroll_step(self, direction: int) -> None:
        step = self.current_step
        if direction > 0:
            step.scroll_page_down()
        else:
            step.scroll_page_up()

    def action_row(self, delta: int) -> None:
        self.step_named("template").action_row(delta)

    def action_toggle_tokens(self) -> None:
        self.step_named("template").action_toggle_tokens()

    def action_jump(self, kind: str, direction: int) -> None:
        self.step_named("template").action_jump(kind, direction)

    def action_stop(self) -> None:
        self.step_named("run").action_stop()

    def action_resume(self) -> None:
        self.step_named("run").action_resume()

    def __init__(self, config: RunConfig, preset_path: str | None = None, start_step: int = 0) -> None:
        super().__init__(id="wizard")
        self.draft = config
        self.saved_config: RunConfig | None = config if preset_path else None
        self.context = WizardContext(config=config, preset_path=preset_path, saved_equal=bool(preset_path))
        self.step_index = start_step
        self.visited = {start_step}
        self._current: dict[str, Worker] = {}
        self._keys: dict[str, Any] = {}  # job name -> the key of its last run (see Job.key)
        self._debounce = None
        self._delayed: dict[str, Any] = {}  # job name -> the timer of its delayed start
        self.launched: list = []
        self.work_started = False
        self.derive_pending = False
        self._steps: list[Step] = [cls() for cls in STEPS]  # mounted when first shown

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield StepBar([s.title for s in STEPS], id="step-bar")
        with Vertical(id="step-head"):
            yield Static("", id="step-title")
            yield Static("", id="step-needs")
        with ContentSwitcher(initial=STEP_IDS[self.step_index], id="steps"):
            yield self._steps[self.step_index]
        with Horizontal(id="nav"):
            yield Button("◀ Back", id="back", compact=True)
            yield Static("", id="nav-reason")
            yield Button("Next ▶", id="next", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.push_context()
        self.show_step(self.step_index, derive=False)
        # Engine work starts once the first frame is out: a thread importing torch competes
        # for the GIL and would delay it.
        self.set_timer(START_WORK_AFTER_S, self._start_work)

    def _start_work(self) -> None:
        self.work_started = True
        self.start_worker("hardware")
        self.start_worker("models")
        self.refresh_derived()

    @property
    def settled(self) -> bool:
        """No engine work started, pending or running (tests and benchmarks wait for this)."""
        return self.work_started and not (self.derive_pending or self._delayed or self.context.busy)

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    @property
    def current_step(self) -> Step:
        return self._steps[self.step_index]

    def step_named(self, step_id: str) -> Step:
        return self._steps[STEP_IDS.index(step_id)]

    # ------------------------------------------------------------------ attributes down
    def push_context(self, **changes: Any) -> None:
        self.context = self.context.but(**changes)
        routed = doctor_by_step(self.context.doctor)
        for step in self.steps:
            step.doctor = routed[step.step_id]
            step.context = self.context
        self.update_nav()

    def set_draft(self, config: RunConfig, edit: Step.Changed | None = None) -> None:
        """Make ``config`` the draft and start what derives from it.

        ``edit``: the step edit it came from — its changed settings are shown in every other field
        that shows them (the same setting on another step), never in the fields it was typed in.
        Without one (a preset, an applied tip or recommendation) every field shows the new draft."""
        self.draft = config
        for step in self.steps:
            if edit is None:
                step.show_values(config)
            else:
                shown = set(edit.changes) - (edit.typed if step is edit.step else set())
                if shown:
                    step.show_values(config, shown)
        self.push_context(config=config, saved_equal=self.saved_config is not None and config == self.saved_config)
        if self._debounce is not None:
            self._debounce.stop()
        self.derive_pending = True
        self._debounce = self.set_timer(DEBOUNCE_S, self.refresh_derived)

    def show_step(self, index: int, derive: bool = True) -> None:
        self.step_index = index
        self.visited.add(index)
        step = self.current_step
        switcher = self.query_one(ContentSwitcher)
        if step.parent is None:
            step.context = self.context
            mounted = switcher.mount(step)
            switcher.current = step.id

            async def focus_when_mounted() -> None:
                await mounted
                if self.current_step is step:
                    (step.first_focus() or self.query_one("#next", Button)).focus()
                    self.update_nav()

            self.call_next(focus_when_mounted)
        else:
            switcher.current = step.id
        self.query_one(StepBar).current = index
        self.refresh_bindings()
        self.query_one("#step-title", Static).update(f"[b]{index + 1}/{len(STEPS)} · {step.title}[/b]")
        self.query_one("#step-needs", Static).update(step.needs)
        self.query_one("#back", Button).disabled = index == 0
        self.query_one("#next", Button).label = "Launch ▶" if step.step_id == "run" else "Next ▶"
        step.context = self.context
        if step.is_mounted:
            (step.first_focus() or self.query_one("#next", Button)).focus()
        if derive and self.work_started:
            self.refresh_derived()
        self.update_nav()

    def update_nav(self) -> None:
        if not self.is_mounted:
            return
        reason = self.current_step.blocking_reason()
        self.query_one("#nav-reason", Static).update(f"[$error]✗ {_escape(reason)}[/]" if reason else "")
        self.query_one("#next", Button).set_class(bool(reason), "-blocked")

    # ------------------------------------------------------------------ messages up
    @on(Step.Changed)
    def _step_changed(self, event: Step.Changed) -> None:
        """A step's edit, validated there against the draft as the step saw it: fold it into the
        draft (edits the step posted before this one was handled are in it already)."""
        event.stop()
        try:
            cfg = with_changes(self.draft, event.changes)
        except ConfigError as exc:  # another edit landed in between and a cross-field check refuses
            for path in event.typed or event.changes:
                event.step.refuse(path, "; ".join(exc.problems))
            return
        self.set_draft(cfg, event)

    @on(Step.ValidityChanged)
    def _validity_changed(self, event: Step.ValidityChanged) -> None:
        event.stop()
        self.update_nav()

    @on(HardwareStep.PresetChosen)
    def _preset_chosen(self, event: HardwareStep.PresetChosen) -> None:
        self.load_preset(event.path)

    @on(TemplateStep.RowChanged)
    def _row_changed(self, event: TemplateStep.RowChanged) -> None:
        self.push_context(preview_row=event.row)
        self.refresh_derived()

    @on(RunStep.LaunchRequested)
    def _launch_requested(self) -> None:
        self.action_launch()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        # Enter in a step's main field goes on, so Enter alone walks the wizard.
        if isinstance(event.input.screen, WizardScreen):
            event.stop()
            self.call_after_refresh(self.action_next)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.action_next()
        elif event.button.id == "back":
            self.action_back()

    # ------------------------------------------------------------------ actions
    def action_next(self) -> None:
        step = self.current_step
        reason = step.blocking_reason()
        if reason:
            self.update_nav()
            self.app.bell()
            return
        if step.step_id == "run":
            self.action_launch()
            return
        self.show_step(self.step_index + 1)

    def action_back(self) -> None:
        if self.step_index > 0:
            self.show_step(self.step_index - 1)

    def action_goto(self, step_id: str) -> None:
        if step_id in STEP_IDS:
            self.show_step(STEP_IDS.index(step_id))

    def action_save_preset(self) -> None:
        from ..modals.save_preset import SavePresetModal

        name = Path(self.context.preset_path).stem if self.context.preset_path else (self.draft.run.name or "my-run")
        self.app.push_screen(SavePresetModal(name), self._save_preset_named)

    def _save_preset_named(self, name: str | None) -> None:
        if not name:
            return
        try:
            path = services.save_user_preset(self.draft, name)
        except (OSError, ConfigError) as exc:
            self.notify(f"Could not save the preset: {exc}", severity="error")
            return
        self.saved_config = self.draft
        self.push_context(preset_path=str(path), saved_equal=True)
        self.step_named("hardware").refresh_presets()
        self.notify(f"Saved preset {name} ({path.name} in your presets folder).", title="Saved")

    def action_open_preset(self) -> None:
        self.show_step(0)
        self.call_after_refresh(lambda: self.query_one("#preset-select").focus())

    def load_preset(self, path: str) -> None:
        try:
            cfg = services.load_preset(path)
        except ConfigError as exc:
            self.notify(f"{Path(path).name}: {'; '.join(exc.problems)}", title="Invalid preset", severity="error")
            return
        self.saved_config = cfg
        self.context = self.context.but(preset_path=path)
        self.set_draft(cfg)
        self.notify(f"Loaded preset {Path(path).stem}.")

    def action_launch(self) -> None:
        """Refuse with the step and reason if any step blocks; else start the training process."""
        for index, step in enumerate(self.steps):
            reason = step.blocking_reason()
            if reason and step.step_id != "run":
                self.show_step(index)
                self.notify(f"{step.title}: {reason}", title="Cannot launch yet", severity="warning")
                return
        try:
            config_from_dict(self.draft.to_dict())
        except ConfigError as exc:
            self.notify("; ".join(exc.problems), title="Cannot launch yet", severity="error")
            return
        monitor = self.step_named("run").monitor
        if monitor is not None and not monitor.finished:
            self.notify("A run is already going; stop it first (s).", severity="warning")
            return
        if self.step_index != STEP_IDS.index("run"):
            self.show_step(STEP_IDS.index("run"))
        self.start_worker("launch")

    # ------------------------------------------------------------------ workers
    def refresh_derived(self) -> None:
        """Start the jobs whose inputs changed since they last ran (see JOBS)."""
        if not self.work_started:
            return
        self.derive_pending = False
        for job in JOBS:
            if not job.ready(self):
                continue
            key = job.key(self.draft, self.context)
            if self._keys.get(job.name) == key:
                continue
            self._keys[job.name] = key
            stale = set(job.clears)
            for later in JOBS:
                if job.name in later.after:  # their input is about to change: they run again, after it
                    self._keys.pop(later.name, None)
                    stale.update(later.clears)
            self.context = self.context.but(**{name: None for name in stale})
            if job.delay:
                timer = self._delayed.pop(job.name, None)
                if timer is not None:
                    timer.stop()
                self._delayed[job.name] = self.set_timer(job.delay, partial(self._start_delayed, job.name))
            else:
                self.start_worker(job.name)
        self.push_context()

    def _start_delayed(self, name: str) -> None:
        self._delayed.pop(name, None)
        self.start_worker(name)

    def start_worker(self, group: str) -> None:
        cfg, context = self.draft, self.context
        if group in JOB_NAMES:
            job = JOB_NAMES[group]
            runner = partial(job.run, self, cfg, context)
        else:  # what does not derive from the draft: the machine, the cache, a launch
            runners = {
                "hardware": lambda: self.app.hardware_probe(),
                "models": services.cached_models,
                "launch": lambda path=context.preset_path: services.launch(cfg, path if context.saved_equal else None),
            }
            runner = runners[group]
        worker = self._run_in_thread(runner, group)
        self._current[group] = worker
        self.context = self.context.but(busy=self.context.busy | {group}, unavailable={
            k: v for k, v in self.context.unavailable.items() if k != group})
        self.push_context()

    def _run_in_thread(self, fn, group: str) -> Worker:
        # The thread only calls the engine and returns; results land in on_worker_state_changed.
        return self.run_worker(fn, name=group, group=group, thread=True, exclusive=True, exit_on_error=False)

    class AuditProgressed(Message):
        """Posted from the audit thread, at most every 5%: (done, total) rows."""

        def __init__(self, done: int, total: int | None) -> None:
            super().__init__()
            self.done = done
            self.total = total

    def audit_progress(self, done: int, total: int | None) -> None:
        # Runs in the worker thread: post a message (thread-safe), nothing else.
        step = max(1, (total or 0) // 20)
        if total and (done == total or done // step != getattr(self, "_last_progress", -1)):
            self._last_progress = done // step
            self.post_message(self.AuditProgressed(done, total))

    def on_wizard_screen_audit_progressed(self, event: "WizardScreen.AuditProgressed") -> None:
        if "audit" in self.context.busy:
            self.push_context(data_progress=(event.done, event.total))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        group = worker.group
        if self._current.get(group) is not worker or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        busy = self.context.busy - {group}
        if event.state == WorkerState.SUCCESS:
            self.worker_succeeded(group, worker.result, busy)
        else:
            self.worker_failed(group, worker.error, busy)

    def worker_succeeded(self, group: str, result: Any, busy: frozenset) -> None:
        if group == "launch":
            self.push_context(busy=busy)
            self.launched.append(result.run_dir)
            self.app.remember_run(result.run_dir)
            self.run_worker(self.step_named("run").show_run(result.run_dir, result.process), exit_on_error=False)
            return
        if group == "hardware":
            self.push_context(busy=busy, hardware=result, hardware_error=None)
        elif group == "models":
            self.push_context(busy=busy, cached_models=result or [])
        else:
            job = JOB_NAMES[group]
            fields = {job.result: result, **dict(job.done)}
            if job.error:
                fields[job.error] = None
            self.push_context(busy=busy, **fields)
        if group in ("estimate", "recommend"):
            self.refresh_bindings()
        if group in ("facts", "hardware", "data", "models"):
            self.refresh_derived()

    def worker_failed(self, group: str, error: BaseException | None, busy: frozenset) -> None:
        """The one place engine failures land: inline on the step, or a notification if unexpected."""
        if isinstance(error, services.user_error_types()):
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
        else:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            self.notify(message, title=f"{group} failed", severity="error")
            self.log.error(f"worker {group} failed", error)
        if group == "audit":  # the quick report stands; the audit's failure is a note on it
            self.push_context(busy=busy, data_progress=None,
                              unavailable={**self.context.unavailable, "audit": f"no token audit: {message}"})
            return
        error = "hardware_error" if group == "hardware" else JOB_NAMES[group].error if group in JOB_NAMES else None
        if error:
            self.push_context(busy=busy, **{error: message})
        else:
            self.push_context(busy=busy)
            if group == "launch" and isinstance(error, services.user_error_types()):
                self.notify(message, title="Cannot launch", severity="error")


def _escape(text: str) -> str:
    from textual.markup import escape

    return escape(text)
