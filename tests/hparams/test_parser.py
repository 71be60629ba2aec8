import pytest

from llamafactory.extras.errors import ConfigError, NotBuiltError, UserError
from llamafactory.hparams.parser import get_data_args, get_infer_args, get_train_args, read_args


def write(tmp_path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BASE = "model_name_or_path: some/model\nstage: sft\ndo_train: true\ndataset: identity\n"


def train_args(tmp_path, extra: str = "", *overrides: str):
    out = tmp_path / "out"
    cfg = write(tmp_path, BASE + f"output_dir: {out}\n" + extra)
    return get_train_args([cfg, *overrides])


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError) as err:
        train_args(tmp_path, "lora_rnak: 8\n")
    message = str(err.value)
    assert "cfg.yaml" in message and "`lora_rnak`" in message and "did you mean `lora_rank`" in message


def test_unknown_key_on_command_line(tmp_path):
    expected = r"on the command line: unknown key `learning_rat`; did you mean `learning_rate`"
    with pytest.raises(ConfigError, match=expected):
        train_args(tmp_path, "", "learning_rat=1e-4")


def test_wrong_type_names_key_value_and_type(tmp_path):
    with pytest.raises(ConfigError) as err:
        train_args(tmp_path, "lora_rank: eight\n")
    assert "`lora_rank` must be an integer, got 'eight'" in str(err.value)
    with pytest.raises(ConfigError, match="`do_train` must be a boolean"):
        train_args(tmp_path, "", "do_train=maybe")


