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
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .checkpoints import checkpoint_problem
from .config import RunConfig, apply_overrides, load_preset, save_preset
from .diskspace import LAUNCH_MIN_BYTES, disk_full_message, free_bytes, is_disk_full
from .errors import UserError
from .events import EVENTS_FILE, EventTail, EventWriter, parse_events, parse_lines, read_events
from .paths import data_dir, default_runs_root
from .runner import CHECKPOINTS_DIR, CONFIG_FILE, STOP_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: liveness falls back to the pid
    fcntl = None  # type: ignore[assignment]

LOG_FILE = "train.log"
META_FILE = "meta.json"
PID_FILE = "pid"
PROCESS_FILE = "process.json"  # the supervisor's pid, start time and command line, to prove it is ours
LOCK_FILE = "run.lock"
STATUSES = ("running", "finished", "stopped", "failed", "lost")
SEGMENT_STARTS = ("start", "resume")
PLACEHOLDER_STEPS = ("start", "prepared")  # written before the trainer knows its step


class RunsError(UserError):
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
        try:  # a run is registered only once its directory is complete (a full disk leaves nothing behind)
            run_dir.mkdir(parents=True)
            save_preset(cfg, run_dir / CONFIG_FILE)
            meta = {"id": run_dir.name, "name": name, "preset": str(preset_path) if preset_path else None,
                    "created": time.time()}
            (run_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        except OSError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            if is_disk_full(exc):
                raise RunsError(disk_full_message(root)) from None
            raise RunsError(f"run.output_root: cannot create a run directory in {root}: "
                            f"{exc.strerror or exc}") from None
        register(run_dir)
    return run_dir


def launch_space_problem(cfg: RunConfig) -> str | None:
    """One sentence when the disk under run.output_root cannot hold the run's files and its first
    checkpoint (estimated from the model folder's weights when it is on disk), else None."""
    root = Path(cfg.run.output_root).expanduser() if cfg.run.output_root else default_runs_root()
    free = free_bytes(root)
    if free is None:
        return None
    need = LAUNCH_MIN_BYTES
    what = "the run's files"
    try:
        from .models import resolve_model

        folder = resolve_model(cfg.model.id, cfg.model.revision, allow_download=False).path
        weights = sum(p.stat().st_size for p in Path(folder).glob("*") if p.suffix in (".safetensors", ".bin"))
        if weights:
            need += weights * 3 if cfg.method.type == "full" else weights // 20  # weights + AdamW states / adapters
            what = "the run's files and its first checkpoint"
    except Exception:  # noqa: BLE001 - a model not on disk yet: the floor alone
        pass
    if free >= need:
        return None
    return f"run.output_root: {disk_full_message(root, need, what)}"


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
    reason: str | None  # failed/stopped/lost: oom, nan, data, config, missing_dependency, killed, disk_full, crash, stopped, lost
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
    phase: dict | None = None  # running, not yet (or no longer) training: {name, done, total, unit, eta_s}

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


def _process_identity(pid: int) -> dict[str, Any] | None:
    """What identifies a live process beyond its (reusable) pid: its start time in clock ticks
    since boot and its command line (Linux /proc; None elsewhere or when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = int(stat.rsplit(")", 1)[1].split()[19])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except (OSError, IndexError, ValueError):
        return None
    return {"pid": pid, "start_ticks": start, "cmdline": [a for a in cmdline if a]}


def _record_process(run_dir: Path, pid: int) -> None:
    identity = _process_identity(pid)
    # Popen returns once exec has begun; the kernel sets the new command line a moment later, and
    # /proc/PID/cmdline reads empty until then. Recording that would make the run look foreign.
    deadline = time.monotonic() + 2.0
    while identity is not None and not identity["cmdline"] and time.monotonic() < deadline:
        time.sleep(0.005)
        identity = _process_identity(pid)
    if identity is not None:
        (run_dir / PROCESS_FILE).write_text(json.dumps(identity), encoding="utf-8")


def _proven_ours(run_dir: Path, pid: int | None) -> bool:
    """True when ``pid`` is this run's supervisor as recorded at spawn (same start time and
    command line): a pid alone may have been reused by any process since."""
    if not pid:
        return False
    try:
        recorded = json.loads((run_dir / PROCESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    now = _process_identity(pid)
    return (isinstance(recorded, dict) and now is not None and recorded.get("pid") == pid
            and recorded.get("start_ticks") == now["start_ticks"] and recorded.get("cmdline") == now["cmdline"])


def _lock_held(run_dir: Path) -> bool | None:
    """Whether someone holds the run's lock; None when there is no lock file to ask."""
    lock = run_dir / LOCK_FILE
    if fcntl is None or not lock.exists():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock
    return False


