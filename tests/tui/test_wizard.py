"""The wizard driven with the keyboard, as a user would: real engine underneath, no mocks."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sftwizard.core.config import ConfigError, load_preset
from sftwizard.core.paths import user_presets_dir
from sftwizard.tui.app import build_app
from tests.tui.conftest import cpu_report
from tests.tui.helpers import open_run, screen_text, settle


async def type_into(pilot, selector: str, text: str) -> None:
    """Focus an input, clear it with the keyboard, and type ``text``."""
    widget = pilot.app.screen.query_one(selector)
    widget.focus()
    await pilot.pause()
    await pilot.press("home", "ctrl+k")
    if text:
        await pilot.press(*list(text))
    await settle(pilot)


async def wait_until(pilot, predicate, timeout: float = 30.0) -> None:
    """Poll the app until ``predicate()`` holds or ``timeout`` passes (the caller asserts after)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await settle(pilot)
        await pilot.pause(0.1)


def field_error(app, field_id: str) -> str:
    field = app.screen.query_one(f"#{field_id}")
    return field.error if field.has_class("-invalid") else ""


async def test_enter_walks_the_demo_to_a_finished_run(make_app):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        assert wizard.current_step.step_id == "hardware"
        assert "CPU mode" in screen_text(app)
        for expected in ("model", "dataset"):
            await pilot.press("enter")
            await settle(pilot)
            assert wizard.current_step.step_id == expected, screen_text(app)
        assert wizard.context.data_report.format == "messages"
        assert "no problems found" in screen_text(app)
        # Make the run short through the steps' own inputs: fewer rows, a few steps.
        await type_into(pilot, "#f-data-sources-0-max-rows #control", "96")
        wizard.query_one("#next").focus()
        for expected in ("template", "method", "training"):
            await pilot.press("enter")
            await settle(pilot)
            assert wizard.current_step.step_id == expected, screen_text(app)
        await type_into(pilot, "#f-training-max-steps #control", "4")
        await type_into(pilot, "#f-training-per-device-train-batch-size #control", "8")
        await type_into(pilot, "#f-training-logging-steps #control", "1")
        await type_into(pilot, "#f-training-eval-steps #control", "2")
        await type_into(pilot, "#f-training-save-steps #control", "4")
        assert wizard.draft.training.max_steps == 4 and wizard.draft.training.eval_steps == 2
        assert wizard.draft.data.sources[0].max_rows == 96
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "review"
        assert "max_steps: 4" in wizard.current_step.yaml_text

        # Save from Review; the preset reloads equal to the draft.
        await pilot.press("ctrl+s")
        await pilot.pause()
        await type_into(pilot, "#preset-name", "e2e-short")
        await pilot.press("enter")
        await settle(pilot)
        saved = user_presets_dir() / "e2e-short.yaml"
        assert saved.exists()
        assert load_preset(saved) == wizard.draft
        assert "sft-wizard run e2e-short" in screen_text(app)

        await pilot.press("enter")  # Next ▶ (focused) → Run
        await settle(pilot)
        assert wizard.current_step.step_id == "run"
        await pilot.press("enter")  # Launch
        run_step = wizard.step_named("run")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            await pilot.pause(0.5)
            monitor = run_step.monitor
            if monitor is not None and monitor.finished:
                break
        monitor = run_step.monitor
        assert monitor is not None and monitor.status == "finished", monitor and monitor.stats
        chart = monitor.query_one("LossChart")
        losses = [loss for _, loss in chart.train_points]
        assert len(losses) >= 3 and losses[-1] < losses[0]
        assert chart.eval_points
        run_dir = monitor.run_dir
        assert run_dir.is_dir() and (run_dir / "events.jsonl").exists()
        assert load_preset(run_dir / "config.yaml") == wizard.draft
        text = screen_text(app)
        assert "finished" in text and "step 4/4" in text

        await pilot.press("ctrl+r")  # the Runs screen lists it, and Enter re-attaches
        await settle(pilot)
        table = app.screen.query_one("DataTable")
        assert run_dir.name in [row.value for row in table.rows]
        assert "finished" in screen_text(app)


