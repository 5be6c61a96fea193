"""The preview: problems it finds, and the `preview` command (human and --json, exit 2 on bad input)."""

from __future__ import annotations

import json

import pytest

from sftwizard.cli.main import main
from sftwizard.core.config import RunConfig
from sftwizard.core.preview import render_preview
from sftwizard.core.templates import TemplateError
from tests.fixtures.datasets import GOOD, line, msgs
from tests.fixtures.tokenizers import CHATML_MARKERS_CONTENT_ONLY, SINGLE, make_tokenizer, save_model_dir
from tests.fixtures.trainer import isolated_home


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    isolated_home(tmp_path_factory)


def codes(preview):
    return {p["code"] for p in preview.problems}


def preview_of(family, example, **training):
    cfg = RunConfig()
    for key, value in training.items():
        setattr(cfg.training, key, value)
    return render_preview(cfg, 0, tokenizer=make_tokenizer(family), examples=[example])


def test_end_of_turn_not_trained():
    tok = make_tokenizer("qwen2_5")
    tok.chat_template = CHATML_MARKERS_CONTENT_ONLY
    preview = render_preview(RunConfig(), 0, tokenizer=tok, examples=SINGLE)
    assert preview.template_source == "tokenizer" and "eos_not_trained" in codes(preview)
    good = preview_of("qwen2_5", SINGLE[0])
    assert "eos_not_trained" not in codes(good)


def test_no_trained_tokens_row_is_dropped_by_trainer():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0}]}
    preview = preview_of("llama3", row)
    assert "no_trained_tokens" in codes(preview) and preview.dropped_by_trainer
    assert not preview_of("llama3", row, packing=True).dropped_by_trainer


def test_truncation_into_assistant_counts_lost_tokens():
    preview = preview_of("llama3", SINGLE[0], max_length=20)
    (problem,) = [p for p in preview.problems if p["code"] == "truncated_assistant"]
    assert problem["trained_tokens_lost"] > 0 and preview.counts["truncated_tokens"] == problem["tokens_lost"]
    assert all(not t["trained"] for t in preview.tokens if t.get("truncated"))


def test_tokenizer_and_template_quirks():
    assert "missing_pad_token" in codes(preview_of("llama3", SINGLE[0]))
    qwen = preview_of("qwen2_5", SINGLE[0])
    (injected,) = [p for p in qwen.problems if p["code"] == "default_system_prompt"]
    assert injected["injected"].startswith("You are Qwen")
    assert "template_injects_date" in codes(preview_of("dated", SINGLE[0]))
    assert "empty_think_trained" in codes(preview_of("qwen3", SINGLE[0]))
    assert "duplicated_bos" in codes(preview_of("llama3", {"text": "<|begin_of_text|>Once upon a time."}))


def test_base_model_without_template():
    with pytest.raises(TemplateError, match="template.source: chatml"):
        preview_of("base", SINGLE[0])
    text = preview_of("base", {"text": "Once upon a time."})
    assert text.kind == "text" and text.counts["trained"] == text.counts["tokens"] - 1


def test_preview_dict_is_json_ready():
    d = preview_of("phi3", SINGLE[0]).to_dict()
    json.dumps(d)
    assert set(d) >= {"text", "tokens", "template_source", "problems", "counts"}
    assert set(d["tokens"][0]) == {"id", "text", "trained"}
    assert "".join(t["text"] for t in d["tokens"]) == d["text"]


