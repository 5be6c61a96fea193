"""What the machine offers: GPUs with architecture, memory and capabilities, or CPU mode and why."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _gib(mib: Any) -> str:
    return "?" if mib is None else f"{float(mib) / 1024:.1f}"


def gpu_memory_gib(report: Any) -> float | None:
    """Free memory of the GPU a run lands on (the first of CUDA_VISIBLE_DEVICES) in GiB, or None in CPU mode."""
    gpus = list(_get(report, "gpus", []) or []) if report is not None else []
    if not gpus:
        return None
    best = getattr(report, "best_gpu", None)
    gpu = best() if callable(best) else gpus[0]
    free = _get(gpu, "usable_memory_mib")
    if free is None:
        free = _get(gpu, "memory_free_mib")
    return None if free is None else float(free) / 1024


def has_cuda(report: Any) -> bool:
    return bool(report is not None and _get(report, "gpus"))


class GpuPanel(Static):
    DEFAULT_CSS = """
    GpuPanel { height: auto; padding: 0 1; }
    """

    report: reactive[Any] = reactive(None, always_update=True)
    error: reactive[str] = reactive("")

    def watch_report(self) -> None:
        self.update(self.render_report())

    def watch_error(self) -> None:
        self.update(self.render_report())

    def render_report(self):
        if self.error:
            return Text(f"Hardware probe failed: {self.error}. CPU mode.", style="bold")
        report = self.report
        if report is None:
            return Text("probing hardware…", style="dim")
        gpus = list(_get(report, "gpus", []) or [])
        cpu = f"CPU: {_get(report, 'cpu_count', '?')} cores"
        ram = _get(report, "ram_total_mib")
        if ram:
            cpu += f", {_gib(ram)} GiB RAM"
        libraries = _get(report, "libraries") or {}
        libs = " · ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in sorted(libraries.items()))
        if not gpus:
            reason = str(_get(report, "reason") or "no GPU found").rstrip(".")
            return Text.assemble(
                ("CPU mode", "bold"), f" — {reason}.\n",
                "Training runs on the CPU: fine for the builtin demo and tiny models; "
                "QLoRA is slow here (bitsandbytes' CPU kernels) and FlashAttention needs a CUDA GPU.\n", cpu,
                (f"\noptional libraries: {libs}" if libs else "", "dim"),
            )
        table = Table(box=None, expand=True, pad_edge=False, show_edge=False)
        for col in ("#", "GPU", "arch", "cc", "used/total GiB", "free", "bf16", "FA2", "FP8"):
            table.add_column(col, no_wrap=True, overflow="ellipsis")
        yes = lambda v: "yes" if v else "no"  # noqa: E731
        for g in gpus:
            table.add_row(
                str(_get(g, "index", "?")), str(_get(g, "name", "?")), str(_get(g, "architecture", "?")),
                str(_get(g, "compute_capability", "?")),
                f"{_gib(_get(g, 'memory_used_mib'))}/{_gib(_get(g, 'memory_total_mib'))}",
                _gib(_get(g, "memory_free_mib")), yes(_get(g, "bf16")), yes(_get(g, "flash_attention_2")),
                yes(_get(g, "fp8")),
            )
        driver = f"driver {_get(report, 'driver_version') or '?'} · CUDA {_get(report, 'cuda_driver_version') or '?'}"
        from rich.console import Group

        lines = [f"{driver} · {cpu}"] + ([f"optional libraries: {libs}"] if libs else []) + [
            f"note: {n}" for n in (_get(report, "notes") or [])]
        return Group(table, Text("\n".join(lines), style="dim"))
