"""Settings applied around loading: attention kernel, cache, gradient checkpointing, generation config."""

from typing import Any

from ..extras.logging import get_logger

logger = get_logger(__name__)

ATTENTION = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}


def attn_implementation(model_args: Any) -> str | None:
    return ATTENTION[model_args.flash_attn]


def patch_model(model: Any, tokenizer: Any, model_args: Any, is_trainable: bool) -> None:
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if not is_trainable:
        model.config.use_cache = model_args.use_cache
        return
    model.config.use_cache = False  # the cache only costs memory in training
    if model_args.disable_gradient_checkpointing:
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        logger.warning("This model does not support gradient checkpointing; training without it.")
        return
    kwargs = {"use_reentrant": model_args.use_reentrant_gc}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    # With frozen embeddings, reentrant checkpointing needs inputs that require grad to backpropagate.
    model.enable_input_require_grads()
    logger.info("Gradient checkpointing enabled.")


def print_param_status(model: Any) -> None:
    for name, param in model.named_parameters():
        print(f"{name:80s} dtype={param.dtype} device={param.device} trainable={param.requires_grad}")