def _spawned_after(run_dir: Path, when: float) -> bool:
    try:
        return (run_dir / PID_FILE).stat().st_mtime > when
    except OSError:
        return False


def is_alive(run_dir: Path) -> bool:
    """True while the run's supervisor or training process is alive (they hold ``run.lock``).
    Without a lock file (deleted, or no flock here) only a process proven to be the run's
    supervisor counts: a bare pid may belong to anything by now."""
    held = _lock_held(run_dir)
    if held is not None:
        return held
    pid = _read_pid(run_dir)
    return _pid_alive(pid) and _proven_ours(run_dir, pid)


def _segments(events: list[dict]) -> list[list[dict]]:
    """Events grouped per training process (a ``start`` or ``resume`` opens a segment)."""
    segments: list[list[dict]] = []
    for ev in events:
        if ev.get("event") in SEGMENT_STARTS or not segments:
            segments.append([])
        segments[-1].append(ev)
    return segments


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def _time(ev: dict) -> float | None:
    t = ev.get("time")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


class RunSummary:
    """A run's numbers, kept up to date one event at a time: ``feed(events)`` as they are read,
    ``info(run_dir, alive)`` whenever asked. Holds a few events, never the history, so a run of a
    million lines is summarised in one pass in constant memory, and a viewer on a timer only reads
    what was appended since (see ``_summary_of``)."""

    def __init__(self) -> None:
        self.first: dict | None = None  # the first event (start time, model, method)
        self.step: int | None = None
        self.max_steps: int | None = None
        self.log: dict | None = None  # the last log with a loss
        self.eval: dict | None = None  # the last eval with an eval loss
        self.checkpoint: dict | None = None
        self.resumes = 0
        self.closed_duration = 0.0  # segments before the current one
        self.seg_first: float | None = None  # the current segment: first event time, last, last end
        self.seg_last: float | None = None
        self.seg_end: dict | None = None
        self.seg_log: dict | None = None  # the current segment's last log (live rates)
        self.segments = 0
        self.skipped = 0  # complete lines that were not events (core/events.py)
        self.phase: dict | None = None  # the current segment's phase not yet ended (core/phases.py)

    def feed(self, events: list[dict]) -> "RunSummary":
        self.skipped += getattr(events, "skipped", 0)
        for ev in events:
            kind, t = ev.get("event"), _time(ev)
            if kind in SEGMENT_STARTS or self.segments == 0:
                if self.segments:
                    self.closed_duration += self._segment_duration(alive=False, now=0.0)
                self.segments += 1
                self.seg_first, self.seg_end, self.seg_log = t, None, None
                self.phase = None
            if self.first is None:
                self.first = ev
            if self.seg_first is None:
                self.seg_first = t
            if t is not None:
                self.seg_last = t
            step = ev.get("step")
            if isinstance(step, int) and not isinstance(step, bool) and kind not in PLACEHOLDER_STEPS:
                self.step = step
            m = ev.get("max_steps")
            if isinstance(m, int) and not isinstance(m, bool) and m > 0:
                self.max_steps = m
            if kind == "resume":
                self.resumes += 1
            elif kind == "end":
                self.seg_end = ev
                self.phase = None
            elif kind == "phase":
                self.phase = ev if ev.get("state") != "end" else None
            elif kind == "log":
                self.seg_log = ev
                if ev.get("loss") is not None:
                    self.log = ev
            elif kind == "eval" and ev.get("eval_loss") is not None:
                self.eval = ev
            elif kind == "checkpoint":
                self.checkpoint = ev
        return self

    def _segment_duration(self, alive: bool, now: float) -> float:
        if self.seg_first is None:
            return 0.0
        end_time = _time(self.seg_end) if self.seg_end is not None else None
        stop = end_time if end_time is not None else (now if alive else (self.seg_last or self.seg_first))
        return max(0.0, stop - self.seg_first)

    def info(self, run_dir: Path, alive: bool) -> RunInfo:
        meta: dict[str, Any] = {}
        try:
            meta = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        if not isinstance(meta, dict):
            meta = {}
        end = self.seg_end
        end_time = _time(end) if end is not None else None
        if alive and end is not None and (end_time is None or not _spawned_after(run_dir, end_time)):
            alive = False  # it recorded its end and is exiting
        duration = self.closed_duration + self._segment_duration(alive, time.time())
        step = self.step
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
        live = self.seg_log if status == "running" else None
        first = self.first or {}
        return RunInfo(
            id=run_dir.name,
            name=meta.get("name") or run_dir.name,
            status=status,
            step=step,
            max_steps=self.max_steps,
            last_loss=_number(self.log.get("loss")) if self.log else None,
            eval_loss=_number(self.eval.get("eval_loss")) if self.eval else None,
            started=_time(first) if self.first is not None else meta.get("created"),
            ended=end_time if end is not None and not alive else None,
            duration_s=round(duration, 1),
            pid=_read_pid(run_dir),
            dir=str(run_dir),
            reason=reason,
            message=message,
            model=first.get("model"),
            method=first.get("method"),
            preset=meta.get("preset"),
            last_checkpoint=self.checkpoint.get("path") if self.checkpoint else None,
            best_checkpoint=end.get("best_checkpoint") if end is not None and status == "finished" else None,
            resumes=self.resumes,
            tokens_per_s=live.get("tokens_per_s") if live else None,
            samples_per_s=live.get("samples_per_s") if live else None,
            eta_s=live.get("eta_s") if live else None,
            phase=_phase_of(self.phase) if status == "running" else None,
            skipped_events=self.skipped,
        )


