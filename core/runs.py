"""Runs: directories, the registry, status, and starting, stopping and resuming training.

A run directory holds ``config.yaml`` (the resolved config), ``meta.json``, ``events.jsonl``,
``train.log`` (the full stdout/stderr of the training process), ``pid``, ``run.lock``,
``checkpoints/`` and ``final/``. The registry (``registry.jsonl`` in the data dir) lists every
run's id and directory.

A run is two processes in their own session: a small supervisor (``python -m
sftwizard.core.supervisor``, see there) and the training process it starts (``python -m
sftwizard.core.runner``). Both hold an ``flock`` on ``run.lock``: the run is alive exactly while
the lock is held, whatever happened to pids. When the training process dies without writing
``end`` (a signal, a native crash), the supervisor writes it, with the exit code or signal. When
both vanish (reboot, ``kill -9`` of the group), the run shows as ``lost`` at its last step.

Plain functions for the CLI and the TUI: ``list_runs``, ``run_info``, ``find_run``, ``history``,
``follow``, ``stop``, ``resume``, ``launch``; errors are ``RunsError`` (one sentence).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from sftwizard.core.config import RunConfig, apply_overrides, load_preset, save_preset
from sftwizard.core.events import EVENTS_FILE, EventTail, EventWriter, parse_lines, read_events
from sftwizard.core.paths import data_dir, default_runs_root
from sftwizard.core.runner import CHECKPOINTS_DIR, CONFIG_FILE, STOP_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: liveness falls back to the pid
    fcntl = None  # type: ignore[assignment]

LOG_FILE = "train.log"
META_FILE = "meta.json"
PID_FILE = "pid"
LOCK_FILE = "run.lock"
STATUSES = ("running", "finished", "stopped", "failed", "lost")
SEGMENT_STARTS = ("start", "resume")
PLACEHOLDER_STEPS = ("start", "prepared")  # written before the trainer knows its step


class RunsError(Exception):
    """A run cannot be found or acted on. One sentence."""


# --------------------------------------------------------------------------- registry

def registry_path() -> Path:
    return data_dir() / "registry.jsonl"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "run"


def new_run_id(name: str | None) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + _slug(name or "run")


def create_run(cfg: RunConfig, preset_path: str | None = None) -> Path:
    """Make a fresh run directory holding the resolved config, and register it. Run ids are
    unique across the registry (runs in different output roots share one list)."""
    root = Path(cfg.run.output_root).expanduser() if cfg.run.output_root else default_runs_root()
    name = cfg.run.name or (Path(preset_path).stem if preset_path else "run")
    base = new_run_id(name)
    with _registry_lock():
        taken = {d.name for d in registered_dirs()}
        run_id, n = base, 1
        while run_id in taken or (root / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        run_dir = root / run_id
        run_dir.mkdir(parents=True)
        register(run_dir)
    save_preset(cfg, run_dir / CONFIG_FILE)
    meta = {"id": run_dir.name, "name": name, "preset": str(preset_path) if preset_path else None,
            "created": time.time()}
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return run_dir


@contextmanager
def _registry_lock():
    path = registry_path().with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def register(run_dir: Path) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": run_dir.name, "dir": str(run_dir.resolve())}) + "\n")


def registered_dirs() -> list[Path]:
    """Every registered run directory that still exists, oldest first, each once."""
    try:
        text = registry_path().read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries, _ = parse_lines(text)
    seen: dict[str, Path] = {}
    for entry in entries:
        d = entry.get("dir")
        if isinstance(d, str) and d not in seen and Path(d).is_dir():
            seen[d] = Path(d)
    return list(seen.values())


# --------------------------------------------------------------------------- status

@dataclass
class RunInfo:
    """What ``runs`` shows for one run (``to_dict`` is the ``runs --json`` schema)."""

    id: str
    name: str
    status: str  # running | finished | stopped | failed | lost
    step: int | None
    max_steps: int | None
    last_loss: float | None
    eval_loss: float | None
    started: float | None  # unix seconds of the first start
    ended: float | None  # unix seconds of the last end (None while running or lost)
    duration_s: float  # time spent in training processes, over all resumes
    pid: int | None
    dir: str
    reason: str | None  # failed/stopped/lost: oom, nan, data, config, missing_dependency, killed, crash, stopped, lost
    message: str | None  # one line
    model: str | None = None
    method: str | None = None
    preset: str | None = None
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None  # finished with training.load_best_model_at_end: the one final/ holds
    resumes: int = 0
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    skipped_events: int = 0  # complete lines of events.jsonl that were not events (torn, or another shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _spawned_after(run_dir: Path, when: float) -> bool:
    try:
        return (run_dir / PID_FILE).stat().st_mtime > when
    except OSError:
        return False


def is_alive(run_dir: Path) -> bool:
    """True while the run's supervisor or training process is alive (they hold ``run.lock``)."""
    lock = run_dir / LOCK_FILE
    if fcntl is None or not lock.exists():
        return _pid_alive(_read_pid(run_dir))
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock
    return False


