"""Read a run's configuration: a YAML/JSON file, then `key=value` or `--key value` overrides.

Every error names the file or override, the key and what is expected, in one line, so a user can fix a
config without reading a traceback.
"""

import contextlib
import dataclasses
import difflib
import json
import os
import types
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..extras import env
from ..extras.constants import RUNNING_LOG, TRAINING_ARGS_FILE
from ..extras.errors import ConfigError, NotBuiltError, UserError
from ..extras.logging import get_logger
from .data_args import DataArguments
from .evaluation_args import EvaluationArguments
from .finetuning_args import FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments

logger = get_logger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
OVERRIDE = "command line"

# Values of choice keys that work today; the others are declared and refused with a clear message.
BUILT_CHOICES = {
    "stage": ("pt", "sft", "rm", "dpo", "kto", "ppo", "grpo"),
    "finetuning_type": ("lora", "freeze", "full", "oft"),
    "infer_backend": ("huggingface",),
}


# ----------------------------------------------------------------------------------------------- reading
def load_config_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file `{path}` not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}:{err.colno}: JSON syntax error: {err.msg}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got a "
                          f"{type(data).__name__}")
    return data


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def read_args(argv: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the config file and the overrides; also return where each key was set."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    items = list(argv)
    if items and items[0].endswith(CONFIG_SUFFIXES) and "=" not in items[0]:
        path = items.pop(0)
        for key, value in load_config_file(path).items():
            values[str(key)] = value
            origin[str(key)] = path
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--"):
            body = item[2:]
            if "=" in body:
                key, raw = body.split("=", 1)
            elif i + 1 < len(items) and not items[i + 1].startswith("--"):
                key, raw = body, items[i + 1]
                i += 1
            else:
                key, raw = body, "true"
            key = key.replace("-", "_")
        elif "=" in item:
            key, raw = item.split("=", 1)
        elif item.endswith(CONFIG_SUFFIXES):
            raise ConfigError(f"`{item}`: the config file must come first, before any overrides")
        else:
            raise ConfigError(f"cannot read argument `{item}`: expected a config file (.yaml, .yml, .json), "
                              "key=value or --key value")
        values[key.strip()] = _parse_scalar(raw)
        origin[key.strip()] = OVERRIDE
        i += 1
    return values, origin


# ----------------------------------------------------------------------------------------------- types
class _Mismatch(Exception):
    pass


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(m) for m in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(e.value) for e in tp)
    if origin in (list, dict):
        return {list: "a list", dict: "a mapping"}[origin]
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        members = get_args(tp)
        if value is None:
            if type(None) in members:
                return None
            raise _Mismatch
        members = [m for m in members if m is not type(None)]
        for member in members:  # an exact match wins over a conversion
            if isinstance(member, type) and type(value) is member:
                return value
        for member in members:
            try:
                return _convert(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if value is None:
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    number = float(value)
                except ValueError as err:
                    raise _Mismatch from err
                if number.is_integer():
                    return int(number)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # PyYAML reads `5e-5` as a string
            except ValueError as err:
                raise _Mismatch from err
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, Enum):
        if value is False and "no" in {e.value for e in tp}:
            value = "no"  # YAML 1.1 reads an unquoted `no` as false: `save_strategy: no` means "no"
        try:
            return tp(value)
        except ValueError as err:
            raise _Mismatch from err
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _Mismatch
    if tp is list or origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        inner = get_args(tp)
        return [_convert(v, inner[0]) for v in value] if inner else list(value)
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = _parse_scalar(value)
            if isinstance(parsed, dict):
                return parsed
        raise _Mismatch
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            try:
                return tp(value)
            except Exception as err:  # noqa: BLE001 - any failure means "not this type"
                raise _Mismatch from err
        raise _Mismatch
    return value


# ----------------------------------------------------------------------------------------------- parsing
def _where(origin: dict[str, str], key: str) -> str:
    source = origin.get(key, OVERRIDE)
    return "on the command line" if source == OVERRIDE else f"in {source}"


