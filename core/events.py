"""``events.jsonl``: the contract between a run and every viewer.

One JSON object per line, appended and flushed as written (fsync on the events that matter for
recovery). Every event has ``event``, ``time`` (unix seconds) and ``step``. Readers never break
on a half-written last line: it is left for the next read. A line that is JSON but not an event
of this shape (no ``time``, a ``step`` that is not a whole number, a ``message`` that is a list…),
like a torn line in the middle, is skipped and counted (``Events.skipped``, ``EventTail.skipped``): one odd line never breaks a
viewer, nor hides the rest of the run.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diskspace import release_reserve
from .run_model import DURABLE, FIELD_TYPES, Kind


class EventWriter:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() > 0 and not _ends_with_newline(self.path):
            self._fh.write("\n")  # close a line torn by a killed writer, so ours stays whole
            self._fh.flush()

    def emit(self, event: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), "step": step, **fields}
        line = json.dumps(record, default=_jsonable, ensure_ascii=False, allow_nan=True)
        if self._file_gone():
            self._recreate(step)
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
            if event in DURABLE:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            # A full disk: the run's reserve file (core/diskspace.py) makes room for the last lines.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not release_reserve(self.path.parent):
                raise
            self._fh.flush()  # what the failed flush left in the buffer
            os.fsync(self._fh.fileno())
        return record

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def _file_gone(self) -> bool:
        """True when our file was deleted or replaced under us: lines written now would be lost."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def _recreate(self, step: int | None) -> None:
        """Put the file back with what was written so far (still readable through our open
        descriptor on Linux), then say what happened in a ``warning`` event."""
        self._fh.flush()
        old = b""
        try:
            with open(f"/proc/self/fd/{self._fh.fileno()}", "rb") as fh:
                old = fh.read()
        except OSError:
            pass  # no /proc: the new file starts empty
        if old and not old.endswith(b"\n"):
            old += b"\n"
        self._fh.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if os.path.getsize(self.path) > 0 and not _ends_with_newline(self.path):
            self._fh.write("\n")  # a file someone else put there: keep our lines whole
        self._fh.flush()
        with open(self.path, "ab") as raw:
            raw.write(old)
        restored = old.count(b"\n")
        kept = (f"re-created with the {restored} events written before" if restored
                else "re-created; the events written before could not be recovered")
        record = {"event": Kind.WARNING, "time": round(time.time(), 3), "step": step, "source": "events",
                  "code": "events_file_recreated", "restored_events": restored,
                  "message": f"{self.path.name} was deleted or replaced while the run was writing it; {kept}"}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


_TORN = object()  # a line that is not JSON


def _parse_values(chunk: str) -> tuple[list[Any], str]:
    """Every complete line's JSON value (``_TORN`` where it is not JSON) and the incomplete remainder."""
    values = []
    *complete, rest = chunk.split("\n")
    for line in complete:
        line = line.strip()
        if not line:
            continue
        try:
            values.append(json.loads(line))
        except ValueError:
            values.append(_TORN)  # a torn line in the middle (never written by us)
    return values, rest


def parse_lines(chunk: str) -> tuple[list[dict[str, Any]], str]:
    """Split complete lines into JSON objects; return (objects, incomplete remainder)."""
    values, rest = _parse_values(chunk)
    return [v for v in values if isinstance(v, dict)], rest


_NUMBER = (int, float)


def event_problem(obj: Any) -> str | None:
    """Why ``obj`` is not an event readers can use (``event`` a name, ``time`` a finite number,
    the fields readers compute with of their type; any may be null but ``event`` and ``time``);
    None when it is one."""
    if obj is _TORN:
        return "not JSON"
    if not isinstance(obj, dict):
        return f"a JSON {type(obj).__name__}, not an object"
    if not isinstance(obj.get("event"), str) or not obj["event"]:
        return "no event name"
    t = obj.get("time")
    if not isinstance(t, _NUMBER) or isinstance(t, bool) or t != t or t in (float("inf"), float("-inf")):
        return "no time (unix seconds)"
    for name, types in FIELD_TYPES.items():
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return f"{name} is {type(value).__name__}"
    return None


class Events(list):
    """Events read from a file; ``skipped`` counts the complete lines that were not events."""

    skipped: int = 0


def usable_events(objs: list[Any]) -> Events:
    """The events among ``objs``, with how many were left out."""
    out = Events(o for o in objs if event_problem(o) is None)
    out.skipped = len(objs) - len(out)
    return out


def parse_events(chunk: str) -> tuple[Events, str]:
    """``parse_lines`` for events: (the usable events, with ``.skipped``; the incomplete remainder)."""
    values, rest = _parse_values(chunk)
    return usable_events(values), rest


def read_events(path: str | os.PathLike) -> Events:
    """Every complete event in the file (a torn last line is left for later; other lines that are
    not events are skipped and counted in ``.skipped``)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return Events()
    events, _ = parse_events(text)
    return events


@dataclass
class EventTail:
    """Incremental reader: ``poll()`` returns the events appended since the last call."""

    path: Path
    offset: int = 0
    skipped: int = 0  # complete lines that were not events, so far
    _rest: str = field(default="", repr=False)

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self.offset += len(data)
        events, self._rest = parse_events(self._rest + data.decode("utf-8", errors="replace"))
        self.skipped += events.skipped
        return events
