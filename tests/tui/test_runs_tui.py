"""The Runs screen and the Run screen resume a really stopped run from its checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from sftwizard.core import runs
from sftwizard.core.config import config_from_dict, load_preset
from sftwizard.core.events import read_events
from sftwizard.core.rundir import EVENTS_FILE
from tests.tui.helpers import open_run, screen_text, settle

REPO = Path(__file__).resolve().parents[2]


def stopped_run(tmp: Path) -> Path:
    """A real run of the builtin model, stopped gracefully at its first step.

    The stop is asked as soon as the process is started (it needs seconds to load torch), so the
    runner honours it at the end of step 1 whatever the machine's load. Asking only once a step was
    logged raced the 8 short steps: on a busy box the run could finish before the test asked."""
    lines = (REPO / "core" / "assets" / "demo" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:48]
    data = tmp / "data.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    d = load_preset(REPO / "presets" / "demo.yaml").to_dict()
    d["data"]["sources"] = [{"path": str(data)}]
    d["data"]["eval_source"] = None
    d["training"].update(max_steps=8, save_steps=100, logging_steps=1, eval_strategy="no",
                         per_device_train_batch_size=4, max_length=96, warmup_ratio=0.0)
    d["run"].update(output_root=str(tmp / "runs"), name="tui-resume")
    launched = runs.launch(config_from_dict(d))
    runs.stop(launched.run_dir)
    launched.process.wait(timeout=150)
    assert any(ev.get("event") == "log" for ev in read_events(launched.run_dir / EVENTS_FILE)), "no step logged"
    info = runs.run_info(launched.run_dir)
    assert info.status == "stopped" and info.step < 8, info
    return launched.run_dir


async def wait_for(pilot, predicate, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await pilot.pause(0.1)


async def test_u_on_the_runs_screen_resumes_a_stopped_run_to_its_end(make_app, tmp_path):
    run_dir = stopped_run(tmp_path)
    stopped_at = runs.run_info(run_dir).step
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+r")
        table = app.screen.query_one("DataTable")
        await wait_for(pilot, lambda: run_dir.name in app.screen.dirs)
        table.move_cursor(row=table.get_row_index(run_dir.name))
        await pilot.press("u")
        await wait_for(pilot, lambda: app.screen.id == "run-screen")
        await pilot.press("u")  # pressed again while the first is on its way: one resume, not two
        monitor = app.screen.query_one("RunMonitor")
        await wait_for(pilot, lambda: monitor.status == "finished")
        assert monitor.status == "finished", screen_text(app)
        assert monitor.stats.step == 8
        # One chart across both processes: the steps before the stop and after the resume.
        steps = [int(x) for x, _ in monitor.query_one("LossChart").train_points]
        assert steps[0] <= stopped_at < steps[-1] == 8
        # The whole log, not what its pane shows: the pane follows the newest lines, so how far up the
        # resume line sits depends on how many steps ran after it.
        log = "\n".join(monitor.query_one("LogPane").lines)
        assert "resume: builtin:tiny-chat" in log and "end: finished" in log, log
        assert "cannot resume" not in log + screen_text(app)  # the second u was not a second resume
    info = runs.run_info(run_dir)
    assert info.status == "finished" and info.resumes == 1


async def test_resume_is_refused_with_the_reason_when_there_is_nothing_to_resume(make_app, tmp_path):
    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-early"  # stopped before its first checkpoint
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("end", step=0, status="stopped", reason="stopped")
    writer.close()
    (run_dir / "config.yaml").write_text((REPO / "presets" / "demo.yaml").read_text(encoding="utf-8"))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monitor = await open_run(pilot, run_dir)
        assert monitor.status == "stopped"
        await pilot.press("u")
        await wait_for(pilot, lambda: "cannot resume" in screen_text(app), timeout=30)
        assert "no complete checkpoint to resume from" in screen_text(app)
        assert monitor.status == "stopped"


async def test_a_resumed_process_that_dies_before_speaking_is_shown_failed_not_stopped(make_app, tmp_path):
    import subprocess
    import sys

    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-dies"
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("log", step=2, max_steps=8, loss=3.0)
    writer.emit("end", step=2, status="stopped", reason="stopped", message="on request, checkpoint-2 saved")
    writer.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monitor = await open_run(pilot, run_dir)
        assert monitor.status == "stopped"
        crashed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1); raise SystemExit(3)"])
        monitor.follow(run_dir, crashed, resumed=True)  # what a resume does once the process started
        assert monitor.status == "starting"  # the old end is history, not this process's outcome
        await wait_for(pilot, lambda: monitor.status not in ("starting", "running"), timeout=30)
        assert monitor.status == "failed"
        assert "exited (code 3) without an end event" in screen_text(app)


async def test_one_odd_events_line_hides_no_run_on_the_runs_screen(make_app, tmp_path):
    # {"event": "end"} without a time used to make list_runs raise, and the Runs screen stayed empty
    from sftwizard.core.config import apply_overrides
    from sftwizard.core.events import EventWriter

    cfg = apply_overrides(load_preset(REPO / "presets" / "demo.yaml"), [f"run.output_root={tmp_path}"])
    made = []
    for odd in (False, True):
        run_dir = runs.create_run(cfg)
        with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as fh:
            fh.write('{"event": "start", "time": "noon", "step": 0}\n' if odd else "")
        writer = EventWriter(run_dir / EVENTS_FILE)
        writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
        writer.emit("log", step=1, max_steps=2, loss=4.0)
        if not odd:
            writer.emit("end", step=2, status="stopped", reason="stopped", message="on request")
        writer.close()
        with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as fh:
            fh.write('{"event": "log", "time": 1.0, "step": {"n": 1}}\n{"event": "end"}\n' if odd else "")
        made.append(run_dir.name)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("DataTable")
        for name in made:
            assert table.get_row_index(name) >= 0


async def test_a_run_whose_pid_file_says_nothing_is_shown_lost_not_alive_forever(make_app, tmp_path):
    """Asking whether such a run lives used to raise (os.kill on a pid out of range), and the
    monitor took any exception as "alive": the run showed running forever."""
    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-oddpid"
    writer = EventWriter(run_dir / EVENTS_FILE)
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("log", step=3, max_steps=10, loss=2.0)
    writer.close()
    (run_dir / "pid").write_text("99999999999")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monitor = await open_run(pilot, run_dir)
        await wait_for(pilot, lambda: monitor.finished, timeout=10)
        assert monitor.status == "lost"
        assert "vanished at step 3 without an end event" in screen_text(app)


async def test_the_runs_screen_shows_each_runs_state(make_app, tmp_path):
    from sftwizard.core.config import apply_overrides
    from sftwizard.core.events import EventWriter

    cfg = apply_overrides(load_preset(REPO / "presets" / "demo.yaml"), [f"run.output_root={tmp_path}"])
    run_dir = runs.create_run(cfg)
    writer = EventWriter(run_dir / EVENTS_FILE)
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("log", step=1, max_steps=2, loss=4.0)
    writer.emit("end", step=1, status="failed", reason="nan", message="the loss became NaN at step 1")
    writer.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("DataTable")
        row = table.get_row(run_dir.name)
        assert row[1:] == [run_dir.name, "failed", "1/2", "4.0000", "builtin:tiny-chat",
                           "the loss became NaN at step 1"]