def parse_dataclasses(values: dict[str, Any], origin: dict[str, str], classes: list[type],
                      foreign: dict[str, str] | None = None,
                      built_choices: dict[str, tuple[str, ...]] = BUILT_CHOICES) -> list[Any]:
    """Check every key against the dataclasses' fields and types, then build one instance of each.

    `foreign` maps keys that belong to another command to a hint (e.g. training keys given to chat).
    """
    fields: dict[str, list[tuple[type, dataclasses.Field, Any]]] = {}
    for cls in classes:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                fields.setdefault(f.name, []).append((cls, f, hints[f.name]))

    kwargs: dict[type, dict[str, Any]] = {cls: {} for cls in classes}
    for key, value in values.items():
        if key not in fields:
            if foreign and key in foreign:
                raise ConfigError(f"{_where(origin, key)}: `{key}` {foreign[key]}")
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else "; see `lmf help` for the documentation"
            raise ConfigError(f"{_where(origin, key)}: unknown key `{key}`{hint}")
        for cls, f, tp in fields[key]:
            try:
                converted = _convert(value, tp)
            except _Mismatch:
                raise ConfigError(f"{_where(origin, key)}: `{key}` must be {describe(tp)}, got {value!r}") from None
            choices = f.metadata.get("choices")
            if choices is not None and converted is not None and converted not in choices:
                raise ConfigError(f"{_where(origin, key)}: `{key}` must be one of "
                                  f"{', '.join(map(str, choices))}; got {converted!r}")
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.metadata.get("planned") and converted != default:
                raise NotBuiltError(f"{_where(origin, key)}: `{key}` is not supported yet in llamafactory "
                                    f"(accepted only at its default, {default!r}); remove it to continue")
            built = built_choices.get(key)
            if built is not None and converted not in built:
                raise NotBuiltError(f"{_where(origin, key)}: `{key}: {converted}` is not supported yet; "
                                    f"available now: {', '.join(built)}")
            kwargs[cls][key] = converted

    instances = []
    for cls in classes:
        try:
            instances.append(cls(**kwargs[cls]))
        except (ValueError, TypeError, ImportError, RuntimeError) as err:
            message = " ".join(str(err).split())
            raise ConfigError(f"invalid configuration: {message}") from err
    return instances


def _require(value: Any, key: str, what: str) -> None:
    if value is None or value == "":
        raise ConfigError(f"missing required key `{key}` ({what})")


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    for name in ("xpu", "npu"):  # torch.npu exists once torch_npu (Ascend) is imported
        backend = getattr(torch, name, None)
        if backend is not None and backend.is_available():
            return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


TrainArgs = tuple[ModelArguments, DataArguments, Any, FinetuningArguments, GeneratingArguments]


def get_train_args(argv: list[str], dry_run: bool = False) -> TrainArgs:
    """Arguments of `lmf train`: model, data, training (transformers), finetuning and generating."""
    from transformers.trainer_utils import get_last_checkpoint

    from .training_args import TrainingArguments

    values, origin = read_args(argv)
    on_cpu = not _has_accelerator()
    _check_sharding(values, origin, on_cpu)  # checked first: transformers would fail on these obscurely
    if on_cpu:
        # transformers needs use_cpu for bf16 autocast on CPU and for a correct world size under torchrun.
        values.setdefault("use_cpu", True)
        if values.get("fp16") is True:
            logger.warning("fp16 mixed precision needs a GPU; training in fp32 on this CPU instead "
                           "(bf16: true is faster on CPUs with bf16 instructions).")
            values["fp16"] = False
        if values.get("bf16") is True and not values.get("force_cpu_bf16") and not env.cpu_has_fast_bf16():
            # Without AVX512-BF16/AMX, bf16 matmuls are emulated: on an AVX2 CPU training ran 25x slower than in
            # fp32 (benchmarks/sft_speed.py). Weights that would have loaded in bf16 load in fp32 instead.
            logger.warning("bf16: true, but this CPU has no bf16 instructions (AVX512-BF16 or AMX), where bf16 "
                           "runs many times slower than fp32: training in fp32 instead (frozen weights take twice "
                           "the memory of bf16). Set force_cpu_bf16: true to keep bf16.")
            values["bf16"] = False
    model_args, data_args, training_args, finetuning_args, generating_args = parse_dataclasses(
        values, origin, [ModelArguments, DataArguments, TrainingArguments, FinetuningArguments,
                         GeneratingArguments])
    if on_cpu and training_args.bf16:
        logger.info("bf16 autocast on CPU (%s).", "native bf16 instructions" if env.cpu_has_fast_bf16() else
                    "no native bf16 instructions, kept by force_cpu_bf16: expect it to be many times slower")
    _require(model_args.model_name_or_path, "model_name_or_path", "the base model: a hub id, a local folder or "
             "a .gguf file")
    if "output_dir" not in values:
        raise ConfigError("missing required key `output_dir` (where checkpoints, logs and the model are saved)")
    check_train_args(model_args, data_args, training_args, finetuning_args)
    model_args.model_max_length = data_args.cutoff_len
    _check_optimizers(training_args, finetuning_args)
    if model_args.enable_liger_kernel:
        _enable_liger(training_args)
    if training_args.world_size > 1 and training_args.ddp_find_unused_parameters is None:
        # transformers only turns DDP's unused-parameter search off for plain models; on a peft or value-head
        # model it stays on, and with (reentrant) gradient checkpointing that marks weights ready twice.
        training_args.ddp_find_unused_parameters = False
    if not dry_run:  # a dry run writes nothing, so the output folder may hold anything
        _protect_output_dir(training_args, get_last_checkpoint)
    return model_args, data_args, training_args, finetuning_args, generating_args


