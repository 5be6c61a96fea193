"""What the machine offers: GPUs with architecture, memory and capabilities, or CPU mode and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

if TYPE_CHECKING:
    from sftwizard.core.hardware import HardwareReport


def _gib(mib: int | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f}"


def has_cuda(report: HardwareReport | None) -> bool:
    return bool(report is not None and report.gpus)


class GpuPanel(Static):
    DEFAULT_CSS = """
    GpuPanel { height: auto; padding: 0 1; }
    """

    report: reactive[HardwareReport | None] = reactive(None, always_update=True)
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
        gpus = report.gpus
        cpu = f"CPU: {report.cpu_count} cores"
        if report.ram_total_mib:
            cpu += f", {_gib(report.ram_total_mib)} GiB RAM"
        libs = " · ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in sorted(report.libraries.items()))
        if not gpus:
            reason = (report.reason or "no GPU found").rstrip(".")
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
                str(g.index), g.name, g.architecture, g.compute_capability,
                f"{_gib(g.memory_used_mib)}/{_gib(g.memory_total_mib)}",
                _gib(g.memory_free_mib), yes(g.bf16), yes(g.flash_attention_2), yes(g.fp8),
            )
        driver = f"driver {report.driver_version or '?'} · CUDA {report.cuda_driver_version or '?'}"
        from rich.console import Group

        lines = [f"{driver} · {cpu}"] + ([f"optional libraries: {libs}"] if libs else []) + [
            f"note: {n}" for n in report.notes]
        return Group(table, Text("\n".join(lines), style="dim"))
