"""The parts of run management that need no training process: reading torn event files,
status from events, metrics and the NVML sampler (with a faithful fake NVML), failure
classification, config fingerprints, and run lookup."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftwizard.core import rundir, runs
from sftwizard.core.config import config_from_dict
from sftwizard.core.diagnosis import classify_failure, describe_exit
from sftwizard.core.events import EventTail, EventWriter, read_events
from sftwizard.core.fingerprint import changed_parts, fingerprint
from sftwizard.core.metrics import GpuSampler, Throughput, eta_seconds, format_duration
from sftwizard.core.rundir import EVENTS_FILE

# --------------------------------------------------------------------------- events

def test_a_truncated_last_line_is_skipped_then_read_once_complete(tmp_path):
    path = tmp_path / EVENTS_FILE
    whole = [json.dumps({"event": "log", "time": 1.0, "step": i, "loss": 2.0 / i}) for i in (1, 2)]
    torn = json.dumps({"event": "checkpoint", "time": 2.0, "step": 2, "path": "checkpoints/checkpoint-2"})
    path.write_text(whole[0] + "\n" + whole[1] + "\n" + torn[:25], encoding="utf-8")

    assert [ev["step"] for ev in read_events(path)] == [1, 2]
    tail = EventTail(path)
    assert [ev["step"] for ev in tail.poll()] == [1, 2]
    assert tail.poll() == []
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(torn[25:] + "\n")
    assert [ev["event"] for ev in tail.poll()] == ["checkpoint"]


def test_a_writer_after_a_killed_writer_keeps_its_line_whole(tmp_path):
    path = tmp_path / EVENTS_FILE
    path.write_text('{"event": "log", "time": 1.0, "step": 1}\n{"event": "log", "ti', encoding="utf-8")
    writer = EventWriter(path)
    writer.emit("end", step=1, status="stopped")
    writer.close()
    assert [ev["event"] for ev in read_events(path)] == ["log", "end"]


# --------------------------------------------------------------------------- status

def _run_dir(tmp_path: Path, events: list[dict]) -> Path:
    d = tmp_path / "20260101-000000-demo"
    d.mkdir()
    (d / "config.yaml").write_text("{}\n")
    (d / "meta.json").write_text(json.dumps({"name": "demo", "preset": "demo.yaml"}))
    return d


def test_status_from_events(tmp_path):
    start = {"event": "start", "time": 100.0, "step": 0, "model": "builtin:tiny-chat", "method": "full"}
    logs = [{"event": "log", "time": 100.0 + s, "step": s, "max_steps": 20, "loss": 5.0 - s / 10} for s in (1, 2, 3)]
    ckpt = {"event": "checkpoint", "time": 104.0, "step": 3, "path": "/x/checkpoints/checkpoint-3"}
    d = _run_dir(tmp_path, [])

    lost = runs.summarize(d, [start, *logs, ckpt], alive=False)
    assert (lost.status, lost.step, lost.max_steps, lost.last_loss) == ("lost", 3, 20, pytest.approx(4.7))
    assert "at step 3" in lost.message and lost.duration_s == 4.0

    running = runs.summarize(d, [start, *logs], alive=True)
    assert running.status == "running" and running.ended is None

    resume = {"event": "resume", "time": 200.0, "step": 3, "resume_from": "/x/checkpoints/checkpoint-3"}
    later = {"event": "log", "time": 201.0, "step": 4, "max_steps": 20, "loss": 4.5}
    end = {"event": "end", "time": 210.0, "step": 20, "status": "finished"}
    done = runs.summarize(d, [start, *logs, ckpt, resume, later, end], alive=False)
    assert (done.status, done.step, done.resumes, done.duration_s) == ("finished", 20, 1, 14.0)
    assert done.started == 100.0 and done.ended == 210.0 and done.name == "demo"
    assert done.best_checkpoint is None
    best = {**end, "best_checkpoint": "/x/checkpoints/checkpoint-3", "best_eval_loss": 1.25}
    assert runs.summarize(d, [start, *logs, ckpt, best], alive=False).best_checkpoint == "/x/checkpoints/checkpoint-3"

    # An end recorded, the process still exiting: already the end's status.
    failed = {"event": "end", "time": 105.0, "step": None, "status": "failed", "reason": "oom", "message": "CUDA out of memory"}
    info = runs.summarize(d, [start, *logs, failed], alive=True)
    assert (info.status, info.reason, info.step) == ("failed", "oom", 3)


def test_a_running_run_not_yet_training_shows_its_phase(tmp_path, monkeypatch, capsys):
    from sftwizard.cli.main import main

    start = {"event": "start", "time": 100.0, "step": 0, "model": "org/big", "method": "lora"}
    download = {"event": "phase", "time": 101.0, "step": None, "phase": "download", "state": "progress",
                "done": 1_200_000_000, "total": 16_000_000_000, "unit": "bytes", "eta_s": 180.0}
    d = _run_dir(tmp_path, [])
    info = runs.summarize(d, [start, download], alive=True)
    assert info.status == "running" and info.step is None  # not trained a step yet
    assert info.phase == {"name": "download", "done": 1_200_000_000, "total": 16_000_000_000, "unit": "bytes",
                          "eta_s": 180.0}
    train = {**download, "phase": "train", "done": 3, "total": 10, "unit": "steps"}
    assert runs.summarize(d, [start, download, train], alive=True).phase is None  # its step says it
    assert runs.summarize(d, [start, download], alive=False).phase is None  # lost: no phase goes on
    monkeypatch.setattr(runs, "list_runs", lambda: [info])
    assert main(["runs"]) == 0
    assert "running: download 8%" in capsys.readouterr().out


def test_find_run_by_id_prefix_and_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_WIZARD_HOME", str(tmp_path / "home"))
    dirs = []
    for name in ("alpha", "alpine"):
        d = tmp_path / f"20260101-000000-{name}"
        d.mkdir()
        (d / "config.yaml").write_text("{}\n")
        runs.register(d)
        dirs.append(d.resolve())
    assert runs.find_run("20260101-000000-alpha") == dirs[0]
    assert runs.find_run("20260101-000000-alpin") == dirs[1]
    assert runs.find_run(str(dirs[0])) == dirs[0]
    with pytest.raises(runs.RunsError, match="matches 2 runs"):
        runs.find_run("20260101-000000-al")
    with pytest.raises(runs.RunsError, match="no run 'zzz'"):
        runs.find_run("zzz")


def test_liveness_follows_the_lock_not_the_pid(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / rundir.LOCK_FILE).touch()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(d / rundir.LOCK_FILE)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert runs.is_alive(d)
    finally:
        holder.kill()
        holder.wait()
    assert not runs.is_alive(d)


def test_describe_exit():
    assert describe_exit(-signal.SIGKILL)[:2] == ("killed", "the training process was killed by SIGKILL (signal 9)")
    assert "out-of-memory killer" in describe_exit(-signal.SIGKILL)[2]
    assert describe_exit(-signal.SIGSEGV)[0] == "crash"
    assert describe_exit(3)[:2] == ("crash", "the training process exited with code 3")


# --------------------------------------------------------------------------- metrics

def test_throughput_and_eta():
    t = Throughput(samples_per_step=8)
    t.begin(step=10, now=1000.0)
    first = t.update(step=12, max_steps=30, num_tokens=4000, now=1002.0)
    assert first["samples_per_s"] == 8.0 and first["tokens_per_s"] is None
    assert first["steps_per_s"] == 1.0 and first["eta_s"] == 18.0
    second = t.update(step=16, max_steps=30, num_tokens=6000, now=1004.0)
    assert second["tokens_per_s"] == 1000.0 and second["samples_per_s"] == 16.0
    assert second["eta_s"] == pytest.approx(14 / 1.5)
    assert eta_seconds(5, -1, 2.0) is None and eta_seconds(5, 10, None) is None
    assert [format_duration(s) for s in (None, 42, 185, 3720)] == ["-", "42s", "3m05s", "1h02m"]


class FakeNVML:
    """The slice of pynvml the sampler calls, with NVML's units (bytes, percent, milliwatts)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices):
        self.devices = devices  # list of dicts: used, total, util, power_mw (None: not supported)
        self.initialised = False

    def nvmlInit(self):
        self.initialised = True

    def nvmlShutdown(self):
        self.initialised = False

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        if i >= len(self.devices):
            raise self.NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.devices[h]["used"], total=self.devices[h]["total"],
                               free=self.devices[h]["total"] - self.devices[h]["used"])

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.devices[h]["util"], memory=0)

    def nvmlDeviceGetPowerUsage(self, h):
        if self.devices[h]["power_mw"] is None:
            raise self.NVMLError("Not Supported")
        return self.devices[h]["power_mw"]


