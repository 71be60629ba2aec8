"""Page state -> config -> YAML / command: the web UI's argument assembly, checked exactly."""

import dataclasses
import json

import pytest
import yaml

from llamafactory.webui import args
from llamafactory.webui.args import (
    UIError,
    chat_config,
    command_preview,
    config_to_state,
    eval_config,
    export_config,
    precision_choices,
    to_yaml,
    train_config,
)

STATE = {
    "model_name": "Custom", "model_name_or_path": "/models/tiny", "template": "chatml",
    "dataset": ["identity", "alpaca_en_demo"], "output_dir": "saves/tiny/lora/train_1", "precision": "bf16",
    "max_steps": "5", "logging_steps": 1, "max_samples": "16", "cutoff_len": 128, "per_device_train_batch_size": 2,
    "learning_rate": "1e-3", "checkpoint_path": ["saves/tiny/lora/train_0"], "lora_rank": 16, "lora_dropout": 0.05,
    "extra_args": '{"seed": 7}',
}

YAML = """\
model_name_or_path: /models/tiny
adapter_name_or_path: saves/tiny/lora/train_0
template: chatml
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: all
lora_dropout: 0.05
dataset_dir: data
dataset: identity,alpaca_en_demo
cutoff_len: 128
max_samples: 16
learning_rate: 0.001
num_train_epochs: 3.0
per_device_train_batch_size: 2
gradient_accumulation_steps: 1
lr_scheduler_type: linear
max_grad_norm: 1.0
max_steps: 5
bf16: true
logging_steps: 1
save_steps: 500
output_dir: saves/tiny/lora/train_1
plot_loss: true
seed: 7
"""


def test_a_page_state_becomes_this_exact_yaml():
    assert to_yaml(train_config(STATE)) == YAML


def test_the_command_preview_is_the_same_run_as_overrides():
    preview = command_preview("train", train_config(STATE))
    lines = preview.split(" \\\n    ")
    assert lines[:4] == ["lmf train", "--model_name_or_path /models/tiny",
                         "--adapter_name_or_path saves/tiny/lora/train_0", "--template chatml"]
    assert "--dataset identity,alpaca_en_demo" in lines and "--bf16 true" in lines and lines[-1] == "--seed 7"
    assert len(lines) == 1 + len(yaml.safe_load(YAML))
    tricky = command_preview("train", {"default_system": "a: b # c", "dataset": "true", "reward_funcs": ["x", "y"]})
    assert tricky == ("lmf train \\\n    --default_system '\"a: b # c\"' \\\n    --dataset '\"true\"' \\\n"
                      "    --reward_funcs x,y")


def test_the_yaml_is_accepted_by_lmf_train(tmp_path):
    from llamafactory.hparams.parser import get_train_args

    path = tmp_path / "training_args.yaml"
    path.write_text(to_yaml(train_config({**STATE, "checkpoint_path": [], "precision": "fp32"})))
    model_args, data_args, training_args, finetuning_args, _ = get_train_args([str(path)], dry_run=True)
    assert (finetuning_args.lora_rank, data_args.dataset, training_args.max_steps) == (16, "identity,alpaca_en_demo", 5)
    assert training_args.learning_rate == 1e-3 and training_args.logging_steps == 1 and training_args.seed == 7


def test_only_the_pages_own_start_with_overwrite_ticked_writes_overwrite_output_dir():
    # Saved arguments never carry it, even with the box ticked: running the file later from a terminal must not
    # overwrite a finished run in that folder.
    assert "overwrite_output_dir" not in train_config({**STATE, "overwrite": True})
    assert "overwrite_output_dir" not in train_config(STATE, start=True)  # a fresh folder needs no consent
    assert train_config({**STATE, "overwrite": True}, start=True)["overwrite_output_dir"] is True
    assert "overwrite_output_dir" not in train_config({**STATE, "overwrite": True, "resume": True}, start=True)


def _lmf_train_accepts(tmp_path, cfg, files):
    """Whether `lmf train` (its argument check, not a dry run) accepts `cfg` with `files` in its output folder."""
    from llamafactory.extras.errors import ConfigError
    from llamafactory.hparams.parser import get_train_args

    out = tmp_path / "out"
    out.mkdir(parents=True)
    for name in files:
        (out / name).write_text("{}")
    path = out / "training_args.yaml"
    path.write_text(to_yaml({**cfg, "output_dir": str(out)}))
    try:
        get_train_args([str(path)])
    except ConfigError as err:
        assert "already holds files" in str(err)
        return False
    return True