# --------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {fam: save_model_dir(fam, root / fam) for fam in ("llama3", "mistral", "base")}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_command_json_from_config_and_tokenizer_files_only(model_dirs, tmp_path, capsys):
    assert sorted(p.name for p in model_dirs["llama3"].iterdir() if "safetensors" in p.name or ".bin" in p.name) == []
    data = tmp_path / "d.jsonl"
    data.write_bytes(line(GOOD) + line(msgs(("user", "2+2?"), ("assistant", "4"))))
    code, out, err = run(capsys, "preview", "--model", str(model_dirs["llama3"]), "--data", str(data),
                         "--row", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["template_source"] == "trl-training" and d["row"] == 1
    assert "".join(t["text"] for t in d["tokens"] if t["trained"]) == "4<|eot_id|>"
    code, out, err = run(capsys, "preview", "--model", str(model_dirs["llama3"]), "--data", str(data),
                         "--no-assistant-only-loss", "--max-length", "8", "--json")
    d = json.loads(out)
    assert d["assistant_only_loss"] is False and d["counts"]["kept_tokens"] == 8


def test_preview_command_human_output(model_dirs, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(line(GOOD))
    code, out, err = run(capsys, "preview", "--model", str(model_dirs["mistral"]), "--data", str(data))
    assert code == 0, err
    assert "template: inferred" in out and "trained" in out and "masked" in out


def test_preview_command_bad_input_exits_2(model_dirs, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(line(GOOD) + line(msgs(("user", "Hi"), ("user", "Again"), ("assistant", "Yo"))))
    model = str(model_dirs["mistral"])
    cases = [
        (["--model", model, "--data", str(data), "--row", "5"], "--row 5"),
        (["--model", model], "give a preset, or both --model and --data"),
        (["--model", model, "--data", str(tmp_path / "nope.jsonl")], "no such file"),
        (["--model", str(tmp_path), "--data", str(data)], "config.json"),
        (["--model", model, "--data", str(data), "--row", "1"], "roles must alternate"),
        (["--model", str(model_dirs["base"]), "--data", str(data)], "template.source: chatml"),
        (["--model", model, "--data", str(data), "--max-length", "0"], "--max-length"),
    ]
    for argv, words in cases:
        code, out, err = run(capsys, "preview", *argv)
        assert code == 2 and words in err, (argv, err)
        assert "Traceback" not in err and err.count("\n") == 1
    code, out, err = run(capsys, "preview", "--model", str(model_dirs["base"]), "--data", str(data),
                         "--template-source", "chatml", "--json")
    assert code == 0 and json.loads(out)["template_source"] == "chatml"


def test_preview_from_preset(tmp_path, capsys):
    from sftwizard.core.config import save_preset

    cfg = RunConfig()
    cfg.data.sources[0].max_rows = 3
    save_preset(cfg, tmp_path / "p.yaml")
    code, out, err = run(capsys, "preview", str(tmp_path / "p.yaml"), "--row", "2", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["template_source"] == "tokenizer" and d["counts"]["trained"] > 0


def test_human_output_shows_brackets_verbatim(model_dirs, tmp_path, capsys):
    """Mistral's [INST] must not be read as Rich markup, in tokens or in problem messages."""
    data = tmp_path / "d.jsonl"
    data.write_bytes(line(GOOD))
    code, out, err = run(capsys, "preview", "--model", str(model_dirs["mistral"]), "--data", str(data),
                         "--system-prompt", "[bold]not markup[/bold]")
    assert code == 0, err
    assert "[INST]" in out and "[bold]not markup[/bold]" in out


def test_a_preview_and_a_data_audit_render_at_once_in_threads_as_they_do_alone(builtin_model_dir):
    """The TUI audits the data in one thread while the Template step previews rows in another;
    transformers shares each compiled template between threads, so renderings take turns (one
    at a time, not one job at a time) and give what they give alone."""
    import threading

    import transformers  # noqa: F401  (imported once here: lazy imports from two threads race)

    from sftwizard.core.config import load_preset
    from sftwizard.core.data import inspect_data
    from sftwizard.core.presets import shipped_presets_dir
    from sftwizard.core.preview import load_preview_tokenizer

    cfg = load_preset(shipped_presets_dir() / "demo.yaml")
    alone_audit = inspect_data(cfg.data.sources[0], tokenizer=load_preview_tokenizer(cfg), cfg=cfg).to_dict()
    alone_rows = [render_preview(cfg, row).to_dict() for row in range(40)]
    together: dict = {"rows": []}
    errors: list = []

    def audit():
        try:
            for _ in range(2):
                together["audit"] = inspect_data(cfg.data.sources[0], tokenizer=load_preview_tokenizer(cfg),
                                                 cfg=cfg).to_dict()
        except Exception as exc:  # noqa: BLE001 — the assertion below names it
            errors.append(repr(exc))

    def preview():
        try:
            for _ in range(3):
                together["rows"] = [render_preview(cfg, row).to_dict() for row in range(40)]
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=audit), threading.Thread(target=preview)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert together["audit"] == alone_audit
    assert together["rows"] == alone_rows


def test_a_row_with_nothing_trained_is_exit_2_unless_dropped(tmp_path, capsys):
    """A template that leaves the answers out: no assistant turn can be located. Never a silent drop."""
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{%- for m in messages -%}{%- if m['role'] == 'user' -%}<|user|>{{ m['content'] }}"
                   "{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}")
    preset = tmp_path / "p.yaml"
    preset.write_text("model: {id: 'builtin:tiny-chat'}\ndata: {sources: [{path: 'builtin:demo', max_rows: 5}]}\n"
                      f"template: {{source: file, path: '{tpl}'}}\n")
    assert main(["preview", str(preset), "--json"]) == 2
    out = capsys.readouterr()
    assert json.loads(out.out)["counts"]["trained"] == 0
    assert "row 0: no token carries loss (message" in out.err and "on_bad_rows: drop" in out.err
    assert main(["preview", str(preset), "--json", "--set", "data.on_bad_rows=drop"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any(p["code"] == "no_trained_tokens" and "leaves this row out" in p["message"] for p in problems)
