"""The pre-launch doctor's warnings for a config: what ``sft-wizard validate`` prints and the
wizard shows on its steps.

``doctor_warnings(cfg)`` gathers what the doctor's pure checks (core/doctor.py) need — data after
the eval split, model facts, the resolved template, a token audit — without downloading anything,
and never raises for the user's data or model: what cannot be gathered is skipped and said so.
"""

from __future__ import annotations

import random
from typing import Any

# The token audit behind the max_length and packing checks reads at most this many rows (a fixed
# sample); counts are scaled to the whole dataset.
AUDIT_SAMPLE_ROWS = 5000


def gather_inputs(cfg) -> tuple[dict[str, Any], list[dict]]:
    """(keyword arguments for ``check_config``, notes on what could not be gathered)."""
    inputs: dict[str, Any] = {}
    skipped: list[dict] = []
    try:
        from .runner import resolve_data

        train, evals, reports = resolve_data(cfg)
        inputs["examples"], inputs["eval_examples"] = train, evals or None
        skipped += [_left_out(r) for r in reports if r.dropped_rows]
    except Exception as exc:  # noqa: BLE001 - validate reports data errors itself; the doctor just skips
        skipped.append(_skipped("data", "data.sources", exc))
    try:
        from .models import load_tokenizer, model_facts, resolve_model

        resolved = resolve_model(cfg.model.id, cfg.model.revision, allow_download=False)
        facts = model_facts(str(resolved.path), trust_remote_code=cfg.model.trust_remote_code)
        inputs["facts"] = facts
        tokenizer = load_tokenizer(resolved.path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        skipped.append(_skipped("model", "model.id", exc))
        return inputs, skipped
    try:
        from .audit import audit_dataset
        from .templates import resolve_template

        template = resolve_template(tokenizer, cfg.template)
        inputs["tokenizer_template"] = template.template
        inputs["template_findings"] = template.behaviour.findings
        examples = inputs.get("examples")
        if examples and template.template is not None:
            sample = examples
            if len(examples) > AUDIT_SAMPLE_ROWS:
                picked = sorted(random.Random(0).sample(range(len(examples)), AUDIT_SAMPLE_ROWS))
                sample = [examples[i] for i in picked]
            inputs["audit"] = audit_dataset(tokenizer, sample, template, cfg)
    except Exception as exc:  # noqa: BLE001
        skipped.append(_skipped("template", "template.source", exc))
    return inputs, skipped


def _left_out(report) -> dict:
    """The rows ``on_bad_rows: drop`` leaves out of one source, said (nothing is dropped silently)."""
    first = report.problems[0].sentence() if report.problems else "?"
    n = report.dropped_rows
    return {"code": "rows_left_out", "message": f"{n} row{'s' if n != 1 else ''} of {report.source} left out "
            f"(on_bad_rows: drop); first: {first}", "setting": "data.on_bad_rows", "suggested": None,
            "details": {"source": report.source, "rows": n, "problems": [p.to_dict() for p in report.problems[:20]]}}


def _skipped(what: str, setting: str, exc: BaseException) -> dict:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {"code": "checks_skipped", "message": f"{what} checks skipped: {reason}", "setting": setting,
            "suggested": None, "details": {"part": what}}


def doctor_warnings(cfg) -> list[dict]:
    """The doctor's warnings for ``sft-wizard validate --json`` (``warnings``): dicts with code,
    message, setting, suggested and details. Never raises for the user's data or model."""
    from .doctor import check_config

    inputs, skipped = gather_inputs(cfg)
    return [w.to_dict() for w in check_config(cfg, **inputs)] + skipped