def _check_sharding(values: dict[str, Any], origin: dict[str, str], on_cpu: bool) -> None:
    """DeepSpeed and FSDP: the combinations that cannot work, refused before any process is launched."""
    import importlib.util

    deepspeed, fsdp, stage = values.get("deepspeed"), values.get("fsdp"), values.get("stage", "sft")
    if deepspeed and fsdp:
        raise ConfigError(f"{_where(origin, 'deepspeed')}: `deepspeed` and `fsdp` both shard the model across "
                          "processes; choose one")
    if deepspeed:
        if stage == "ppo":
            raise ConfigError("stage ppo runs its own optimisation loop, which DeepSpeed's engine does not wrap: "
                              "remove `deepspeed` (plain multi-process data parallelism works with ppo)")
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("`deepspeed` needs the deepspeed package: `pip install deepspeed`")
        if on_cpu:
            raise UserError("`deepspeed` needs a GPU in llamafactory (DeepSpeed's CPU accelerator is not supported); "
                            "on a CPU use FORCE_TORCHRUN=1 for data parallelism")
        if isinstance(deepspeed, str) and not os.path.isfile(deepspeed):
            raise ConfigError(f"{_where(origin, 'deepspeed')}: DeepSpeed config file `{deepspeed}` not found")
    if fsdp:
        if on_cpu:
            raise UserError("`fsdp` needs GPUs: accelerate turns FSDP on only for GPU (or other accelerator) "
                            "processes and would silently train unsharded on a CPU; on a CPU remove `fsdp` and use "
                            "FORCE_TORCHRUN=1 for data parallelism")
        if values.get("quantization_bit") is not None:
            raise ConfigError("`quantization_bit` with `fsdp`: bitsandbytes weights cannot be sharded by FSDP here; "
                              "remove one of them")
        if stage == "ppo":
            raise ConfigError("stage ppo generates and trains in its own loop, which is not built for FSDP's "
                              "sharded weights: remove `fsdp` (plain multi-process data parallelism works with ppo)")


OPTIMIZER_PACKAGES = {"use_galore": "galore_torch", "use_apollo": "apollo_torch", "use_badam": "badam",
                      "use_adam_mini": "adam_mini", "use_muon": None}


