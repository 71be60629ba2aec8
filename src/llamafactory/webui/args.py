"""From what the page holds to what `lmf` runs: pure functions, no gradio, no torch.

A page *state* is a flat dict keyed like the config (`learning_rate`, `lora_rank`, ...) plus a few page-only keys
(`model_name`, `checkpoint_path`, `precision`, `booster`, `extra_args`, `overwrite`, `resume`). Each command has one
function that turns a state into an ordered config dict (`train_config`, `eval_config`, `export_config`,
`chat_config`); `to_yaml` and `command_preview` render it. Defaults come from the argument dataclasses, so the page
and the CLI agree; the few page defaults that differ are listed in `PAGE_DEFAULTS` with the reason.
"""

import dataclasses
import json
import os
import shlex
import time
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ..hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
from . import models
from .locales import message

# transformers' TrainingArguments defaults for the keys the page shows (a test keeps them equal to the class;
# reading the class itself would import transformers into the page).
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "num_train_epochs": 3.0,
    "max_steps": -1,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "linear",
    "max_grad_norm": 1.0,
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "logging_steps": 500,
    "save_steps": 500,
    "save_total_limit": None,
    "optim": "adamw_torch_fused",
    "neftune_noise_alpha": None,
    "report_to": "none",
    "seed": 42,
    "overwrite_output_dir": False,
}
TRAINING_TYPES: dict[str, Any] = {
    "learning_rate": float, "num_train_epochs": float, "max_steps": int, "per_device_train_batch_size": int,
    "per_device_eval_batch_size": int, "gradient_accumulation_steps": int, "lr_scheduler_type": str,
    "max_grad_norm": float, "warmup_steps": int, "weight_decay": float, "logging_steps": int, "save_steps": int,
    "save_total_limit": int | None, "optim": str, "neftune_noise_alpha": float | None, "report_to": str,
    "seed": int, "overwrite_output_dir": bool,
}

# Where the page starts somewhere else than the dataclasses, and why.
PAGE_DEFAULTS: dict[str, Any] = {
    "logging_steps": 5,  # transformers logs every 500 steps: the live loss plot would stay empty on short runs
    "plot_loss": True,  # keep training_loss.png beside the run, as the page's plot shows it
    "model_name": models.DEFAULT_MODEL,
    "model_name_or_path": models.hub_id(models.DEFAULT_MODEL),
    "template": models.default_template(models.DEFAULT_MODEL),  # the chosen model's template
}

# Page-only keys and their defaults. `precision` is chosen per machine by `precision_choices`.
PAGE_ONLY: dict[str, Any] = {
    "lang": "en",
    "model_name": models.DEFAULT_MODEL,
    "checkpoint_path": [],
    "booster": "auto",
    "precision": "fp32",
    "dataset": [],
    "extra_args": "",
    "overwrite": False,
    "resume": False,
    "predict": True,
}
BOOSTERS = ("auto", "sdpa", "fa2", "disabled", "liger_kernel")
SAVES = "saves"  # relative to where `lmf webui` runs; see files.py for the layout
NONE = "none"  # how a dropdown shows "not set" for quantization_bit, rope_scaling, export_quantization_bit

WEBUI_FILES = ("training_args.yaml", "eval_args.yaml", "export_args.yaml", "running_log.txt")


class UIError(Exception):
    """Something the person must change on the page; `key` names a message in locales.MESSAGES."""

    def __init__(self, key: str, /, **params: Any) -> None:
        self.key, self.params = key, params
        super().__init__(message(key, "en", **params))

    def text(self, lang: str) -> str:
        return message(self.key, lang, **self.params)


# ----------------------------------------------------------------------------------------------- defaults
def _dataclass_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    defaults: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    for cls in (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments):
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in defaults:
                defaults[f.name] = f.default if f.default is not dataclasses.MISSING else None
                kinds[f.name] = hints[f.name]
    return defaults, kinds


DATACLASS_DEFAULTS, _TYPES = _dataclass_fields()
DEFAULTS: dict[str, Any] = {**DATACLASS_DEFAULTS, **TRAINING_DEFAULTS}
TYPES: dict[str, Any] = {**_TYPES, **TRAINING_TYPES}