async def test_the_estimate_on_screen_follows_rank_batch_size_and_length(make_app):
    from tests.tui.conftest import gpu_report

    app = make_app(start_step="method", hardware=gpu_report())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard

        def shown() -> str:
            return str(wizard.current_step.query_one("MemoryBar").as_text())

        assert "fits" in shown() and "of 22.5 GiB" in shown()
        wizard.current_step.query_one("#method-lora").value = True  # the LoRA radio button
        await settle(pilot)
        assert wizard.draft.method.type == "lora"
        before = shown()
        await type_into(pilot, "#f-method-lora-r #control", "256")
        assert wizard.draft.method.lora_r == 256
        after_rank = shown()
        assert after_rank != before
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "training"
        await type_into(pilot, "#f-training-per-device-train-batch-size #control", "64")
        after_batch = shown()
        assert after_batch != after_rank
        await type_into(pilot, "#f-training-max-length #control", "512")
        assert shown() != after_batch
        totals = wizard.context.estimate.total_gib
        assert f"total {totals:.2f} GiB" in shown()


async def test_without_a_preset_the_wizard_opens_the_shipped_demo_even_with_a_user_demo(make_app):
    """Saving the demo under its offered name (ctrl+s on the demo offers "demo") makes a user preset
    "demo"; `sft-wizard` with no preset still opens the embedded CPU demo (the README's promise).
    The tests share one presets folder per session, so a test that saved one changed what later
    tests opened."""
    from sftwizard.core.config import apply_overrides, load_preset, save_preset
    from sftwizard.core.presets import find_preset, shipped_presets_dir

    shipped = shipped_presets_dir() / "demo.yaml"
    mine = user_presets_dir() / "demo.yaml"
    before = mine.read_bytes() if mine.exists() else None
    try:
        save_preset(apply_overrides(load_preset(shipped), ["method.type=lora", "training.max_steps=3"]), mine)
        assert find_preset("demo") == mine  # by name, the user's comes first (`sft-wizard demo`)
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert app.wizard.draft == load_preset(shipped)
            assert app.wizard.context.preset_path == str(shipped)
    finally:
        if before is None:
            mine.unlink(missing_ok=True)
        else:
            mine.write_bytes(before)


async def test_a_config_that_does_not_fit_gets_a_tip_applied_with_one_key(make_app):
    from tests.tui.conftest import gpu_report

    app = make_app(start_step="training", hardware=gpu_report())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        await type_into(pilot, "#f-training-max-length #control", "512")
        await type_into(pilot, "#f-training-per-device-train-batch-size #control", "1024")
        bar = wizard.current_step.query_one("MemoryBar")
        # The estimate follows each keystroke (debounced): wait for the one of the final value.
        await wait_until(pilot, lambda: "does not fit" in str(bar.as_text()))
        assert "does not fit" in str(bar.as_text())
        tip = wizard.suggestions()[0]
        assert "ctrl+t: " + tip.text in str(bar.as_text())
        await pilot.press("ctrl+t")
        await settle(pilot)
        for path, value in tip.changes.items():
            section, key = path.split(".")
            assert getattr(getattr(wizard.draft, section), key) == value
        assert wizard.context.estimate.total_gib == pytest.approx(tip.total_gib, abs=0.01)
        # The fields show the applied values.
        field = app.screen.query_one("#f-training-per-device-train-batch-size #control")
        assert field.value == str(wizard.draft.training.per_device_train_batch_size)


async def test_qlora_on_a_cpu_machine_is_offered_as_slow(make_app):
    pytest.importorskip("bitsandbytes")  # >= 0.50 (the test extra): its CPU backend runs QLoRA
    app = make_app(start_step="method")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        qlora = app.screen.query_one("#method-qlora")
        assert not qlora.disabled
        assert "QLoRA on CPU" in screen_text(app) and "slow" in screen_text(app)


