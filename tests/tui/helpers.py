"""Helpers for the TUI tests."""

from __future__ import annotations


async def settle(pilot, timeout: float = 90.0) -> None:
    """Wait until the wizard has started its workers, none is pending or running, and the screen
    has caught up — polling, never a fixed sleep."""
    import time

    from textual.worker import WorkerFailed

    app = pilot.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        try:
            await app.workers.wait_for_complete()
        except WorkerFailed:  # failures are the screen's to show; the tests assert on that
            pass
        await pilot.pause()
        wizard = app.wizard
        if wizard is None or wizard.settled:
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError("the wizard did not settle in time")


def screen_text(app) -> str:
    """The screen as plain text (what a user reads)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


async def open_run(pilot, run_dir, timeout: float = 20.0):
    """Push the Run screen of ``run_dir``; its monitor once it has read the run's history."""
    import time

    from sftwizard.tui.screens.run import RunScreen

    pilot.app.push_screen(RunScreen(run_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        found = pilot.app.screen.query("RunMonitor")
        if found and found.first().status != "starting":
            await pilot.pause()
            return found.first()
    raise AssertionError(f"the Run screen did not read {run_dir}")
