"""The pre-launch doctor: every check has a case that triggers it and one that does not."""

from __future__ import annotations

import json

import pytest

from sftwizard.core import doctor
from sftwizard.core.config import DataSource, RunConfig, apply_overrides
from sftwizard.core.doctor import check_config, effective_batch, lr_range


def cfg_with(*overrides: str, model: str = "org/some-model") -> RunConfig:
    return apply_overrides(RunConfig(), [f"model.id={model}", *overrides])


def conv(user: str, answer: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system is not None else [])
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def distinct(n: int) -> list[dict]:
    return [conv(f"Question number {i}?", f"The answer to question {i} is {i * 7}.") for i in range(n)]


def codes(warnings) -> list[str]:
    return [w.code for w in warnings]


def only(warnings, code: str):
    found = [w for w in warnings if w.code == code]
    assert len(found) == 1, codes(warnings)
    return found[0]


LLAMA_FACTS = {
    "has_chat_template": True,
    "chat_template": "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}",
    "max_position_embeddings": 4096,
    "linear_shapes": {"self_attn.q_proj": [8, 8], "self_attn.k_proj": [8, 8], "self_attn.v_proj": [8, 8],
                      "self_attn.o_proj": [8, 8], "mlp.gate_proj": [8, 16], "mlp.up_proj": [8, 16],
                      "mlp.down_proj": [16, 8]},
}


# --------------------------------------------------------------------------- learning rate

def test_lr_range_scales_with_sqrt_of_effective_batch():
    assert lr_range("full", 16)[:2] == pytest.approx((1e-5, 5e-5))
    assert lr_range("lora", 64)[:2] == pytest.approx((2e-4, 1e-3))  # x sqrt(64/16) = x2
    assert lr_range("lora", 4)[:2] == pytest.approx((0.5e-4, 2.5e-4))  # x sqrt(4/16) = x0.5
    assert lr_range("full", 4096)[:2] == pytest.approx((2e-5, 1e-4))  # factor capped at 2


def test_lr_too_high_for_full_fine_tuning():
    cfg = cfg_with("method.type=full", "training.learning_rate=2e-4", "training.per_device_train_batch_size=16")
    w = only(check_config(cfg), "lr_out_of_range")
    assert w.setting == "training.learning_rate" and w.suggested == pytest.approx(2e-5)
    assert "above" in w.message and "full fine-tuning" in w.message


def test_lr_too_low_for_lora_an_order_of_magnitude():
    cfg = cfg_with("method.type=lora", "training.learning_rate=5e-6", "training.per_device_train_batch_size=16")
    w = only(check_config(cfg), "lr_out_of_range")
    assert "order of magnitude below" in w.message and w.suggested == pytest.approx(2e-4)


def test_lr_in_range_and_batch_scaling_avoid_the_warning():
    assert "lr_out_of_range" not in codes(check_config(cfg_with("method.type=lora", "training.learning_rate=2e-4")))
    # 8e-4 is high for LoRA at batch 16, usual at batch 128 (gradient accumulation counts)
    hi = cfg_with("method.type=lora", "training.learning_rate=8e-4", "training.per_device_train_batch_size=16")
    assert "lr_out_of_range" in codes(check_config(hi))
    big = apply_overrides(hi, ["training.gradient_accumulation_steps=8"])
    assert effective_batch(big) == 128
    assert "lr_out_of_range" not in codes(check_config(big))


def test_lr_check_skips_builtin_models_trained_from_scratch():
    cfg = cfg_with("method.type=full", "training.learning_rate=3e-3", model="builtin:tiny-chat")
    assert "lr_out_of_range" not in codes(check_config(cfg))


# --------------------------------------------------------------------------- epochs / steps

def test_many_epochs_on_a_small_dataset():
    cfg = cfg_with("training.num_train_epochs=8", "training.per_device_train_batch_size=4")
    w = only(check_config(cfg, examples=distinct(400)), "many_epochs")
    assert w.setting == "training.num_train_epochs" and w.suggested == 2 and w.details["epochs"] == 8


def test_many_epochs_through_max_steps():
    cfg = cfg_with("training.max_steps=1000", "training.per_device_train_batch_size=4")  # 100 steps/epoch
    w = only(check_config(cfg, examples=distinct(400)), "many_epochs")
    assert w.setting == "training.max_steps" and w.suggested == 200