async def test_invalid_input_shows_the_reason_and_blocks_next(make_app):
    app = make_app(start_step="training")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        before = wizard.draft
        await type_into(pilot, "#f-training-learning-rate #control", "-1")
        assert "must be > 0" in field_error(app, "f-training-learning-rate")
        assert "training.learning_rate" in str(app.screen.query_one("#nav-reason").render())
        assert wizard.draft == before  # an invalid value never reaches the draft
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "training"

        await type_into(pilot, "#f-training-per-device-train-batch-size #control", "many")
        assert "must be an integer" in field_error(app, "f-training-per-device-train-batch-size")

        await type_into(pilot, "#f-training-learning-rate #control", "1e-4")
        await type_into(pilot, "#f-training-per-device-train-batch-size #control", "4")
        assert field_error(app, "f-training-learning-rate") == ""
        assert wizard.draft.training.learning_rate == pytest.approx(1e-4)
        assert wizard.draft.training.per_device_train_batch_size == 4
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "review"


async def test_a_model_that_cannot_be_found_is_named_inline(make_app, tmp_path):
    app = make_app(start_step="model")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        missing = tmp_path / "no-such-model"
        await type_into(pilot, "#f-model-id #control", str(missing))
        wizard = app.wizard
        assert wizard.context.facts_error and "no model folder" in wizard.context.facts_error
        assert "no model folder" in screen_text(app)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "model"