def _check_optimizers(training_args: Any, finetuning_args: Any) -> None:
    """GaLore / APOLLO go through transformers' own `optim`; the others are built by the trainer."""
    import importlib.util

    chosen = [key for key in OPTIMIZER_PACKAGES if getattr(finetuning_args, key)]
    if finetuning_args.loraplus_lr_ratio is not None:
        chosen.append("loraplus_lr_ratio")
    if not chosen:
        return
    if len(chosen) > 1:
        raise ConfigError(f"choose one optimizer, not {' and '.join(f'`{k}`' for k in chosen)}")
    key = chosen[0]
    if key == "use_muon":
        import torch

        if not hasattr(torch.optim, "Muon"):
            raise UserError(f"`use_muon` needs torch.optim.Muon, which torch {torch.__version__} lacks: "
                            "upgrade torch (2.9 or newer)")
    package = OPTIMIZER_PACKAGES.get(key)
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"`{key}` needs the {package.replace('_', '-')} package: "
                        f"`pip install {package.replace('_', '-')}`")
    if key in ("use_galore", "use_apollo", "use_badam") and finetuning_args.finetuning_type != "full":
        raise ConfigError(f"`{key}` trains all weights itself: use it with `finetuning_type: full`")
    f = finetuning_args
    if key == "use_galore":
        training_args.optim = "galore_adamw_layerwise" if f.galore_layerwise else "galore_adamw"
        target = f.galore_target
        training_args.optim_args = (f"rank={f.galore_rank},update_proj_gap={f.galore_update_interval},"
                                    f"scale={f.galore_scale},proj_type={f.galore_proj_type}")
    elif key == "use_apollo":
        training_args.optim = "apollo_adamw_layerwise" if f.apollo_layerwise else "apollo_adamw"
        target = f.apollo_target
        training_args.optim_args = (f"rank={f.apollo_rank},update_proj_gap={f.apollo_update_interval},"
                                    f"scale={f.apollo_scale},proj={f.apollo_proj},proj_type={f.apollo_proj_type},"
                                    f"scale_type={f.apollo_scale_type}")
    else:
        return
    targets = [t.strip() for t in target.split(",") if t.strip()]
    training_args.optim_target_modules = "all-linear" if targets == ["all"] else targets


def _enable_liger(training_args: Any) -> None:
    """Liger kernels through transformers' own switch, with the two reasons they can't run said plainly."""
    import importlib.util

    import torch

    if importlib.util.find_spec("liger_kernel") is None:
        raise UserError("`enable_liger_kernel` needs the liger-kernel package: `pip install liger-kernel`")
    if not torch.cuda.is_available():
        raise UserError("`enable_liger_kernel`: liger's Triton kernels need a GPU; remove it on this machine")
    training_args.use_liger_kernel = True


