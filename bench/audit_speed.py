"""Benchmark: the dataset-wide audit over 100k short conversations (target: < 60 s on 2 CPU cores).

Uses the builtin model's fast tokenizer and its ChatML template with generation markers, and
the same batched encode path the trainer's dataset is built with. Not a timed test: run it as
``python bench/audit_speed.py [ROWS] [--inferred]``. ``--inferred`` times the template-agnostic
method instead (several renderings per assistant turn, so slower).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time


def conversations(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = "the a cat dog sun moon river stone quick slow red blue one two three what is how why".split()

    def sentence(k):
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    rows = []
    for i in range(n):
        msgs = []
        if i % 3 == 0:
            msgs.append({"role": "system", "content": "You are a helpful assistant."})
        for _ in range(1 + (i % 4 == 0)):
            msgs.append({"role": "user", "content": sentence(rng.randint(4, 12)) + "?"})
            msgs.append({"role": "assistant", "content": sentence(rng.randint(4, 16))})
        rows.append({"messages": msgs})
    return rows


def main(argv: list[str]) -> None:
    os.environ.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    n = int(next((a for a in argv if a.isdigit()), 100_000))
    from sftwizard.core.audit import audit_dataset
    from sftwizard.core.config import RunConfig, TemplateSection
    from sftwizard.core.models import load_tokenizer, resolve_model
    from sftwizard.core.templates import resolve_template

    tokenizer = load_tokenizer(resolve_model("builtin:tiny-chat").path)
    source = "inferred" if "--inferred" in argv else "auto"
    template = resolve_template(tokenizer, TemplateSection(source=source))
    rows = conversations(n)
    cfg = RunConfig()
    cfg.training.max_length = 512
    start = time.perf_counter()
    audit = audit_dataset(tokenizer, rows, template, cfg)
    elapsed = time.perf_counter() - start
    print(f"audit of {n} conversations ({template.source}, {os.cpu_count()} CPUs): {elapsed:.1f} s "
          f"({n / elapsed:,.0f} rows/s)")
    print(f"tokens p50 {audit['token_length']['p50']} max {audit['token_length']['max']}, trained share "
          f"{audit['trained_share']:.1%}, EOS coverage {audit['eos_coverage']:.1%}, "
          f"over max_length {audit['rows_over_max_length']}, packed sequences {audit['padding']['packed_sequences']}")


if __name__ == "__main__":
    main(sys.argv[1:])
