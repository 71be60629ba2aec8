"""Load a tokenizer and a model ready for training or inference."""

import os
from typing import Any

from ..extras.errors import UserError
from ..extras.logging import get_logger
from .adapter import init_adapter
from .model_utils import visual
from .model_utils.hub import ModelSource, resolve_model
from .model_utils.quantization import quantization_kwargs
from .patcher import add_tokens, attn_implementation, patch_config, patch_model, print_param_status, resize_embeddings

logger = get_logger(__name__)


def _init_kwargs(model_args: Any, source: ModelSource) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code, "cache_dir": model_args.cache_dir,
                              "revision": model_args.model_revision, "token": model_args.hf_hub_token}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    return kwargs


def load_tokenizer(model_args: Any, source: ModelSource | None = None) -> Any:
    from transformers import AutoTokenizer

    source = source or resolve_model(model_args)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source.path,
            use_fast=model_args.use_fast_tokenizer,
            split_special_tokens=model_args.split_special_tokens,
            padding_side="right",
            **_init_kwargs(model_args, source),
        )
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a tokenizer from `{model_args.model_name_or_path}`: "
                        f"{' '.join(str(err).split())[:300]}") from err
    add_tokens(tokenizer, model_args)
    return tokenizer


# ModelArguments keys copied onto the processor, where the data side's multimodal plugins read them.
PROCESSOR_SETTINGS = ("image_max_pixels", "image_min_pixels", "image_do_pan_and_scan", "video_max_pixels",
                      "video_min_pixels", "video_fps", "video_maxlen", "audio_sampling_rate")


def load_processor(model_args: Any, tokenizer: Any, source: ModelSource | None = None) -> Any:
    """The Hugging Face processor of a multimodal model folder, or None for a text-only model (decided from
    its config.json, without loading the processor). The processor uses `tokenizer` (ours, with any added
    tokens) and carries the processor settings of `model_args` as attributes of the same names."""
    from transformers import AutoConfig

    source = source or resolve_model(model_args)
    config = None
    if not source.gguf_file:  # GGUF files hold text-only models
        try:
            config = AutoConfig.from_pretrained(source.path, **_init_kwargs(model_args, source))
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read the config of `{model_args.model_name_or_path}`: "
                            f"{' '.join(str(err).split())[:300]}") from err
    if config is None or not visual.is_multimodal(config):
        _warn_unused_settings(model_args)
        return None
    processor = _auto_processor(model_args, source, config, tokenizer)
    processor.tokenizer = tokenizer  # same vocabulary as the folder's copy; ours carries the added tokens
    for key in PROCESSOR_SETTINGS:
        if hasattr(model_args, key):
            setattr(processor, key, getattr(model_args, key))
    return processor


def _warn_unused_settings(model_args: Any) -> None:
    """Processor settings on a text-only model are harmless but likely a mistake: say so once."""
    from dataclasses import fields, is_dataclass

    if not is_dataclass(model_args):
        return
    changed = [f.name for f in fields(model_args)
               if f.name in PROCESSOR_SETTINGS and getattr(model_args, f.name) != f.default]
    if changed:
        logger.warning("%s: ignored, `%s` is a text-only model.", ", ".join(changed), model_args.model_name_or_path)


def _auto_processor(model_args: Any, source: ModelSource, config: Any, tokenizer: Any) -> Any:
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    kwargs = _init_kwargs(model_args, source)
    try:
        return AutoProcessor.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        failure = err
    # Qwen2-VL/Qwen3-VL processors also hold a video processor, which needs torchvision: build one for images.
    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(config.model_type) or "", None)
    if cls is not None and "video_processor" in cls.get_attributes():
        try:
            images = AutoImageProcessor.from_pretrained(source.path, **kwargs)
        except (OSError, ValueError, ImportError):
            images = None
        if images is not None:
            logger.warning("Loaded the %s processor for images only: video inputs need torchvision "
                           "(`pip install torchvision`).", cls.__name__)
            return visual.processor_without_video(cls, image_processor=images, tokenizer=tokenizer,
                                                  chat_template=getattr(tokenizer, "chat_template", None))
    raise UserError(f"cannot load the processor of multimodal model `{model_args.model_name_or_path}`: "
                    f"{' '.join(str(failure).split())[:300]}") from failure