def check_train_args(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Combinations that cannot work, refused before any weight is loaded."""
    stage = finetuning_args.stage
    _require(model_args.model_name_or_path, "model_name_or_path", "the base model: a hub id, a local folder or "
             "a .gguf file")
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ConfigError("nothing to do: set `do_train: true` (or do_eval / do_predict)")
    if training_args.do_train:
        _require(data_args.dataset, "dataset", "comma-separated names from dataset_info.json")
    if data_args.val_size > 0 and not data_args.dataset:
        raise ConfigError("`val_size` splits the training data, but no `dataset` is set")
    if training_args.do_eval and not data_args.eval_dataset and data_args.val_size <= 0:
        raise ConfigError("`do_eval: true` needs evaluation data: set `eval_dataset` or `val_size`")
    if training_args.do_predict and not (data_args.eval_dataset or data_args.val_size > 0):
        raise ConfigError("`do_predict: true` needs data to predict on: set `eval_dataset` (or `val_size`)")
    if training_args.predict_with_generate and stage != "sft":
        raise ConfigError(f"`predict_with_generate` only works with stage sft, not {stage}")
    if training_args.do_predict and stage == "sft" and not training_args.predict_with_generate:
        raise ConfigError("`do_predict` with stage sft generates answers: set `predict_with_generate: true`")
    if training_args.predict_with_generate and training_args.do_eval:
        raise ConfigError("`do_eval` computes losses and `predict_with_generate` generates answers: run them "
                          "separately (do_predict for generation)")
    if training_args.do_predict and data_args.eval_on_each_dataset:
        raise ConfigError("`do_predict` writes one predictions file: unset `eval_on_each_dataset` to predict")
    if training_args.predict_with_generate and training_args.do_train:
        raise ConfigError("`predict_with_generate` cannot be combined with `do_train`; predict in a second run "
                          "with `adapter_name_or_path` pointing at the trained adapter")
    if data_args.mask_history and data_args.train_on_prompt:
        raise ConfigError("`mask_history` (train on the last turn only) contradicts `train_on_prompt`")
    if (data_args.packing or data_args.neat_packing) and stage not in ("pt", "sft"):
        raise ConfigError(f"`packing` / `neat_packing` work with stages pt and sft, not {stage}")
    _check_adapter_method(model_args, finetuning_args)
    if data_args.eval_dataset and data_args.val_size > 0:
        raise ConfigError("set either `eval_dataset` or `val_size`, not both")
    if data_args.streaming and training_args.max_steps <= 0:
        raise ConfigError("`streaming: true` needs `max_steps`: a stream has no known length to count epochs by")
    if data_args.cutoff_len <= 0:
        raise ConfigError(f"`cutoff_len` must be positive, got {data_args.cutoff_len}")
    if model_args.quantization_bit is not None and finetuning_args.finetuning_type not in ("lora", "oft"):
        raise ConfigError("a quantized base model can only be trained through adapters: use `finetuning_type: lora` "
                          "(QLoRA) or `oft`")
    if finetuning_args.use_llama_pro and finetuning_args.finetuning_type != "freeze":
        raise ConfigError("`use_llama_pro` trains the expanded blocks through `finetuning_type: freeze`")
    if finetuning_args.pissa_convert and not finetuning_args.pissa_init:
        raise ConfigError("`pissa_convert` converts a PiSSA adapter: set `pissa_init: true` as well")
    if finetuning_args.loraplus_lr_ratio is not None and finetuning_args.finetuning_type != "lora":
        raise ConfigError("`loraplus_lr_ratio` only works with `finetuning_type: lora`")
    _check_stage_args(data_args, training_args, finetuning_args)


def _changed(finetuning_args: Any, *keys: str) -> list[str]:
    defaults = {f.name: f.default for f in dataclasses.fields(finetuning_args)}
    return [k for k in keys if getattr(finetuning_args, k) != defaults[k]]


def _check_stage_args(data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Stage-specific keys only where they mean something, so a typo'd stage never trains silently."""
    f, stage = finetuning_args, finetuning_args.stage
    if stage in ("rm", "ppo") and training_args.load_best_model_at_end:
        raise ConfigError(f"`load_best_model_at_end` is not supported with stage {stage}: its checkpoints hold a "
                          "value head that the best-model reload would drop")
    if training_args.do_predict and stage not in ("sft", "rm"):
        raise ConfigError(f"`do_predict` works with stages sft (generated answers) and rm (scores), not {stage}")
    owners = {
        "dpo": ("pref_loss", "dpo_label_smoothing", "simpo_gamma", "ld_alpha"),
        "dpo or kto": ("pref_ftx", "precompute_ref_logps"),
        "dpo or kto or ppo": ("ref_model", "ref_model_adapters", "ref_model_quantization_bit"),
        "kto": ("kto_chosen_weight", "kto_rejected_weight"),
        "ppo": ("ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards"),
        "ppo or grpo": ("reward_model", "reward_model_adapters", "reward_model_quantization_bit",
                        "reward_model_type"),
        "grpo": ("reward_funcs", "reward_weights", "num_generations", "max_completion_length", "grpo_beta"),
    }
    for stages, keys in owners.items():
        changed = _changed(f, *keys)
        if changed and stage not in stages.split(" or "):
            raise ConfigError(f"`{changed[0]}` only applies to stage {stages}, not {stage}: remove it")
    orphans = _changed(f, "ref_model_adapters", "ref_model_quantization_bit")
    if orphans and not f.ref_model:
        raise ConfigError(f"`{orphans[0]}` describes `ref_model`, which is not set")
    if f.precompute_ref_logps and data_args.streaming:
        raise ConfigError("`precompute_ref_logps` needs the whole dataset up front: it cannot work with `streaming`")
    if stage in ("dpo", "kto") and f.pref_beta <= 0:
        raise ConfigError(f"`pref_beta` must be positive, got {f.pref_beta}")
    if f.ld_alpha is not None and not 0 <= f.ld_alpha <= 1:
        raise ConfigError(f"`ld_alpha` weights the tokens beyond the shorter answer: between 0 and 1, got {f.ld_alpha}")
    if stage != "dpo":
        return
    loss = f.pref_loss
    if f.dpo_label_smoothing and loss not in ("sigmoid", "simpo"):
        raise ConfigError(f"`dpo_label_smoothing` works with pref_loss sigmoid or simpo, not {loss}")
    if _changed(f, "simpo_gamma") and loss != "simpo":
        raise ConfigError(f"`simpo_gamma` is the margin of pref_loss simpo; pref_loss is {loss}")
    if f.ld_alpha is not None and loss not in ("sigmoid", "hinge", "kto_pair"):
        raise ConfigError(f"`ld_alpha` (LD-DPO) reweights summed log-probabilities: use it with pref_loss sigmoid, "
                          f"hinge or kto_pair, not {loss}")
    if loss in ("orpo", "simpo"):
        extra = _changed(f, "ref_model", "ref_model_adapters", "precompute_ref_logps")
        if extra:
            raise ConfigError(f"pref_loss {loss} needs no reference model: remove `{extra[0]}`")
        if loss == "orpo" and f.pref_ftx:
            raise ConfigError("pref_loss orpo already includes the SFT term: remove `pref_ftx`")


@dataclasses.dataclass
class DataRunArguments:
    """The training keys the data commands read, with TrainingArguments' defaults.

    `lmf data` works in one process and never imports transformers' TrainingArguments: that import pulls in peft
    and transformers' modelling code (about 2.5 s), a third of tokenizing 20,000 examples."""

    seed: int = 42
    per_device_train_batch_size: int = 8
    predict_with_generate: bool = False  # the data of a generation run is tokenized without answers
    local_process_index: int = dataclasses.field(default=0, init=False)
    should_save: bool = dataclasses.field(default=True, init=False)

    def main_process_first(self, desc: str = "", local: bool = True) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def _one_edit(a: str, b: str) -> bool:
    """One letter added, dropped, changed or two neighbours swapped: the typos a ratio misses in short keys
    (`stge`, `sed`). No transformers training key is one edit from a data, model or fine-tuning key."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return len(long) - len(short) == 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def get_data_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, DataRunArguments, FinetuningArguments]:
    """Arguments of `lmf data`: a training config read without the checks that only a run needs.

    Keys of the model, data and fine-tuning sections are checked as `lmf train` checks them; the other training
    keys are left to `lmf train`, except a near-miss of a known key (`cutof_len`, `stge`), refused as a typo."""
    values, origin = read_args(argv)
    classes = [ModelArguments, DataArguments, DataRunArguments, FinetuningArguments, GeneratingArguments]
    known = [f.name for cls in classes for f in dataclasses.fields(cls) if f.init]
    for key in [k for k in values if k not in known]:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.9) or [k for k in known if _one_edit(key, k)]
        if close:
            raise ConfigError(f"{_where(origin, key)}: unknown key `{key}`; did you mean `{close[0]}`?")
        del values[key]  # a training key (learning_rate, ...): `lmf train` checks it
    every_stage = BUILT_CHOICES  # every stage has a processor
    model_args, data_args, run_args, finetuning_args, _ = parse_dataclasses(values, origin, classes,
                                                                           built_choices=every_stage)
    _require(model_args.model_name_or_path, "model_name_or_path", "its tokenizer formats the data")
    _require(data_args.dataset, "dataset", "comma-separated names from dataset_info.json")
    return model_args, data_args, run_args, finetuning_args


# What `lmf webui` writes into a run folder before the run starts: the run's arguments and its printed log. A folder
# holding only these holds no results yet (e.g. a fresh run started from the page, or one that failed early).
RUN_FOLDER_FILES = frozenset((TRAINING_ARGS_FILE, RUNNING_LOG))


def _protect_output_dir(training_args: Any, get_last_checkpoint: Any) -> None:
    """Never overwrite earlier results: resume from the last checkpoint or stop with a clear message."""
    out = training_args.output_dir
    if not (training_args.do_train and os.path.isdir(out) and set(os.listdir(out)) - RUN_FOLDER_FILES):
        return
    if training_args.overwrite_output_dir or training_args.resume_from_checkpoint:
        return
    last = get_last_checkpoint(out)
    if last is None:
        raise ConfigError(f"output_dir `{out}` already holds files; choose a new `output_dir`, set "
                          "`overwrite_output_dir: true`, or set `resume_from_checkpoint`")
    training_args.resume_from_checkpoint = last
    logger.info("Resuming training from %s (set `overwrite_output_dir: true` to start over).", last)


def get_infer_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, FinetuningArguments,
                                              GeneratingArguments]:
    """Arguments of `lmf chat` and the other inference commands."""
    values, origin = read_args(argv)
    foreign = {}
    try:
        from .training_args import TrainingArguments

        hint = "is a training key; inference does not use it"
        foreign = {f.name: hint for f in dataclasses.fields(TrainingArguments)}
    except ImportError:  # transformers missing: plain unknown-key messages still work
        pass
    model_args, data_args, finetuning_args, generating_args = parse_dataclasses(
        values, origin, [ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments], foreign)
    _require(model_args.model_name_or_path, "model_name_or_path", "the base model: a hub id, a local folder or "
             "a .gguf file")
    _check_adapter_method(model_args, finetuning_args)
    return model_args, data_args, finetuning_args, generating_args


def _check_adapter_method(model_args: ModelArguments, finetuning_args: FinetuningArguments) -> None:
    if model_args.adapter_name_or_path and finetuning_args.finetuning_type not in ("lora", "oft"):
        raise ConfigError("`adapter_name_or_path` only works with `finetuning_type: lora` or `oft`")


EvalArgs = tuple[ModelArguments, DataArguments, EvaluationArguments, FinetuningArguments]


def get_eval_args(argv: list[str]) -> EvalArgs:
    """Arguments of `lmf eval`: the model (and adapters), the template, and the benchmark (docs/eval.md)."""
    values, origin = read_args(argv)
    foreign = {f.name: "is a generation setting; `lmf eval` scores answer letters and generates nothing"
               for f in dataclasses.fields(GeneratingArguments)}
    try:
        from .training_args import TrainingArguments

        for f in dataclasses.fields(TrainingArguments):
            foreign.setdefault(f.name, "is a training key; `lmf eval` does not use it")
    except ImportError:  # transformers missing: plain unknown-key messages still work
        pass
    model_args, data_args, eval_args, finetuning_args = parse_dataclasses(
        values, origin, [ModelArguments, DataArguments, EvaluationArguments, FinetuningArguments], foreign)
    _require(model_args.model_name_or_path, "model_name_or_path", "the model to evaluate: a hub id, a local folder "
             "or a .gguf file")
    _check_adapter_method(model_args, finetuning_args)
    for key in ("dataset", "eval_dataset"):
        if values.get(key):
            logger.warning("`%s` is not used by `lmf eval`, which scores the task folders of `task_dir`; to score "
                           "generated answers on a dataset, run `lmf train` with do_predict and then "
                           "scripts/eval_bleu_rouge.py.", key)
    if eval_args.n_shot < 0:
        raise ConfigError(f"`n_shot` must be 0 or more, got {eval_args.n_shot}")
    if eval_args.batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {eval_args.batch_size}")
    if eval_args.compare_base and not model_args.adapter_name_or_path:
        raise ConfigError("`compare_base: true` compares the model with and without its adapter: set "
                          "`adapter_name_or_path`")
    if eval_args.eval_backend == "lm_eval":
        if not (eval_args.lm_eval_tasks or eval_args.task):
            raise ConfigError("missing required key `lm_eval_tasks` (comma-separated lm-eval task names, e.g. "
                              "arc_easy,hellaswag)")
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise UserError("`eval_backend: lm_eval` needs lm-evaluation-harness, which is not installed: "
                            "`pip install lm-eval` (or `pip install \"llamafactory[eval]\"`)")
    else:
        for key in ("lm_eval_tasks", "lm_eval_include_path"):
            if getattr(eval_args, key) is not None:
                raise ConfigError(f"`{key}` only applies to `eval_backend: lm_eval`; remove it or set that backend")
        _require(eval_args.task, "task", "a task folder in task_dir plus its split, e.g. mmlu_test")
    if eval_args.save_dir:
        _prepare_eval_save_dir(eval_args.save_dir)
    return model_args, data_args, eval_args, finetuning_args


def _prepare_eval_save_dir(save_dir: str) -> None:
    """Refuse a save_dir that holds files and create it now, so a folder that cannot be written is reported
    before any model loads (the results files are still written with exclusive creation at the end)."""
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise ConfigError(f"save_dir `{save_dir}` is a file, not a folder")
    if os.path.isdir(save_dir) and os.listdir(save_dir):
        raise ConfigError(f"save_dir `{save_dir}` already holds files; choose a new `save_dir` (results are never "
                          "overwritten)")
    try:
        os.makedirs(save_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create save_dir `{save_dir}`: {err.strerror or err}") from err
    if not os.access(save_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"save_dir `{save_dir}` is not writable")