def page_defaults() -> dict[str, Any]:
    """Every key's starting value on the page."""
    return {**DEFAULTS, **PAGE_ONLY, **PAGE_DEFAULTS}


def precision_choices(device: dict[str, bool]) -> tuple[list[str], str]:
    """Precisions this machine can train in, and the default.

    `device`: {"cuda": bool, "bf16": bool} where bf16 means native bf16 (a GPU that has it, or a CPU with
    AVX512-BF16/AMX). A CPU never gets fp16 or pure_bf16, which fail or mislead there; bf16 autocast runs on any
    CPU but is only offered where it is native, as it is slower than fp32 elsewhere.
    """
    if device.get("cuda"):
        choices = ["bf16", "fp16", "fp32", "pure_bf16"] if device.get("bf16") else ["fp16", "fp32"]
        return choices, choices[0]
    if device.get("bf16"):
        return ["bf16", "fp32"], "bf16"
    return ["fp32"], "fp32"


def probe_device() -> dict[str, bool]:
    """What precision_choices needs to know; imports torch (only `lmf webui` calls it)."""
    import torch

    if torch.cuda.is_available():
        return {"cuda": True, "bf16": bool(torch.cuda.is_bf16_supported())}
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return {"cuda": False, "bf16": bool((native and native()) or (amx and amx()))}


# ----------------------------------------------------------------------------------------------- values
def _optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not type(None)]
        return members[0], len(members) < len(get_args(tp))
    return tp, False


def convert(key: str, value: Any) -> Any:
    """A page value (text boxes give strings, numbers give floats) as the config key's type."""
    tp = TYPES.get(key)
    if tp is None:
        return value
    base, optional = _optional(tp)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "" or (value == NONE and optional):
        if optional:
            return None
        raise UIError("err_required", key=key)
    try:
        if base is bool:
            flag = value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes", "on")
            # A checkbox cannot say "unset": unticked means the key's automatic default (e.g. packing: null).
            return None if optional and not flag and DEFAULTS.get(key) is None else flag
        if base is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise UIError("err_number" if base in (int, float) else "err_value", key=key, value=value) from None
    if get_origin(base) is list and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def complete(state: dict[str, Any]) -> dict[str, Any]:
    """The state with missing keys at their page default and every config key converted to its type."""
    full = {**page_defaults(), **state}
    return {key: value if key in PAGE_ONLY else convert(key, value) for key, value in full.items()}


def _changed(s: dict[str, Any], key: str) -> bool:
    return s.get(key) != DEFAULTS.get(key)


def _put_changed(cfg: dict[str, Any], s: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if _changed(s, key):
            cfg[key] = s[key]


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or [] if str(v).strip()]


# ----------------------------------------------------------------------------------------------- configs
def is_path(entry: str) -> bool:
    """A typed or loaded checkpoint path (absolute, existing, or under saves/), as opposed to a picker run name."""
    return os.path.isabs(entry) or entry.startswith((".", "~", SAVES + "/")) or os.path.exists(entry)


def resolve_checkpoint(entry: str, s: dict[str, Any]) -> str:
    """A picker entry is a run name under saves/<model>/<finetuning_type>/ (`train_...`, `train_.../checkpoint-N`);
    a path is kept as it is."""
    if is_path(entry):
        return entry
    model = models.folder_name(s.get("model_name", ""), s.get("model_name_or_path", ""))
    return os.path.join(SAVES, model, s["finetuning_type"], entry)


def model_config(s: dict[str, Any], quantize: bool = True) -> dict[str, Any]:
    """Model keys shared by every command: base model, adapters or checkpoint, template, loading options."""
    path = (s.get("model_name_or_path") or "").strip()
    if not path:
        raise UIError("err_no_model")
    cfg: dict[str, Any] = {"model_name_or_path": path}
    checkpoints = [resolve_checkpoint(c, s) for c in _names(s.get("checkpoint_path"))]
    if checkpoints:
        if s["finetuning_type"] in ("lora", "oft"):
            cfg["adapter_name_or_path"] = ",".join(checkpoints)
        elif len(checkpoints) > 1:
            raise UIError("err_one_checkpoint", type=s["finetuning_type"])
        else:
            cfg["model_name_or_path"] = checkpoints[0]  # a full or freeze run saved a whole model
    if s.get("template"):
        cfg["template"] = s["template"]
    bits = s.get("quantization_bit")
    if quantize and bits not in (None, "", NONE):
        cfg["quantization_bit"] = int(bits)
        _put_changed(cfg, s, "quantization_method")
    if s.get("rope_scaling") not in (None, "", NONE):
        cfg["rope_scaling"] = s["rope_scaling"]
    booster = s.get("booster", "auto")
    if booster == "liger_kernel":
        cfg["enable_liger_kernel"] = True
    elif booster in ("sdpa", "fa2", "disabled"):
        cfg["flash_attn"] = booster
    return cfg


