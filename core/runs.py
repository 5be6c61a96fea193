"""Runs: directories, the registry, status, and starting, stopping and resuming training.

A run directory (``core/rundir.py`` names its files) holds ``config.yaml`` (the resolved
config), ``meta.json``, ``events.jsonl``, ``train.log`` (the full stdout/stderr of the training
process), ``pid``, ``process.json``, ``run.lock``, ``checkpoints/`` and ``final/``. The registry (``registry.jsonl`` in the data dir) lists every
run's id and directory.

A run is two processes in their own session: a small supervisor (``python -m
sftwizard.core.supervisor``, see there) and the training process it starts (``python -m
sftwizard.core.runner``). Both hold an ``flock`` on ``run.lock``: the run is alive exactly while
the lock is held, whatever happened to pids. When the training process dies without writing
``end`` (a signal, a native crash), the supervisor writes it, with the exit code or signal. When
both vanish (reboot, ``kill -9`` of the group), the run shows as ``lost`` at its last step.

A run's status and numbers are the fold of its events (``core/run_model.py``) plus whether its
processes live; following one live is ``core/follower.py``.

Plain functions for the CLI and the TUI: ``list_runs``, ``run_info``, ``find_run``, ``history``,
``stop``, ``resume``, ``launch``; errors are ``RunsError`` (one sentence).
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
from typing import Any, Callable

from .checkpoints import checkpoint_problem
from .config import RunConfig, apply_overrides, load_preset, save_preset
from .diskspace import LAUNCH_MIN_BYTES, disk_full_message, free_bytes, is_disk_full
from .errors import UserError
from .events import EventWriter, parse_events, parse_lines, read_events
from .paths import data_dir, default_runs_root
from .run_model import SEGMENT_STARTS, Kind, Reason, RunState, Status, event_time
from .rundir import CONFIG_FILE, LOCK_FILE, PROCESS_FILE, RunDir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: liveness falls back to the pid
    fcntl = None  # type: ignore[assignment]


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
            save_preset(cfg, RunDir(run_dir).config)
            meta = {"id": run_dir.name, "name": name, "preset": str(preset_path) if preset_path else None,
                    "created": time.time()}
            RunDir(run_dir).meta.write_text(json.dumps(meta, indent=2), encoding="utf-8")
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


PID_MAX = 1 << 22  # the largest pid Linux hands out (/proc/sys/kernel/pid_max can be at most this)


def _read_pid(run_dir: Path) -> int | None:
    """The supervisor's pid from the run's pid file; None when it holds no process id (a pid of
    0 or below would signal a whole process group, one out of range makes os.kill raise)."""
    try:
        pid = int(RunDir(run_dir).pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if 0 < pid <= PID_MAX else None


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
        RunDir(run_dir).process_file.write_text(json.dumps(identity), encoding="utf-8")


def _proven_ours(run_dir: Path, pid: int | None) -> bool:
    """True when ``pid`` is this run's supervisor as recorded at spawn (same start time and
    command line): a pid alone may have been reused by any process since."""
    if not pid:
        return False
    try:
        recorded = json.loads(RunDir(run_dir).process_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    now = _process_identity(pid)
    return (isinstance(recorded, dict) and now is not None and recorded.get("pid") == pid
            and recorded.get("start_ticks") == now["start_ticks"] and recorded.get("cmdline") == now["cmdline"])


def _lock_held(run_dir: Path) -> bool | None:
    """Whether someone holds the run's lock; None when there is no lock file to ask."""
    lock = RunDir(run_dir).lock
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
        return RunDir(run_dir).pid_file.stat().st_mtime > when
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