async def test_a_dataset_with_bad_lines_shows_them_by_line(make_app, tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad_role = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps(bad_role) + "\n" + json.dumps(good) + "\n")
    app = make_app(start_step="dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await type_into(pilot, "#f-data-sources-0-path #control", str(path))
        wizard = app.wizard
        report = str(app.screen.query_one("#data-report").render())
        assert "line 2" in report and "line 3" in report, report
        assert "bad row" in wizard.current_step.blocking_reason()
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "dataset"
        # Choosing to drop them (with the report) lets the user go on.
        select = app.screen.query_one("#f-data-on-bad-rows #control")
        select.value = "drop"
        await settle(pilot)
        assert wizard.draft.data.on_bad_rows == "drop"
        assert wizard.current_step.blocking_reason() is None
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "template"


async def test_a_data_path_that_does_not_exist_is_named_inline(make_app, tmp_path):
    app = make_app(start_step="dataset")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        missing = tmp_path / "nope.jsonl"
        await type_into(pilot, "#f-data-sources-0-path #control", str(missing))
        wizard = app.wizard
        assert wizard.context.data_error and "nope.jsonl" in wizard.context.data_error
        assert wizard.current_step.blocking_reason() == wizard.context.data_error
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert wizard.current_step.step_id == "dataset"


async def test_template_rows_navigate_and_masks_are_shown(make_app):
    app = make_app(start_step="template")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        view = app.screen.query_one("MaskView")
        first = [t["text"] for t in view.tokens]
        assert view.trained_count > 0 and view.trained_count < len(view.tokens)
        await pilot.press("ctrl+down")
        await settle(pilot)
        assert wizard.context.preview_row == 1
        assert [t["text"] for t in view.tokens] != first
        # max_length re-renders live: a short limit truncates the row.
        await type_into(pilot, "#f-training-max-length #control", "8")
        assert wizard.context.preview.max_length == 8


async def test_a_preset_argument_opens_on_review_and_a_bad_one_is_a_user_error(tmp_path):
    app = build_app("demo", hardware_probe=cpu_report)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.wizard.current_step.step_id == "review"
        assert "sft-wizard run demo" in screen_text(app)
        assert "id: builtin:tiny-chat" in screen_text(app) or "builtin:tiny-chat" in screen_text(app)
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rat: 1\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        build_app(str(bad))


async def test_picking_a_preset_on_the_first_screen_loads_it(make_app, tmp_path):
    from sftwizard.core.config import apply_overrides, save_preset
    from sftwizard.core.presets import find_preset

    base = load_preset(find_preset("demo"))
    other = apply_overrides(base, ["method.type=lora", "method.lora_r=4", "run.name=picked"])
    path = save_preset(other, user_presets_dir() / "picked.yaml")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.query_one("#preset-select").value = str(path)
        await settle(pilot)
        assert app.wizard.draft == other
        assert app.wizard.context.preset_path == str(path)


async def test_the_command_palette_reaches_every_step(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*list("step 6"))
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.wizard.current_step.step_id == "training"


async def test_the_run_screen_rebuilds_history_from_the_run_directory(make_app, tmp_path):
    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-demo"
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("train_begin", step=0, max_steps=30)
    for step, loss in ((10, 3.0), (20, 2.0), (30, 1.5)):
        writer.emit("log", step=step, max_steps=30, loss=loss, learning_rate=1e-3, tokens_per_s=1000.0)
    writer.emit("eval", step=30, eval_loss=1.7)
    writer.emit("end", step=30, status="finished")
    writer.close()
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write('{"event": "log", "step": 31, "lo')  # a torn last line is left for later
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        monitor = await open_run(pilot, run_dir)
        chart = monitor.query_one("LossChart")
        assert chart.train_points == [(10.0, 3.0), (20.0, 2.0), (30.0, 1.5)]
        assert chart.eval_points == [(30.0, 1.7)]
        assert monitor.status == "finished"
        text = screen_text(app)
        assert "finished" in text and "step 30/30" in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.wizard


def test_startup_imports_no_heavy_library():
    code = ("import sys, sftwizard.tui.app, sftwizard.tui.screens.wizard, sftwizard.tui.screens.runs; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_the_stop_key_asks_a_live_run_to_stop(make_app, tmp_path):
    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-live"
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("log", step=5, max_steps=100, loss=2.0)
    writer.close()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # the run's process
    try:
        (run_dir / "pid").write_text(str(stand_in.pid))
        from sftwizard.core.runs import _record_process

        _record_process(run_dir, stand_in.pid)  # what spawn records: a bare pid proves nothing (issue 15 item 13)
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            monitor = await open_run(pilot, run_dir)
            assert monitor.status == "running"
            await pilot.press("s")
            await pilot.pause()
            assert (run_dir / "STOP").exists()  # what the runner honours: finish the step, save, stop
            assert monitor.status == "stopping"
            stand_in.kill()
            stand_in.wait()
            deadline = time.monotonic() + 10
            while monitor.status == "stopping" and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert monitor.status == "lost"  # gone without an end event
            assert "without an end event" in screen_text(app)
    finally:
        stand_in.kill()
        stand_in.wait()


def test_opening_a_bad_preset_is_one_sentence_and_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rat: 1\n")
    out = subprocess.run([sys.executable, "-m", "sftwizard.tui", str(bad)], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert "did you mean 'learning_rate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_first_frame_is_drawn_before_any_heavy_library_loads():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_startup", REPO / "bench" / "startup.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.heavy_modules_at_first_frame() == []


async def test_a_run_whose_loss_went_nan_is_shown_not_crashed_on(make_app, tmp_path):
    """NaN losses reach events.jsonl as NaN (or "nan" from older runs); the screen says so."""
    from sftwizard.core.events import EventWriter

    run_dir = tmp_path / "20260101-000000-nan"
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("log", step=1, max_steps=3, loss=2.5, learning_rate=1e-3, grad_norm=1.0)
    writer.emit("log", step=2, max_steps=3, loss=float("nan"), learning_rate=1e-3, grad_norm=float("inf"))
    writer.emit("log", step=3, max_steps=3, loss="nan", learning_rate=1e-3, grad_norm="nan")
    writer.emit("end", step=3, status="failed", reason="nan", message="the loss became NaN at step 2")
    writer.close()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monitor = await open_run(pilot, run_dir)
        assert monitor.query_one("LossChart").train_points == [(1.0, 2.5)]  # only the finite point is drawn
        assert monitor.status == "failed"
        text = screen_text(app)
        assert "loss nan" in text and "grad inf" in text
        assert "the loss became NaN at step 2" in text


async def test_keys_typed_faster_than_the_wizard_handles_them_are_never_overwritten(make_app):
    """A field's edit goes up as a change the wizard folds into its draft, in order; the wizard
    writes into a field only when someone else changed its setting. So a draft handled late never
    puts older text back, and edits in several fields made before the wizard handled the first all
    land. No field tells its own echo from news: there is no echo."""
    from dataclasses import replace

    from textual.widgets import Input

    app = make_app(start_step="training")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        step = wizard.current_step
        length = step.field_for("training.max_length")
        batch = step.field_for("training.per_device_train_batch_size")
        seed = step.field_for("training.seed")
        old = wizard.draft

        # Keys typed in one go: the text and the draft end as typed, whatever order the messages took.
        length.control.focus()
        await pilot.press("home", "ctrl+k", *"5126")
        await settle(pilot)
        assert length.control.value == "5126" and wizard.draft.training.max_length == 5126

        # The wizard shows older drafts (other news: an estimate, an audit) while "512" is typed:
        # the field keeps the text.
        with length.control.prevent(Input.Changed):
            length.control.value = "512"
        for older in (None, 5, 51, 5126):
            step.context = wizard.context.but(config=old.replace(training=replace(old.training, max_length=older)))
            assert length.control.value == "512", older
        step.context = wizard.context

        # Three fields edited before the wizard handled the first: each edit lands, in order.
        for field, text in ((length, "384"), (batch, "3"), (seed, "7")):
            with field.control.prevent(Input.Changed):  # the key's own message is the apply() below
                field.control.value = text
            step.apply(field.path, text)
        await settle(pilot)
        assert wizard.draft.training.max_length == 384
        assert wizard.draft.training.per_device_train_batch_size == 3
        assert wizard.draft.training.seed == 7
        assert length.control.value == "384" and batch.control.value == "3" and seed.control.value == "7"

        # The same setting on another step shows the edit: max_length is on the Template step too.
        wizard.action_goto("template")
        await settle(pilot)
        other = wizard.current_step.field_for("training.max_length")
        assert other.control.value == "384"
        other.control.focus()
        await pilot.press("home", "ctrl+k", *"256")
        await settle(pilot)
        assert wizard.draft.training.max_length == 256 and other.control.value == "256"
        assert length.control.value == "256"  # pushed into the Training step's field

        # A value nobody typed here (a preset, an applied tip) replaces the text.
        wizard.set_draft(wizard.draft.replace(training=replace(wizard.draft.training, max_length=128)))
        await settle(pilot)
        assert length.control.value == "128" and other.control.value == "128"


async def test_doctor_warnings_show_on_the_step_that_edits_their_setting(make_app):
    """A warning about model.dtype goes to the Method step (its field is there), not to the Model
    step, whose only field is the model id; one about a setting no step edits shows on Review."""
    from sftwizard.core.config import RunConfig, apply_overrides
    from sftwizard.tui.screens.wizard import STEPS
    from sftwizard.tui.steps.fields import ConfigField

    cfg = apply_overrides(RunConfig(), ["method.type=full", "model.dtype=bf16", "training.max_steps=4"])
    assert cfg.data.eval_source is None and cfg.data.eval_fraction == 0  # the doctor says "no eval split"
    app = make_app(cfg, start_step="method")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.wizard.context.doctor is not None)
        wizard = app.wizard
        codes = {w["code"]: w for w in wizard.context.doctor}
        assert codes["pure_half_full_finetune"]["setting"] == "model.dtype"
        assert codes["no_eval"]["setting"] == "data.eval_fraction"

        def notes() -> str:
            found = wizard.current_step.query(".doctor-notes")
            return str(found.first().render()) if found else ""

        half, no_eval = codes["pure_half_full_finetune"]["message"][:60], codes["no_eval"]["message"][:60]
        assert half in notes() and no_eval not in notes()
        for step_id in ("model", "dataset"):
            wizard.action_goto(step_id)
            await settle(pilot)
            assert half not in notes() and no_eval not in notes(), step_id
        wizard.action_goto("review")
        await settle(pilot)
        assert half in notes() and no_eval in notes()

        # What routes them: each step's declared settings are the ones its fields edit.
        for index, cls in enumerate(STEPS):
            wizard.action_goto(cls.step_id)
            await settle(pilot)
            paths = {f.path for f in wizard.current_step.query(ConfigField)}
            assert paths <= set(cls.edits), (cls.step_id, paths - set(cls.edits))


async def test_best_at_end_refused_for_a_save_setting_applies_once_that_setting_is_fixed(make_app):
    """A cross-field refusal names the other field; fixing that field applies the refused one too."""
    from sftwizard.tui.steps.fields import ConfigField

    app = make_app(start_step="training")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        step = wizard.current_step

        def control(path):
            return step.query_one("#f-" + path.replace(".", "-").replace("_", "-"), ConfigField).control

        control("training.eval_strategy").value = "epoch"
        await settle(pilot)
        assert wizard.draft.training.eval_strategy == "epoch"
        control("training.load_best_model_at_end").value = True
        await settle(pilot)
        assert wizard.draft.training.load_best_model_at_end is False
        error = field_error(app, "f-training-load-best-model-at-end")
        assert "training.save_strategy" in error and "'epoch'" in error  # names the field to change
        assert wizard.current_step.blocking_reason() is not None
        control("training.save_strategy").value = "epoch"
        await settle(pilot)
        assert wizard.draft.training.save_strategy == "epoch"
        assert wizard.draft.training.load_best_model_at_end is True  # the refused switch applied now
        assert field_error(app, "f-training-load-best-model-at-end") == ""
        assert wizard.current_step.blocking_reason() is None


async def test_the_memory_bar_says_when_the_template_grows_the_embeddings(make_app, tmp_path):
    """ChatML on a base model under LoRA: embed_tokens and lm_head train in full; the bar says so."""
    from sftwizard.core.config import config_from_dict
    from tests.fixtures.tokenizers import conversations, save_model_dir
    from tests.tui.conftest import gpu_report

    model_dir = save_model_dir("base", tmp_path / "base")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversations("qwen2_5")), encoding="utf-8")
    cfg = config_from_dict({"model": {"id": str(model_dir), "dtype": "bf16"}, "data": {"sources": [{"path": str(data)}]},
                            "template": {"source": "chatml"}, "method": {"type": "lora"}})
    app = make_app(cfg, start_step="method", hardware=gpu_report())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.wizard.current_step.query_one("MemoryBar")
        text = str(bar.as_text())
        assert "assumed: template.source chatml adds tokens" in text
        assert "embed_tokens and lm_head are trained in full" in text
        with_chatml = app.wizard.context.estimate.trainable_params
        # Another template: the estimate follows it (the template is part of what it depends on).
        wizard = app.wizard
        wizard.set_draft(wizard.draft.replace(template=wizard.draft.template.__class__(source="auto")))
        await settle(pilot)
        assert wizard.context.estimate.trainable_params < with_chatml
        assert "assumed: template.source chatml" not in str(bar.as_text())


