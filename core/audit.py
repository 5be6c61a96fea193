"""Dataset-wide audit: what training on these rows will look like, token by token, in aggregate.

Streams the examples through ``templates.encode_examples`` (the training path, batched fast
tokenization) in chunks, with a progress callback, and reports: token lengths (p50/p90/p99/max),
rows over ``max_length`` and the trained tokens truncation eats, trained-token share and its
distribution, rows with no trained token (which SFTTrainer drops when not packing), end-of-turn
coverage (is the token that makes the model stop trained?), padding waste with and without
packing, and the expected number of packed sequences.
"""

from __future__ import annotations

import bisect
import gc
import math
import random
from typing import Callable

from .findings import finding_dict
from .stop_tokens import BlankTokens, stop_token_ids, stop_token_trained

MAX_ROW_PROBLEMS = 20  # per kind; counts are always complete


def percentiles(values: list[float] | list[int]) -> dict:
    """p50/p90/p95/p99/max/mean of a list (nearest-rank), zeros when empty."""
    if not values:
        return {"p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0, "mean": 0.0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float):
        return ordered[min(n - 1, max(0, math.ceil(q * n - 1e-9) - 1))]

    return {"p50": rank(0.5), "p90": rank(0.9), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1],
            "mean": round(sum(ordered) / n, 3)}


def pack_bins(lengths: list[int], capacity: int) -> int:
    """Number of sequences best-fit-decreasing packing makes (over-long rows truncated first)."""
    spaces: list[int] = []  # sorted remaining space of open bins
    bins = 0
    for length in sorted((min(n, capacity) for n in lengths if n > 0), reverse=True):
        i = bisect.bisect_left(spaces, length)
        if i < len(spaces):
            space = spaces.pop(i) - length
        else:
            bins += 1
            space = capacity - length
        if space > 0:
            bisect.insort(spaces, space)
    return bins


def _padding_waste(lengths: list[int], batch_size: int, seed: int) -> float:
    """Share of padded positions when rows are batched at random and padded to the longest."""
    if not lengths:
        return 0.0
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    padded = real = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i:i + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return round(1 - real / padded, 4) if padded else 0.0


def audit_dataset(tokenizer, examples: list[dict], template, cfg,
                  progress: Callable[[int, int], None] | None = None, chunk: int = 2000) -> dict:
    """The audit as a plain dict (JSON-ready); see the module docstring for the keys' meaning.

    ``progress(done, total)`` is called after every chunk of rows.
    """
    gc_was_on = gc.isenabled()
    gc.disable()  # millions of small lists and no cycles: collection passes only cost time here
    try:
        return _audit(tokenizer, examples, template, cfg, progress, chunk)
    finally:
        if gc_was_on:
            gc.enable()