METHOD_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # finetuning_type: (keys always written, keys written when changed)
    "lora": (("lora_rank", "lora_target"),
             ("lora_alpha", "lora_dropout", "loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init", "pissa_iter",
              "pissa_convert", "create_new_adapter", "additional_target")),
    "oft": (("oft_block_size", "oft_target"), ("oft_rank", "module_dropout", "create_new_adapter")),
    "freeze": (("freeze_trainable_layers", "freeze_trainable_modules"), ("freeze_extra_modules", "use_llama_pro")),
    "full": ((), ()),
}
STAGE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dpo": (("pref_beta", "pref_loss"), ("pref_ftx", "dpo_label_smoothing", "simpo_gamma")),
    "kto": (("pref_beta",), ("pref_ftx", "kto_chosen_weight", "kto_rejected_weight")),
    "ppo": (("reward_model",), ("reward_model_type", "ppo_epochs", "ppo_buffer_size", "ppo_target", "ppo_score_norm",
                                "ppo_whiten_rewards")),
    "grpo": ((), ("reward_model", "reward_model_type", "reward_funcs", "num_generations", "max_completion_length",
                  "grpo_beta")),
}
OPTIMIZER_KEYS: dict[str, tuple[str, ...]] = {
    "use_galore": ("galore_rank", "galore_update_interval", "galore_scale", "galore_target", "galore_layerwise"),
    "use_apollo": ("apollo_rank", "apollo_update_interval", "apollo_scale", "apollo_target", "apollo_layerwise"),
    "use_badam": ("badam_mode", "badam_switch_mode", "badam_switch_interval"),
}
DATA_OPTIONS = ("max_samples", "val_size", "packing", "neat_packing", "train_on_prompt", "mask_history",
                "enable_thinking", "tool_format", "default_system")
TRAIN_OPTIONS = ("max_steps", "warmup_steps", "weight_decay", "optim", "neftune_noise_alpha", "save_total_limit",
                 "seed", "resize_vocab", "disable_gradient_checkpointing", "compute_accuracy", "report_to")
MULTIMODAL_KEYS = ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model", "image_max_pixels",
                   "image_min_pixels", "video_max_pixels", "video_min_pixels")
PRECISION_FLAGS = {"bf16": {"bf16": True}, "fp16": {"fp16": True}, "pure_bf16": {"pure_bf16": True}, "fp32": {}}


def extra_args(text: str) -> dict[str, Any]:
    """The free-form `extra arguments` box: a JSON object of more config keys (they win)."""
    if not (text or "").strip():
        return {}
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as err:
        raise UIError("err_extra_args", reason=err.msg) from None
    if not isinstance(extra, dict):
        raise UIError("err_extra_args", reason="not a JSON object")
    return extra


def _datasets(s: dict[str, Any]) -> str:
    names = _names(s.get("dataset"))
    if not names:
        raise UIError("err_no_dataset")
    return ",".join(names)


def _output_dir(s: dict[str, Any]) -> str:
    out = (s.get("output_dir") or "").strip()
    if not out:
        raise UIError("err_no_output_dir")
    return out