def test_gpu_sampler_means_and_peaks(monkeypatch):
    gib = 1024 ** 3
    nvml = FakeNVML([{"used": 10 * gib, "total": 80 * gib, "util": 50, "power_mw": 300_000},
                     {"used": 4 * gib, "total": 80 * gib, "util": 100, "power_mw": None}])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    sampler = GpuSampler(interval=60, nvml=nvml).start()
    try:
        assert sampler.available
        nvml.devices[1].update(used=6 * gib, util=0)
        snap = sampler.snapshot()
        # CUDA index 0 is NVML device 1: two samples (start, snapshot) averaged, memory peak kept.
        cuda0, cuda1 = snap["gpus"]
        assert (cuda0["index"], cuda0["util_pct"], cuda0["mem_peak_gib"], cuda0["power_w"]) == (0, 50.0, 6.0, None)
        assert (cuda1["util_pct"], cuda1["mem_used_gib"], cuda1["power_w"]) == (50.0, 10.0, 300.0)
        assert snap["gpu_mem_gib"] == 10.0 and snap["gpu_power_w"] == 300.0 and snap["gpu_util_pct"] == 50.0
    finally:
        sampler.stop()
    assert not nvml.initialised


def test_gpu_sampler_without_nvml_is_a_no_op():
    class NoDriver(FakeNVML):
        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    sampler = GpuSampler(nvml=NoDriver([])).start()
    assert not sampler.available and sampler.snapshot() == {}
    sampler.stop()