def summarize(run_dir: Path, events: list[dict], alive: bool) -> RunInfo:
    """A run's status and numbers from its events and whether its process lives."""
    return RunSummary().feed(events).info(run_dir, alive)


READ_CHUNK = 1 << 20  # bytes of events.jsonl parsed at a time


@dataclass
class _Followed:
    inode: int
    offset: int  # bytes consumed (complete lines only)
    summary: RunSummary


_SUMMARIES: dict[Path, _Followed] = {}  # run dir -> its summary so far and where it was read to
_SUMMARIES_LOCK = threading.Lock()  # the TUI reads runs from worker threads


def _summary_of(run_dir: Path) -> RunSummary:
    """The run's summary, reading only what was appended to ``events.jsonl`` since the last call
    (the whole file, in chunks, the first time or when it was replaced or shortened)."""
    with _SUMMARIES_LOCK:
        return _read_summary(run_dir)


def _read_summary(run_dir: Path) -> RunSummary:
    path = run_dir / EVENTS_FILE
    try:
        st = path.stat()
    except OSError:
        _SUMMARIES.pop(run_dir, None)
        return RunSummary()
    followed = _SUMMARIES.get(run_dir)
    if followed is None or followed.inode != st.st_ino or st.st_size < followed.offset:
        followed = _Followed(st.st_ino, 0, RunSummary())
    try:
        with open(path, "rb") as fh:
            fh.seek(followed.offset)
            rest = b""
            while True:
                chunk = fh.read(READ_CHUNK)
                if not chunk:
                    break
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    events, _ = parse_events(data[:cut].decode("utf-8", errors="replace"))
                    followed.summary.feed(events)
                    followed.offset += cut
    except OSError:
        pass
    _SUMMARIES[run_dir] = followed
    return followed.summary


def _phase_of(ev: dict | None) -> dict | None:
    """The phase a running process is in (its latest unended ``phase`` event), unless it is
    training (its step says that)."""
    if ev is None or ev.get("phase") == "train":
        return None
    return {"name": ev.get("phase"), "done": ev.get("done"), "total": ev.get("total"), "unit": ev.get("unit"),
            "eta_s": ev.get("eta_s")}


def run_info(ref: str | os.PathLike) -> RunInfo:
    run_dir = find_run(ref)
    alive = is_alive(run_dir)  # before reading: an end written meanwhile is then seen
    return _summary_of(run_dir).info(run_dir, alive)


def list_runs() -> list[RunInfo]:
    """Every registered run, newest first. Each run's history is read once; later calls read only
    what was appended, so a viewer can call this on a timer, whatever the runs' length."""
    infos = []
    for run_dir in registered_dirs():
        alive = is_alive(run_dir)
        infos.append(_summary_of(run_dir).info(run_dir, alive))
    infos.sort(key=lambda r: r.started or 0, reverse=True)
    return infos


