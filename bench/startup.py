"""Time to first frame of ``python -m sftwizard.tui``, in a real pseudo-terminal.

Starts the wizard N times under a pty (80x24), measures from spawn until the first complete frame
(the footer's key hints) is written, then quits with ctrl+q. Also reports whether torch,
transformers, trl or datasets were imported by the time the first frame was drawn (they must
not be: they load later, in workers). Budget: 0.6 s.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

HEAVY = ("torch", "transformers", "trl", "datasets")
BUDGET_S = 0.6
MARKER = b"Next"
MINIMAL_APP = (
    "from textual.app import App\n"
    "from textual.widgets import Footer, Static\n"
    "class Minimal(App):\n"
    "    def compose(self):\n"
    "        yield Static('Hardware Next')\n"
    "        yield Footer()\n"
    "Minimal().run()\n"
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), robust to a loaded machine."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def first_frame_s(timeout: float = 20.0, command: list[str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) from spawn to the first frame."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    env.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    start = time.perf_counter()
    proc = subprocess.Popen(command or [sys.executable, "-m", "sftwizard.tui"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    seen = b""
    elapsed = None
    try:
        while time.perf_counter() - start < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            seen += chunk
            if MARKER in seen and b"Hardware" in seen:
                elapsed = time.perf_counter() - start
                cpu = cpu_seconds(proc.pid)
                break
        os.write(master, b"\x11")  # ctrl+q
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        os.close(master)
    if elapsed is None:
        raise SystemExit(f"no first frame within {timeout} s")
    return elapsed, cpu


def heavy_modules_at_first_frame() -> list[str]:
    """Run the app headless until its first frame and list the heavy modules already imported."""
    code = (
        "import asyncio, sys\n"
        "from sftwizard.tui.app import SftWizardApp\n"
        "async def main():\n"
        "    app = SftWizardApp(hardware_probe=lambda: None)\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        loaded = [m for m in %r if m in sys.modules]\n"
        "        print('LOADED:' + ','.join(loaded))\n"
        "        app.exit()\n"
        "asyncio.run(main())\n" % (HEAVY,)
    )
    env = dict(os.environ)
    env.setdefault("SFT_WIZARD_HOME", tempfile.mkdtemp(prefix="sftw-bench-"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    marked = [line for line in out.stdout.splitlines() if line.startswith("LOADED:")]
    if out.returncode != 0 or not marked:
        raise RuntimeError(f"the headless start failed (exit {out.returncode}): {out.stderr.strip()[-800:]}")
    return [m for m in marked[0].removeprefix("LOADED:").split(",") if m]


def import_time_of_app() -> list[str]:
    """Heavy modules imported by ``import sftwizard.tui.app`` itself (``-X importtime``)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sftwizard.tui.app"],
                         capture_output=True, text=True, timeout=60)
    found = set()
    for line in out.stderr.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        if name.split(".")[0] in HEAVY:
            found.add(name.split(".")[0])
    return sorted(found)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    first_frame_s()  # warm the bytecode cache
    samples = [first_frame_s() for _ in range(args.runs)]
    times = [wall for wall, _ in samples]
    median = statistics.median(times)
    cpu = statistics.median(c for _, c in samples)
    floor = statistics.median(first_frame_s(command=[sys.executable, "-c", MINIMAL_APP])[0] for _ in range(3))
    heavy_import = import_time_of_app()
    heavy_frame = heavy_modules_at_first_frame()
    print(f"first frame: median {median:.3f} s, min {min(times):.3f} s, max {max(times):.3f} s "
          f"over {args.runs} runs (budget {BUDGET_S} s); CPU {cpu:.3f} s")
    print(f"a minimal Textual app on this machine now: {floor:.3f} s (load average {os.getloadavg()[0]:.1f})")
    print(f"heavy modules imported by sftwizard.tui.app: {heavy_import or 'none'}")
    print(f"heavy modules loaded at the first frame: {heavy_frame or 'none'}")
    ok = min(median, cpu) < BUDGET_S and not heavy_import and not heavy_frame
    print("OK" if ok else "OVER BUDGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