# --------------------------------------------------------------------------- failures

def test_classify_failure():
    cfg = config_from_dict({"method": {"type": "full"}, "training": {"per_device_train_batch_size": 8,
                                                                     "max_length": 2048}})

    class OutOfMemoryError(RuntimeError):
        pass

    reason, line = classify_failure(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), cfg)
    assert reason == "oom"
    assert "per_device_train_batch_size 8 → 4" in line and "gradient_accumulation_steps 1 → 2" in line

    from sftwizard.core.diagnosis import oom_advice

    demo = config_from_dict({"model": {"dtype": "fp32"}, "method": {"type": "full"},
                             "training": {"per_device_train_batch_size": 16, "max_length": 256}})
    advice = oom_advice(demo, gpu_memory_gib=1.0)  # the estimator: what fits a 1 GiB card
    assert advice.startswith("Lower the micro-batch to") and "--set training.per_device_train_batch_size=" in advice

    missing = ModuleNotFoundError("No module named 'bitsandbytes'", name="bitsandbytes")
    assert classify_failure(missing) == ("missing_dependency",
                                         "missing package 'bitsandbytes': pip install 'bitsandbytes>=0.50,<1'")

    def resolve_data():
        json.loads('{"messages": [')

    try:
        resolve_data()
    except ValueError as exc:
        reason, line = classify_failure(exc)
    assert reason == "data" and line.startswith("the data could not be read")
    assert classify_failure(RuntimeError("boom"))[0] == "crash"


# --------------------------------------------------------------------------- fingerprints