def _segments(events: list[dict]) -> list[list[dict]]:
    """Events grouped per training process (a ``start`` or ``resume`` opens a segment)."""
    segments: list[list[dict]] = []
    for ev in events:
        if ev.get("event") in SEGMENT_STARTS or not segments:
            segments.append([])
        segments[-1].append(ev)
    return segments


def _last(events: list[dict], kind: str, field: str | None = None) -> dict | None:
    for ev in reversed(events):
        if ev.get("event") == kind and (field is None or ev.get(field) is not None):
            return ev
    return None


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def summarize(run_dir: Path, events: list[dict], alive: bool) -> RunInfo:
    """A run's status and numbers from its events and whether its process lives."""
    meta: dict[str, Any] = {}
    try:
        meta = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    segments = _segments(events)
    current = segments[-1] if segments else []
    end = _last(current, "end")
    if alive and end is not None and not _spawned_after(run_dir, end["time"]):
        alive = False  # it recorded its end and is exiting
    step = next((ev["step"] for ev in reversed(events)
                 if isinstance(ev.get("step"), int) and ev.get("event") not in PLACEHOLDER_STEPS), None)
    maxes = [ev.get("max_steps") for ev in events if isinstance(ev.get("max_steps"), int) and ev["max_steps"] > 0]
    log = _last(events, "log", "loss")
    ev_eval = _last(events, "eval", "eval_loss")
    checkpoint = _last(events, "checkpoint")
    now = time.time()

    duration = 0.0
    for i, seg in enumerate(segments):
        seg_end = _last(seg, "end")
        stop = seg_end["time"] if seg_end else (now if alive and i == len(segments) - 1 else seg[-1]["time"])
        duration += max(0.0, stop - seg[0]["time"])

    reason = message = None
    if alive:
        status = "running"
    elif end is not None:
        status = end.get("status") if end.get("status") in STATUSES else "failed"
        reason, message = end.get("reason"), end.get("message")
    else:
        status, reason = "lost", "lost"
        where = f"at step {step}" if step is not None else "before its first step"
        message = (f"the training process vanished {where} without recording an end "
                   "(machine restart, or the whole process group killed)")
    live = _last(current, "log") if status == "running" else None
    return RunInfo(
        id=run_dir.name,
        name=meta.get("name") or run_dir.name,
        status=status,
        step=step,
        max_steps=maxes[-1] if maxes else None,
        last_loss=_number(log.get("loss")) if log else None,
        eval_loss=_number(ev_eval.get("eval_loss")) if ev_eval else None,
        started=events[0]["time"] if events else meta.get("created"),
        ended=end["time"] if end is not None and not alive else None,
        duration_s=round(duration, 1),
        pid=_read_pid(run_dir),
        dir=str(run_dir),
        reason=reason,
        message=message,
        model=(segments[0][0].get("model") if segments else None),
        method=(segments[0][0].get("method") if segments else None),
        preset=meta.get("preset"),
        last_checkpoint=checkpoint.get("path") if checkpoint else None,
        best_checkpoint=end.get("best_checkpoint") if end is not None and status == "finished" else None,
        resumes=sum(1 for ev in events if ev.get("event") == "resume"),
        tokens_per_s=live.get("tokens_per_s") if live else None,
        samples_per_s=live.get("samples_per_s") if live else None,
        eta_s=live.get("eta_s") if live else None,
        skipped_events=getattr(events, "skipped", 0),
    )


def run_info(ref: str | os.PathLike) -> RunInfo:
    run_dir = find_run(ref)
    alive = is_alive(run_dir)  # before reading: an end written meanwhile is then seen
    return summarize(run_dir, read_events(run_dir / EVENTS_FILE), alive)


_ENDED: dict[Path, tuple[tuple[int, int, int], RunInfo]] = {}  # run dir -> (events/pid stat, summary)


def _stat_key(run_dir: Path) -> tuple[int, int, int]:
    try:
        st = (run_dir / EVENTS_FILE).stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = -1, 0
    try:
        pid_mtime = (run_dir / PID_FILE).stat().st_mtime_ns
    except OSError:
        pid_mtime = 0
    return size, mtime, pid_mtime


