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
