"""One finding type: something the engine noticed, said once, with where it is and what to do.

Findings used to come in four shapes under seven words (problems, warnings, notes, assumptions,
suggestions, tips, recommendations). ``Finding`` is the one type; each face keeps the JSON it
documents by its ``to_dict``:

- ``Finding.to_dict()`` is the shape of a template/preview/audit problem: ``code``, ``message``,
  ``severity``, then ``where``, ``setting`` and ``suggestion`` when set, then ``details`` flattened
  (``{"code", "message", "severity", "tokens_lost": 3}``) — what ``preview --json`` and the audit
  print today;
- ``doctor.DoctorWarning`` is a ``Finding`` whose ``to_dict`` is the doctor's documented
  ``{code, message, setting, suggested, details}``.

Plain data, no imports beyond the standard library: every core module may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = get_args(Severity)


@dataclass
class Finding:
    """``code``: stable machine name; ``message``: one sentence with the reason; ``severity``:
    error (blocks or breaks training), warning (likely a mistake), info (worth knowing);
    ``where``: what it was found in (a file, ``row 3``, ``message 2``...); ``setting``: the dotted
    RunConfig path it concerns; ``suggestion``: the value (or change) to make; ``details``: the
    numbers behind it."""

    code: str
    message: str
    severity: Severity = "warning"
    where: str | None = None
    setting: str | None = None
    suggestion: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "severity": self.severity}
        for key in ("where", "setting", "suggestion"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.details)
        return out

    def sentence(self) -> str:
        """One line for people: ``[where: ]message``."""
        return f"{self.where}: {self.message}" if self.where else self.message


def finding_dict(code: str, message: str, severity: Severity = "warning", **details: Any) -> dict[str, Any]:
    """A finding as the problem dicts of the preview, the audit and the template probe are written
    (``Finding(...).to_dict()``): ``{code, message, severity, **details}``."""
    return Finding(code, message, severity, details=details).to_dict()
