"""Every wizard step (and a run's monitor) at 80x24 and 120x40, fixed theme, fake hardware.

Regenerate after a deliberate change: ``pytest tests/tui/test_snapshots.py --snapshot-update``,
then look at the report. Nothing machine-specific is on screen: the hardware is a fixed fake
report, the HF cache listing a fixed one, user presets an empty folder, and no clock.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from sftwizard.tui import services
from sftwizard.tui.screens.wizard import STEP_IDS
from tests.tui.conftest import SIZES, cpu_report, gpu_report
from tests.tui.helpers import settle


@pytest.fixture
def fixed_machine(monkeypatch, tmp_path):
    """The two user-specific lists the wizard shows, fixed: saved presets and the HF cache."""
    import sftwizard.core.presets as presets
    from sftwizard.core.model_catalog import CachedModel

    monkeypatch.setattr(presets, "user_presets_dir", lambda: tmp_path / "no-user-presets")
    monkeypatch.setattr(services, "cached_models", lambda: [CachedModel("Qwen/Qwen2.5-0.5B-Instruct", 988_097_824)])


async def _steady(pilot) -> None:
    await settle(pilot)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("step", STEP_IDS)
def test_step(step, size, snap_compare, make_app, fixed_machine):
    app = make_app(start_step=step, hardware=gpu_report())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=_steady)


@pytest.mark.parametrize("step", ["template", "method"])
def test_light_theme(step, snap_compare, make_app, fixed_machine):
    """Trained/masked tokens and the memory bar stay readable on a light theme."""
    app = make_app(start_step=step, hardware=gpu_report(), theme="textual-light")
    assert snap_compare(app, terminal_size=SIZES["large"], run_before=_steady)


def test_hardware_in_cpu_mode(snap_compare, make_app, fixed_machine):
    app = make_app(hardware=cpu_report())
    assert snap_compare(app, terminal_size=SIZES["small"], run_before=_steady)


@pytest.mark.parametrize("size", list(SIZES))
def test_run_monitor(size, snap_compare, make_app, fixed_machine, tmp_path):
    from sftwizard.core.events import EventWriter
    from sftwizard.tui.screens.run import RunScreen

    run_dir = tmp_path / "20260101-000000-demo"
    writer = EventWriter(run_dir / "events.jsonl")
    writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
    writer.emit("prepared", step=0, train_rows=1200, eval_rows=64, template_source="tokenizer",
                trainable_params=2_066_112, total_params=2_066_112)
    writer.emit("train_begin", step=0, max_steps=60)
    for step in range(0, 61, 5):
        loss = 7.2 * (0.93 ** step) + 0.8
        writer.emit("log", step=max(step, 1), max_steps=60, loss=loss, learning_rate=3e-3 * (1 - step / 60),
                    grad_norm=1.5, tokens_per_s=900.0, eta_s=(60 - step) * 0.5)
        if step and step % 20 == 0:
            writer.emit("eval", step=step, eval_loss=loss + 0.3)
    writer.emit("end", step=60, status="finished")
    writer.close()

    async def open_run(pilot):
        await _steady(pilot)
        pilot.app.push_screen(RunScreen(run_dir))
        await pilot.pause(0.3)

    app = make_app(hardware=cpu_report())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_run)


@pytest.mark.parametrize("size", list(SIZES))
def test_token_view(size, snap_compare, make_app, fixed_machine):
    """The Template step's token view (F2), after a jump to the second trained span (shift+down twice)."""
    async def token_view(pilot):
        await _steady(pilot)
        await pilot.press("f2", "shift+down", "shift+down")
        await pilot.pause()

    app = make_app(start_step="template", hardware=gpu_report())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=token_view)