def _audit(tokenizer, examples, template, cfg, progress, chunk) -> dict:
    from .templates import chose_no_loss, encode_examples, no_loss_reason

    t = cfg.training
    max_length = t.max_length
    split = bool(t.packing and t.packing_strategy == "bfd_split" and max_length)
    stop = set(stop_token_ids(tokenizer, getattr(template, "template", None)))  # what ends a turn: the one rule
    blank = BlankTokens(tokenizer)
    lengths: list[int] = []
    kept_lengths: list[int] = []
    shares: list[float] = []
    trained_total = tokens_total = 0
    over = truncated_rows = tokens_lost = 0
    zero_rows = stop_rows = conv_rows = turns_lost = 0
    failed = 0
    row_problems: list[dict] = []
    counts: dict[str, int] = {}

    def note(code: str, row: int, message: str, severity: str = "warning", field: str | None = None) -> None:
        counts[code] = counts.get(code, 0) + 1
        if counts[code] <= MAX_ROW_PROBLEMS:
            row_problems.append(finding_dict(code, message, severity, row=row, **({"field": field} if field else {})))

    total = len(examples)
    for base in range(0, total, chunk):
        batch = examples[base:base + chunk]
        errors: dict[int, Exception] = {}
        outs = encode_examples(
            tokenizer, batch, template,
            assistant_only_loss=t.assistant_only_loss,
            completion_only_loss=t.completion_only_loss,
            system_prompt=getattr(cfg.template, "system_prompt", None),
            on_error=lambda i, exc: errors.__setitem__(i, exc),
        )
        for offset, out in enumerate(outs):
            row = base + offset
            if out is None:
                failed += 1
                note("template_error", row, str(errors.get(offset, "the template failed")), "error", "messages")
                continue
            ids, mask = out["input_ids"], out["assistant_masks"]
            n = len(ids)
            lengths.append(n)
            if split and n > max_length:  # pieces of max_length; each piece's first token is not trained
                mask = [0 if i % max_length == 0 else bit for i, bit in enumerate(mask)]
                kept = mask
            else:
                kept = mask[:max_length] if max_length else mask
            trained_all = sum(mask)
            trained = sum(kept)
            if max_length and n > max_length:
                over += 1
                lost = trained_all - trained
                if lost:
                    truncated_rows += 1
                    tokens_lost += lost
                    note("truncated_assistant", row,
                         f"{n} tokens; truncation at max_length {max_length} drops {lost} trained tokens")
            kept_n = n if (split or not max_length) else min(n, max_length)
            kept_lengths.append(kept_n)
            tokens_total += kept_n
            trained_total += trained
            shares.append(trained / kept_n if kept_n else 0.0)
            if trained == 0 and not chose_no_loss(examples[row]):
                zero_rows += 1
                if any(n.get("code") == "turn_not_found" for n in out.get("notes") or []):
                    turns_lost += 1
                note("no_trained_tokens", row, no_loss_reason(out, None if split else max_length) + (
                    "; data.on_bad_rows: drop leaves it out" if cfg.data.on_bad_rows == "drop"
                    else "; training stops at this row (data.on_bad_rows: stop)"))
            for n_ in out.get("notes") or []:
                if n_.get("severity") == "warning":
                    note(n_["code"], row, n_["message"], "warning")
            is_conv = "messages" in examples[row] or isinstance(examples[row].get("prompt"), list)
            if trained:
                conv_rows += 1
                if stop_token_trained(ids[:kept_n], kept, stop, blank):
                    stop_rows += 1
                elif is_conv or not max_length or n <= max_length:
                    note("eos_not_trained", row, "the last trained token is not an end-of-turn/EOS token")
        if progress is not None:
            progress(min(base + chunk, total), total)

    bs = t.per_device_train_batch_size
    if split:
        pieces = [min(max_length, n - s) for n in kept_lengths for s in range(0, n, max_length)]
        packed = pack_bins(pieces, max_length)
    else:
        packed = pack_bins(kept_lengths, max_length) if max_length else None
    padding_free = t.padding_free or (t.packing and t.packing_strategy in ("bfd", "bfd_split"))
    result = {
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "template_source": template.source,
        "rows": total,
        "rows_encoded": len(lengths),
        "rows_failed": failed,
        "max_length": max_length,
        "token_length": percentiles(lengths),
        "rows_over_max_length": over,
        "rows_truncating_trained_tokens": truncated_rows,
        "trained_tokens_lost_to_truncation": tokens_lost,
        "tokens": tokens_total,
        "trained_tokens": trained_total,
        "trained_share": round(trained_total / tokens_total, 4) if tokens_total else 0.0,
        "trained_share_per_row": {k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in percentiles(shares).items()},
        "rows_with_no_trained_tokens": zero_rows,
        "rows_with_turns_not_found": turns_lost,
        "eos_coverage": round(stop_rows / conv_rows, 4) if conv_rows else 0.0,
        "padding": {
            "batch_size": bs,
            "waste_without_packing": 0.0 if t.padding_free else _padding_waste(kept_lengths, bs, t.seed),
            "waste_with_packing": round(1 - tokens_total / (packed * max_length), 4) if packed else None,
            "packed_sequences": packed,
            "packing_in_config": t.packing,
            "padding_free": padding_free,
        },
        "problem_counts": counts,
        "row_problems": row_problems,
    }
    return result