def test_a_fraction_of_an_epoch_on_a_large_dataset():
    cfg = cfg_with("training.max_steps=100", "training.per_device_train_batch_size=8")
    w = only(check_config(cfg, examples=distinct(20_000)), "fraction_of_epoch")
    assert w.suggested == 2500 and "4%" in w.message


def test_sensible_epochs_give_no_epoch_warning():
    cfg = cfg_with("training.num_train_epochs=3", "training.per_device_train_batch_size=8")
    found = codes(check_config(cfg, examples=distinct(2000)))
    assert not {"many_epochs", "fraction_of_epoch", "few_steps"} & set(found)


def test_too_few_optimiser_steps():
    cfg = cfg_with("training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=8")
    w = only(check_config(cfg, examples=distinct(300)), "few_steps")
    assert w.details["steps"] == 5 and w.suggested == 1


def test_packing_counts_packed_sequences_not_rows():
    cfg = cfg_with("training.packing=true", "training.per_device_train_batch_size=8", "training.max_length=1024")
    audit = {"rows": 2000, "rows_encoded": 2000, "padding": {"packed_sequences": 100}}
    w = only(check_config(cfg, examples=distinct(2000), audit=audit), "few_steps")
    assert w.details["steps_per_epoch"] == 13


# --------------------------------------------------------------------------- max_length

