"""Settings applied around loading: attention kernel, RoPE scaling, MoE loss, vocabulary, precision of
norms and logits, cache, gradient checkpointing, generation config."""

import math
from typing import Any

from ..extras.errors import ConfigError
from ..extras.logging import get_logger

logger = get_logger(__name__)

ATTENTION = {"auto": None, "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}


def attn_implementation(model_args: Any) -> str | None:
    return ATTENTION[model_args.flash_attn]


def patch_model(model: Any, tokenizer: Any, model_args: Any, is_trainable: bool) -> None:
    if is_trainable:  # fp32 norms need training's autocast; inference would meet bf16 weights unconverted
        upcast_for_stability(model, model_args)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    text_config = _text_config(model.config)
    if not is_trainable:
        model.config.use_cache = text_config.use_cache = model_args.use_cache
        return
    model.config.use_cache = text_config.use_cache = False  # the cache only costs memory in training
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


def _text_config(config: Any) -> Any:
    """The language model's config: a multimodal config keeps it in text_config (the config itself otherwise)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def patch_config(config: Any, model_args: Any, is_trainable: bool) -> None:
    if model_args.rope_scaling:
        _rope_scaling(_text_config(config), model_args, is_trainable)
    if model_args.moe_aux_loss_coef is not None:
        text_config = _text_config(config)
        if hasattr(text_config, "router_aux_loss_coef") and not hasattr(config, "router_aux_loss_coef"):
            config = text_config
        if not hasattr(config, "router_aux_loss_coef"):
            logger.warning("moe_aux_loss_coef: %s is not a mixture-of-experts model; the setting has no effect.",
                           type(config).__name__)
        else:
            config.router_aux_loss_coef = model_args.moe_aux_loss_coef
            config.output_router_logits = is_trainable  # the auxiliary loss needs the router logits


def _rope_scaling(config: Any, model_args: Any, is_trainable: bool) -> None:
    current = getattr(config, "max_position_embeddings", None)
    wanted = getattr(model_args, "model_max_length", None)
    if not current:
        raise ConfigError("`rope_scaling` needs config.max_position_embeddings, which this model lacks")
    if is_trainable and (not wanted or wanted <= current):
        logger.warning("rope_scaling: cutoff_len %s fits in the model's %d positions; RoPE is left unscaled.",
                       wanted, current)
        return
    factor = float(math.ceil(wanted / current)) if is_trainable else 2.0
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.update({"rope_type": model_args.rope_scaling, "factor": factor})
    if model_args.rope_scaling in ("dynamic", "yarn", "llama3"):
        params["original_max_position_embeddings"] = current
    if model_args.rope_scaling == "llama3":
        params.update({"low_freq_factor": 1.0, "high_freq_factor": 4.0})
    config.rope_parameters = params
    config.max_position_embeddings = int(current * factor)
    logger.info("RoPE scaling %s with factor %s: context %d -> %d tokens.", model_args.rope_scaling, factor, current,
                config.max_position_embeddings)


def add_tokens(tokenizer: Any, model_args: Any) -> None:
    """add_tokens / add_special_tokens: new vocabulary entries (the embeddings grow with resize_vocab)."""
    plain = [t.strip() for t in (model_args.add_tokens or "").split(",") if t.strip()]
    special = [t.strip() for t in (model_args.add_special_tokens or "").split(",") if t.strip()]
    added = tokenizer.add_tokens(plain) if plain else 0
    if special:
        added += tokenizer.add_special_tokens({"additional_special_tokens": special},
                                              replace_extra_special_tokens=False)
    if added:
        logger.info("Added %d token(s) to the tokenizer.", added)


def resize_embeddings(model: Any, tokenizer: Any, model_args: Any) -> None:
    """Grow the embeddings when the tokenizer has more tokens than the model (asked for, or refused clearly)."""
    current = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= current:
        return
    if not (model_args.resize_vocab or model_args.add_tokens or model_args.add_special_tokens):
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings only {current}; "
                          "set `resize_vocab: true` to grow them")
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    logger.info("Resized the embeddings from %d to %d rows.", current, model.get_input_embeddings().weight.shape[0])


def upcast_for_stability(model: Any, model_args: Any) -> None:
    """upcast_layernorm keeps norm weights in fp32; upcast_lmhead_output returns fp32 logits."""
    import torch

    if model_args.upcast_layernorm:
        for name, param in model.named_parameters():
            if param.ndim == 1 and "norm" in name:
                param.data = param.data.to(torch.float32)
    if model_args.upcast_lmhead_output:
        head = model.get_output_embeddings()
        if head is not None:
            head.register_forward_hook(lambda module, args, output: output.to(torch.float32))
