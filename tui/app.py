"""The sft-wizard Textual app: the wizard screen, global keys, and the command palette.

``run_app(preset)`` is what ``sft-wizard`` (no command) calls. With no preset the wizard opens on
the embedded CPU demo; with one it opens loaded and on the Review step. Nothing heavy is imported
here: torch, transformers, trl and datasets load in workers when a step needs them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from sftwizard.core.config import RunConfig

from . import services

DEMO_PRESET = "demo"
THEME = "textual-dark"


class WizardCommands(Provider):
    """A palette entry for every step and every action."""

    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        from .screens.wizard import STEPS

        app: SftWizardApp = self.app  # type: ignore[assignment]
        out = []
        for i, step in enumerate(STEPS):
            out.append((f"Go to step {i + 1}: {step.title}", partial(app.goto_step, step.step_id), step.needs))
        out += [
            ("Save preset", partial(app.wizard_action, "save_preset"), "Save the draft to your presets folder"),
            ("Open preset", partial(app.wizard_action, "open_preset"), "Pick a shipped or saved preset"),
            ("Launch training", partial(app.wizard_action, "launch"), "Start the run (as its own process)"),
            ("Apply the memory tip", partial(app.wizard_action, "apply_suggestion"),
             "Apply the estimator's first suggestion to the draft"),
            ("Next data row", partial(app.wizard_action, "row", 1), "Template step: preview the next row"),
            ("Previous data row", partial(app.wizard_action, "row", -1), "Template step: preview the previous row"),
            ("Token view (text│id) on/off", partial(app.wizard_action, "toggle_tokens"),
             "Template step: show each token's boundary and id, trained ones in ⟦…⟧"),
            ("Next trained span", partial(app.wizard_action, "jump", "turn", 1),
             "Template step: jump to the next assistant turn that carries loss"),
            ("Previous trained span", partial(app.wizard_action, "jump", "turn", -1),
             "Template step: jump to the previous assistant turn that carries loss"),
            ("Next problem in the tokens", partial(app.wizard_action, "jump", "problem", 1),
             "Template step: jump to the next problem the preview located (e.g. where max_length cuts)"),
            ("Previous problem in the tokens", partial(app.wizard_action, "jump", "problem", -1),
             "Template step: jump to the previous problem the preview located"),
            ("Stop run", app.stop_current_run, "Finish the current step, save a checkpoint, stop"),
            ("Runs", app.action_runs, "Every run on this machine; attach to one"),
        ]
        return out

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class SftWizardApp(App):
    TITLE = "sft-wizard"
    CSS_PATH = "styles/app.tcss"
    COMMANDS = App.COMMANDS | {WizardCommands}
    BINDINGS = [
        Binding("ctrl+r", "runs", "Runs", id="runs"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(self, config: RunConfig | None = None, preset_path: str | None = None, *,
                 start_step: str | None = None, hardware_probe: Callable[[], Any] | None = None,
                 theme: str | None = None) -> None:
        super().__init__()
        if config is None:
            # The embedded CPU demo as shipped: a user preset saved as "demo" (ctrl+s offers that
            # name on the demo) is opened by name, `sft-wizard demo`, not in its place.
            from sftwizard.core.presets import shipped_presets_dir

            preset_path = str(shipped_presets_dir() / f"{DEMO_PRESET}.yaml")
            config = services.load_preset(preset_path)
        self.initial_config = config
        self.preset_path = preset_path
        self.start_step = start_step
        self.hardware_probe = hardware_probe or services.probe_hardware
        self.session_runs: list[Path] = []
        self.theme = theme or THEME

    def get_default_screen(self):
        from .screens.wizard import STEP_IDS, WizardScreen

        start = STEP_IDS.index(self.start_step) if self.start_step in STEP_IDS else 0
        return WizardScreen(self.initial_config, self.preset_path, start)

    @property
    def wizard(self):
        from .screens.wizard import WizardScreen

        for screen in self.screen_stack:
            if isinstance(screen, WizardScreen):
                return screen
        return None

    def remember_run(self, run_dir: Path) -> None:
        self.session_runs.append(Path(run_dir))

    # ------------------------------------------------------------------ actions
    def goto_step(self, step_id: str) -> None:
        wizard = self.wizard
        if wizard is None:
            return
        while self.screen is not wizard:
            self.pop_screen()
        wizard.action_goto(step_id)

    def wizard_action(self, name: str, *args: Any) -> None:
        wizard = self.wizard
        if wizard is not None:
            if self.screen is not wizard and name != "save_preset":
                while self.screen is not wizard:
                    self.pop_screen()
            if name in ("row", "toggle_tokens", "jump") and wizard.current_step.step_id != "template":
                wizard.action_goto("template")
            getattr(wizard, f"action_{name}")(*args)

    def stop_current_run(self) -> None:
        screen = self.screen
        if hasattr(screen, "action_stop"):
            screen.action_stop()
            return
        wizard = self.wizard
        if wizard is not None:
            wizard.step_named("run").action_stop()

    async def action_quit(self) -> None:
        """Quit; a run launched from here goes on (it is its own process), and we say how to find it."""
        from .widgets.run_monitor import RunMonitor

        going = [m.run_dir.name for screen in self.screen_stack for m in screen.query(RunMonitor)
                 if m.run_dir is not None and not m.finished]
        if going:
            run_id = going[0]
            self.exit(message=f"The run {run_id} goes on. Follow it: sft-wizard attach {run_id} · "
                              f"stop it: sft-wizard stop {run_id}")
        else:
            self.exit()

    def action_runs(self) -> None:
        from .screens.runs import RunsScreen

        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen())


def build_app(preset: str | None = None, **kwargs: Any) -> SftWizardApp:
    """The wizard on the demo, or with ``preset`` (a path or a preset name) loaded, on Review."""
    if preset is None:
        return SftWizardApp(**kwargs)
    path = services.find_preset(preset)
    config = services.load_preset(path)  # a bad preset is a user error: one sentence, exit 2
    return SftWizardApp(config, str(path), start_step="review", **kwargs)


def run_app(preset: str | None = None) -> int:
    """What ``sft-wizard [PRESET]`` runs."""
    app = build_app(preset)
    app.run()
    return int(app.return_code or 0)