def find_run(ref: str | os.PathLike) -> Path:
    """A run directory from a directory path, a run id, a unique id prefix, or ``last``."""
    text = str(ref).strip()
    if not text:
        raise RunsError("no run given")
    path = Path(text).expanduser()
    if path.is_dir() and any((path / f).exists() for f in (CONFIG_FILE, META_FILE, EVENTS_FILE)):
        return path.resolve()
    dirs = registered_dirs()
    if path.is_dir() and path.resolve() in dirs:  # registered, even if never completed
        return path.resolve()
    if text in ("last", "latest"):
        if not dirs:
            raise RunsError("there are no runs yet")
        complete = [d for d in dirs if (d / CONFIG_FILE).exists()] or dirs  # the newest usable run
        return max(complete, key=_created)
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


def _created(run_dir: Path) -> float:
    for path in (run_dir / CONFIG_FILE, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


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
    notes: list[str] = field(default_factory=list)  # what resume had to decide (an unreadable checkpoint passed over)

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
    _record_process(run_dir, proc.pid)
    return proc


def launch(cfg: RunConfig, preset_path: str | None = None) -> Launched:
    problem = launch_space_problem(cfg)
    if problem:
        raise RunsError(problem)
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
    if not (_lock_held(run_dir) or _proven_ours(run_dir, pid)):
        raise RunsError(f"run {run_dir.name}: pid {pid} cannot be proven to be this run's process (no held "
                        f"{LOCK_FILE}, and its start time or command line differ from {PROCESS_FILE}); "
                        "nothing was signalled")
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
    if _summary_of(run_dir).seg_end is None:
        info = _summary_of(run_dir).info(run_dir, alive=False)
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


def resume_point(run_dir: Path, events: list[dict], before: int | None = None) -> tuple[Path | None, dict | None]:
    """The newest complete checkpoint (before step ``before`` if given), and the fingerprint of
    the process that wrote it."""
    complete = [(s, p) for s, p in _complete_checkpoints(run_dir) if before is None or s < before]
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
    from .fingerprint import changed_parts, fingerprint
    from .models import ModelError, resolve_model

    run_dir = find_run(ref)
    info = run_info(run_dir)
    if info.status == "running":
        raise RunsError(f"run {info.id} is still running (pid {info.pid}); stop it first")
    if info.status == "finished":
        raise RunsError(f"run {info.id} already finished; start a new run to train further")
    if not (run_dir / CONFIG_FILE).exists():
        raise RunsError(f"run {info.id} was never completed (no {CONFIG_FILE} in {run_dir}): nothing to resume; "
                        "start a new run with `sft-wizard run`")
    cfg = load_preset(run_dir / CONFIG_FILE)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    events = read_events(run_dir / EVENTS_FILE)
    checkpoint, recorded = resume_point(run_dir, events)
    passed_over: list[tuple[Path, str]] = []  # unreadable checkpoints, newest first, with why
    while checkpoint is not None and (why := checkpoint_problem(checkpoint)):
        passed_over.append((checkpoint, why))
        checkpoint, recorded = resume_point(run_dir, events, before=_step_of(checkpoint))
    if checkpoint is None:
        if passed_over:
            bad = "; ".join(f"{p.name}: {why}" for p, why in passed_over)
            raise RunsError(f"run {info.id} has no readable checkpoint to resume from ({bad}); "
                            "start it again with `sft-wizard run`")
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
    step = _step_of(checkpoint)
    for later_step, later in _later_checkpoint_dirs(run_dir, step):
        shutil.rmtree(later, ignore_errors=True)  # half-written or unreadable: training writes them again
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    notes = [f"{p.name} is unreadable ({why}), so the run resumes from {checkpoint.name} instead "
             f"and trains steps {step + 1}–{_step_of(p)} again; {p.name} was removed" for p, why in passed_over]
    if notes:
        with_writer(run_dir, lambda w: [w.emit("warning", step=step, source="resume", code="checkpoint_unreadable",
                                               message=note, checkpoint=str(p))
                                        for note, (p, _) in zip(notes, passed_over)])
    return Launched(run_dir, spawn(run_dir, resume_from=str(checkpoint)), checkpoint, notes)


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


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