def test_yaml_syntax_error_gives_file_and_line(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: x\nlora_rank: [8\nstage: sft\n")
    with pytest.raises(ConfigError) as err:
        read_args([cfg])
    assert f"{cfg}:3:" in str(err.value) or f"{cfg}:4:" in str(err.value)
    assert "YAML syntax error" in str(err.value)


def test_json_syntax_error_gives_file_and_line(tmp_path):
    cfg = write(tmp_path, '{\n  "model_name_or_path": "x",\n  "stage": sft\n}', "cfg.json")
    with pytest.raises(ConfigError, match=rf"{cfg}:3:\d+: JSON syntax error"):
        read_args([cfg])


def test_missing_required_keys(tmp_path):
    cfg = write(tmp_path, "stage: sft\ndo_train: true\n")
    with pytest.raises(ConfigError, match="missing required key `model_name_or_path`"):
        get_train_args([cfg])
    cfg = write(tmp_path, "model_name_or_path: m\ndo_train: true\ndataset: d\n")
    with pytest.raises(ConfigError, match="missing required key `output_dir`"):
        get_train_args([cfg])
    cfg = write(tmp_path, f"model_name_or_path: m\ndo_train: true\noutput_dir: {tmp_path / 'o'}\n")
    with pytest.raises(ConfigError, match="missing required key `dataset`"):
        get_train_args([cfg])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file `nope.yaml` not found"):
        read_args(["nope.yaml"])


def test_overrides_win_over_file_in_every_form(tmp_path):
    model, data, training, finetuning, _ = train_args(
        tmp_path, "lora_rank: 8\nlearning_rate: 1.0e-4\n", "lora_rank=16", "--learning_rate", "5e-5",
        "--plot_loss", "--cutoff_len=64")
    assert finetuning.lora_rank == 16
    assert training.learning_rate == pytest.approx(5e-5)  # PyYAML reads 5e-5 as a string; it is converted
    assert finetuning.plot_loss is True
    assert data.cutoff_len == 64
    assert model.model_name_or_path == "some/model"


def test_llamafactory_defaults(tmp_path):
    model, data, training, finetuning, generating = train_args(tmp_path)
    assert (finetuning.lora_rank, finetuning.lora_alpha_or_default(), finetuning.lora_target) == (8, 16, "all")
    assert finetuning.finetuning_type == "lora" and data.cutoff_len == 2048 and data.dataset_dir == "data"
    assert generating.temperature == 0.95 and generating.top_p == 0.7
    assert training.use_cpu is True  # no accelerator on the test machine


def test_legacy_transformers4_keys_are_mapped(tmp_path):
    _, _, training, _, _ = train_args(tmp_path, "warmup_ratio: 0.1\nevaluation_strategy: 'no'\n")
    assert training.warmup_steps == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="either `warmup_ratio` or `warmup_steps`"):
        train_args(tmp_path, "warmup_ratio: 0.1\nwarmup_steps: 5\n")


def test_planned_key_refused_only_when_changed(tmp_path):
    train_args(tmp_path, "shift_attn: false\n")  # default value: accepted
    with pytest.raises(NotBuiltError, match="`shift_attn` is not supported yet"):
        train_args(tmp_path, "shift_attn: true\n")


def test_choice_not_built_and_bad_choice(tmp_path):
    with pytest.raises(NotBuiltError, match="`infer_backend: vllm` is not supported yet; available now: huggingface"):
        train_args(tmp_path, "", "infer_backend=vllm")
    with pytest.raises(ConfigError, match="`stage` must be one of pt, sft, rm, ppo, dpo, kto, grpo; got 'orpo'"):
        train_args(tmp_path, "", "stage=orpo")
    with pytest.raises(ConfigError, match="`finetuning_type` must be one of lora, freeze, full, oft; got 'qlora'"):
        train_args(tmp_path, "", "finetuning_type=qlora")


def test_nothing_to_do(tmp_path):
    cfg = write(tmp_path, f"model_name_or_path: m\noutput_dir: {tmp_path / 'o'}\n")
    with pytest.raises(ConfigError, match="nothing to do"):
        get_train_args([cfg])


def test_output_dir_is_never_overwritten_silently(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("earlier results")
    with pytest.raises(ConfigError, match="already holds files"):
        train_args(tmp_path)
    train_args(tmp_path, "overwrite_output_dir: true\n")  # explicit consent
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")
    _, _, training, _, _ = train_args(tmp_path)
    assert training.resume_from_checkpoint == str(out / "checkpoint-7")


def test_a_folder_with_only_the_web_uis_files_holds_no_results(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "training_args.yaml").write_text("stage: sft\n")  # what `lmf webui` writes before a run starts
    (out / "running_log.txt").write_text("$ lmf train out/training_args.yaml\n")
    _, _, training, _, _ = train_args(tmp_path)
    assert training.resume_from_checkpoint is None
    for results in ("trainer_state.json", "train_results.json"):
        (out / results).write_text("{}")
        with pytest.raises(ConfigError, match="already holds files"):
            train_args(tmp_path)
        (out / results).unlink()


def test_infer_args_reject_training_keys_with_a_hint(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\ntemplate: chatml\nlearning_rate: 1e-4\n")
    with pytest.raises(ConfigError, match="`learning_rate` is a training key"):
        get_infer_args([cfg])
    cfg = write(tmp_path, "model_name_or_path: m\ntemplate: chatml\n")
    model, data, finetuning, generating = get_infer_args([cfg, "do_sample=false", "max_new_tokens=7"])
    assert data.template == "chatml" and generating.do_sample is False
    assert generating.to_dict() == {"do_sample": False, "num_beams": 1, "max_new_tokens": 7,
                                    "repetition_penalty": 1.0, "length_penalty": 1.0}


def test_null_override_and_bad_argument(tmp_path):
    cfg = write(tmp_path, "model_name_or_path: m\nadapter_name_or_path: a\n")
    model, *_ = get_infer_args([cfg, "adapter_name_or_path=null"])
    assert model.adapter_name_or_path is None
    with pytest.raises(ConfigError, match="cannot read argument `stray`"):
        read_args([cfg, "stray"])
    with pytest.raises(ConfigError, match="expected a mapping of keys to values at the top level, got a list"):
        read_args([write(tmp_path, "- a\n- b\n")])


def test_combinations_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="either `eval_dataset` or `val_size`"):
        train_args(tmp_path, "eval_dataset: identity\nval_size: 0.1\n")
    with pytest.raises(ConfigError, match="`deepspeed` and `fsdp` both shard the model"):
        train_args(tmp_path, "deepspeed: ds_z3_config.json\nfsdp: full_shard\n")
    with pytest.raises(ConfigError, match="stage ppo runs its own optimisation loop"):
        train_args(tmp_path, "deepspeed: ds_z3_config.json\nstage: ppo\n")


def test_fsdp_is_refused_on_a_cpu_with_the_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="`fsdp` needs GPUs: accelerate turns FSDP on only for GPU"):
        train_args(tmp_path, "fsdp: full_shard auto_wrap\n")


def test_deepspeed_says_what_is_missing(tmp_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(UserError, match=r"`deepspeed` needs the deepspeed package: `pip install deepspeed`"):
        train_args(tmp_path, "deepspeed: ds_z3_config.json\n")


def test_unquoted_no_means_the_strategy_no(tmp_path):
    _, _, training, _, _ = train_args(tmp_path, "save_strategy: no\neval_strategy: no\n")
    assert training.save_strategy == "no" and training.eval_strategy == "no"


@pytest.mark.parametrize("extra,message", [
    ("stage: pt\npredict_with_generate: true\n", "`predict_with_generate` only works with stage sft, not pt"),
    ("mask_history: true\ntrain_on_prompt: true\n", "`mask_history` .* contradicts `train_on_prompt`"),
    ("do_train: false\ndo_predict: true\neval_dataset: identity\n", "set `predict_with_generate: true`"),
    ("do_train: false\ndo_eval: true\n", "`do_eval: true` needs evaluation data"),
    ("finetuning_type: full\nloraplus_lr_ratio: 16\n", "`loraplus_lr_ratio` only works with `finetuning_type: lora`"),
    ("finetuning_type: freeze\nadapter_name_or_path: a\n", "`adapter_name_or_path` only works with"),
])
def test_incompatible_combinations_fail_before_loading(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        train_args(tmp_path, extra)


def test_fp16_on_cpu_falls_back_to_fp32(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        _, _, training, _, _ = train_args(tmp_path, "fp16: true\n")
    assert training.fp16 is False and training.bf16 is False and "training in fp32" in caplog.text


@pytest.mark.parametrize("native, force, expected", [
    (False, False, False),  # no bf16 instructions: fp32, many times faster there
    (False, True, True),  # force_cpu_bf16 keeps it
    (True, False, True),  # AVX512-BF16/AMX: bf16 autocast as asked
])
def test_bf16_on_a_cpu_without_bf16_instructions_trains_in_fp32(tmp_path, caplog, monkeypatch, native, force,
                                                                 expected):
    import logging

    from llamafactory.extras import env
    from llamafactory.hparams import parser

    monkeypatch.setattr(parser, "_has_accelerator", lambda: False)
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="llamafactory"):
        _, _, training, _, _ = train_args(tmp_path, "bf16: true\n" + ("force_cpu_bf16: true\n" if force else ""))
    assert training.bf16 is expected and training.use_cpu
    assert ("no bf16 instructions" in caplog.text) is (not native and not force)


def test_optimizer_choices_are_checked(tmp_path, monkeypatch):
    import importlib.util

    from llamafactory.extras.errors import UserError

    with pytest.raises(ConfigError, match="choose one optimizer"):
        train_args(tmp_path, "finetuning_type: full\nuse_galore: true\nuse_muon: true\n")
    with pytest.raises(ConfigError, match="`use_galore` trains all weights itself"):
        train_args(tmp_path, "use_galore: true\n")
    _, _, training, _, _ = train_args(tmp_path, "finetuning_type: full\nuse_galore: true\ngalore_rank: 4\n")
    assert training.optim == "galore_adamw" and training.optim_target_modules == "all-linear"
    assert "rank=4" in training.optim_args
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "badam" else real(name, *a))
    with pytest.raises(UserError, match="`use_badam` needs the badam package: `pip install badam`"):
        train_args(tmp_path, "finetuning_type: full\nuse_badam: true\n")
    with pytest.raises(ConfigError, match="quantized base model can only be trained through adapters"):
        train_args(tmp_path, "finetuning_type: full\nquantization_bit: 4\n")


def test_generation_and_loss_evaluation_are_separate_runs(tmp_path):
    with pytest.raises(ConfigError, match="run them separately"):
        train_args(tmp_path, "do_train: false\ndo_eval: true\npredict_with_generate: true\neval_dataset: identity\n")
    with pytest.raises(ConfigError, match="choose one optimizer"):
        train_args(tmp_path, "loraplus_lr_ratio: 16\nuse_adam_mini: true\n")


@pytest.mark.parametrize(("overrides", "message"), [
    (["pref_loss=ipo"], "`pref_loss` only applies to stage dpo, not sft"),
    (["kto_chosen_weight=2"], "`kto_chosen_weight` only applies to stage kto, not sft"),
    (["reward_model=rm"], "`reward_model` only applies to stage ppo or grpo, not sft"),
    (["stage=kto", "pref_loss=orpo"], "`pref_loss` only applies to stage dpo, not kto"),
    (["stage=dpo", "pref_loss=ipo", "dpo_label_smoothing=0.1"], "`dpo_label_smoothing` works with pref_loss sigmoid"),
    (["stage=dpo", "simpo_gamma=1"], "`simpo_gamma` is the margin of pref_loss simpo; pref_loss is sigmoid"),
    (["stage=dpo", "pref_loss=simpo", "ld_alpha=0.5"], "`ld_alpha` (LD-DPO) reweights summed"),
    (["stage=dpo", "pref_loss=orpo", "ref_model=m"], "pref_loss orpo needs no reference model: remove `ref_model`"),
    (["stage=dpo", "pref_loss=orpo", "pref_ftx=1"], "pref_loss orpo already includes the SFT term"),
    (["stage=dpo", "pref_beta=0"], "`pref_beta` must be positive"),
    (["stage=kto", "pref_beta=-1"], "`pref_beta` must be positive"),
    (["stage=dpo", "ref_model_adapters=a"], "`ref_model_adapters` describes `ref_model`, which is not set"),
    (["stage=dpo", "ld_alpha=2"], "`ld_alpha` weights the tokens beyond the shorter answer: between 0 and 1"),
    (["stage=dpo", "precompute_ref_logps=true", "streaming=true", "max_steps=5"],
     "`precompute_ref_logps` needs the whole dataset up front"),
    (["stage=rm", "load_best_model_at_end=true", "eval_strategy=steps", "save_strategy=steps", "val_size=0.1",
      "do_eval=true"], "`load_best_model_at_end` is not supported with stage rm"),
    (["stage=dpo", "do_predict=true", "val_size=0.1"], "`do_predict` works with stages sft"),
])
def test_stage_specific_keys_refused_elsewhere(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_args(tmp_path, "", *overrides)


def test_preference_keys_accepted_where_they_belong(tmp_path):
    *_, finetuning, _ = train_args(tmp_path, "", "stage=dpo", "pref_loss=simpo", "simpo_gamma=1",
                                   "dpo_label_smoothing=0.1")
    assert (finetuning.pref_loss, finetuning.simpo_gamma) == ("simpo", 1.0)
    *_, finetuning, _ = train_args(tmp_path, "", "stage=kto", "kto_rejected_weight=1.5", "pref_ftx=0.1")
    assert finetuning.kto_rejected_weight == 1.5


def test_data_args_leave_training_keys_to_train_but_catch_typos(tmp_path):
    cfg = write(tmp_path, BASE + "learning_rate: 1.0e-4\nlr_scheduler_type: cosine\nseed: 7\n"
                "per_device_train_batch_size: 2\ncutoff_len: 64\n")
    model_args, data_args, run_args, finetuning_args = get_data_args([cfg])
    assert (data_args.cutoff_len, run_args.seed, run_args.per_device_train_batch_size) == (64, 7, 2)
    assert finetuning_args.stage == "sft" and model_args.model_name_or_path == "some/model"
    assert run_args.local_process_index == 0 and run_args.should_save and not run_args.predict_with_generate
    assert get_data_args([cfg, "predict_with_generate=true"])[2].predict_with_generate
    with pytest.raises(ConfigError, match=r"unknown key `cutof_len`; did you mean `cutoff_len`"):
        get_data_args([cfg, "cutof_len=32"])
    with pytest.raises(ConfigError, match=r"unknown key `stge`; did you mean `stage`"):
        get_data_args([cfg, "stge=dpo"])  # a one-letter slip in a short key, which a similarity ratio misses
    with pytest.raises(ConfigError, match=r"`seed` must be"):
        get_data_args([cfg, "seed=abc"])


def test_data_args_never_import_training_arguments(tmp_path):
    """TrainingArguments pulls in peft and transformers' modelling code: seconds a data command does not need."""
    import subprocess
    import sys

    cfg = write(tmp_path, BASE + "learning_rate: 1.0e-4\n")
    code = ("import sys\nfrom llamafactory.hparams.parser import get_data_args\nget_data_args([sys.argv[1]])\n"
            "print(sorted(m for m in ('peft', 'transformers.training_args', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, cfg], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
