"""What dpo and kto compare against: sequence log-probabilities, the reference model, and their disk cache.

The reference is, in order of preference: an explicit `ref_model` (+ `ref_model_adapters`); for LoRA/OFT,
the policy itself with its adapters switched off (no second copy in memory); for full/freeze tuning, a
frozen copy taken before training. With `precompute_ref_logps` the reference runs once over the data and
its log-probabilities are cached on disk, keyed by everything that could change them, so a sweep over
`pref_beta` or the loss type reuses them and never holds a reference model during training.
"""

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..extras.constants import IGNORE_INDEX
from ..extras.logging import get_logger

logger = get_logger(__name__)

AVERAGED_LOSSES = ("ipo", "orpo", "simpo")  # losses on per-token mean log-probabilities, not sums
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and a mask of the positions that count (labels != IGNORE_INDEX).

    Computed row by row in fp32, so a large vocabulary never needs a full fp32 copy of the batch's logits.
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    targets = labels.clamp(min=0)
    rows = []
    for row_logits, row_targets in zip(logits[:, :-1], targets):
        row_logits = row_logits.float()
        picked = row_logits.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows) * mask, mask


def reduce_logps(per_token: torch.Tensor, mask: torch.Tensor, average: bool = False,
                 ld_alpha: float | None = None) -> torch.Tensor:
    """Per-sequence log-probability of the answer: the sum, or the mean per token.

    With `ld_alpha` (LD-DPO, pairwise batches: chosen rows then rejected rows) tokens beyond the shorter
    answer of each pair count `ld_alpha` times, so a long answer cannot win on length alone.
    """
    lengths = mask.sum(-1)
    if ld_alpha is not None:
        chosen_len, rejected_len = lengths.chunk(2)
        shared = torch.minimum(chosen_len, rejected_len).repeat(2)
        position = mask.cumsum(-1)
        per_token = per_token * torch.where(position <= shared.unsqueeze(1), 1.0, ld_alpha)
    total = per_token.sum(-1)
    return total / lengths.clamp(min=1) if average else total


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False,
                   ld_alpha: float | None = None) -> torch.Tensor:
    per_token, mask = token_logps(logits, labels)
    return reduce_logps(per_token, mask, average, ld_alpha)


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """The LoRA/OFT policy as its own reference: the same weights with the adapters switched off."""
    unwrapped = getattr(model, "module", model)
    if hasattr(unwrapped, "disable_adapter"):
        with unwrapped.disable_adapter():
            yield
    else:
        yield


def create_ref_model(model: Any, model_args: Any, finetuning_args: Any, tokenizer: Any, dtype: Any) -> Any | None:
    """The reference model to hold during training, or None when the policy itself serves (or none is needed)."""
    if finetuning_args.stage == "dpo" and finetuning_args.pref_loss in REFERENCE_FREE_LOSSES:
        return None
    if finetuning_args.ref_model:
        from ..model.loader import load_model

        ref_args = copy.copy(model_args)
        ref_args.model_name_or_path = finetuning_args.ref_model
        ref_args.adapter_name_or_path = finetuning_args.ref_model_adapters
        ref_args.quantization_bit = finetuning_args.ref_model_quantization_bit
        ref_finetuning = copy.copy(finetuning_args)
        ref_finetuning.finetuning_type = "lora"  # only decides how ref_model_adapters are attached
        logger.info("Reference model: %s%s.", finetuning_args.ref_model,
                    f" + {finetuning_args.ref_model_adapters}" if finetuning_args.ref_model_adapters else "")
        return load_model(tokenizer, ref_args, ref_finetuning, is_trainable=False, dtype=dtype)
    if finetuning_args.finetuning_type in ("lora", "oft"):
        if model_args.adapter_name_or_path and not finetuning_args.create_new_adapter:
            logger.warning("Training the adapter %s further: the reference is the base model without it. For "
                           "the adapter's own behaviour as the reference, set `create_new_adapter: true` (it is "
                           "merged first) or `ref_model`.", model_args.adapter_name_or_path)
        return None
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    logger.info("Reference model: a frozen copy of the initial weights (%s tuning).", finetuning_args.finetuning_type)
    return ref


@torch.no_grad()
def reference_logps(policy: Any, ref_model: Any | None, batch: dict[str, Any], prefix: str = "",
                    average: bool = False, ld_alpha: float | None = None) -> torch.Tensor:
    """Reference log-probabilities of the rows `prefix`input_ids / labels of a batch."""
    model = ref_model if ref_model is not None else policy
    context = adapters_disabled(policy) if ref_model is None else contextlib.nullcontext()
    with context:
        logits = model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"],
                       use_cache=False).logits
    return sequence_logps(logits, batch[f"{prefix}labels"], average, ld_alpha)


