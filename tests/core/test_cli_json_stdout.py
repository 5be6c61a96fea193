"""`--json` output is one JSON document on stdout, even when a library prints while the command runs.

Found when tests/core/test_templates_preview.py::test_preview_from_preset ran on its own: during the
command deepspeed got imported (through transformers) and its logger printed "[WARNING] ... Setting
accelerator to CPU" to stdout ahead of the JSON; the test passed in the full suite only because an
earlier test had imported deepspeed already. A user piping `--json` into jq hits the same.
"""

from __future__ import annotations

import json
import subprocess
import sys

from sftwizard.cli.common import json_stdout, print_json


def test_other_prints_go_to_stderr_while_a_json_command_runs(capsys):
    with json_stdout():
        print("[WARNING] a library talking")
        print_json({"ok": True})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True}
    assert "a library talking" in err


def test_preview_json_in_a_fresh_process_parses(repo_root):
    # A fresh interpreter: whatever transformers drags in is imported during the command.
    out = subprocess.run([sys.executable, "-m", "sftwizard.cli", "preview", str(repo_root / "presets" / "demo.yaml"),
                          "--row", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["tokens"], doc.keys()