def train_config(state: dict[str, Any], start: bool = False) -> dict[str, Any]:
    """The YAML of the Train tab (training_args.yaml), as an ordered dict.

    `start`: the config of the page's own Start (and its command preview), which alone may carry
    `overwrite_output_dir: true`, when the Overwrite box is ticked. Saved arguments never do, so running a saved
    file from a terminal cannot overwrite a finished run.
    """
    s = complete(state)
    cfg = model_config(s)
    ftype, stage = s["finetuning_type"], s["stage"]
    cfg.update(stage=stage, do_train=True, finetuning_type=ftype)
    always, optional = METHOD_KEYS[ftype]
    cfg.update({key: s[key] for key in always})
    _put_changed(cfg, s, *optional)
    if stage in STAGE_KEYS:
        always, optional = STAGE_KEYS[stage]
        cfg.update({key: s[key] for key in always if s[key] is not None})
        _put_changed(cfg, s, *optional)
    for switch, keys in OPTIMIZER_KEYS.items():
        if s.get(switch):
            cfg[switch] = True
            cfg.update({key: s[key] for key in keys})
    _put_changed(cfg, s, *MULTIMODAL_KEYS)

    cfg.update(dataset_dir=s["dataset_dir"], dataset=_datasets(s), cutoff_len=s["cutoff_len"])
    _put_changed(cfg, s, *DATA_OPTIONS)

    cfg.update(learning_rate=s["learning_rate"], num_train_epochs=s["num_train_epochs"],
               per_device_train_batch_size=s["per_device_train_batch_size"],
               gradient_accumulation_steps=s["gradient_accumulation_steps"],
               lr_scheduler_type=s["lr_scheduler_type"], max_grad_norm=s["max_grad_norm"])
    _put_changed(cfg, s, *TRAIN_OPTIONS)
    cfg.update(PRECISION_FLAGS[s["precision"]])
    cfg.update(logging_steps=s["logging_steps"], save_steps=s["save_steps"])
    if s["val_size"] > 0:
        cfg.update(eval_strategy="steps", eval_steps=s["save_steps"],
                   per_device_eval_batch_size=s["per_device_train_batch_size"])

    cfg.update(output_dir=_output_dir(s), plot_loss=s["plot_loss"])
    if start and s["overwrite"] and not s["resume"]:
        # The earlier run's files have been moved into previous_<time>/ (runner.set_aside); that folder stays.
        # A fresh folder needs nothing: `lmf train` accepts one holding only training_args.yaml and running_log.txt.
        cfg["overwrite_output_dir"] = True
    cfg.update(extra_args(s["extra_args"]))
    return cfg


def eval_config(state: dict[str, Any]) -> dict[str, Any]:
    """Evaluate (losses, perplexity) or predict (generated answers, BLEU/ROUGE) with `lmf train`, stage sft."""
    s = complete(state)
    cfg = model_config(s)
    cfg.update(stage="sft", finetuning_type=s["finetuning_type"])
    if s["predict"]:
        cfg.update(do_predict=True, predict_with_generate=True)
    else:
        cfg["do_eval"] = True
    cfg.update(dataset_dir=s["dataset_dir"], eval_dataset=_datasets(s), cutoff_len=s["cutoff_len"])
    _put_changed(cfg, s, "max_samples")
    cfg["per_device_eval_batch_size"] = s["per_device_eval_batch_size"]
    if s["predict"]:
        cfg.update(max_new_tokens=s["max_new_tokens"], top_p=s["top_p"], temperature=s["temperature"])
        if s["temperature"] <= 0:
            cfg.update(do_sample=False, temperature=DEFAULTS["temperature"])
    cfg["output_dir"] = _output_dir(s)
    cfg.update(extra_args(s["extra_args"]))
    return cfg


def export_config(state: dict[str, Any]) -> dict[str, Any]:
    """`lmf export`: merge the chosen adapters into the base and write safetensors shards or a GGUF file."""
    s = complete(state)
    cfg = model_config(s, quantize=False)  # export refuses a base quantized on load
    cfg["finetuning_type"] = s["finetuning_type"]
    export_dir = (s.get("export_dir") or "").strip()
    if not export_dir:
        raise UIError("err_no_export_dir")
    cfg.update(export_dir=export_dir, export_format=s["export_format"])
    if s["export_format"] == "gguf":
        cfg["export_gguf_type"] = s["export_gguf_type"]
    else:
        cfg["export_size"] = s["export_size"]
        _put_changed(cfg, s, "export_legacy_format")
        bits = s.get("export_quantization_bit")
        if bits not in (None, "", NONE):
            cfg["export_quantization_bit"] = int(bits)
            cfg["export_quantization_dataset"] = s.get("export_quantization_dataset")
    _put_changed(cfg, s, "export_device", "infer_dtype", "export_hub_model_id")
    return cfg


