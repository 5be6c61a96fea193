"""One finding type (core/findings.py): the doctor's warnings, memory suggestions, recommendations,
and the preview/audit/template-probe problems are Findings, and each still writes the JSON its
documentation gives (README CLI reference, docs/cli-*.md)."""

from __future__ import annotations

import dataclasses

import pytest

from sftwizard.core.config import RunConfig, TemplateSection
from sftwizard.core.findings import SEVERITIES, Finding, finding_dict
from tests.fixtures.families import make_family_tokenizer
from tests.fixtures.tokenizers import SINGLE


def test_a_finding_writes_the_problem_shape():
    f = Finding("truncated", "cuts 3 tokens", "info", details={"tokens_lost": 3})
    assert f.to_dict() == {"code": "truncated", "message": "cuts 3 tokens", "severity": "info", "tokens_lost": 3}
    g = Finding("x", "why", where="row 2", setting="training.max_length", suggestion=512)
    assert g.to_dict() == {"code": "x", "message": "why", "severity": "warning", "where": "row 2",
                           "setting": "training.max_length", "suggestion": 512}
    assert g.sentence() == "row 2: why" and finding_dict("x", "why", "error", row=1)["row"] == 1
    with pytest.raises(ValueError):
        Finding("x", "why", "fatal")


def test_doctor_warnings_are_findings_with_the_documented_keys():
    from sftwizard.core.doctor import DoctorWarning, check_config

    cfg = RunConfig()
    cfg.model.id = "Qwen/Qwen2.5-0.5B"  # the learning-rate check skips builtin models (trained from scratch)
    cfg.training.learning_rate = 1.0
    warnings = check_config(cfg)
    assert warnings and all(isinstance(w, Finding) and isinstance(w, DoctorWarning) for w in warnings)
    lr = next(w for w in warnings if w.code == "lr_out_of_range")
    assert set(lr.to_dict()) == {"code", "message", "setting", "suggested", "details"}  # docs/cli-doctor.md
    assert lr.setting == "training.learning_rate" and lr.suggested == lr.suggestion and lr.severity == "warning"
    assert dataclasses.replace(lr, message="m").to_dict() == {**lr.to_dict(), "message": "m"}


def test_memory_suggestions_and_recommendations_are_findings_with_their_keys():
    from sftwizard.core.estimator import Suggestion
    from sftwizard.core.recommend import Recommendation

    s = Suggestion("turn on gradient checkpointing", {"training.gradient_checkpointing": True}, 7.5, True, 1)
    assert isinstance(s, Finding) and s.setting == "training.gradient_checkpointing" and s.severity == "info"
    assert s.to_dict() == {"text": "turn on gradient checkpointing", "changes": {"training.gradient_checkpointing": True},
                           "total_gib": 7.5, "fits": True, "cost": 1}
    assert s == Suggestion("turn on gradient checkpointing", {"training.gradient_checkpointing": True}, 7.5, True, 1)
    assert s != Suggestion("turn on gradient checkpointing", {"training.gradient_checkpointing": True}, 9.0, True, 1)
    r = Recommendation("training.packing", True, "rows are short", True)
    assert isinstance(r, Finding) and (r.value, r.reason, r.changed) == (True, "rows are short", True)
    assert r.to_dict() == {"setting": "training.packing", "value": True, "reason": "rows are short", "changed": True}


def test_preview_audit_and_probe_problems_are_finding_dicts():
    from sftwizard.core.audit import audit_dataset
    from sftwizard.core.preview import render_preview
    from sftwizard.core.templates import resolve_template

    tok = make_family_tokenizer("qwen2_5")
    template = resolve_template(tok, TemplateSection())
    cfg = RunConfig()
    cfg.training.max_length = 12
    preview = render_preview(cfg, 0, tokenizer=tok, examples=SINGLE, template=template)
    audit = audit_dataset(tok, SINGLE, template, cfg)
    found = [*preview.problems, *audit["row_problems"], *template.behaviour.findings]
    assert {"truncated_assistant", "default_system_prompt"} <= {p["code"] for p in found}
    for p in found:
        assert {"code", "message", "severity"} <= set(p) and p["severity"] in SEVERITIES, p
