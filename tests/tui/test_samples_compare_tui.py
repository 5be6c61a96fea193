"""The Run screen's Samples tab and the Runs screen's comparison (issue 18), by keyboard, with
snapshots at 80x24 and 120x40. The runs are run directories as the runner writes them, with fixed
times and values so the screens are the same on every machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.core.test_compare import write_run
from tests.tui.conftest import SIZES, cpu_report
from tests.tui.helpers import open_run, screen_text

PROMPTS = [("What is the capital of Peru?", "Lima."), ("What is the opposite of hot?", "cold"),
           ("Count the letters in 'river'.", "5")]
ANSWERS = {0: ["wait the the of Peru Peru Peru the", "hot hot hot hot hot", "river river 1 1 1"],
           10: ["The capital is Lima", "cold.", "4"],
           20: ["Lima.", "cold", "5"]}


def write_sampled_run(root: Path, t0: float = 1_700_000_000.0) -> Path:
    """A finished 20-step run that sampled three prompts at steps 0, 10 and 20."""
    run_dir = write_run(root, "20260101-000000-demo", 3e-3, 0.08, 900.0, t0=t0)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    events = [e for e in events if not (isinstance(e.get("step"), int) and e["step"] > 20) and e["event"] != "end"]
    out = []
    for ev in events:
        out.append(ev)
        if ev["event"] == "start" or (ev["event"] == "eval" and ev["step"] in ANSWERS):
            step = 0 if ev["event"] == "start" else ev["step"]
            for i, (prompt, reference) in enumerate(PROMPTS):
                text = ANSWERS[step][i]
                out.append({"event": "sample", "time": ev["time"], "step": step, "prompt_id": i, "prompt": prompt,
                            "reference": reference, "text": text, "stopped": step > 0,
                            "new_tokens": len(text.split()) + 1 if step else 32, "generation_s": 0.1})
    out.append({"event": "end", "time": t0 + 22, "step": 20, "status": "finished"})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in out))
    return run_dir


async def test_samples_tab_steps_and_prompts(make_app, tmp_path):
    from sftwizard.tui.widgets.samples_view import SamplesView

    run_dir = write_sampled_run(tmp_path)
    app = make_app(hardware=cpu_report())
    async with app.run_test(size=SIZES["large"]) as pilot:
        await open_run(pilot, run_dir)
        assert "sample 2 @ step 20" in screen_text(app)  # the log says it too, as `attach` does
        await pilot.press("a")
        await pilot.pause()
        view = app.screen.query_one(SamplesView)
        assert app.focused is view
        text = screen_text(app)
        assert "prompt 1/3 · step 20 (3 of 3 sampled)" in text and "Lima." in text and "model at step 20" in text
        await pilot.press("left", "left")
        text = screen_text(app)
        assert "base model (step 0)" in text and "wait the the of Peru" in text and "did not stop" in text
        await pilot.press("down")  # the next prompt, at the same step
        text = screen_text(app)
        assert "prompt 2/3 · step 0" in text and "What is the opposite of hot?" in text and "hot hot hot" in text
        await pilot.press("right")
        assert "prompt 2/3 · step 10" in screen_text(app)
        await pilot.press("a")
        assert app.screen.query_one("#run-tabs").active == "tab-monitor"


async def test_runs_screen_marks_two_runs_and_compares_them(make_app, tmp_path, monkeypatch):
    from sftwizard.core import runs
    from sftwizard.tui.screens.compare import CompareScreen
    from sftwizard.tui.screens.runs import RunsScreen

    monkeypatch.setenv("SFT_WIZARD_HOME", str(tmp_path / "home"))  # a registry of these two runs only
    a = write_run(tmp_path, "run-a", 3e-3, 0.10, 900.0)
    b = write_run(tmp_path, "run-b", 1e-3, 0.05, 1100.0, t0=1_700_000_100.0)
    runs.register(a)
    runs.register(b)
    app = make_app(hardware=cpu_report())
    async with app.run_test(size=SIZES["large"]) as pilot:
        app.push_screen(RunsScreen())
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("o")  # nothing marked: told how
        assert not isinstance(app.screen, CompareScreen)
        await pilot.press("space", "space")  # marks the first, moves down, marks the second
        assert app.screen.marked == ["run-b", "run-a"]  # newest first in the list
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        text = screen_text(app)
        assert "training.learning_rate: A 0.001 · B 0.003" in text
        assert "loss — by step" in text and "1,100" in text and "900" in text
        await pilot.press("t")
        await pilot.pause()
        assert "loss — by trained tokens" in screen_text(app)


@pytest.mark.parametrize("size", list(SIZES))
def test_samples_tab_snapshot(size, snap_compare, make_app, tmp_path):
    run_dir = write_sampled_run(tmp_path)

    async def open_samples(pilot):
        await open_run(pilot, run_dir)
        await pilot.press("a", "left")
        await pilot.pause()

    assert snap_compare(make_app(hardware=cpu_report()), terminal_size=SIZES[size], run_before=open_samples)


@pytest.mark.parametrize("size", list(SIZES))
def test_compare_snapshot(size, snap_compare, make_app, tmp_path):
    from sftwizard.tui.screens.compare import CompareScreen

    dirs = [write_run(tmp_path, "run-a", 3e-3, 0.10, 900.0), write_run(tmp_path, "run-b", 1e-3, 0.05, 1100.0)]

    async def open_compare(pilot):
        await pilot.pause()
        pilot.app.push_screen(CompareScreen(dirs))
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.2)

    assert snap_compare(make_app(hardware=cpu_report()), terminal_size=SIZES[size], run_before=open_compare)
