"""What does sampling answers while training cost? The shipped demo with `run.samples: 3` vs `0`.

Runs `sft-wizard run presets/demo.yaml` with samples on and off, alternating, in one go, and
prints each run's wall time (launch to exit), the machine's 1-minute load average before and
after, and the on/off ratio of the medians (target <= 1.15). On a shared machine the wall times
move with the load, so it also prints the share of each samples-on run spent generating (the
`generation_s` of its `sample` events over its duration): that share is measured inside one run,
under one load, and ``1 / (1 - share)`` is the slowdown it implies.

    .venv/bin/python bench/samples_overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load1() -> float:
    return os.getloadavg()[0]


def run_demo(samples: int, home: Path) -> dict:
    from sftwizard.core.events import read_events

    env = dict(os.environ, SFT_WIZARD_HOME=str(home))
    before, began = load1(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sftwizard.cli", "run", str(REPO / "presets" / "demo.yaml"),
                          "--set", f"run.samples={samples}"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - began
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    line = next(l for l in out.stderr.splitlines() if l.startswith("run "))
    run_dir = Path(line.split("(", 1)[1].rstrip(")"))
    events = read_events(run_dir / "events.jsonl")
    generation = sum(e.get("generation_s") or 0 for e in events if e["event"] == "sample")
    duration = events[-1]["time"] - events[0]["time"]
    return {"samples": samples, "wall_s": wall, "load_before": before, "load_after": load1(),
            "generation_s": generation, "share": generation / duration if duration else 0.0,
            "sample_events": sum(e["event"] == "sample" for e in events)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="sftw-bench-samples-") as tmp:
        for r in range(args.rounds):
            for samples in (3, 0):
                res = run_demo(samples, Path(tmp))
                results.append(res)
                print(f"round {r + 1} samples={samples}: {res['wall_s']:.1f} s wall, load {res['load_before']:.1f}"
                      f"→{res['load_after']:.1f}, {res['sample_events']} sample events, generation "
                      f"{res['generation_s']:.2f} s ({res['share'] * 100:.1f}% of the run)", flush=True)
    on = statistics.median(r["wall_s"] for r in results if r["samples"])
    off = statistics.median(r["wall_s"] for r in results if not r["samples"])
    share = statistics.median(r["share"] for r in results if r["samples"])
    print(f"median wall: on {on:.1f} s, off {off:.1f} s, ratio {on / off:.3f} (target <= 1.15); "
          f"generation share {share * 100:.1f}% → implied ratio {1 / (1 - share):.3f}")


if __name__ == "__main__":
    main()