def audit_for(max_length: int, over: int, rows: int = 1000, **lengths) -> dict:
    return {"rows": rows, "rows_encoded": rows, "max_length": max_length, "rows_over_max_length": over,
            "rows_truncating_trained_tokens": over, "trained_tokens_lost_to_truncation": over * 40,
            "token_length": {"p50": 300, "p90": 700, "p99": 1500, "max": 3000, **lengths},
            "padding": {"packed_sequences": rows // 2}}


def test_max_length_below_p95_counts_rows_and_trained_tokens_cut():
    cfg = cfg_with("training.max_length=512")
    w = only(check_config(cfg, audit=audit_for(512, over=200)), "max_length_below_p95")
    assert "20% of rows (200)" in w.message and "8,000 trained tokens" in w.message
    assert w.suggested == 1536  # p99 1500 rounded up to a multiple of 64
    assert w.details["rows_over"] == 200


def test_max_length_suggestion_capped_by_context_and_scaled_from_a_sample():
    cfg = cfg_with("training.max_length=512")
    w = only(check_config(cfg, audit=audit_for(512, over=200), examples=distinct(4000),
                          facts={"max_position_embeddings": 1024}), "max_length_below_p95")
    assert w.suggested == 1024 and "(800)" in w.message  # 200 of a 1000-row sample of 4000 rows


def test_max_length_covering_p95_is_fine():
    cfg = cfg_with("training.max_length=2048")
    assert "max_length_below_p95" not in codes(check_config(cfg, audit=audit_for(2048, over=30)))
    # an audit made with another max_length: the p95 (when given) decides
    assert "max_length_below_p95" not in codes(check_config(cfg, audit=audit_for(512, over=200, p95=1200)))
    assert "max_length_below_p95" in codes(check_config(cfg, audit=audit_for(512, over=200, p95=2100)))
    # without p95, an audit at another max_length still tells when max_length is below p90
    assert "max_length_below_p95" in codes(check_config(cfg_with("training.max_length=600"), audit=audit_for(512, 200)))
    assert "max_length_below_p95" not in codes(check_config(cfg_with("training.max_length=800"),
                                                            audit=audit_for(512, 200)))


# --------------------------------------------------------------------------- LoRA targets

@pytest.mark.parametrize("targets", ['[q_proj, v_proj]', "'.*\\.(q_proj|k_proj|v_proj|o_proj)'"])
def test_lora_on_attention_only(targets):
    cfg = cfg_with("method.type=lora", f"method.lora_target_modules={targets}")
    w = only(check_config(cfg, facts=LLAMA_FACTS), "lora_no_mlp")
    assert w.suggested == "all-linear" and w.details["mlp_modules"] == ["gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("targets", ["all-linear", "[q_proj, v_proj, down_proj]", "'.*(proj)'"])
def test_lora_with_mlp_targets(targets):
    cfg = cfg_with("method.type=lora", f"method.lora_target_modules={targets}")
    assert "lora_no_mlp" not in codes(check_config(cfg, facts=LLAMA_FACTS))
    assert "lora_no_mlp" not in codes(check_config(cfg))  # without facts: known MLP names


def test_full_fine_tuning_has_no_lora_targets_to_check():
    cfg = cfg_with("method.type=full", "method.lora_target_modules=[q_proj]")
    assert "lora_no_mlp" not in codes(check_config(cfg, facts=LLAMA_FACTS))


# --------------------------------------------------------------------------- chat template

def test_base_model_without_template_on_conversations():
    facts = {**LLAMA_FACTS, "has_chat_template": False, "chat_template": None}
    w = only(check_config(cfg_with(), facts=facts, examples=distinct(10)), "no_chat_template")
    assert w.setting == "template.source" and w.suggested == "chatml"


def test_base_model_without_template_on_plain_text_or_with_chatml_chosen():
    facts = {**LLAMA_FACTS, "has_chat_template": False, "chat_template": None}
    texts = [{"text": f"document {i}"} for i in range(10)]
    assert "no_chat_template" not in codes(check_config(cfg_with(), facts=facts, examples=texts))
    chosen = cfg_with("template.source=chatml")
    assert "no_chat_template" not in codes(check_config(chosen, facts=facts, examples=distinct(10)))


def test_training_template_differs_from_the_released_one():
    w = only(check_config(cfg_with("template.source=chatml"), facts=LLAMA_FACTS, examples=distinct(5),
                          tokenizer_template="{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"),
             "template_differs")
    assert w.suggested == "auto"


def test_same_template_with_generation_markers_is_not_a_difference():
    marked = LLAMA_FACTS["chat_template"].replace("{{ m.content }}", "{% generation %}{{ m.content }}{% endgeneration %}")
    assert "template_differs" not in codes(check_config(cfg_with(), facts=LLAMA_FACTS, tokenizer_template=marked))


# --------------------------------------------------------------------------- eval split and duplicates

def test_no_eval_split():
    w = only(check_config(cfg_with()), "no_eval")
    assert w.setting == "data.eval_fraction" and w.suggested == 0.05


def test_eval_split_present():
    found = codes(check_config(cfg_with("data.eval_fraction=0.1", "training.eval_strategy=steps",
                                        "training.eval_steps=50")))
    assert "no_eval" not in found and "eval_never_runs" not in found


def test_eval_split_that_is_never_evaluated():
    assert "eval_never_runs" in codes(check_config(cfg_with("data.eval_fraction=0.1")))


def test_eval_rows_duplicating_train_rows_exactly_and_normalised():
    train = distinct(50)
    evals = [json.loads(json.dumps(train[3])),  # exact
             conv("  QUESTION number 7? ", "The answer to question 7   is 49."),  # case/whitespace only
             conv("A new question?", "A new answer.")]
    w = only(check_config(cfg_with(), examples=train, eval_examples=evals), "eval_overlaps_train")
    assert (w.details["exact"], w.details["normalised"]) == (1, 1)
    assert "2 of 3 eval rows" in w.message and w.details["eval_row_indices"] == [0, 1]


def test_distinct_eval_rows():
    evals = [conv(f"Held-out question {i}?", f"Held-out answer {i}.") for i in range(5)]
    assert "eval_overlaps_train" not in codes(check_config(cfg_with(), examples=distinct(50), eval_examples=evals))


def test_duplicates_inside_train():
    rows = distinct(20) + [distinct(20)[4], conv("question NUMBER 5?", "The answer to question 5 is 35.")]
    w = only(check_config(cfg_with(), examples=rows), "train_duplicates")
    assert (w.details["exact"], w.details["normalised"]) == (1, 1) and "clean" in w.suggested


def test_no_duplicates_inside_train():
    assert "train_duplicates" not in codes(check_config(cfg_with(), examples=distinct(100)))


# --------------------------------------------------------------------------- row quality

def test_low_quality_rows():
    rows = distinct(40) + [
        conv("Tell me a secret", "I'm sorry, but I can't help with that."),
        conv("Explain", "As an AI language model, I cannot have opinions."),
        conv("", "An answer to nothing."),
        conv("Hi", "k"), conv("Hey", "."), conv("Yo", "ok"), conv("Sum?", "42"),
    ]
    found = check_config(cfg_with(), examples=rows)
    assert only(found, "refusals").details["rows"] == 2
    assert only(found, "empty_turns").details["rows"] == 1
    assert only(found, "short_answers").details["rows"] == 3  # "42" is a number, not a lazy answer


def test_clean_rows_raise_no_quality_warning():
    rows = distinct(100) + [conv("Sum?", "42")]  # one refusal-free, number-only answer
    assert not {"refusals", "empty_turns", "short_answers"} & set(codes(check_config(cfg_with(), examples=rows)))


def test_rare_refusals_stay_below_the_threshold():
    rows = distinct(200) + [conv("Hack it", "I cannot help with that.")]  # 0.5% < 1%
    assert "refusals" not in codes(check_config(cfg_with(), examples=rows))


# --------------------------------------------------------------------------- packing / padding-free

def test_packing_mostly_long_rows():
    cfg = cfg_with("training.packing=true", "training.max_length=1024")
    audit = {"rows": 1000, "rows_encoded": 1000, "max_length": 1024, "rows_over_max_length": 0,
             "token_length": {"p50": 900, "p99": 1000}, "padding": {"packed_sequences": 950}}
    w = only(check_config(cfg, audit=audit), "packing_little_gain")
    assert w.suggested is False and w.details["gain"] == pytest.approx(0.05)


def test_packing_short_rows_pays():
    cfg = cfg_with("training.packing=true", "training.max_length=1024")
    audit = {"rows": 1000, "rows_encoded": 1000, "max_length": 1024, "rows_over_max_length": 0,
             "token_length": {"p50": 120, "p99": 400}, "padding": {"packed_sequences": 130}}
    assert "packing_little_gain" not in codes(check_config(cfg, audit=audit))


@pytest.mark.parametrize("settings", [["training.padding_free=true", "training.max_length=null"],
                                      ["training.packing=true"],  # bfd packing is padding-free
                                      ["training.padding_free=true", "training.max_length=null", "model.attn_implementation=eager"]])
def test_padding_free_without_flash_attention_and_several_rows_per_forward(settings):
    w = only(check_config(cfg_with("training.per_device_train_batch_size=4", *settings)), "padding_free_attention")
    assert w.setting == "training.per_device_train_batch_size" and w.suggested == 1
    assert "flash_attention_2" in w.message and w.details["rows_per_forward"] == 4


def test_padding_free_eval_batch_counts_only_when_evaluating():
    cfg = cfg_with("training.packing=true", "training.per_device_train_batch_size=1",
                   "training.per_device_eval_batch_size=8", "training.eval_strategy=steps", "data.eval_fraction=0.1")
    assert only(check_config(cfg), "padding_free_attention").setting == "training.per_device_eval_batch_size"
    off = cfg_with("training.packing=true", "training.per_device_train_batch_size=1", "training.eval_strategy=no")
    assert "padding_free_attention" not in codes(check_config(off))


def test_padding_free_with_remote_code_warns_whatever_the_batch():
    cfg = cfg_with("training.packing=true", "training.per_device_train_batch_size=1", "training.eval_strategy=no",
                   "model.trust_remote_code=true")
    assert only(check_config(cfg), "padding_free_attention").suggested == "flash_attention_2"


@pytest.mark.parametrize("settings", [[], ["training.packing=true", "training.packing_strategy=wrapped"],
                                      ["training.padding_free=true", "training.max_length=null", "model.attn_implementation=flash_attention_2",
                                       "training.per_device_train_batch_size=8"],
                                      ["training.packing=true", "training.per_device_train_batch_size=1",
                                       "training.per_device_eval_batch_size=1"]])
def test_padding_free_supported_or_off(settings):
    assert "padding_free_attention" not in codes(check_config(cfg_with(*settings)))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_pure_half_full_finetuning_is_warned_with_its_cost(dtype):
    w = only(check_config(cfg_with("method.type=full", f"model.dtype={dtype}")), "pure_half_full_finetune")
    assert w.setting == "model.dtype" and w.suggested == "auto" and "master weights" in w.message
    assert "pure_half_full_finetune" not in codes(check_config(cfg_with("method.type=full", "model.dtype=auto")))
    assert "pure_half_full_finetune" not in codes(check_config(cfg_with("method.type=lora", f"model.dtype={dtype}")))


# --------------------------------------------------------------------------- shape of the output

def test_every_warning_has_code_one_line_message_setting_and_json_form():
    cfg = cfg_with("method.type=lora", "method.lora_target_modules=[q_proj]", "training.learning_rate=1",
                   "training.num_train_epochs=20", "training.packing=true", "training.max_length=512")
    rows = distinct(50) + distinct(5) + [conv("x", "I'm sorry, but no.")]
    found = check_config(cfg, examples=rows, eval_examples=rows[:2], audit=audit_for(512, over=300),
                         facts=LLAMA_FACTS)
    assert len(found) >= 8
    for w in found:
        d = w.to_dict()
        assert set(d) == {"code", "message", "setting", "suggested", "details"}
        assert "\n" not in w.message and w.message
        assert w.setting.split(".")[0] in doctor.SECTIONS
        json.dumps(d)


# --------------------------------------------------------------------------- wired to real data, model, template

def test_validation_warnings_on_real_data_model_and_template(tmp_path, builtin_model_dir):
    """gather_inputs really loads data, facts, the template and a token audit (no mocks)."""
    from sftwizard.core.doctor_inputs import doctor_warnings

    rows = distinct(40) + distinct(3) + [conv("Tell me", "I'm sorry, but I cannot share that.")]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RunConfig()
    cfg = cfg.replace(data=cfg.data.__class__(sources=[DataSource(path=str(data))]))
    cfg = apply_overrides(cfg, ["training.max_length=12", "method.type=lora", "method.lora_target_modules=[q_proj]"])
    found = {w["code"]: w for w in doctor_warnings(cfg)}
    assert {"max_length_below_p95", "lora_no_mlp", "train_duplicates", "refusals", "no_eval"} <= set(found)
    assert "checks_skipped" not in found
    cut = found["max_length_below_p95"]
    assert cut["details"]["rows_over"] > 0 and cut["suggested"] > 12

    fine = apply_overrides(cfg, ["training.max_length=512", "method.lora_target_modules=all-linear"])
    found = {w["code"] for w in doctor_warnings(fine)}
    assert not {"max_length_below_p95", "lora_no_mlp", "checks_skipped"} & found


def test_validation_warnings_skip_what_cannot_be_loaded(tmp_path):
    from sftwizard.core.doctor_inputs import doctor_warnings

    cfg = apply_overrides(RunConfig(), [f"model.id={tmp_path / 'nothing-here'}"])
    found = doctor_warnings(cfg)
    skipped = [w for w in found if w["code"] == "checks_skipped"]
    assert [w["setting"] for w in skipped] == ["model.id"]
    assert "no_eval" in {w["code"] for w in found}  # config-only checks still run


def test_validate_json_lists_warnings(capsys, repo_root):
    from sftwizard.cli.main import main

    rc = main(["validate", str(repo_root / "presets" / "demo.yaml"), "--json",
               "--set", "method.type=lora", "--set", "method.lora_target_modules=[q_proj,v_proj]"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["valid"] is True
    assert "lora_no_mlp" in {w["code"] for w in out["warnings"]}
    for w in out["warnings"]:
        assert {"code", "message", "setting", "suggested"} <= set(w)


# --------------------------------------------------------------------------- checkpoints vs evaluations

def test_saves_that_miss_evaluations():
    cfg = cfg_with("data.eval_fraction=0.1", "training.eval_strategy=steps", "training.eval_steps=50",
                   "training.save_steps=200")
    w = only(check_config(cfg), "saves_miss_evals")
    assert w.setting == "training.save_steps" and w.suggested == 50


@pytest.mark.parametrize("save_steps", [50, 25])
def test_saves_landing_on_every_evaluation(save_steps):
    cfg = cfg_with("data.eval_fraction=0.1", "training.eval_strategy=steps", "training.eval_steps=50",
                   f"training.save_steps={save_steps}")
    assert "saves_miss_evals" not in codes(check_config(cfg))


def test_doctor_modules_are_light():
    """The TUI imports these at start-up: no torch/transformers until a function needs them."""
    import subprocess
    import sys

    code = ("import sys, sftwizard.core.doctor, sftwizard.core.curve_doctor, sftwizard.core.cleaning, "
            "sftwizard.core.report, sftwizard.cli.doctor\n"
            "print(','.join(m for m in ('torch', 'transformers', 'trl', 'datasets')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