def list_runs() -> list[RunInfo]:
    """Every registered run, newest first. Runs that ended are summarised once and cached until
    their files change, so a viewer can call this on a timer."""
    infos = []
    for run_dir in registered_dirs():
        alive = is_alive(run_dir)
        key = _stat_key(run_dir)
        cached = _ENDED.get(run_dir)
        if not alive and cached is not None and cached[0] == key:
            infos.append(replace(cached[1]))  # a copy: callers may change theirs
            continue
        info = summarize(run_dir, read_events(run_dir / EVENTS_FILE), alive)
        if info.status != "running":
            _ENDED[run_dir] = (key, replace(info))
        infos.append(info)
    infos.sort(key=lambda r: r.started or 0, reverse=True)
    return infos


def find_run(ref: str | os.PathLike) -> Path:
    """A run directory from a directory path, a run id, a unique id prefix, or ``last``."""
    text = str(ref).strip()
    if not text:
        raise RunsError("no run given")
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).exists():
        return path.resolve()
    dirs = registered_dirs()
    if text in ("last", "latest"):
        if not dirs:
            raise RunsError("there are no runs yet")
        return max(dirs, key=lambda d: (d / CONFIG_FILE).stat().st_mtime)
    exact = [d for d in dirs if d.name == text]
    if exact:
        return exact[-1]
    matches = [d for d in dirs if d.name.startswith(text)] or [d for d in dirs if text in d.name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(d.name for d in matches[:5])
        raise RunsError(f"{text!r} matches {len(matches)} runs ({names}); give more of the id")
    raise RunsError(f"no run {text!r} (see `sft-wizard runs`)")


def history(ref: str | os.PathLike) -> list[dict[str, Any]]:
    """Every event of the run so far, oldest first (a torn last line is left out)."""
    return read_events(find_run(ref) / EVENTS_FILE)


def follow(ref: str | os.PathLike, interval: float = 0.5,
           stop: Callable[[], bool] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Batches of events: the whole history first, then new ones as they are written, until the
    run's process is gone and the file is drained (or ``stop()`` says so)."""
    run_dir = find_run(ref)
    tail = EventTail(run_dir / EVENTS_FILE)
    while True:
        alive = is_alive(run_dir)
        batch = tail.poll()
        if batch:
            yield batch
        if not alive or (stop is not None and stop()):
            return
        time.sleep(interval)


# --------------------------------------------------------------------------- start

@dataclass
class Launched:
    run_dir: Path
    process: subprocess.Popen  # the run's supervisor (leader of its process group)
    resume_from: Path | None = None

    @property
    def id(self) -> str:
        return self.run_dir.name


def _take_lock(run_dir: Path, run_id: str) -> int:
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    for _ in range(20):  # a reader's probe holds it for microseconds
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.05)
    os.close(fd)
    raise RunsError(f"run {run_id} is already running (pid {_read_pid(run_dir)})")


def spawn(run_dir: Path, resume_from: str | None = None) -> subprocess.Popen:
    """Start the run detached from this terminal: its own session, no stdin, output appended to
    the run's log. It outlives the caller, the TUI and the SSH session."""
    lock_fd = _take_lock(run_dir, run_dir.name)
    cmd = [sys.executable, "-m", "sftwizard.core.supervisor", str(run_dir), "--lock-fd", str(lock_fd)]
    if resume_from:
        cmd += ["--resume", resume_from]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with open(run_dir / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(run_dir), env=env, close_fds=True, pass_fds=(lock_fd,),
            )
    finally:
        os.close(lock_fd)  # the children hold the lock now
    (run_dir / PID_FILE).write_text(str(proc.pid), encoding="utf-8")
    return proc


def launch(cfg: RunConfig, preset_path: str | None = None) -> Launched:
    run_dir = create_run(cfg, preset_path)
    return Launched(run_dir, spawn(run_dir))


# --------------------------------------------------------------------------- stop

def stop(ref: str | os.PathLike, kill: bool = False, wait: float = 0.0) -> RunInfo:
    """Graceful: the run finishes its step, saves a checkpoint and records ``stopped``.
    ``kill``: SIGKILL the run's processes now and record ``stopped`` (reason ``killed``).
    ``wait``: seconds to wait for the run to end (graceful stop); the RunInfo is returned."""
    run_dir = find_run(ref)
    if not is_alive(run_dir):
        info = run_info(run_dir)
        raise RunsError(f"run {run_dir.name} is not running ({info.status})")
    if not kill:
        (run_dir / STOP_FILE).touch()
        deadline = time.time() + wait
        while time.time() < deadline and is_alive(run_dir):
            time.sleep(0.2)
        return run_info(run_dir)
    pid = _read_pid(run_dir)
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)  # the supervisor leads the run's process group
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + 10
    while is_alive(run_dir) and time.time() < deadline:
        time.sleep(0.05)
    if is_alive(run_dir):
        raise RunsError(f"run {run_dir.name} is still alive 10 s after SIGKILL (process group {pid})")
    events = read_events(run_dir / EVENTS_FILE)
    current = _segments(events)[-1] if events else []
    if _last(current, "end") is None:
        info = summarize(run_dir, events, alive=False)
        ckpt = f"; resume continues from {Path(info.last_checkpoint).name}" if info.last_checkpoint else ""
        with_writer(run_dir, lambda w: w.emit(
            "end", step=info.step, status="stopped", reason="killed",
            message=f"killed at once by `sft-wizard stop --kill`{ckpt}"))
    return run_info(run_dir)