def test_fingerprint_names_what_changed(tmp_path, builtin_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    cfg = config_from_dict({"data": {"sources": [{"path": str(data)}]}, "method": {"type": "lora"}})
    before = fingerprint(cfg)
    assert changed_parts(before, fingerprint(cfg)) == []
    assert changed_parts(before, fingerprint(config_from_dict({**cfg.to_dict(), "training": {"max_steps": 99}}))) == []
    data.write_text(data.read_text() * 2)
    after = fingerprint(config_from_dict({**cfg.to_dict(), "method": {**cfg.to_dict()["method"], "lora_r": 8}}))
    assert changed_parts(before, after) == [f"data ({data} changed)", "method (method.lora_r changed)"]


def test_run_management_imports_no_heavy_modules():
    """The TUI imports these at start-up; the supervisor must stay a few MiB."""
    code = ("import sys\nimport sftwizard.core.runs, sftwizard.cli.runs, sftwizard.core.supervisor, "
            "sftwizard.core.metrics, sftwizard.core.diagnosis\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'pynvml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_events_callback_writes_rates_and_gpu_samples(tmp_path, monkeypatch):
    """The runner's callback, driven as the Trainer drives it, with a fake NVML board."""
    from transformers import TrainerControl

    from sftwizard.core import runner

    gib = 1024 ** 3
    nvml = FakeNVML([{"used": 20 * gib, "total": 80 * gib, "util": 90, "power_mw": 400_000}])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    clock = [1000.0]
    monkeypatch.setattr(runner.time, "time", lambda: clock[0])
    monkeypatch.setattr("sftwizard.core.metrics.time.time", lambda: clock[0])
    sampler = GpuSampler(interval=60, nvml=nvml).start()
    writer = EventWriter(tmp_path / EVENTS_FILE)
    callback = runner._events_callback(writer, tmp_path, sampler)
    args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1,
                           num_train_epochs=1.0, output_dir=str(tmp_path / "checkpoints"))
    state = SimpleNamespace(global_step=0, max_steps=100)
    control = TrainerControl()
    try:
        callback.on_train_begin(args, state, control)
        for step in range(1, 4):
            clock[0] += 6.0
            state.global_step = step
            callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 2.5, "learning_rate": 1e-4, "grad_norm": 0.5,
                                                     "num_tokens": 3000.0, "epoch": 0.1})
        clock[0] += 6.0
        state.global_step = 4
        callback.on_log(args, state, control, logs={"loss": float("nan"), "num_tokens": 4000.0})
    finally:
        sampler.stop()
        writer.close()
    events = read_events(tmp_path / EVENTS_FILE)
    assert [ev["event"] for ev in events] == ["train_begin", "gpu", "log", "log"]
    assert events[0]["samples_per_step"] == 8
    assert events[1]["step"] == 2 and events[1]["gpu_power_w"] == 400.0  # 12 s after the start
    log = events[2]
    assert log["samples_per_s"] == pytest.approx(3 * 8 / 18) and log["eta_s"] == pytest.approx(97 * 6)
    assert log["gpu_mem_gib"] == 20.0 and log["gpu_util_pct"] == 90.0 and log["gpus"][0]["mem_total_gib"] == 80.0
    assert events[3]["loss"] == "nan" and events[3]["tokens_per_s"] == pytest.approx(1000 / 6)
    assert callback.diverged == {"step": 4, "name": "loss", "value": "nan"}
    assert control.should_training_stop and not control.should_save


def test_resume_point_skips_a_half_written_checkpoint(tmp_path):
    d = tmp_path / "run"
    for step, complete in ((3, True), (6, True), (9, False)):
        ckpt = d / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"\0" * 16)
        if complete:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    events = [
        {"event": "start", "time": 1.0, "step": 0, "fingerprint": {"data": {"digest": "a"}}},
        {"event": "checkpoint", "time": 2.0, "step": 3, "path": str(d / "checkpoints" / "checkpoint-3")},
        {"event": "resume", "time": 3.0, "step": 3, "fingerprint": {"data": {"digest": "b"}}},
        {"event": "checkpoint", "time": 4.0, "step": 6, "path": str(d / "checkpoints" / "checkpoint-6")},
    ]
    path, recorded = runs.resume_point(d, events)
    assert path.name == "checkpoint-6" and recorded == {"data": {"digest": "b"}}
    assert [p.name for _, p in runs._later_checkpoint_dirs(d, 6)] == ["checkpoint-9"]
    path, recorded = runs.resume_point(d, events[:2])  # checkpoint-6 written, its event lost: last process's
    assert path.name == "checkpoint-6" and recorded == {"data": {"digest": "a"}}