def chat_config(state: dict[str, Any]) -> dict[str, Any]:
    """ChatModel keys for the Chat tab (the same keys `lmf chat cfg.yaml` reads)."""
    s = complete(state)
    cfg = model_config(s)
    cfg["finetuning_type"] = s["finetuning_type"]
    _put_changed(cfg, s, "infer_dtype")
    return cfg


# ----------------------------------------------------------------------------------------------- text
def to_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    text = str(value)
    if isinstance(value, str) and yaml.safe_load(text) != value:
        return json.dumps(value, ensure_ascii=False)  # e.g. "true" or "a: b": JSON quoting keeps it a string
    return text


def command_preview(command: str, cfg: dict[str, Any]) -> str:
    """The same run as one shell command with `--key value` overrides (no file needed)."""
    parts = [f"--{key} {shlex.quote(_cli_value(value))}" for key, value in cfg.items()]
    return " \\\n    ".join([f"lmf {command}", *parts])


def config_to_state(cfg: dict[str, Any], page_keys: set[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Load saved arguments back onto the page: a page state, and the keys that went to `extra arguments`.

    `page_keys`: the config keys the page has a field for (default: every declared key); the others are kept
    in the `extra_args` JSON box so that nothing loaded is dropped.
    """
    cfg = dict(cfg)
    known = (set(DEFAULTS) if page_keys is None else set(page_keys)) | {"output_dir"}
    state: dict[str, Any] = {}
    derived = ("do_train", "overwrite_output_dir", "eval_strategy", "eval_steps", "per_device_eval_batch_size",
               "do_eval", "do_predict", "predict_with_generate")
    for key in derived:
        cfg.pop(key, None)
    path = str(cfg.pop("model_name_or_path", "") or "")
    adapters = cfg.pop("adapter_name_or_path", None)
    state["model_name_or_path"] = path
    state["model_name"] = models.find_by_path(path) or models.CUSTOM
    state["checkpoint_path"] = _names(adapters) if adapters else []
    flags = {name: bool(cfg.pop(name, False)) for name in ("bf16", "fp16", "pure_bf16")}
    state["precision"] = next((name for name in ("pure_bf16", "bf16", "fp16") if flags[name]), "fp32")
    if cfg.pop("enable_liger_kernel", False):
        state["booster"] = "liger_kernel"
    else:
        attn = cfg.pop("flash_attn", "auto")
        state["booster"] = attn if attn in BOOSTERS else "auto"
    for key in ("quantization_bit", "rope_scaling"):
        value = cfg.pop(key, None)
        state[key] = NONE if value is None else str(value)
    if "dataset" in cfg:
        state["dataset"] = _names(cfg.pop("dataset"))
    for switch in OPTIMIZER_KEYS:
        state[switch] = bool(cfg.pop(switch, False))
    extra: dict[str, Any] = {}
    if cfg.get("plot_loss") is True and "plot_loss" not in known:
        cfg.pop("plot_loss")  # the page always writes it
    for key, value in cfg.items():
        if key in known:
            state[key] = value
        else:
            extra[key] = value
    state["extra_args"] = json.dumps(extra, ensure_ascii=False) if extra else ""
    return state, sorted(extra)


def load_config_text(text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UIError("err_load_args", reason=str(err).splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UIError("err_load_args", reason="not a mapping of keys to values")
    return data


# ----------------------------------------------------------------------------------------------- paths


def timestamp(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(seconds))


def run_dir(model_name: str, model_path: str, finetuning_type: str, prefix: str, when: str | None = None,
            root: str = SAVES) -> str:
    """`saves/<model>/<finetuning_type>/<prefix>_<timestamp>`: where a run started from the page keeps its files."""
    return os.path.join(root, models.folder_name(model_name, model_path), finetuning_type,
                        f"{prefix}_{when or timestamp()}")


def next_run_dir(model_name: str, model_path: str, finetuning_type: str, prefix: str, used: str = "",
                 root: str = SAVES) -> str:
    """A new `run_dir` for the next run: neither `used` (the run just started) nor an existing folder."""
    now = time.time()
    for ahead in range(600):
        path = run_dir(model_name, model_path, finetuning_type, prefix, timestamp(now + ahead), root)
        if os.path.normpath(path) != os.path.normpath(used or ".") and not os.path.exists(path):
            return path
    return path