def _cache_key(model_args: Any, finetuning_args: Any, dataset: Any, what: str, dtype: Any) -> str | None:
    """Everything that changes the reference log-probabilities, hashed; None when the data has no fingerprint
    (then nothing is cached rather than risk a collision)."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        return None

    def weights_stamp(path: str | None) -> list[Any]:
        if not path or not os.path.isdir(path):
            return [path]
        return [path] + sorted((f, os.path.getsize(os.path.join(path, f)), int(os.path.getmtime(os.path.join(
            path, f)))) for f in os.listdir(path) if f.endswith((".safetensors", ".bin", ".gguf")))

    f = finetuning_args
    if f.ref_model:
        model = weights_stamp(f.ref_model) + weights_stamp(f.ref_model_adapters) + [f.ref_model_quantization_bit]
    else:  # the policy before training: the base plus the adapters it starts from
        model = weights_stamp(model_args.model_name_or_path) + [
            weights_stamp(a.strip()) for a in (model_args.adapter_name_or_path or "").split(",") if a.strip()]
        model += [f.finetuning_type if f.create_new_adapter else "", model_args.quantization_bit]
    loading = [model_args.model_revision, model_args.rope_scaling, model_args.resize_vocab, model_args.add_tokens,
               model_args.add_special_tokens, str(dtype)]
    payload = json.dumps([model, loading, fingerprint, what, f.stage, f.pref_loss in AVERAGED_LOSSES, f.ld_alpha],
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _cache_dir(finetuning_args: Any) -> str:
    return finetuning_args.ref_logps_cache_dir or os.path.join(
        os.environ.get("LLAMAFACTORY_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "llamafactory")),
        "ref_logps")


def _place(model: Any, device: Any) -> None:
    """Put a model on the training device unless quantization already placed it."""
    if model is not None and not getattr(model, "is_quantized", False) and not getattr(model, "hf_device_map", None):
        model.to(device)


def with_reference_logps(dataset_module: dict[str, Any], policy: Any, make_ref: Callable[[], Any | None],
                         collator: Any, model_args: Any, finetuning_args: Any, training_args: Any,
                         dtype: Any) -> dict[str, Any]:
    """Every training and evaluation set with its reference log-probabilities as columns.

    Columns: `ref_chosen_logps`/`ref_rejected_logps` (dpo) or `ref_logps`/`ref_kl_logps` (kto). Sets computed
    before (same reference, data and settings) come from the disk cache; the reference model is only built
    when some set is missing, and the main process computes first so the other processes read its cache.
    """
    sets = [(split, name, data) for split, value in dataset_module.items()
            for name, data in (value.items() if isinstance(value, dict) else [(split.split("_")[0], value)])]
    out: dict[str, Any] = {}
    state: dict[str, Any] = {}
    with training_args.main_process_first(desc="reference log-probabilities"):
        for split, name, data in sets:
            key = _cache_key(model_args, finetuning_args, data, name, dtype)
            data = _add_reference_columns(data, key, policy, make_ref, state, collator, finetuning_args,
                                          training_args, name)
            if isinstance(dataset_module[split], dict):
                out.setdefault(split, {})[name] = data
            else:
                out[split] = data
    return out


def _add_reference_columns(dataset: Any, key: str | None, policy: Any, make_ref: Callable[[], Any | None],
                           state: dict[str, Any], collator: Any, finetuning_args: Any, training_args: Any,
                           what: str) -> Any:
    from tqdm import tqdm

    pairwise = "chosen_input_ids" in dataset.column_names
    names = ("ref_chosen_logps", "ref_rejected_logps") if pairwise else ("ref_logps", "ref_kl_logps")
    path = os.path.join(_cache_dir(finetuning_args), f"{key}.pt") if key else None
    if path and os.path.isfile(path):
        cached = torch.load(path)
        if len(cached[names[0]]) == len(dataset):
            logger.info("Reference log-probabilities for the %s data loaded from the cache %s.", what, path)
            return _with_columns(dataset, cached, names)
    if "ref" not in state:  # built once, only when some set is not cached
        state["ref"] = make_ref()
        _place(policy, training_args.device)
        _place(state["ref"], training_args.device)
    ref_model = state["ref"]
    average = finetuning_args.pref_loss in AVERAGED_LOSSES and finetuning_args.stage == "dpo"
    ld_alpha = finetuning_args.ld_alpha if finetuning_args.stage == "dpo" else None
    device = next(policy.parameters()).device
    batch_size = training_args.per_device_eval_batch_size
    values: dict[str, list[float]] = {name: [] for name in names}
    was_training = policy.training
    policy.eval()
    for start in tqdm(range(0, len(dataset), batch_size), desc=f"Reference log-probabilities ({what})"):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(rows).items()}
        if pairwise:
            chosen, rejected = reference_logps(policy, ref_model, batch, "", average, ld_alpha).chunk(2)
            values[names[0]] += chosen.tolist()
            values[names[1]] += rejected.tolist()
        else:
            values[names[0]] += reference_logps(policy, ref_model, batch).tolist()
            values[names[1]] += reference_logps(policy, ref_model, batch, "kl_").tolist()
    policy.train(was_training)
    if path and training_args.should_save:  # one writer, and never a half-written file under the final name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp"
        torch.save(values, partial)
        os.replace(partial, path)
        logger.info("Reference log-probabilities for %d %s examples cached at %s.", len(dataset), what, path)
    return _with_columns(dataset, values, names)


def _with_columns(dataset: Any, values: dict[str, list[float]], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
        dataset = dataset.add_column(name, [float(v) for v in values[name]])
    return dataset
