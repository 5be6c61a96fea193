"""Downloads through the real huggingface_hub code, against a loopback Hub on 127.0.0.1.

Progress as monotone ``download`` phase events, the disk preflight (the free-space reading is
patched at its boundary, shutil.disk_usage), a gated repo, a missing repo, a transfer broken
midway and resumed — and a whole `sft-wizard run` of a model that must be downloaded first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from sftwizard.core import hub_download
from sftwizard.core.events import read_events
from sftwizard.core.hub_download import DownloadError, fetch, plan_download
from sftwizard.core.phases import PhaseReporter
from tests.fixtures.fake_hub import FakeHub, FakeRepo, point_hub_at
from tests.fixtures.tokenizers import save_model_dir

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_model_dir("qwen2_5", tmp_path_factory.mktemp("tiny-hub-model"), weights=True)


@pytest.fixture
def hub(tiny_model_dir, tmp_path, monkeypatch):
    """The loopback Hub serving org/tiny (open) and org/gated (gated), this process pointed at it."""
    server = FakeHub(models={"org/tiny": FakeRepo.from_folder(tiny_model_dir),
                             "org/gated": FakeRepo.from_folder(tiny_model_dir, gated=True)}).start()
    server.env = point_hub_at(server, monkeypatch, tmp_path / "hf")
    server.cache = tmp_path / "hf" / "hub"
    yield server
    server.stop()


def recorder(interval: float = 0.0):
    events: list[dict] = []
    reporter = PhaseReporter(lambda kind, step=None, **f: events.append({"event": kind, **f}), interval=interval)
    return reporter, events


def blobs(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("blobs/*") if p.is_file()]


def test_a_download_reports_monotone_bytes_up_to_the_hubs_total(hub, tiny_model_dir, monkeypatch):
    hub.chunk_delay_s = 0.02  # a few hundred ms: long enough for the progress thread to read it moving
    monkeypatch.setattr(hub_download, "POLL_S", 0.02)
    reporter, events = recorder()
    path = fetch("org/tiny", phases=reporter)
    for name in ("config.json", WEIGHTS, "tokenizer.json"):
        assert (path / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    phases = [e for e in events if e["phase"] == "download"]
    total = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert phases[0]["state"] == "begin" and phases[0]["total"] == total and phases[0]["unit"] == "bytes"
    assert phases[-1]["state"] == "end" and phases[-1]["done"] == total
    done = [e["done"] for e in phases]
    assert done == sorted(done) and len({d for d in done if 0 < d < total}) >= 2, done  # it was seen moving
    # A second fetch finds everything cached: nothing to download, no phase.
    again, events2 = recorder()
    assert fetch("org/tiny", phases=again) == path and events2 == []


def test_not_enough_disk_is_one_sentence_with_both_sizes_before_any_byte(hub, tiny_model_dir, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 2000, 2000))
    with pytest.raises(DownloadError) as err:
        plan_download("org/tiny")
    message = str(err.value)
    need = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert message.startswith("not enough disk space to download org/tiny")
    assert hub_download.format_bytes(need) in message and "2 KB free" in message and "\n" not in message
    assert blobs(hub.cache) == [] and not any(m == "GET" and "/resolve/" in p for m, p, _ in hub.log)


def test_the_run_command_refuses_with_exit_2_before_starting_a_process(hub, tmp_path, monkeypatch, capsys):
    from sftwizard.cli.main import main

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 2000, 2000))
    preset = write_preset(tmp_path, "org/tiny")
    assert main(["run", str(preset)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sft-wizard: error: model.id: not enough disk space to download org/tiny: it needs ")
    assert "2 KB free" in err and len(err.splitlines()) == 1
    assert blobs(hub.cache) == []


def test_a_gated_repo_says_what_to_do_in_one_sentence(hub, monkeypatch):
    with pytest.raises(DownloadError) as err:  # not logged in: 401
        plan_download("org/gated")
    assert str(err.value) == (f"org/gated is gated: accept its terms at {hub.url}/org/gated, then log in with "
                              "`hf auth login` (or set HF_TOKEN)")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # logged in, without access: 403
    with pytest.raises(DownloadError) as err:
        plan_download("org/gated")
    assert str(err.value).startswith("org/gated is gated and your Hub account has no access yet")
    assert "hf_not_a_real_token" not in str(err.value)
    assert blobs(hub.cache) == []


def test_a_missing_repo_is_one_sentence(hub):
    from sftwizard.core.models import ModelError, resolve_model

    with pytest.raises(ModelError) as err:
        resolve_model("org/nope", weights=True)
    assert str(err.value) == ("model.id: no model org/nope on the Hub (or it is private and you are not logged in: "
                              "`hf auth login` or HF_TOKEN)")


def test_a_broken_transfer_resumes_where_it_stopped(hub, tiny_model_dir, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes what arrived in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): smaller ones make
    # this 140 KB file stream the way a 16 GB one does, so the bytes before the break reach the disk.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 8192)
    cut = 8192 * 5
    hub.cut_after[WEIGHTS] = cut
    reporter, events = recorder()
    path = fetch("org/tiny", phases=reporter)
    assert (path / WEIGHTS).read_bytes() == (tiny_model_dir / WEIGHTS).read_bytes()
    ranges = [r for m, p, r in hub.log if m == "GET" and p.endswith(WEIGHTS)]
    assert ranges == [None, f"bytes={cut}-"]  # the second request asked only for the rest
    done = [e["done"] for e in events]
    assert done == sorted(done) and done[-1] == events[0]["total"]


def write_preset(folder: Path, model_id: str, max_steps: int = 3) -> Path:
    path = folder / "hub.yaml"
    path.write_text(
        f"model:\n  id: {model_id}\n  dtype: fp32\n"
        "data:\n  sources:\n    - path: builtin:demo\n"
        "method:\n  type: full\n"
        f"training:\n  max_steps: {max_steps}\n  per_device_train_batch_size: 4\n  max_length: 128\n"
        "  logging_steps: 1\n  save_strategy: 'no'\n  eval_strategy: 'no'\n"
        "run:\n  name: hub\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def downloaded_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """`sft-wizard run` of a model only the (loopback) Hub has, as a user runs it (once per module):
    the run directory and what `run` printed (not a terminal: plain lines)."""
    import os

    folder = tmp_path_factory.mktemp("hub-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = FakeHub(models={"org/tiny": FakeRepo.from_folder(tiny_model_dir)}, chunk_delay_s=0.01).start()
        try:
            env = point_hub_at(server, monkeypatch, folder / "hf")
            out = subprocess.run([sys.executable, "-m", "sftwizard.cli", "run",
                                  str(write_preset(folder, "org/tiny"))],
                                 capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        finally:
            server.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stderr.splitlines() if l.startswith("run "))
    return Path(line.split("(", 1)[1].rstrip(")")), out.stdout


def test_a_run_of_a_model_to_download_shows_its_phases_in_order(downloaded_run, tiny_model_dir):
    run_dir, printed = downloaded_run
    events = read_events(run_dir / "events.jsonl")
    phases = [e for e in events if e["event"] == "phase"]
    begun = [e["phase"] for e in phases if e["state"] == "begin"]
    # The data is tokenized before the weights load: a bad row stops a run before minutes of loading.
    assert begun == ["download", "tokenize", "load", "train", "save"], begun
    for name in begun:
        mine = [e for e in phases if e["phase"] == name]
        done = [e["done"] for e in mine]
        assert done == sorted(done), (name, done)
        assert mine[-1]["state"] == "end" and mine[-1]["duration_s"] >= 0
        if mine[0]["total"]:
            assert mine[-1]["done"] == mine[0]["total"]
    assert phases[0]["total"] == sum(p.stat().st_size for p in tiny_model_dir.iterdir())  # sizes from the Hub
    first_train = next(i for i, e in enumerate(events) if e["event"] == "train_begin")
    assert events.index(phases[0]) < first_train
    summary = next(e for e in events if e["event"] == "summary")
    assert set(summary["phase_durations_s"]) >= {"download", "tokenize", "load", "train"}
    assert set(events[-1]["phase_durations_s"]) >= {"download", "tokenize", "load", "train", "save"}
    for name in ("download", "tokenize", "load", "train"):
        assert f"{name} done in" in printed, printed[:2000]
    out = subprocess.run([sys.executable, "-m", "sftwizard.cli", "attach", str(run_dir), "--no-follow"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    order = [next(i for i, l in enumerate(lines) if l.startswith(f"{name} done in"))
             for name in ("download", "tokenize", "load", "train")]
    assert order == sorted(order), lines[:20]


async def test_the_run_screen_shows_each_phase_as_a_bar_as_the_events_arrive(downloaded_run, tmp_path):
    """The Run screen follows a live run (our pid stands in for the training process) whose events
    are the real ones of the downloaded run, written in two parts."""
    import os

    from sftwizard.tui.app import SftWizardApp
    from sftwizard.tui.widgets.phase_bar import PhaseBar
    from tests.tui.conftest import cpu_report
    from tests.tui.helpers import open_run

    run_dir, _ = downloaded_run
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, l in enumerate(lines) if '"phase": "tokenize"' in l and '"begin"' in l) + 1
    live = tmp_path / "live-run"
    live.mkdir()
    (live / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (live / "pid").write_text(str(os.getpid()))
    from sftwizard.core.runs import _record_process

    _record_process(live, os.getpid())  # what spawn records: a bare pid proves nothing
    (live / "events.jsonl").write_text("".join(lines[:cut]))
    app = SftWizardApp(hardware_probe=cpu_report)
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = await open_run(pilot, live)
        bar = monitor.query_one(PhaseBar)
        assert bar.display and bar.phase["phase"] == "tokenize"
        assert "rows" in str(bar.query_one("#phase-detail").render())
        seen = []
        with open(live / "events.jsonl", "a") as fh:
            for line in lines[cut:]:
                if '"event": "end"' in line:
                    break
                fh.write(line)
                fh.flush()
                if '"state": "progress"' in line or '"begin"' in line:
                    when = json.loads(line)["time"]
                    for _ in range(200):  # the monitor reads the file on a timer: at most 10 s here
                        await pilot.pause(0.05)
                        if bar.phase is not None and bar.phase.get("time") == when:
                            break
                    assert bar.phase is not None and bar.phase.get("time") == when, (line, bar.phase)
                    seen.append((bar.phase["phase"], bar.query_one("ProgressBar").progress))
        log = "\n".join(monitor.query_one("LogPane").lines)
        ready = [line for line in log.splitlines() if line.startswith("ready to train after ")]
        assert len(ready) == 1 and all(f"{name} " in ready[0] for name in ("download", "tokenize", "load")), log
        names = [name for name, _ in seen]
        assert names.index("load") < names.index("train"), names
        train = [p for name, p in seen if name == "train"]
        # monotone; whether a `progress` event fell between begin and end depends on how fast 3 steps ran
        assert train and train == sorted(train) and train[-1] <= 3, seen


@pytest.mark.parametrize("status,needle", [
    (401, "refused the token (401 unauthorized)"),
    (403, "no write access to someone/x (403 forbidden)"),
    (404, "someone/x does not exist and cannot be created with this token (404)"),
    (500, "the Hub answered 500 for someone/x"),
])
def test_one_sentence_for_each_hub_answer_to_a_push(status, needle):
    """The push and the downloads share one mapping of Hub errors (hub_download.explain_hub_error)."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError, Response

    client = importlib.import_module(Response.__module__.split(".")[0])  # the HTTP client huggingface_hub uses
    response = Response(status, request=client.Request("POST", "https://huggingface.co/api/repos/create"))
    try:
        raise HfHubHTTPError("the Hub's own words", response=response)
    except HfHubHTTPError as exc:
        sentence = hub_download.explain_hub_error(exc, "someone/x", pushing=True)
    assert needle in sentence and "\n" not in sentence
