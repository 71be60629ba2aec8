"""`lmf train cfg.yaml --dry-run`: check a run end to end without training it.

Validates the config, loads the tokenizer and the data (printing their statistics), builds the model on
the meta device (no weights are read, so any size is instant) with the fine-tuning method attached, and
prints parameter counts, a memory estimate per device and the tokens each optimizer step sees.
"""

import copy
from typing import Any

from ..data import preview
from ..data.loader import get_dataset
from ..data.template import get_template, get_template_and_fix_tokenizer
from ..model.adapter import init_adapter
from ..model.loader import compute_dtype, load_processor, load_tokenizer
from ..model.model_utils.hub import resolve_model

GIB = 1024**3


def _meta_model(model_args: Any, finetuning_args: Any, dtype: Any, source: Any) -> Any:
    import torch
    from transformers import AutoConfig

    from ..model.model_utils.visual import auto_model_class

    kwargs = {"trust_remote_code": model_args.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    config = AutoConfig.from_pretrained(source.path, **kwargs)
    with torch.device("meta"):
        model = auto_model_class(config).from_config(config, dtype=dtype,
                                                     trust_remote_code=model_args.trust_remote_code)
    fresh = copy.copy(model_args)
    fresh.adapter_name_or_path = None  # a resumed adapter has the shape of a new one
    return init_adapter(model, fresh, finetuning_args, is_trainable=True)


def memory_estimate(model: Any, tokens_per_device_step: int, checkpointing: bool) -> dict[str, float]:
    """Bytes per device: weights, gradients and Adam states of trainable weights, and activations (rough:
    ~2 bytes per hidden unit per layer with checkpointing, ~34 without, per token)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()  # a multimodal model's language model holds the long activations
    hidden = getattr(config, "hidden_size", 0) or 0
    layers = getattr(config, "num_hidden_layers", 0) or 0
    per_token = hidden * layers * (2 if checkpointing else 34)
    return {"weights": weights, "gradients": 4 * trainable, "optimizer (Adam)": 8 * trainable,
            "activations": per_token * tokens_per_device_step}


def dry_run(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    stage = finetuning_args.stage
    if stage == "grpo":  # the batch-size rule and reward specs a real run checks before loading anything
        from .grpo.rewards import build_rule_rewards
        from .grpo.workflow import check_grpo_args

        check_grpo_args(training_args, finetuning_args)
        build_rule_rewards(finetuning_args.reward_funcs)
    if stage == "ppo":  # the refusals a real run makes before loading anything
        from .ppo.workflow import check_ppo_args

        check_ppo_args(model_args, data_args, training_args, finetuning_args)
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    if stage == "pt" and not data_args.template:
        template = get_template("empty")
        template.fix_tokenizer(tokenizer)
    else:
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
    report: dict[str, Any] = {}
    module = get_dataset(template, model_args, data_args, training_args,
                         "predict" if training_args.predict_with_generate else stage, tokenizer, report,
                         load_processor(model_args, tokenizer, source))
    train = module.get("train_dataset")
    if train is not None and not data_args.streaming:
        preview.stats(train, report, data_args, training_args, stage)

    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = _meta_model(model_args, finetuning_args, dtype, source)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"\nModel: {total:,} parameters, {trainable:,} trainable ({100 * trainable / max(total, 1):.4f}%), "
          f"{finetuning_args.finetuning_type} in {str(dtype).replace('torch.', '')}")

    batch = training_args.per_device_train_batch_size
    if train is not None and not data_args.streaming:
        key = "chosen_input_ids" if "chosen_input_ids" in train.column_names else "input_ids"
        longest = int(preview.token_counts(train, key).max())
    else:
        longest = data_args.cutoff_len
    rows = batch * (2 if stage in ("rm", "dpo") else 1)
    checkpointing = not model_args.disable_gradient_checkpointing
    estimate = memory_estimate(model, rows * longest, checkpointing)
    frozen_copy = (stage in ("dpo", "kto", "ppo") and finetuning_args.finetuning_type in ("full", "freeze")
                   and not finetuning_args.precompute_ref_logps and not finetuning_args.ref_model
                   and not (stage == "dpo" and finetuning_args.pref_loss in ("orpo", "simpo")))
    if frozen_copy:  # train/reference.py keeps a frozen copy of the initial weights as the reference
        estimate["reference model"] = estimate["weights"]
    print(f"Estimated memory per device (batch {batch} x up to {longest} tokens, gradient checkpointing "
          f"{'on' if checkpointing else 'off'}):")
    for name, size in estimate.items():
        print(f"  {name:<18} {size / GIB:8.2f} GiB")
    print(f"  {'total':<18} {sum(estimate.values()) / GIB:8.2f} GiB")
    world = max(training_args.world_size, 1)
    per_step = batch * training_args.gradient_accumulation_steps * world
    print(f"Each optimizer step: {per_step} examples ({batch} per device x {training_args.gradient_accumulation_steps} "
          f"accumulation x {world} process(es)), up to {per_step * longest:,} tokens")
    print("Dry run complete: nothing was trained or written.")
