"""Every user mistake: exit code 2, one sentence naming the file/field/line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "sftwizard.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_user_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = [l for l in out.stderr.strip().splitlines() if l.startswith("sft-wizard: error:")]
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("command", ["run", "validate"])
def test_yaml_syntax_error(tmp_path: Path, command: str):
    p = write(tmp_path / "broken.yaml", "model:\n  id: builtin:tiny-chat\n  dtype: [fp32\n")
    assert_user_error(cli(command, str(p)), str(p), "line 4", "YAML syntax error")


def test_unknown_key_with_did_you_mean(tmp_path: Path):
    p = write(tmp_path / "typo.yaml", "training:\n  num_train_epoch: 2\n")
    assert_user_error(cli("run", str(p)), str(p), "training.num_train_epoch: unknown key", "num_train_epochs")


def test_wrong_type_and_range(tmp_path: Path):
    p = write(tmp_path / "range.yaml", "training:\n  learning_rate: -1\n")
    assert_user_error(cli("run", str(p)), "training.learning_rate: must be > 0, got -1")
    p = write(tmp_path / "type.yaml", "training:\n  per_device_train_batch_size: big\n")
    assert_user_error(cli("validate", str(p)), "training.per_device_train_batch_size: must be an integer")


def test_missing_preset_file(tmp_path: Path):
    assert_user_error(cli("run", str(tmp_path / "absent.yaml")), "absent.yaml", "no such preset file")


def test_missing_model_path(tmp_path: Path):
    p = write(tmp_path / "m.yaml", f"model:\n  id: {tmp_path / 'no-model-here'}\n")
    assert_user_error(cli("run", str(p)), "model.id", "no model folder at")


def test_missing_and_empty_dataset(tmp_path: Path):
    p = write(tmp_path / "d.yaml", f"data:\n  sources:\n    - path: {tmp_path / 'nope.jsonl'}\n")
    assert_user_error(cli("run", str(p)), "nope.jsonl", "no such data file")
    empty = write(tmp_path / "empty.jsonl", "")
    p = write(tmp_path / "e.yaml", f"data:\n  sources:\n    - path: {empty}\n")
    assert_user_error(cli("run", str(p)), "empty.jsonl", "empty")


def test_qlora_without_cuda_and_an_old_bitsandbytes(tmp_path: Path):
    """bitsandbytes before its CPU backend (an install shadowing the real one, found first on the path)."""
    import os

    old = tmp_path / "old"
    (old / "bitsandbytes").mkdir(parents=True)
    (old / "bitsandbytes" / "__init__.py").write_text("")
    (old / "bitsandbytes-0.45.5.dist-info").mkdir()
    (old / "bitsandbytes-0.45.5.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.45.5\n")
    p = write(tmp_path / "q.yaml", "method:\n  type: qlora\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(old), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([*CLI, "run", str(p)], capture_output=True, text=True, timeout=300, env=env)
    assert_user_error(out, "method.type", "QLoRA without a CUDA GPU needs bitsandbytes >= 0.50")


def test_qlora_on_cpu_is_not_refused_but_validate_warns_it_is_slow(repo_root: Path):
    pytest.importorskip("bitsandbytes")
    out = cli("validate", str(repo_root / "presets/demo.yaml"), "--set", "method.type=qlora", "--json")
    assert out.returncode == 0, out.stderr
    warnings = {w["code"]: w for w in json.loads(out.stdout)["warnings"]}
    assert "slow" in warnings["qlora_on_cpu"]["message"]
    from sftwizard.core.config import apply_overrides, load_preset
    from sftwizard.core.preflight import preflight

    preflight(apply_overrides(load_preset(repo_root / "presets/demo.yaml"), ["method.type=qlora"]))  # no UserError


def test_override_typo(repo_root: Path):
    assert_user_error(cli("run", str(repo_root / "presets/demo.yaml"), "--set", "training.lr=1"),
                      "training.lr: unknown key")


def test_validate_json_reports_every_problem(tmp_path: Path):
    p = write(tmp_path / "two.yaml", "training:\n  learning_rate: 0\n  seeed: 1\n")
    out = cli("validate", str(p), "--json")
    assert out.returncode == 2
    report = json.loads(out.stdout)
    assert report["valid"] is False and len(report["problems"]) == 2
    ok = cli("validate", "demo", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True


@pytest.mark.parametrize("override, needle", [
    ("data.sources.path=mine.jsonl", "data.sources: is a list"),
    ("training.max_steps.foo=1", "training.max_steps: is a value"),
    ("data.sources.5.path=x", "no item 5"),
])
def test_an_override_that_would_vanish_is_refused(repo_root: Path, override: str, needle: str):
    # these used to be dropped with exit 0: `run` trained on the demo rows instead of mine.jsonl
    assert_user_error(cli("validate", str(repo_root / "presets/demo.yaml"), "--set", override), "--set", needle)


@pytest.mark.parametrize("setting", ["num_train_epochs", "save_steps", "logging_steps", "learning_rate"])
def test_an_infinite_step_setting_is_one_sentence(tmp_path: Path, setting: str):
    p = write(tmp_path / "inf.yaml", f"training:\n  {setting}: .inf\n")
    assert_user_error(cli("validate", str(p)), f"training.{setting}: must be a finite number, got inf")


def unusable_places(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Places nothing can be written under, and what the sentence must say about each."""
    a_file = write(tmp_path / "a-file", "x")
    link = tmp_path / "gone-link"
    link.symlink_to(tmp_path / "gone")
    return {"file": (a_file / "runs", "is a file, not a folder"),
            "dangling symlink": (link, "which does not exist")}


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_an_unusable_output_root_is_one_sentence(tmp_path: Path, repo_root: Path, kind: str, command: str):
    place, why = unusable_places(tmp_path)[kind]
    assert_user_error(cli(command, str(repo_root / "presets/demo.yaml"), "--set", f"run.output_root={place}"),
                      "run.output_root: runs cannot be written under", why)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_output_root_is_one_sentence(tmp_path: Path, repo_root: Path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_user_error(cli("run", str(repo_root / "presets/demo.yaml"), "--set", f"run.output_root={ro}/runs"),
                          "run.output_root", "cannot write in")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("kind", ["file", "dangling symlink", "folder"])
def test_export_to_an_unusable_path_is_one_sentence(tmp_path: Path, repo_root: Path, kind: str):
    if kind == "folder":
        out, why = tmp_path, "is a folder"
        out = tmp_path / "out.yaml"
        out.mkdir()
    else:
        place, why = unusable_places(tmp_path)[kind]
        out = place / "trl.yaml"
    assert_user_error(cli("export", str(repo_root / "presets/demo.yaml"), "--to", "trl", str(out)), why)


def test_validate_names_a_row_no_tokenizer_can_read(tmp_path: Path):
    # a lone surrogate is valid JSON; the tokenizer and the doctor's duplicate hash used to fail on it
    good = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
    data = write(tmp_path / "d.jsonl", good + "\n" + '{"messages": [{"role": "user", "content": "a \\ud800"}, '
                 '{"role": "assistant", "content": "ok"}]}\n' + good + "\n")
    for policy, code in (("stop", "checks_skipped"), ("drop", "rows_left_out")):
        p = write(tmp_path / f"{policy}.yaml", f"data:\n  sources:\n    - path: {data}\n  on_bad_rows: {policy}\n")
        out = cli("validate", str(p), "--json")
        assert "Traceback" not in out.stderr
        (warning,) = [w for w in json.loads(out.stdout)["warnings"] if w["code"] == code]
        assert "line 2, field messages[0].content: a lone surrogate" in warning["message"]


def test_a_folder_the_os_refuses_to_write_is_one_sentence(tmp_path: Path, repo_root: Path, monkeypatch, capsys):
    # as root a chmod'ed folder stays writable, so the OS's refusal (a read-only mount) is played here
    import tempfile

    from sftwizard.cli.main import main

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    code = main(["validate", str(repo_root / "presets/demo.yaml"), "--set", f"run.output_root={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert code == 2 and f"run.output_root: runs cannot be written under {tmp_path}/runs: cannot write in " \
                          f"{tmp_path} (read-only file system)" in err and "Traceback" not in err