def compute_dtype(training_args: Any | None, finetuning_args: Any, model_args: Any, generation: bool = False) -> Any:
    """Training: bf16/fp16 when asked (trainable weights are upcast later). Inference: infer_dtype, whose `auto`
    is bf16 on GPUs that have it, else fp16; on a CPU fp32, except for `generation` on a CPU with native bf16:
    decoding reads every weight once per token, so it is bound by memory bandwidth and half-size weights
    generated 1.6x faster on SmolLM2-135M (benchmarks/generation_speed.py). Scoring (`lmf eval`) stays fp32."""
    import torch

    if training_args is not None:
        if finetuning_args.pure_bf16:
            return torch.bfloat16
        if finetuning_args.finetuning_type == "full":
            # Every weight trains in fp32; loading in bf16 first would round them all (autocast still runs bf16).
            return torch.float32
        if training_args.bf16:
            return torch.bfloat16
        if training_args.fp16:
            return torch.float16
        return torch.float32
    chosen = model_args.infer_dtype
    if chosen == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if generation:
            from ..extras.env import cpu_has_fast_bf16

            if cpu_has_fast_bf16():
                return torch.bfloat16
        return torch.float32  # without bf16 instructions, bf16 kernels are emulated and slow
    return getattr(torch, chosen)


def load_model(tokenizer: Any, model_args: Any, finetuning_args: Any, is_trainable: bool, dtype: Any,
               source: ModelSource | None = None, add_valuehead: bool = False) -> Any:
    """The model with its fine-tuning method attached; with `add_valuehead`, wrapped in a ValueHeadModel whose
    head is read from the last adapter folder (or the model folder) when one was saved there. Vision- and
    audio-language models load with their media encoders (visual.auto_model_class)."""
    from transformers import AutoConfig

    source = source or resolve_model(model_args)
    kwargs = _init_kwargs(model_args, source)
    attn = attn_implementation(model_args)
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        config = AutoConfig.from_pretrained(source.path, **_init_kwargs(model_args, source))
        patch_config(config, model_args, is_trainable)
        auto_class = visual.auto_model_class(config)
        if model_args.train_from_scratch:
            extra = {"attn_implementation": attn} if attn else {}
            model = auto_class.from_config(config, dtype=dtype, trust_remote_code=model_args.trust_remote_code,
                                           **extra)
            logger.info("train_from_scratch: weights initialised randomly (the checkpoint's are not loaded).")
        else:
            kwargs.update(quantization_kwargs(model_args, dtype))
            model = auto_class.from_pretrained(source.path, config=config, dtype=dtype,
                                               low_cpu_mem_usage=model_args.low_cpu_mem_usage, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise UserError(f"cannot load model `{model_args.model_name_or_path}`: "
                        f"{' '.join(str(err).split())[:300]}") from err
    resize_embeddings(model, tokenizer, model_args)
    if source.gguf_file:
        # GGUF weights arrive dequantized; without this the model would be refused for training and saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(dtype)
    patch_model(model, tokenizer, model_args, is_trainable)
    model = init_adapter(model, model_args, finetuning_args, is_trainable)
    if not is_trainable:
        model.requires_grad_(False)
        model.eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if is_trainable:
        logger.info("trainable params: %s || all params: %s || trainable%%: %.4f", f"{trainable:,}", f"{total:,}",
                    100 * trainable / max(total, 1))
    else:
        logger.info("all params: %s", f"{total:,}")
    if model_args.print_param_status:
        print_param_status(model)
    if add_valuehead:
        model = _with_value_head(model, model_args, source, is_trainable)
    return model


def _with_value_head(model: Any, model_args: Any, source: ModelSource, is_trainable: bool) -> Any:
    from .model_utils.valuehead import ValueHeadModel

    wrapped = ValueHeadModel(model)
    adapters = [a.strip() for a in (model_args.adapter_name_or_path or "").split(",") if a.strip()]
    folders = adapters[-1:] + [source.path] if os.path.isdir(source.path) else adapters[-1:]
    for folder in folders:
        if wrapped.load_value_head(folder):
            logger.info("Value head loaded from %s.", folder)
            break
    else:
        if not is_trainable:
            where = model_args.adapter_name_or_path or model_args.model_name_or_path
            raise UserError(f"no value_head.safetensors in `{where}`: a reward model is the output of `stage: rm`")
    wrapped.v_head.requires_grad_(is_trainable)
    return wrapped
