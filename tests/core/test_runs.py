"""Detached runs with real training processes: outliving the parent, SIGKILL → lost → resume,
graceful stop → resume, failures with their reason, and `stop --kill`.

The scenarios run at once (one thread each drives its own runs) so that the two cores stay
busy; each test then checks what its scenario recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from sftwizard.core import runs
from sftwizard.core.config import config_from_dict, load_preset, save_preset
from sftwizard.core.events import read_events
from sftwizard.core.rundir import EVENTS_FILE

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 150


def tiny_config(root: Path, data: Path, model: str = "builtin:tiny-chat", **training):
    d = load_preset(REPO / "presets" / "demo.yaml").to_dict()
    d["model"]["id"] = model
    d["data"]["sources"] = [{"path": str(data)}]
    d["data"]["eval_source"] = None
    d["training"].update(dict(max_steps=12, save_steps=4, save_total_limit=2, logging_steps=1,
                              eval_strategy="no", per_device_train_batch_size=4, max_length=96,
                              warmup_ratio=0.0, num_train_epochs=1), **training)
    d["run"]["output_root"] = str(root)
    return config_from_dict(d)


def write_data(path: Path, rows: int = 48, broken: bool = False) -> Path:
    lines = (REPO / "core" / "assets" / "demo" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
    if broken:
        lines.append('{"messages": [{"role": "user", "content": "cut off')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def events_of(run_dir: Path) -> list[dict]:
    return read_events(run_dir / EVENTS_FILE)


def wait_for(predicate, what: str, timeout: float = DEADLINE_S, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_done(run_dir: Path) -> runs.RunInfo:
    wait_for(lambda: not runs.is_alive(run_dir), f"run {run_dir.name} to end")
    return runs.run_info(run_dir)


def first(run_dir: Path, kind: str, cond=lambda ev: True) -> dict | None:
    return next((ev for ev in events_of(run_dir) if ev.get("event") == kind and cond(ev)), None)


# --------------------------------------------------------------------------- scenarios

def scenario_detached(tmp: Path) -> dict:
    """`sft-wizard run --detach` in a child process that exits; the run finishes without it."""
    cfg = tiny_config(tmp / "runs", write_data(tmp / "data.jsonl"), max_steps=6, save_steps=100)
    preset = save_preset(cfg, tmp / "tiny.yaml")
    t0 = time.time()
    parent = subprocess.run([sys.executable, "-m", "sftwizard.cli", "run", str(preset), "--detach"],
                            capture_output=True, text=True, timeout=120)
    parent_s = time.time() - t0
    run_id = parent.stdout.strip()
    run_dir = runs.find_run(run_id)
    pid = runs.run_info(run_dir).pid
    own_session = os.getsid(pid) == pid if runs.is_alive(run_dir) else None
    attach = subprocess.run([sys.executable, "-m", "sftwizard.cli", "attach", run_id],
                            capture_output=True, text=True, timeout=DEADLINE_S)  # follows it to the end
    info = wait_done(run_dir)
    return dict(parent=parent, parent_s=parent_s, run_id=run_id, info=info, own_session=own_session, attach=attach)


def scenario_sigkill(tmp: Path) -> dict:
    """SIGKILL the whole run mid-way after a checkpoint: lost; resume continues to the end."""
    cfg = tiny_config(tmp / "runs", write_data(tmp / "data.jsonl"), max_steps=16, save_steps=3)
    launched = runs.launch(cfg)
    run_dir = launched.run_dir
    ckpt = wait_for(lambda: first(run_dir, "checkpoint", lambda ev: ev["step"] >= 3), "a checkpoint")
    os.killpg(launched.process.pid, signal.SIGKILL)
    launched.process.wait()
    lost = wait_done(run_dir)
    resumed = runs.resume(run_dir)
    final = wait_done(run_dir)
    resumed.process.wait()
    return dict(run_dir=run_dir, killed_after=ckpt, lost=lost, resume_from=resumed.resume_from, final=final)


def scenario_stop(tmp: Path) -> dict:
    """Graceful stop after the first logged step; resume refuses changed data or method, then runs."""
    data = write_data(tmp / "data.jsonl")
    cfg = tiny_config(tmp / "runs", data, max_steps=10, save_steps=100)
    launched = runs.launch(cfg)
    run_dir = launched.run_dir
    wait_for(lambda: first(run_dir, "log"), "the first log")
    asked = runs.stop(run_dir)
    stopped = wait_done(run_dir)
    launched.process.wait()
    checkpoints_after_stop = sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    refusals = {}
    original = data.read_text(encoding="utf-8")
    data.write_text(original + original.splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(runs.RunsError) as exc:
        runs.resume(run_dir)
    refusals["data"] = str(exc.value)
    data.write_text(original, encoding="utf-8")
    with pytest.raises(runs.RunsError) as exc:
        runs.resume(run_dir, overrides=["method.type=lora"])
    refusals["method"] = str(exc.value)
    resumed = runs.resume(run_dir)
    with pytest.raises(runs.RunsError) as exc:
        runs.resume(run_dir)
    refusals["running"] = str(exc.value)
    final = wait_done(run_dir)
    resumed.process.wait()
    return dict(run_dir=run_dir, asked=asked, stopped=stopped, checkpoints=checkpoints_after_stop,
                refusals=refusals, final=final)


def scenario_failures(tmp: Path, model_dir: Path) -> dict:
    """Runs that fail: model folder removed after launch, a broken data row, a NaN loss,
    the training process SIGKILLed alone, and `stop --kill`."""
    out = {}
    data = write_data(tmp / "data.jsonl")
    model_copy = tmp / "model-copy"
    shutil.copytree(model_dir, model_copy)
    gone = runs.launch(tiny_config(tmp / "runs", data, model=str(model_copy)))
    shutil.rmtree(model_copy)
    bad = runs.launch(tiny_config(tmp / "runs", write_data(tmp / "bad.jsonl", broken=True)))
    nan = runs.launch(tiny_config(tmp / "runs", data, max_steps=8, learning_rate=1e6, max_grad_norm=0.0))
    victim = runs.launch(tiny_config(tmp / "runs", data))
    start = wait_for(lambda: first(victim.run_dir, "start"), "the victim's start event")
    os.kill(start["pid"], signal.SIGKILL)
    killed = runs.launch(tiny_config(tmp / "runs", data))
    wait_for(lambda: first(killed.run_dir, "start"), "the start event")
    from sftwizard.cli.main import main as cli_main

    out["kill_rc"] = cli_main(["stop", killed.run_dir.name, "--kill"])
    for name, launched in (("gone", gone), ("bad", bad), ("nan", nan), ("victim", victim), ("killed", killed)):
        out[name] = wait_done(launched.run_dir)
        launched.process.wait()
    with pytest.raises(runs.RunsError) as exc:
        runs.resume(gone.run_dir)
    out["gone_resume"] = str(exc.value)
    return out


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory, builtin_model_dir) -> dict[str, Future]:
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # several trainers share two cores
    pool = ThreadPoolExecutor(max_workers=4)
    futures = {
        "sigkill": pool.submit(scenario_sigkill, tmp_path_factory.mktemp("sigkill")),
        "stop": pool.submit(scenario_stop, tmp_path_factory.mktemp("stop")),
        "detached": pool.submit(scenario_detached, tmp_path_factory.mktemp("detached")),
        "failures": pool.submit(scenario_failures, tmp_path_factory.mktemp("failures"), builtin_model_dir),
    }
    yield futures
    pool.shutdown(wait=True)
    if saved is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved


def result(scenarios, name: str) -> dict:
    return scenarios[name].result(timeout=DEADLINE_S * 2)


# --------------------------------------------------------------------------- tests

def test_detached_run_outlives_its_parent(scenarios):
    r = result(scenarios, "detached")
    assert r["parent"].returncode == 0, r["parent"].stderr
    assert r["own_session"] in (True, None)
    info = r["info"]
    assert info.status == "finished", info
    assert info.step == 6 and info.max_steps == 6
    assert (Path(info.dir) / "final" / "config.json").exists()
    assert r["run_id"] in {i.id for i in runs.list_runs()}
    attach = r["attach"]
    assert attach.returncode == 0, attach.stderr
    assert "step     6/6" in attach.stdout and "finished at step 6" in attach.stderr


def test_sigkilled_run_is_lost_then_resumes_where_it_left(scenarios):
    r = result(scenarios, "sigkill")
    lost = r["lost"]
    assert lost.status == "lost" and lost.reason == "lost"
    assert lost.step is not None and lost.step >= r["killed_after"]["step"]
    assert f"at step {lost.step}" in lost.message
    ckpt_step = int(r["resume_from"].name.split("-")[1])
    assert ckpt_step >= r["killed_after"]["step"]

    final = r["final"]
    assert final.status == "finished" and final.step == 16 and final.resumes == 1
    events = events_of(r["run_dir"])
    kinds = [ev["event"] for ev in events]
    assert kinds.count("start") == 1 and kinds.count("resume") == 1 and kinds.count("end") == 1
    resume_at = kinds.index("resume")
    assert events[resume_at]["step"] == ckpt_step
    after = [ev["step"] for ev in events[resume_at:] if ev["event"] == "log"]
    assert after[0] == ckpt_step + 1 and after[-1] == 16  # the loss curve continues
    # Retention follows save_total_limit (2), across the kill and the resume.
    assert len(list((r["run_dir"] / "checkpoints").glob("checkpoint-*"))) == 2


def test_graceful_stop_saves_a_checkpoint_and_resume_guards_the_config(scenarios):
    r = result(scenarios, "stop")
    stopped = r["stopped"]
    assert stopped.status == "stopped" and stopped.reason == "stopped", stopped
    assert 1 <= stopped.step < 10
    assert r["checkpoints"] == [f"checkpoint-{stopped.step}"]  # saved by the stop, not by save_steps
    assert not (r["run_dir"] / "STOP").exists()
    assert "data" in r["refusals"]["data"] and "data.jsonl changed" in r["refusals"]["data"]
    assert "method" in r["refusals"]["method"] and "method.type" in r["refusals"]["method"]
    assert "still running" in r["refusals"]["running"]
    final = r["final"]
    assert final.status == "finished" and final.step == 10
    logs = [ev["step"] for ev in events_of(r["run_dir"]) if ev["event"] == "log"]
    assert logs == list(range(1, stopped.step + 1)) + list(range(stopped.step + 1, 11))


def test_failures_show_failed_with_a_reason(scenarios):
    r = result(scenarios, "failures")
    gone = r["gone"]
    assert gone.status == "failed" and gone.reason == "config", gone
    assert "no model folder" in gone.message
    assert "no complete checkpoint" in r["gone_resume"]

    bad = r["bad"]
    assert bad.status == "failed" and bad.reason == "data", bad

    nan = r["nan"]
    assert nan.status == "failed" and nan.reason == "nan", nan
    assert "learning_rate" in nan.message
    assert not list((Path(nan.dir) / "checkpoints").glob("checkpoint-*"))  # no NaN weights saved

    victim = r["victim"]
    assert victim.status == "failed" and victim.reason == "killed", victim
    assert "SIGKILL" in victim.message

    killed = r["killed"]
    assert r["kill_rc"] == 0
    assert killed.status == "stopped" and killed.reason == "killed", killed
    assert "stop --kill" in killed.message


def test_cli_lists_and_attaches(scenarios, capsys):
    from sftwizard.cli.main import main as cli_main

    r = result(scenarios, "sigkill")
    run_id = r["run_dir"].name
    capsys.readouterr()
    assert cli_main(["runs", "--json"]) == 0
    listed = {item["id"]: item for item in json.loads(capsys.readouterr().out)["runs"]}
    item = listed[run_id]
    assert item["status"] == "finished" and item["step"] == 16 and item["max_steps"] == 16
    assert set(item) >= {"id", "name", "status", "step", "max_steps", "last_loss", "started", "duration_s",
                         "pid", "dir", "reason", "message"}

    assert cli_main(["attach", run_id]) == 0
    out = capsys.readouterr().out
    assert "— resumed from checkpoint-" in out and "step    16/16" in out

    assert cli_main(["stop", run_id]) == 2
    assert "is not running (finished)" in capsys.readouterr().err
    assert cli_main(["resume", run_id]) == 2
    assert cli_main(["attach", "no-such-run"]) == 2
