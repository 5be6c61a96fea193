"""The dataset-wide audit, checked against numbers worked out from the encode path itself."""

from __future__ import annotations

import subprocess
import sys

from sftwizard.core.audit import audit_dataset, pack_bins, percentiles
from sftwizard.core.config import RunConfig
from sftwizard.core.templates import chose_no_loss, encode_example, resolve_template
from tests.fixtures.tokenizers import conversations, make_tokenizer


def _rows():
    rows = conversations("llama3")
    rows.append({"messages": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Yo", "weight": 0}]})  # nothing trained
    rows.append({"messages": [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]})
    return rows


def test_audit_numbers_follow_the_encode_path():
    tok = make_tokenizer("llama3")
    cfg = RunConfig()
    cfg.training.max_length = 40
    cfg.training.per_device_train_batch_size = 2
    template = resolve_template(tok, cfg.template)
    rows = _rows()
    calls = []
    audit = audit_dataset(tok, rows, template, cfg, progress=lambda done, total: calls.append((done, total)), chunk=2)
    encoded = [encode_example(tok, r, template, assistant_only_loss=None, completion_only_loss=None) for r in rows]
    lengths = [len(e["input_ids"]) for e in encoded]
    assert calls[-1] == (len(rows), len(rows)) and len(calls) == 3
    assert audit["rows"] == len(rows) and audit["rows_encoded"] == len(rows) and audit["rows_failed"] == 0
    assert audit["token_length"] == percentiles(lengths)
    assert audit["rows_over_max_length"] == sum(n > 40 for n in lengths)
    lost = sum(sum(e["assistant_masks"][40:]) for e in encoded)
    assert audit["trained_tokens_lost_to_truncation"] == lost
    kept_trained = sum(sum(e["assistant_masks"][:40]) for e in encoded)
    assert audit["trained_tokens"] == kept_trained
    assert audit["tokens"] == sum(min(n, 40) for n in lengths)
    # rows whose every answer has weight 0 carry no loss by choice: not counted as a problem
    zero = sum(1 for r, e in zip(rows, encoded) if not any(e["assistant_masks"][:40]) and not chose_no_loss(r))
    assert audit["rows_with_no_trained_tokens"] == zero >= 1
    assert audit["padding"]["packed_sequences"] == pack_bins([min(n, 40) for n in lengths], 40)
    assert 0 < audit["eos_coverage"] <= 1
    assert {p["code"] for p in audit["row_problems"]} >= {"no_trained_tokens"}


def test_audit_reports_rows_the_template_refuses():
    tok = make_tokenizer("mistral")
    cfg = RunConfig()
    template = resolve_template(tok, cfg.template)
    audit = audit_dataset(tok, _rows(), template, cfg)
    assert audit["rows_failed"] == 1
    (problem,) = [p for p in audit["row_problems"] if p["code"] == "template_error"]
    assert problem["row"] == len(_rows()) - 1 and "alternate" in problem["message"]
    assert audit["eos_coverage"] == 1.0


def test_pack_bins_and_percentiles():
    assert pack_bins([10, 10, 10], 20) == 2
    assert pack_bins([25, 5, 15, 5], 20) == 3  # 25 truncated to 20; 15+5; 5
    assert pack_bins([], 8) == 0
    p = percentiles(list(range(1, 101)))
    assert (p["p50"], p["p90"], p["p99"], p["max"]) == (50, 90, 99, 100)


def test_data_modules_import_without_heavy_libraries():
    code = (
        "import sys\n"
        "import sftwizard.core.data, sftwizard.core.templates, sftwizard.core.audit, sftwizard.core.preview\n"
        "import sftwizard.cli.data, sftwizard.core.masks\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
