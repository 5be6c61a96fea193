"""Shipped GPU presets fit the card they name, by our estimator, on the real architectures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sftwizard.core.config import load_preset
from sftwizard.core.estimator import estimate_memory
from sftwizard.core.models import model_facts

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"

# preset -> (architecture config standing in for the hub model, GPU memory the preset names, GiB)
CASES = {
    "qwen2.5-1.5b-full-24gb": ("qwen2.5-1.5b", 24),
    "llama3.1-8b-lora-48gb": ("llama-3.1-8b", 48),
    "llama3.1-8b-qlora-24gb": ("llama-3.1-8b", 24),
}


@pytest.mark.parametrize("preset", sorted(CASES))
def test_preset_fits_its_card(repo_root: Path, preset: str):
    arch, gib = CASES[preset]
    cfg = load_preset(repo_root / "presets" / f"{preset}.yaml")
    facts = model_facts(str(CONFIGS / arch))
    est = estimate_memory(facts, cfg, gpu_memory_gib=gib)
    assert est.fits, (preset, est.total_gib, est.components)
    # and it is a real use of the card, not a toy setting: at least a third of it
    assert est.total_gib > gib / 3, (preset, est.total_gib)


def test_architecture_fixtures_have_the_published_sizes():
    # Model cards: Llama-3.1-8B has 8.03B parameters, Qwen2.5-1.5B 1.54B.
    assert round(model_facts(str(CONFIGS / "llama-3.1-8b")).total_params / 1e9, 2) == 8.03
    assert round(model_facts(str(CONFIGS / "qwen2.5-1.5b")).total_params / 1e9, 2) == 1.54
