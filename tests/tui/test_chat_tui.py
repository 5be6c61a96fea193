"""Chat with a real (tiny, briefly trained) run from the Runs screen: reply, stop flag, compare."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sftwizard.core.config import apply_overrides, load_preset
from sftwizard.core.events import read_events
from tests.fixtures.trainer import train_in_process
from tests.tui.helpers import screen_text


@pytest.fixture(scope="module")
def finished_run(repo_root, builtin_model_dir, tmp_path_factory) -> Path:
    """A real full fine-tune of the demo, 4 steps, trained by the runner as tests/core does."""
    cfg = apply_overrides(load_preset(repo_root / "presets" / "demo.yaml"), [
        "training.max_steps=4", "training.eval_strategy=no", "training.save_strategy=no",
        "training.per_device_train_batch_size=8", "training.max_length=128", "training.logging_steps=2",
        f"run.output_root={tmp_path_factory.mktemp('chat-runs')}",
    ])
    run_dir = train_in_process(cfg)
    assert read_events(run_dir / "events.jsonl")[-1]["status"] == "finished"
    return run_dir


def transcript(screen) -> str:
    from textual.widgets import RichLog

    return "\n".join(strip.text for strip in screen.query_one("#chat-log", RichLog).lines)


async def wait_idle(pilot, screen, timeout: float = 60.0) -> None:
    """Until the chat screen's workers are done (polling the screen, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not screen.busy:
            return
    raise AssertionError(f"the chat screen stayed busy: {transcript(screen)}")


async def _open_chat(pilot, run_dir: Path):
    from textual.widgets import DataTable

    from sftwizard.tui.screens.chat import ChatScreen

    app = pilot.app
    await pilot.press("ctrl+r")
    await app.workers.wait_for_complete()
    await pilot.pause()
    table = app.screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(run_dir.name))
    await pilot.press("c")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, ChatScreen) and screen.run_dir == run_dir
    await wait_idle(pilot, screen)
    return screen


async def test_chat_from_the_runs_screen_answers_with_the_trained_model(make_app, finished_run):
    from sftwizard.core import chat

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_chat(pilot, finished_run)
        assert screen.model is not None and "full fine-tune" in screen.model.description
        assert "Loaded" in transcript(screen)
        footer = screen_text(app)
        assert "Compare with base" in footer and "Back" in footer

        await pilot.press(*"What is 2 + 3?")
        await pilot.press("enter")
        await wait_idle(pilot, screen)
        # The transcript shows the question and the model's answer, the same answer core gives.
        expected = chat.load_chat_model(finished_run).generate(
            [{"role": "user", "content": "What is 2 + 3?"}], max_new_tokens=128)
        lines = transcript(screen).splitlines()
        assert any(line.startswith("you> What is 2 + 3?") for line in lines), lines
        model_lines = [line for line in lines if line.startswith("model> ")]
        assert model_lines, lines
        assert screen.messages[-1] == {"role": "assistant", "content": expected.text}
        # A 4-step model rarely learned to stop: whichever way it went, the flag says so or not.
        flagged = any("never emitted an end-of-turn token" in line for line in lines)
        assert flagged == (not expected.stopped)
        assert screen.query_one("#chat-input").value == ""

        # Base vs fine-tuned on held-out eval prompts, side by side.
        await pilot.press("ctrl+d")
        await wait_idle(pilot, screen)
        text = transcript(screen)
        assert "Base vs fine-tuned on 3 held-out eval prompts" in text, text
        assert "base · builtin:tiny-chat" in text and "fine-tuned · " in text
        assert "[1] " in text and "[3] " in text
        assert "expected> " in text
        for side in ("base", "fine-tuned"):  # a stop check per side: ✓ all stopped, or ⚠ which did not
            assert any(line.startswith((f"✓ {side}: ", f"⚠ {side}: ")) for line in text.splitlines()), text

        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"


async def test_a_run_that_did_not_finish_is_not_opened_for_chat(make_app, tmp_path):
    from sftwizard.core import runs
    from sftwizard.core.events import EventWriter

    cfg = apply_overrides(load_preset(Path(__file__).parents[2] / "presets" / "demo.yaml"),
                          [f"run.output_root={tmp_path}"])
    run_dir = runs.create_run(cfg)
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("end", step=2, status="stopped")
    writer.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("DataTable")
        table.move_cursor(row=table.get_row_index(run_dir.name))
        await pilot.press("c")
        await pilot.pause()
        assert type(app.screen).__name__ == "RunsScreen"
        assert any("only a finished run" in n.message for n in app._notifications)


async def test_a_finished_run_without_a_model_says_so_in_one_sentence(make_app, tmp_path):
    from sftwizard.core import runs
    from sftwizard.core.events import EventWriter

    cfg = apply_overrides(load_preset(Path(__file__).parents[2] / "presets" / "demo.yaml"),
                          [f"run.output_root={tmp_path}"])
    run_dir = runs.create_run(cfg)
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("end", step=4, status="finished")  # ...but its final/ folder is gone
    writer.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_chat(pilot, run_dir)
        text = transcript(screen)
        flat = " ".join(text.split())  # the log wraps at its width, and the tmp path's length varies
        assert "Could not load the model: " in flat and "has no final model yet" in flat, text
        assert "Traceback" not in text
        assert screen.model is None and screen.query_one("#chat-input").disabled
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert any("did not load" in n.message for n in app._notifications)