async def test_template_step_says_what_happens_to_reasoning_and_offers_to_drop_it(make_app, tmp_path):
    """Qwen3's real template keeps the last turn's reasoning: said on the step; 'drop' removes it."""
    from sftwizard.core.config import RunConfig
    from tests.fixtures.families import family_conversations, save_family_dir

    model = save_family_dir("qwen3", tmp_path / "qwen3")
    data = tmp_path / "r.jsonl"
    data.write_text(json.dumps(family_conversations("qwen3", system=False, reasoning="content")[0]) + "\n")
    cfg = RunConfig()
    cfg.model.id = str(model)
    cfg.data.sources[0].path = str(data)
    app = make_app(cfg, start_step="template")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        trained = "".join(t["text"] for t in app.screen.query_one("MaskView").tokens if t["trained"])
        assert "The user asks for a capital" in trained
        assert "reasoning of the last assistant turn only" in str(app.screen.query_one("#preview-problems").render())
        app.screen.query_one("#f-template-reasoning #control").value = "drop"
        await settle(pilot)
        assert app.wizard.draft.template.reasoning == "drop"
        tokens = app.screen.query_one("MaskView").tokens
        assert "The user asks for a capital" not in "".join(t["text"] for t in tokens)
        assert "The capital of France is Paris." in "".join(t["text"] for t in tokens if t["trained"])
