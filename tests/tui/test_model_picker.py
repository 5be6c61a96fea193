"""The Model step answers "will it fit?": a badge per model, the verdict `sft-wizard estimate` gives."""

from __future__ import annotations

import json
import sys

import pytest

from sftwizard.cli.main import main
from sftwizard.core.config import RunConfig, apply_overrides
from tests.fixtures import fake_nvml
from tests.tui.helpers import screen_text, settle


@pytest.mark.parametrize("method", ["lora", "qlora"])
async def test_each_listed_model_has_the_badge_estimate_gives(make_app, repo_root, monkeypatch, capsys, method):
    from sftwizard.core.hardware import probe_hardware

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml.t4())  # what `estimate` below sees too
    folder = str(repo_root / "tests/fixtures/configs/llama-3.1-8b")
    cfg = apply_overrides(RunConfig(), [f"model.id={folder}", f"method.type={method}", "training.max_length=512",
                                        "training.per_device_train_batch_size=2",
                                        "training.gradient_checkpointing=true"])
    app = make_app(cfg, start_step="model", hardware=probe_hardware())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        choices = {c.id: c for c in app.wizard.context.model_choices}
        prompts = {o.id: str(o.prompt) for o in app.screen.query_one("#model-choices").options}
        text = screen_text(app)
    assert {"builtin:tiny-chat", folder} <= set(choices)
    for model in ("builtin:tiny-chat", folder):
        assert main(["estimate", "--model", model, "--method", method, "--max-length", "512", "--batch-size", "2",
                     "--gradient-checkpointing", "--json"]) == 0
        est = json.loads(capsys.readouterr().out)
        assert choices[model].fits == est["fits"] and choices[model].total_gib == est["total_gib"]
        badge = "✓ fits" if est["fits"] else "✗ too big" if est["headroom_gib"] < 0 else "~ tight"
        assert badge in prompts[model], prompts[model]
    assert ("✗ too big" if method == "lora" else "✓ fits") in prompts[folder]  # 8B on a 15 GiB T4
    assert "8.03B" in prompts[folder] and "? no config" in prompts["Qwen/Qwen2.5-7B-Instruct"]  # offered by id
    assert "Tesla T4" in text  # the badges say which GPU they are for