def with_writer(run_dir: Path, fn: Callable[[EventWriter], Any]) -> Any:
    writer = EventWriter(run_dir / EVENTS_FILE)
    try:
        return fn(writer)
    finally:
        writer.close()


# --------------------------------------------------------------------------- resume

def _complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoints whose trainer state was written (the trainer writes it last), by step."""
    found = []
    for path in (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        found.append((step, path))
    return sorted(found)


def resume_point(run_dir: Path, events: list[dict]) -> tuple[Path | None, dict | None]:
    """The newest complete checkpoint, and the fingerprint of the process that wrote it."""
    complete = _complete_checkpoints(run_dir)
    if not complete:
        return None, None
    fingerprint_of: dict[str, dict | None] = {}
    current = None
    for ev in events:
        if ev.get("event") in SEGMENT_STARTS:
            current = ev.get("fingerprint")
        elif ev.get("event") == "checkpoint" and ev.get("path"):
            fingerprint_of[Path(ev["path"]).name] = current
    step, path = complete[-1]
    return path, fingerprint_of.get(path.name, current)


def resume(ref: str | os.PathLike, overrides: list[str] | None = None) -> Launched:
    """Continue a stopped, failed or lost run from its newest complete checkpoint, appending to
    the same ``events.jsonl``. Refuses (RunsError) when the model, data, template or method
    changed since that checkpoint. ``overrides`` (``training.max_steps=500``…) change the run's
    config first; they too must keep those four parts."""
    from sftwizard.core.fingerprint import changed_parts, fingerprint
    from sftwizard.core.models import ModelError, resolve_model

    run_dir = find_run(ref)
    info = run_info(run_dir)
    if info.status == "running":
        raise RunsError(f"run {info.id} is still running (pid {info.pid}); stop it first")
    if info.status == "finished":
        raise RunsError(f"run {info.id} already finished; start a new run to train further")
    cfg = load_preset(run_dir / CONFIG_FILE)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    checkpoint, recorded = resume_point(run_dir, read_events(run_dir / EVENTS_FILE))
    if checkpoint is None:
        where = f"at step {info.step}" if info.step is not None else "before its first step"
        raise RunsError(f"run {info.id} has no complete checkpoint to resume from (it ended {where}, "
                        "before its first save); start it again with `sft-wizard run`")
    try:
        resolve_model(cfg.model.id, cfg.model.revision, allow_download=False)
    except ModelError as exc:
        raise RunsError(f"cannot resume {info.id}: {exc}") from None
    if recorded:
        changed = changed_parts(recorded, fingerprint(cfg))
        if changed:
            raise RunsError(f"cannot resume {info.id} from {checkpoint.name}: the " + "; the ".join(changed)
                            + " changed since that checkpoint; start a new run instead")
    if overrides:
        save_preset(cfg, run_dir / CONFIG_FILE)
    step = int(checkpoint.name.rsplit("-", 1)[1])
    for later_step, later in _later_checkpoint_dirs(run_dir, step):
        shutil.rmtree(later, ignore_errors=True)  # half-written by the process that died
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    return Launched(run_dir, spawn(run_dir, resume_from=str(checkpoint)), checkpoint)


def _later_checkpoint_dirs(run_dir: Path, step: int) -> list[tuple[int, Path]]:
    later = []
    for path in (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*"):
        try:
            n = int(path.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if n > step and path.is_dir():
            later.append((n, path))
    return later


def discard_checkpoints_after(run_dir: Path, step: int) -> None:
    """Remove checkpoint folders past ``step`` (half-written by a process that died)."""
    for _, later in _later_checkpoint_dirs(run_dir, step):
        shutil.rmtree(later, ignore_errors=True)
