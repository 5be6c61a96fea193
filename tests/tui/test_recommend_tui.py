"""The Training step's recommended settings, its tracker choice, and the run monitor's efficiency fields."""

from __future__ import annotations

from sftwizard.core.config import apply_overrides
from sftwizard.core.trackers import available_trackers
from sftwizard.tui.steps.fields import ConfigField
from tests.tui.helpers import screen_text, settle


async def settle_recommendations(pilot) -> None:
    """Settle the wizard, then the step's own (debounced) recommend worker."""
    step = pilot.app.wizard.step_named("training")
    for _ in range(200):
        await settle(pilot)
        if step.recommendations is not None and step.pending_changes() == step.recommendations.changes():
            return
        await pilot.pause(0.05)
    raise AssertionError("the recommendations did not arrive")


async def test_recommended_panel_lists_reasons_and_ctrl_e_applies_them(make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        wizard = app.wizard
        for _ in range(5):  # the demo walks with Enter: hardware → ... → training
            await pilot.press("enter")
            await settle(pilot)
        assert wizard.current_step.step_id == "training"
        step = wizard.current_step
        await settle_recommendations(pilot)
        recs = step.recommendations
        changes = recs.changes()
        assert changes, "the demo preset is not already what recommend() picks (e.g. fused AdamW)"
        panel = str(step.query_one("#recs-text").render())
        changed = [r for r in recs.items if r.changed]
        for r in changed:
            assert f"{r.setting} → " in panel and r.reason[:40] in panel
        assert "Apply recommended" in screen_text(app)  # in the footer (and on the button)

        before = wizard.draft
        await pilot.press("ctrl+e")
        await pilot.pause()
        expected = apply_overrides(before, [f"{k}={__import__('json').dumps(v)}" for k, v in changes.items()])
        assert wizard.draft == expected
        assert wizard.draft != before
        for path, value in changes.items():
            section, name = path.split(".")
            assert getattr(getattr(wizard.draft, section), name) == value
        # The draft now follows them: the recomputed panel has nothing left to apply.
        await settle_recommendations(pilot)
        assert step.recommendations.changes() == {}
        assert "already follows every recommendation" in str(step.query_one("#recs-text").render())


async def test_report_to_offers_the_installed_trackers(make_app):
    app = make_app(start_step="training")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        field = app.screen.query_one("#f-training-report-to", ConfigField)
        assert [value for _, value in field.pairs] == available_trackers()
        assert field.options[-1] == "none"
        assert field.control.value == app.wizard.draft.training.report_to


async def test_run_monitor_shows_efficiency_fields(make_app, tmp_path):
    from sftwizard.core.events import EventWriter
    from sftwizard.tui.screens.run import RunScreen

    def run_with(name, **efficiency):
        run_dir = tmp_path / name
        writer = EventWriter(run_dir / "events.jsonl")
        writer.emit("start", step=0, model="builtin:tiny-chat", method="full")
        writer.emit("log", step=1, max_steps=4, loss=2.5, learning_rate=1e-3, tokens_per_s=1000.0, **efficiency)
        writer.emit("end", step=4, status="finished")
        writer.close()
        return run_dir

    gpu = run_with("gpu", trained_tokens_per_s=812.4, padding_share=0.125, mfu=0.3412, gpu_mem_gib=10.0)
    cpu = run_with("cpu", trained_tokens_per_s=400.0, padding_share=0.0, mfu=None)
    older = run_with("older")  # a runner without the efficiency fields
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for run_dir, expected, absent in (
                (gpu, ["trained 812 tok/s", "padding 12.5%", "MFU 34.1%"], ["n/a"]),
                (cpu, ["trained 400 tok/s", "padding 0.0%", "MFU n/a on CPU"], []),
                (older, ["1,000 tok/s"], ["trained", "padding", "MFU"])):
            app.push_screen(RunScreen(run_dir))
            await pilot.pause(0.3)
            stats = str(app.screen.query_one("#run-stats").render())
            for text in expected:
                assert text in stats, stats
            for text in absent:
                assert text not in stats, stats
            app.pop_screen()
            await pilot.pause()
