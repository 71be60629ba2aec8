"""The rewards of a grpo run: rule specs from `reward_funcs`, plus a reward model saved by stage rm.

trl calls every reward as `f(prompts=..., completions=..., completion_ids=..., **columns)`, one list entry
per sampled answer, where `columns` are the dataset's columns repeated for each answer. Ours are `input_ids`
(the prompt as our template renders it), `labels` (the reference answer's ids) and `reference` (that
answer as text, "" when the row has none), plus trl's `trainer_state`, `log_extra` and `log_metric`. A user
function gets the same keywords, so it should end its signature with `**kwargs`.
"""

import copy
import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ...extras.errors import ConfigError
from ...extras.logging import get_logger

logger = get_logger(__name__)

RewardFunc = Callable[..., list[float | None]]
EXPECTED = ("`exact_match`, `regex:PATTERN`, `format:PATTERN` (the whole answer matches), `length:N` (closer to N "
            "characters is better) or a Python function as `module.path:function`")


def exact_match(completions: list[str], reference: list[str], **kwargs: Any) -> list[float | None]:
    """1 when the answer, stripped, is the reference answer; None (no opinion) for rows without one."""
    return [None if not ref.strip() else float(c.strip() == ref.strip()) for c, ref in zip(completions, reference)]


def _regex(pattern: re.Pattern[str]) -> RewardFunc:
    def regex(completions: list[str], **kwargs: Any) -> list[float | None]:
        return [float(pattern.search(c) is not None) for c in completions]

    return regex


def _format(pattern: re.Pattern[str]) -> RewardFunc:
    def format(completions: list[str], **kwargs: Any) -> list[float | None]:  # named like the spec in the logs
        return [float(pattern.fullmatch(c.strip()) is not None) for c in completions]

    return format


def _length(target: int) -> RewardFunc:
    """1 at exactly `target` characters, halved once the answer is off by `target` (or by 1 for target 0):
    dense, so a group of answers of different lengths always ranks."""
    scale = max(target, 1)

    def length(completions: list[str], **kwargs: Any) -> list[float | None]:
        return [1.0 / (1.0 + abs(len(c.strip()) - target) / scale) for c in completions]

    return length


def _compile(spec: str, pattern: str, flags: int = 0) -> re.Pattern[str]:
    if not pattern:
        raise ConfigError(f"`reward_funcs`: `{spec}` has no pattern after the colon; expected {EXPECTED}")
    try:
        return re.compile(pattern, flags)
    except re.error as err:
        raise ConfigError(f"`reward_funcs`: `{spec}` is not a valid regular expression ({err})") from err


def _import_function(spec: str) -> RewardFunc:
    """`module.path:function`, importable from PYTHONPATH or the current directory (as `python -m` would)."""
    module_name, _, name = spec.rpartition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - whatever the module raises, the user needs the spec and the cause
        raise ConfigError(f"`reward_funcs`: cannot import module `{module_name}` for `{spec}` "
                          f"({type(err).__name__}: {err}); expected {EXPECTED}") from err
    func = getattr(module, name, None)
    if func is None:
        raise ConfigError(f"`reward_funcs`: module `{module_name}` has no `{name}` (from `{spec}`); "
                          f"expected {EXPECTED}")
    if not callable(func):
        raise ConfigError(f"`reward_funcs`: `{spec}` is a {type(func).__name__}, not a function")
    return func


def parse_reward_spec(spec: str) -> RewardFunc:
    """One `reward_funcs` entry as a trl reward function (rule names first: `regex:...` is never a module)."""
    spec = str(spec).strip()
    kind, _, argument = spec.partition(":")
    if spec == "exact_match":
        return exact_match
    if kind == "regex":
        return _regex(_compile(spec, argument))
    if kind == "format":
        return _format(_compile(spec, argument, re.DOTALL))  # DOTALL: a format usually spans several lines
    if kind == "length":
        if not argument.strip().isdigit():
            raise ConfigError(f"`reward_funcs`: `{spec}` needs a whole number of characters, e.g. `length:100`")
        return _length(int(argument))
    if kind and argument and ":" not in argument:
        return _import_function(spec)
    raise ConfigError(f"`reward_funcs`: unknown reward `{spec}`; expected {EXPECTED}")


def build_rule_rewards(specs: list[str] | None) -> list[RewardFunc]:
    """Every `reward_funcs` entry, with repeated rule names numbered so each gets its own logged curve."""
    funcs = [parse_reward_spec(spec) for spec in specs or []]
    seen: dict[str, int] = {}
    for func in funcs:
        name = getattr(func, "__name__", type(func).__name__)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1 and name in ("regex", "format", "length"):  # our closures, safe to rename
            func.__name__ = f"{name}_{seen[name]}"
    return funcs


def needs_reference(funcs: list[RewardFunc]) -> bool:
    return exact_match in funcs


def reward_model_func(model: Any, pad_token_id: int, batch_size: int) -> RewardFunc:
    """Score prompt + answer ids with a ValueHeadModel; ids are used as they are, so no re-tokenization can
    shift the text the reward model sees from what the policy produced."""
    import torch

    device = next(model.parameters()).device

    @torch.no_grad()
    def reward_model(completion_ids: list[list[int]], input_ids: list[list[int]], **kwargs: Any) -> list[float | None]:
        rows = [list(prompt) + list(answer) for prompt, answer in zip(input_ids, completion_ids)]
        scores: list[float | None] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids = torch.full((len(chunk), max(len(r) for r in chunk)), pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, row in enumerate(chunk):
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            scores += model.score(ids.to(device), mask.to(device)).float().tolist()
        return scores

    return reward_model


def load_reward_model(tokenizer: Any, model_args: Any, data_args: Any, training_args: Any,
                      finetuning_args: Any) -> RewardFunc:
    """`reward_model` as a reward function: `lora` = an adapter saved by stage rm on this run's base model;
    `full` = a whole model folder saved by stage rm (+ `reward_model_adapters`)."""
    from ...data.template import get_template_and_fix_tokenizer
    from ...model.loader import compute_dtype, load_model, load_tokenizer

    path = finetuning_args.reward_model
    kind = finetuning_args.reward_model_type
    rm_args = copy.copy(model_args)
    rm_args.quantization_bit = finetuning_args.reward_model_quantization_bit
    if kind == "lora":
        if not os.path.isdir(path):
            raise ConfigError(f"`reward_model: {path}`: folder not found; with `reward_model_type: lora` it is the "
                              "adapter folder saved by stage rm")
        rm_args.adapter_name_or_path = path
    else:
        rm_args.model_name_or_path = path
        rm_args.adapter_name_or_path = finetuning_args.reward_model_adapters
        rm_tokenizer = load_tokenizer(rm_args)
        get_template_and_fix_tokenizer(rm_tokenizer, data_args)
        if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"`reward_model: {path}` has another vocabulary than `model_name_or_path`; grpo scores "
                              "the policy's token ids directly, so train the reward model from the same base model")
    rm_finetuning = copy.copy(finetuning_args)
    rm_finetuning.finetuning_type = "lora"  # only decides how adapters are attached to the frozen model
    dtype = compute_dtype(training_args, rm_finetuning, model_args)
    model = load_model(tokenizer, rm_args, rm_finetuning, is_trainable=False, dtype=dtype, add_valuehead=True)
    if rm_args.quantization_bit is None:  # quantized weights are placed at load time
        model.to(training_args.device)
    model.eval()
    logger.info("Reward model: %s (%s).", path, kind)
    return reward_model_func(model, tokenizer.pad_token_id, training_args.per_device_eval_batch_size)
