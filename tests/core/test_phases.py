"""Phases as events: rate-limited progress, monotone counts, durations, and how each face prints them."""

from __future__ import annotations

import io

import pytest

from sftwizard.cli.progress import EventPrinter
from sftwizard.core.event_lines import event_line
from sftwizard.core.phases import PHASES, PhaseReporter, current_phase


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(interval: float = 0.5):
    events: list[dict] = []
    clock = Clock()
    rep = PhaseReporter(lambda kind, step=None, **f: events.append({"event": kind, "step": step, **f}),
                        interval=interval, clock=clock)
    return rep, events, clock


def test_progress_is_rate_limited_yet_steady_while_it_moves():
    rep, events, clock = reporter(interval=0.5)
    phase = rep.begin("tokenize", total=10_000, unit="rows")
    for i in range(1, 301):  # 300 updates over 3 s: far more than a viewer needs
        clock.now += 0.01
        phase.update(i * 30)
    phase.end()
    progress = [e for e in events if e["state"] == "progress"]
    times = [e["elapsed_s"] for e in progress]
    assert 5 <= len(progress) <= 6, len(progress)  # at most 2 a second, and at least 1 a second
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(times, times[1:]))
    assert all(b - a <= 1.0 for a, b in zip([0.0] + times, times))
    done = [e["done"] for e in events]
    assert done == sorted(done) and events[-1]["state"] == "end" and events[-1]["done"] == 10_000
    last = progress[-1]
    assert last["rate"] == pytest.approx(last["done"] / last["elapsed_s"], rel=1e-3)
    assert last["eta_s"] == pytest.approx((10_000 - last["done"]) / last["rate"], abs=0.1)


def test_counts_never_go_back_and_durations_add_up():
    rep, events, clock = reporter(interval=0.0)
    dl = rep.begin("download", total=1000, unit="bytes")
    clock.now += 1
    dl.update(600)
    dl.update(400)  # a smaller reading (a file renamed between two reads) is not news
    clock.now += 1
    assert dl.end() == pytest.approx(2.0)
    train = rep.begin("train", total=5, unit="steps")
    clock.now += 3
    assert [e["done"] for e in events if e["phase"] == "download"] == [0, 600, 1000]
    assert rep.durations() == {"download": 2.0, "train": 3.0}  # an open phase counts up to now
    train.end()
    assert events[-1] == {**events[-1], "event": "phase", "step": None, "phase": "train", "state": "end",
                          "duration_s": 3.0}
    with pytest.raises(ValueError):
        rep.begin("upload")
    assert set(PHASES) == {"download", "load", "quantize", "tokenize", "pack", "train", "save", "merge"}


def test_a_resumed_phase_starts_where_it_was_and_its_rate_counts_only_new_work():
    rep, events, clock = reporter(interval=0.0)
    train = rep.begin("train", total=100, unit="steps", done=40)
    clock.now += 10
    train.update(50)
    assert events[0]["done"] == 40 and events[-1]["rate"] == 1.0 and events[-1]["eta_s"] == 50.0


def test_the_current_phase_is_the_latest_one_not_ended():
    begin = {"event": "phase", "phase": "load", "state": "begin"}
    assert current_phase([{"event": "start"}, begin]) is begin
    assert current_phase([begin, {"event": "phase", "phase": "load", "state": "end"}]) is None
    assert current_phase([begin, {"event": "end", "status": "failed"}]) is None


def test_a_phase_has_one_readable_line_per_state():
    ev = {"event": "phase", "phase": "download", "state": "progress", "done": 1_200_000_000,
          "total": 16_100_000_000, "unit": "bytes", "rate": 85_300_000, "eta_s": 174}
    assert event_line(ev) == "download  1.2 GB / 16.1 GB  7%  85.3 MB/s  ETA 2m54s"
    rows = {"event": "phase", "phase": "tokenize", "state": "progress", "done": 12000, "total": 50000,
            "unit": "rows", "rate": 3400.0, "eta_s": 11.2}
    assert event_line(rows) == "tokenize  12,000 / 50,000 rows  24%  3,400.0 rows/s  ETA 11s"
    assert event_line({"event": "phase", "phase": "load", "state": "begin", "total": 4, "unit": "shards"}) == \
        "load … 4 shards"
    assert event_line({"event": "phase", "phase": "load", "state": "end", "duration_s": 75}) == "load done in 1m15s"
    assert event_line({"event": "phase", "phase": "save", "state": "begin", "total": 1, "unit": "files"}) == \
        "save … 1 file"
    assert event_line({"event": "phase", "state": "progress", "done": "?", "total": None}) == "?  ?"


def _events():
    out = [{"event": "phase", "phase": "download", "state": "begin", "done": 0, "total": 100, "unit": "bytes",
            "time": 0.0}]
    out += [{"event": "phase", "phase": "download", "state": "progress", "done": d, "total": 100,
             "unit": "bytes", "rate": 10.0, "eta_s": (100 - d) / 10, "time": d / 10} for d in range(5, 100, 5)]
    out.append({"event": "phase", "phase": "download", "state": "end", "done": 100, "total": 100, "unit": "bytes",
                "duration_s": 10.0, "time": 10.0})
    out.append({"event": "log", "step": 1, "max_steps": 2, "loss": 1.5})
    return out


def test_plain_output_prints_a_phase_every_few_seconds_not_every_event():
    out = io.StringIO()
    printer = EventPrinter(event_line, stream=out, live=False)
    for ev in _events():
        printer(ev)
    lines = out.getvalue().splitlines()
    assert lines[0] == "download … 100 B" and lines[-2] == "download done in 10s"
    assert lines[-1].startswith("step     1/2  loss 1.5000")
    assert len(lines) == 5, lines  # begin, progress at 0.5 s and 5.5 s of the run, end, the log line


def test_on_a_terminal_a_phase_is_one_rich_bar_that_updates():
    out = io.StringIO()
    printer = EventPrinter(event_line, stream=out, live=True)
    for ev in _events():
        printer(ev)
    printer.close()
    text = out.getvalue()
    assert "download" in text and "done in 10s" in text and "loss 1.5000" in text
    assert len(printer._tasks) == 1  # one line for the phase, however many events