def _meta(run_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads(RunDir(run_dir).meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def info_of(run_dir: Path, state: RunState, alive: bool) -> RunInfo:
    """What ``runs`` shows for a run: the fold of its events, its meta.json, and whether its
    processes live."""
    meta = _meta(run_dir)
    end = state.seg_end
    end_time = event_time(end)
    if alive and end is not None and (end_time is None or not _spawned_after(run_dir, end_time)):
        alive = False  # it recorded its end and is exiting
    status = state.status(alive)
    live = state.seg_log if status == Status.RUNNING else None
    first = state.first or {}
    return RunInfo(
        id=run_dir.name,
        name=meta.get("name") or run_dir.name,
        status=status,
        step=state.step,
        max_steps=state.max_steps,
        last_loss=state.last_loss,
        eval_loss=_number(state.eval.get("eval_loss")) if state.eval else None,
        started=event_time(state.first) if state.first is not None else meta.get("created"),
        ended=end_time if end is not None and not alive else None,
        duration_s=round(state.duration(alive, time.time()), 1),
        pid=_read_pid(run_dir),
        dir=str(run_dir),
        reason=state.reason(alive),
        message=state.message(alive),
        model=first.get("model"),
        method=first.get("method"),
        preset=meta.get("preset"),
        last_checkpoint=state.checkpoint.get("path") if state.checkpoint else None,
        best_checkpoint=end.get("best_checkpoint") if end is not None and status == Status.FINISHED else None,
        resumes=state.resumes,
        tokens_per_s=live.get("tokens_per_s") if live else None,
        samples_per_s=live.get("samples_per_s") if live else None,
        eta_s=live.get("eta_s") if live else None,
        phase=state.current_phase() if status == Status.RUNNING else None,
        skipped_events=state.skipped,
    )


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) else None


def summarize(run_dir: Path, events: list[dict], alive: bool) -> RunInfo:
    """A run's status and numbers from its events and whether its process lives."""
    return info_of(run_dir, RunState().feed(events), alive)


READ_CHUNK = 1 << 20  # bytes of events.jsonl parsed at a time


@dataclass
class _Followed:
    inode: int
    offset: int  # bytes consumed (complete lines only)
    state: RunState


_STATES: dict[Path, _Followed] = {}  # run dir -> its state so far and where it was read to
_STATES_LOCK = threading.Lock()  # the TUI reads runs from worker threads


def state_of(run_dir: Path) -> RunState:
    """The run's state (the fold of its events), reading only what was appended to
    ``events.jsonl`` since the last call (the whole file, in chunks, the first time or when it
    was replaced or shortened)."""
    with _STATES_LOCK:
        return _read_state(run_dir)


def _read_state(run_dir: Path) -> RunState:
    path = RunDir(run_dir).events
    try:
        st = path.stat()
    except OSError:
        _STATES.pop(run_dir, None)
        return RunState()
    followed = _STATES.get(run_dir)
    if followed is None or followed.inode != st.st_ino or st.st_size < followed.offset:
        followed = _Followed(st.st_ino, 0, RunState())
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
                    followed.state.feed(events)
                    followed.offset += cut
    except OSError:
        pass
    _STATES[run_dir] = followed
    return followed.state


def run_info(ref: str | os.PathLike) -> RunInfo:
    run_dir = find_run(ref)
    alive = is_alive(run_dir)  # before reading: an end written meanwhile is then seen
    return info_of(run_dir, state_of(run_dir), alive)


def list_runs() -> list[RunInfo]:
    """Every registered run, newest first. Each run's history is read once; later calls read only
    what was appended, so a viewer can call this on a timer, whatever the runs' length."""
    infos = []
    for run_dir in registered_dirs():
        alive = is_alive(run_dir)
        infos.append(info_of(run_dir, state_of(run_dir), alive))
    infos.sort(key=lambda r: r.started or 0, reverse=True)
    return infos


def find_run(ref: str | os.PathLike) -> Path:
    """A run directory from a directory path, a run id, a unique id prefix, or ``last``."""
    text = str(ref).strip()
    if not text:
        raise RunsError("no run given")
    path = Path(text).expanduser()
    if path.is_dir() and RunDir(path).looks_like_run():
        return path.resolve()
    dirs = registered_dirs()
    if path.is_dir() and path.resolve() in dirs:  # registered, even if never completed
        return path.resolve()
    if text in ("last", "latest"):
        if not dirs:
            raise RunsError("there are no runs yet")
        complete = [d for d in dirs if RunDir(d).config.exists()] or dirs  # the newest usable run
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
    for path in (RunDir(run_dir).config, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def history(ref: str | os.PathLike) -> list[dict[str, Any]]:
    """Every event of the run so far, oldest first (a torn last line is left out)."""
    return read_events(RunDir(find_run(ref)).events)




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
    fd = os.open(RunDir(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
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
        with open(RunDir(run_dir).log, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(run_dir), env=env, close_fds=True, pass_fds=(lock_fd,),
            )
    finally:
        os.close(lock_fd)  # the children hold the lock now
    RunDir(run_dir).pid_file.write_text(str(proc.pid), encoding="utf-8")
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
        RunDir(run_dir).request_stop()
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
    if not state_of(run_dir).ended:
        info = info_of(run_dir, state_of(run_dir), alive=False)
        ckpt = f"; resume continues from {Path(info.last_checkpoint).name}" if info.last_checkpoint else ""
        with_writer(run_dir, lambda w: w.emit(
            Kind.END, step=info.step, status=Status.STOPPED, reason=Reason.KILLED,
            message=f"killed at once by `sft-wizard stop --kill`{ckpt}"))
    return run_info(run_dir)


def with_writer(run_dir: Path, fn: Callable[[EventWriter], Any]) -> Any:
    writer = EventWriter(RunDir(run_dir).events)
    try:
        return fn(writer)
    finally:
        writer.close()


# --------------------------------------------------------------------------- resume

def _complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoints whose trainer state was written (the trainer writes it last), by step."""
    found = []
    for path in RunDir(run_dir).checkpoints.glob("checkpoint-*"):
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
        elif ev.get("event") == Kind.CHECKPOINT and ev.get("path"):
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
    if info.status == Status.RUNNING:
        raise RunsError(f"run {info.id} is still running (pid {info.pid}); stop it first")
    if info.status == Status.FINISHED:
        raise RunsError(f"run {info.id} already finished; start a new run to train further")
    if not RunDir(run_dir).config.exists():
        raise RunsError(f"run {info.id} was never completed (no {CONFIG_FILE} in {run_dir}): nothing to resume; "
                        "start a new run with `sft-wizard run`")
    cfg = load_preset(RunDir(run_dir).config)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    events = read_events(RunDir(run_dir).events)
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
        save_preset(cfg, RunDir(run_dir).config)
    step = _step_of(checkpoint)
    for later_step, later in _later_checkpoint_dirs(run_dir, step):
        shutil.rmtree(later, ignore_errors=True)  # half-written or unreadable: training writes them again
    RunDir(run_dir).clear_stop()
    notes = [f"{p.name} is unreadable ({why}), so the run resumes from {checkpoint.name} instead "
             f"and trains steps {step + 1}–{_step_of(p)} again; {p.name} was removed" for p, why in passed_over]
    if notes:
        with_writer(run_dir, lambda w: [w.emit(Kind.WARNING, step=step, source="resume", code="checkpoint_unreadable",
                                               message=note, checkpoint=str(p))
                                        for note, (p, _) in zip(notes, passed_over)])
    return Launched(run_dir, spawn(run_dir, resume_from=str(checkpoint)), checkpoint, notes)


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def _later_checkpoint_dirs(run_dir: Path, step: int) -> list[tuple[int, Path]]:
    later = []
    for path in RunDir(run_dir).checkpoints.glob("checkpoint-*"):
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
