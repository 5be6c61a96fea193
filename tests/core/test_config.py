"""RunConfig: validation with paths, did-you-mean, overrides, atomic save and round-trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sftwizard.core.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    dump_preset,
    load_preset,
    save_preset,
)
from sftwizard.core.presets import list_presets


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def test_defaults_are_valid_and_explicit():
    cfg = config_from_dict({})
    assert cfg.model.trust_remote_code is False
    assert cfg.method.lora_target_modules == "all-linear"
    assert cfg.model.dtype == "auto"  # resolved to bf16/fp32 and always passed explicitly by the runner


def test_range_error_names_the_path_and_value():
    assert problems_of({"training": {"learning_rate": -1}}) == ["training.learning_rate: must be > 0, got -1"]


def test_unknown_key_suggests_the_close_one():
    (problem,) = problems_of({"training": {"learnin_rate": 1e-4}})
    assert problem.startswith("training.learnin_rate: unknown key")
    assert "did you mean 'learning_rate'" in problem


def test_unknown_section_and_wrong_type_and_bad_choice_all_reported_at_once():
    problems = problems_of({
        "modle": {},
        "training": {"per_device_train_batch_size": "eight"},
        "method": {"type": "qlroa"},
    })
    assert any(p.startswith("modle: unknown key") and "'model'" in p for p in problems)
    assert "training.per_device_train_batch_size: must be an integer, got 'eight'" in problems
    assert any(p.startswith("method.type: must be one of") and "did you mean 'qlora'" in p for p in problems)
    assert len(problems) == 3


def test_nested_list_paths():
    (problem,) = problems_of({"data": {"sources": [{"path": "a.jsonl"}, {"pth": "b"}]}})
    assert problem.startswith("data.sources[1].pth: unknown key")


def test_cross_field_checks():
    assert "training.eval_strategy: evaluation needs data.eval_source or data.eval_fraction > 0" in problems_of(
        {"training": {"eval_strategy": "steps"}})
    assert "training.fp16: bf16 and fp16 cannot both be on" in problems_of({"training": {"bf16": True, "fp16": True}})


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  id: x\ntraining:\n  learning_rate: [1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_preset(bad)
    message = str(info.value)
    assert str(bad) in message and "line 5" in message and "YAML syntax error" in message


def test_yaml_is_loaded_safely(tmp_path: Path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_preset(evil)


def test_round_trip_load_save_load(tmp_path: Path, repo_root: Path):
    cfg = load_preset(repo_root / "presets" / "demo.yaml")
    out = save_preset(cfg, tmp_path / "sub" / "again.yaml")
    assert load_preset(out) == cfg
    # and a second save is byte-identical (stable ordering)
    assert dump_preset(load_preset(out)) == out.read_text(encoding="utf-8")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path):
    target = tmp_path / "p.yaml"
    target.write_text("old: content\n", encoding="utf-8")
    save_preset(RunConfig(), target)
    assert yaml.safe_load(target.read_text())["model"]["id"] == "builtin:tiny-chat"
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


def test_a_write_that_fails_halfway_leaves_the_old_file_and_no_temp_file(tmp_path: Path):
    from sftwizard.core.paths import atomic_writer

    target = tmp_path / "rows.jsonl"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as fh:
            fh.write("new, half written\n")
            raise RuntimeError("the disk filled up")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_overrides_parse_values_and_revalidate():
    cfg = apply_overrides(RunConfig(), ["training.max_steps=7", "method.type=full", "training.learning_rate=1e-5"])
    assert cfg.training.max_steps == 7 and cfg.method.type == "full"
    assert cfg.training.learning_rate == pytest.approx(1e-5)
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig(), ["training.max_step=7"])
    assert "did you mean 'max_steps'" in str(info.value)


def test_every_shipped_preset_is_valid():
    shipped = [p for p in list_presets() if p.origin == "shipped"]
    assert any(p.name == "demo" for p in shipped)
    for p in shipped:
        assert p.valid, f"{p.path}: {p.problem}"


def test_user_presets_are_listed_from_the_config_dir(sftw_home: Path):
    from sftwizard.core.paths import user_presets_dir

    save_preset(RunConfig(), user_presets_dir() / "mine.yaml")
    assert any(p.name == "mine" and p.origin == "user" for p in list_presets())
    assert os.environ["SFT_WIZARD_HOME"] == str(sftw_home)


def test_a_preset_loads_by_name_with_overrides_and_a_user_preset_comes_first(sftw_home: Path):
    from sftwizard.core import presets
    from sftwizard.core.paths import user_presets_dir

    path, cfg = presets.load("demo", ["training.max_steps=7"])
    assert path == presets.shipped_presets_dir() / "demo.yaml" and cfg.training.max_steps == 7
    mine = apply_overrides(RunConfig(), ["training.max_steps=3"])
    save_preset(mine, user_presets_dir() / "demo.yaml")
    try:
        path, cfg = presets.load("demo")
        assert path == user_presets_dir() / "demo.yaml" and cfg.training.max_steps == 3
        with pytest.raises(ConfigError, match="training.max_step: unknown key"):
            presets.load("demo", ["training.max_step=7"])
    finally:  # the presets folder is shared by the session's tests: leave no user "demo" behind
        (user_presets_dir() / "demo.yaml").unlink()


def test_load_best_model_at_end_states_what_transformers_would_refuse_before_a_run():
    evals = {"data": {"eval_fraction": 0.1}}
    assert problems_of({"training": {"load_best_model_at_end": True}}) == [
        "training.load_best_model_at_end: needs evaluations to pick the best checkpoint; set "
        "training.eval_strategy to steps or epoch"]
    assert problems_of({**evals, "training": {"load_best_model_at_end": True, "eval_strategy": "epoch"}}) == [
        "training.save_strategy: with load_best_model_at_end, checkpoints must be saved when evaluations run: "
        "set it to 'epoch' (now 'steps')"]
    assert problems_of({**evals, "training": {"load_best_model_at_end": True, "eval_strategy": "steps",
                                              "eval_steps": 40, "save_steps": 100}}) == [
        "training.save_steps: with load_best_model_at_end it must be a multiple of eval_steps (40), got 100"]
    # eval_steps unset: transformers evaluates every logging_steps
    assert problems_of({**evals, "training": {"load_best_model_at_end": True, "eval_strategy": "steps",
                                              "logging_steps": 10, "save_steps": 25}}) == [
        "training.save_steps: with load_best_model_at_end it must be a multiple of logging_steps, which "
        "eval_steps defaults to (10), got 25"]
    assert "cannot be compared" in problems_of({**evals, "training": {
        "load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 500}})[0]
    assert problems_of({"training": {"save_steps": 2.5}}) == [
        "training.save_steps: above 1 it counts steps and must be whole (below 1 it is a fraction of the run), got 2.5"]
    for ok in ({"eval_steps": 50, "save_steps": 100}, {"eval_steps": 0.1, "save_steps": 0.2},
               {"logging_steps": 10, "save_steps": 30}):
        cfg = config_from_dict({**evals, "training": {"load_best_model_at_end": True, "eval_strategy": "steps", **ok}})
        assert cfg.training.load_best_model_at_end is True


@pytest.mark.parametrize("override, named", [
    ("data.sources.path=mine.jsonl", "data.sources: is a list (1 item); name an item by number"),
    ("data.sources.5.path=x", "data.sources.5: data.sources has 1 item"),
    ("training.max_steps.foo=1", "training.max_steps: is a value (-1), not a section; it has no 'foo'"),
    ("model.revision.x=1", "model.revision: is null here"),
    ("method.lora_target_modules.0=q_proj", "method.lora_target_modules: is a value ('all-linear')"),
    ("data.sources.0.path.x=1", "data.sources.0.path: is a value ('builtin:demo')"),
])
def test_an_override_that_cannot_land_is_refused_with_its_path(override: str, named: str):
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig(), [override])
    assert named in str(info.value)


def test_overrides_reach_list_items_dict_keys_and_null_sections():
    assert RunConfig().data.eval_source is None
    cfg = apply_overrides(RunConfig(), ["data.sources.0.path=mine.jsonl", "data.eval_source.path=eval.jsonl",
                                        "data.sources.0.columns.prompt=question"])
    assert cfg.data.sources[0].path == "mine.jsonl" and cfg.data.sources[0].columns == {"prompt": "question"}
    # the null section is built from its defaults, then the key is set
    assert cfg.data.eval_source.path == "eval.jsonl" and cfg.data.eval_source.split == "train"
    cfg = apply_overrides(cfg, ["method.lora_target_modules=[q_proj, v_proj]"])
    assert apply_overrides(cfg, ["method.lora_target_modules.1=o_proj"]).method.lora_target_modules == [
        "q_proj", "o_proj"]


def bomb(levels: int, name: str = "l") -> str:
    """A YAML 'billion laughs': each level lists the one before nine times."""
    lines = [f"{name}0: &{name}0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"{name}{i}: &{name}{i} [" + ", ".join([f"*{name}{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_in_one_short_sentence(tmp_path: Path, sftw_home: Path):
    import time

    from sftwizard.core.paths import user_presets_dir

    p = tmp_path / "bomb.yaml"
    # the bomb's top value lands in a typed field, where the error message used to print it expanded
    p.write_text(bomb(9) + "\ntraining:\n  num_train_epochs: *l8\n", encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_preset(p)
    assert time.monotonic() - started < 5
    assert "YAML aliases expand to more than 100,000 values" in str(info.value)
    assert len(str(info.value)) < 300
    # one such file among the user presets: listed as invalid, the others still listed
    user_presets_dir().mkdir(parents=True, exist_ok=True)
    (user_presets_dir() / "bomb.yaml").write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    save_preset(RunConfig(), user_presets_dir() / "mine.yaml")
    listed = {i.name: i for i in list_presets() if i.origin == "user"}
    assert listed["mine"].valid and not listed["bomb"].valid and "aliases" in listed["bomb"].problem
    flow = "[&a [x, x, x, x, x, x, x, x, x]" + "".join(
        f", &{b} [" + ", ".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdefg", "bcdefgh")) + "]"
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig(), ["training.num_train_epochs=" + flow])
    assert "training.num_train_epochs: YAML aliases expand to more than" in str(info.value)


def test_a_value_echoed_in_a_message_is_cut_short_and_a_self_reference_is_refused(tmp_path: Path):
    # 7 levels stay under the budget (4.8M values would not); a shorter shared value still prints briefly
    p = tmp_path / "wide.yaml"
    p.write_text(bomb(4) + "\ntraining:\n  num_train_epochs: *l3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_preset(p)
    (echoed,) = [p for p in info.value.problems if p.startswith("training.num_train_epochs")]
    assert echoed.startswith("training.num_train_epochs: must be a number, got [[[") and len(echoed) < 200
    assert all(len(p) < 200 for p in info.value.problems)
    p.write_text("a: &a [*a]\ntraining:\n  num_train_epochs: *a\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_preset(p)
    assert "refers to the value that contains it" in str(info.value)
    p.write_text("training:\n  num_train_epochs: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_preset(p)
    assert "nested too deeply" in str(info.value)
    p.write_text("# big\n" + "#" * (2 << 20) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_preset(p)
    assert "too big for a preset" in str(info.value)