def test_lmf_train_accepts_a_fresh_page_folder_but_protects_results(tmp_path):
    cfg = train_config({**STATE, "checkpoint_path": [], "precision": "fp32"}, start=True)
    assert "overwrite_output_dir" not in cfg
    # A fresh Start: the page has put the arguments file and its log into the folder; that is no result.
    assert _lmf_train_accepts(tmp_path, cfg, ["running_log.txt"])
    for results in ("trainer_state.json", "train_results.json"):
        assert not _lmf_train_accepts(tmp_path / results, cfg, ["running_log.txt", results])


def test_page_defaults_are_the_dataclass_defaults_except_those_listed():
    from llamafactory.hparams.training_args import TrainingArguments

    training = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    for key, value in args.TRAINING_DEFAULTS.items():
        assert training[key] == value, key
    defaults = args.page_defaults()
    for key, value in args.DEFAULTS.items():
        if key not in args.PAGE_DEFAULTS and key not in args.PAGE_ONLY:
            assert defaults[key] == value, key
    assert set(args.PAGE_ONLY) & set(args.DEFAULTS) == {"dataset"}  # a list on the page, a comma string in YAML
    assert set(args.PAGE_DEFAULTS) - set(args.DEFAULTS) <= {"model_name"}
    assert defaults["model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and defaults["template"] == "smollm2"


def test_only_the_chosen_method_and_stage_write_their_keys():
    base = {**STATE, "checkpoint_path": [], "extra_args": ""}
    lora = train_config(base)
    assert "freeze_trainable_layers" not in lora and "pref_beta" not in lora and "use_galore" not in lora
    full = train_config({**base, "finetuning_type": "full", "checkpoint_path": ["saves/tiny/full/train_0"],
                         "use_galore": True, "galore_rank": 4})
    assert full["model_name_or_path"] == "saves/tiny/full/train_0" and "adapter_name_or_path" not in full
    assert not any(k.startswith("lora_") for k in full)
    assert {k: full[k] for k in ("use_galore", "galore_rank", "galore_target")} == {
        "use_galore": True, "galore_rank": 4, "galore_target": "all"}
    freeze = train_config({**base, "finetuning_type": "freeze", "freeze_trainable_layers": -3})
    assert (freeze["freeze_trainable_layers"], freeze["freeze_trainable_modules"]) == (-3, "all")
    dpo = train_config({**base, "stage": "dpo", "pref_beta": 0.2})
    assert (dpo["pref_beta"], dpo["pref_loss"]) == (0.2, "sigmoid") and "pref_ftx" not in dpo
    ppo = train_config({**base, "stage": "ppo", "reward_model": "saves/tiny/lora/rm"})
    assert ppo["reward_model"] == "saves/tiny/lora/rm"
    stacked = train_config({**base, "checkpoint_path": ["a", "b"]})
    assert stacked["adapter_name_or_path"] == "saves/tiny/lora/a,saves/tiny/lora/b"
    resumed = train_config({**base, "resume": True}, start=True)
    assert "overwrite_output_dir" not in resumed
    held_out = train_config({**base, "val_size": 0.1, "save_steps": 20})
    assert {k: held_out[k] for k in ("val_size", "eval_strategy", "eval_steps", "per_device_eval_batch_size")} == {
        "val_size": 0.1, "eval_strategy": "steps", "eval_steps": 20, "per_device_eval_batch_size": 2}
    assert "packing" not in train_config({**base, "packing": False})  # unticked = automatic, not `false`
    assert train_config({**base, "packing": True})["packing"] is True
    booster = train_config({**base, "booster": "liger_kernel", "quantization_bit": "4", "rope_scaling": "linear"})
    assert (booster["enable_liger_kernel"], booster["quantization_bit"], booster["rope_scaling"]) == (True, 4, "linear")
    assert "flash_attn" not in booster and train_config({**base, "booster": "sdpa"})["flash_attn"] == "sdpa"


@pytest.mark.parametrize("change, key", [
    ({"dataset": []}, "err_no_dataset"),
    ({"model_name_or_path": " "}, "err_no_model"),
    ({"output_dir": ""}, "err_no_output_dir"),
    ({"learning_rate": "fast"}, "err_number"),
    ({"cutoff_len": "12.5"}, "err_number"),
    ({"num_train_epochs": ""}, "err_required"),
    ({"extra_args": "{seed: 7"}, "err_extra_args"),
    ({"extra_args": "[1]"}, "err_extra_args"),
    ({"finetuning_type": "full", "checkpoint_path": ["a", "b"]}, "err_one_checkpoint"),
])
def test_mistakes_are_named_in_the_page_language(change, key):
    with pytest.raises(UIError) as info:
        train_config({**STATE, **change})
    assert info.value.key == key
    assert info.value.text("zh") != info.value.text("en")


def test_precision_choices_never_offer_gpu_only_flags_on_a_cpu():
    assert precision_choices({"cuda": False, "bf16": False}) == (["fp32"], "fp32")
    assert precision_choices({"cuda": False, "bf16": True}) == (["bf16", "fp32"], "bf16")
    assert precision_choices({"cuda": True, "bf16": True}) == (["bf16", "fp16", "fp32", "pure_bf16"], "bf16")
    assert precision_choices({"cuda": True, "bf16": False}) == (["fp16", "fp32"], "fp16")
    assert {k: v for k, v in train_config({**STATE, "precision": "fp32"}).items() if "16" in k} == {}


def test_saved_arguments_load_back_onto_the_page():
    cfg = yaml.safe_load(YAML)
    cfg.update(flash_attn="sdpa", quantization_bit=4, my_new_key=[1, 2])
    state, extra = config_to_state(cfg)
    assert extra == ["my_new_key"]
    assert json.loads(state["extra_args"]) == {"my_new_key": [1, 2]}
    assert (state["model_name"], state["checkpoint_path"], state["precision"], state["booster"]) == (
        "Custom", ["saves/tiny/lora/train_0"], "bf16", "sdpa")
    assert state["dataset"] == ["identity", "alpaca_en_demo"] and state["quantization_bit"] == "4"
    assert "overwrite_output_dir" not in state and "do_train" not in state
    again = train_config(state)
    assert {k: v for k, v in again.items() if k != "my_new_key"} == {
        **{k: v for k, v in cfg.items() if k != "my_new_key"}}
    assert config_to_state({"model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})[0]["model_name"] == (
        "SmolLM2-135M-Instruct")
    _, extra = config_to_state({"model_name_or_path": "m", "lora_rank": 8, "seed": 3}, page_keys={"lora_rank"})
    assert extra == ["seed"]  # no field on the page: kept, not dropped


def test_eval_export_and_chat_configs():
    s = {**STATE, "extra_args": "", "output_dir": "saves/tiny/lora/eval_1", "dataset": ["identity"]}
    predict = eval_config({**s, "predict": True, "max_new_tokens": 32, "temperature": 0})
    assert predict == {
        "model_name_or_path": "/models/tiny", "adapter_name_or_path": "saves/tiny/lora/train_0", "template": "chatml",
        "stage": "sft", "finetuning_type": "lora", "do_predict": True, "predict_with_generate": True,
        "dataset_dir": "data", "eval_dataset": "identity", "cutoff_len": 128, "max_samples": 16,
        "per_device_eval_batch_size": 8, "max_new_tokens": 32, "top_p": 0.7, "temperature": 0.95, "do_sample": False,
        "output_dir": "saves/tiny/lora/eval_1"}
    evaluate = eval_config({**s, "predict": False})
    assert evaluate["do_eval"] is True and "do_predict" not in evaluate and "max_new_tokens" not in evaluate
    gguf = export_config({**s, "export_dir": "out/tiny", "export_format": "gguf", "export_gguf_type": "q8_0",
                          "quantization_bit": "4"})
    assert gguf == {"model_name_or_path": "/models/tiny", "adapter_name_or_path": "saves/tiny/lora/train_0",
                    "template": "chatml", "finetuning_type": "lora", "export_dir": "out/tiny", "export_format": "gguf",
                    "export_gguf_type": "q8_0"}
    shards = export_config({**s, "export_dir": "out/tiny", "export_size": 1, "export_device": "auto"})
    assert (shards["export_size"], shards["export_device"], shards["export_format"]) == (1, "auto", "safetensors")
    with pytest.raises(UIError, match="export folder"):
        export_config(s)
    assert chat_config({**s, "infer_dtype": "float32"}) == {
        "model_name_or_path": "/models/tiny", "adapter_name_or_path": "saves/tiny/lora/train_0", "template": "chatml",
        "finetuning_type": "lora", "infer_dtype": "float32"}


def test_run_folders_follow_the_saves_layout():
    assert args.run_dir("SmolLM2-135M-Instruct", "x", "lora", "train", when="2025-01-02-03-04-05") == (
        "saves/SmolLM2-135M-Instruct/lora/train_2025-01-02-03-04-05")
    assert args.run_dir("Custom", "/tmp/my model/", "full", "eval", when="t") == "saves/my-model/full/eval_t"


def test_picker_entries_are_run_names_under_the_models_saves_folder(tmp_path):
    s = {**STATE, "extra_args": "", "checkpoint_path": ["train_1", "train_2/checkpoint-4", str(tmp_path)]}
    assert train_config(s)["adapter_name_or_path"] == (
        f"saves/tiny/lora/train_1,saves/tiny/lora/train_2/checkpoint-4,{tmp_path}")
    named = train_config({**s, "model_name": "Qwen3-8B", "checkpoint_path": ["train_1"]})
    assert named["adapter_name_or_path"] == "saves/Qwen3-8B/lora/train_1"