def test_list_runs_sees_a_changed_ended_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_WIZARD_HOME", str(tmp_path / "home"))
    d = _run_dir(tmp_path, [])
    runs.register(d)
    writer = EventWriter(d / EVENTS_FILE)
    writer.emit("start", step=0, model="m", method="full")
    writer.emit("log", step=1, max_steps=4, loss=3.0)
    writer.emit("end", step=1, status="stopped", reason="stopped", message="on request")
    first_list = runs.list_runs()
    assert [(i.status, i.step) for i in first_list] == [("stopped", 1)]
    first_list[0].status = "changed by a caller"
    assert runs.list_runs()[0].status == "stopped"
    writer.emit("resume", step=1, resume_from="x/checkpoint-1")
    writer.emit("end", step=4, status="finished")
    writer.close()
    assert [(i.status, i.step, i.resumes) for i in runs.list_runs()] == [("finished", 4, 1)]


# Lines that are JSON but not events: each used to break a reader (runs: KeyError 'time' /
# TypeError on a string time, for every run; attach and report: a dict step).
ODD_LINES = [{"event": "end"}, {"event": "log", "time": 101.5, "step": {"n": 2}, "loss": 4.0},
             {"event": "log", "time": "noon", "step": 2}, ["not", "an", "object"],
             {"event": "end", "time": 102.0, "step": 3, "status": "failed", "message": ["a", "list"]}]


def test_odd_event_lines_are_skipped_and_counted_by_every_reader(tmp_path, monkeypatch, capsys):
    from sftwizard.cli.main import main

    monkeypatch.setenv("SFT_WIZARD_HOME", str(tmp_path / "home"))
    good = [{"event": "start", "time": 100.0, "step": 0, "model": "builtin:tiny-chat", "method": "full"},
            {"event": "log", "time": 101.0, "step": 1, "max_steps": 3, "loss": 4.5},
            {"event": "end", "time": 103.0, "step": 3, "status": "finished"}]
    dirs = {}
    for name, lines in (("clean", good), ("odd", good[:2] + ODD_LINES + good[2:])):
        d = tmp_path / f"20260101-00000{len(dirs)}-{name}"
        d.mkdir()
        (d / "config.yaml").write_text("{}\n")
        (d / EVENTS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        runs.register(d)
        dirs[name] = d

    events = read_events(dirs["odd"] / EVENTS_FILE)
    assert [e["event"] for e in events] == ["start", "log", "end"] and events.skipped == len(ODD_LINES)
    tail = EventTail(dirs["odd"] / EVENTS_FILE)
    assert len(tail.poll()) == 3 and tail.skipped == len(ODD_LINES)
    from sftwizard.core.events import parse_events

    parsed, rest = parse_events((dirs["odd"] / EVENTS_FILE).read_text(encoding="utf-8") + '{"event": "lo')
    assert len(parsed) == 3 and parsed.skipped == len(ODD_LINES) and rest == '{"event": "lo'

    assert main(["runs", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert set(listed) == {dirs["clean"].name, dirs["odd"].name}  # one odd file hides nothing
    odd = listed[dirs["odd"].name]
    assert (odd["status"], odd["step"], odd["skipped_events"]) == ("finished", 3, len(ODD_LINES))
    assert listed[dirs["clean"].name]["skipped_events"] == 0

    assert main(["attach", str(dirs["odd"]), "--no-follow"]) == 0
    err = capsys.readouterr().err
    assert f"note: {len(ODD_LINES)} lines of {dirs['odd'] / EVENTS_FILE} skipped" in err

    assert main(["report", str(dirs["odd"]), "--generations", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["status"], report["steps"], report["skipped_events"]) == ("finished", 3, len(ODD_LINES))


def test_gpu_sampler_on_a_mig_slice_still_samples_memory(monkeypatch):
    """A MIG instance answers memory but raises NVMLError_NotSupported for utilisation and power:
    memory is still sampled and the other fields are None (issue 14.16)."""
    from tests.fixtures.fake_nvml import a100_mig

    nvml = a100_mig()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-3g40gb")
    sampler = GpuSampler(interval=60, nvml=nvml).start()
    try:
        assert sampler.available
        snap = sampler.snapshot()
    finally:
        sampler.stop()
    (slice_,) = snap["gpus"]
    assert slice_["index"] == 0 and slice_["mem_total_gib"] == round(40192 / 1024, 3)
    assert slice_["mem_used_gib"] == round(13 / 1024, 3)
    assert slice_["util_pct"] is None and slice_["power_w"] is None
    assert snap["gpu_util_pct"] is None and snap["gpu_power_w"] is None and snap["gpu_mem_gib"] > 0
