"""Attach the fine-tuning method: full, freeze, LoRA or OFT (through peft). Trainable weights are fp32."""

import os
import re
from typing import Any

from ..extras.errors import ConfigError, UserError
from ..extras.logging import get_logger
from .model_utils import lora_linear, visual

logger = get_logger(__name__)

OUTPUT_LAYERS = {"lm_head", "output_layer", "output", "embed_out"}


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_all_linear_modules(model: Any, exclude: list[str] | None = None) -> list[str]:
    """Short names of every linear layer except the output head (and those under the `exclude` module
    paths): what `lora_target: all` means."""
    import torch

    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and full_name.split(".")[-1] not in OUTPUT_LAYERS \
                and not _under(full_name, exclude or []):
            names.add(full_name.split(".")[-1])
    return sorted(names)


def _target_modules(model: Any, finetuning_args: Any, key: str) -> list[str] | str:
    """peft target_modules for `lora_target`/`oft_target`. On a multimodal model the names are restricted by a
    regex to the parts that may be adapted (visual.lora_exclusions): never the projector, the tower only when
    it is not frozen, the language model only when it is not frozen."""
    import re

    targets = _split(getattr(finetuning_args, key))
    excluded = visual.lora_exclusions(model, finetuning_args)
    names = find_all_linear_modules(model, excluded) if targets == ["all"] else targets
    if not names:
        raise ConfigError(f"`{key}: all` found no linear layer to adapt: with `freeze_language_model: true` set "
                          "`freeze_vision_tower: false`, or use `finetuning_type: full`/`freeze`")
    if not excluded:
        return names
    prefixes = "|".join(re.escape(p) for p in excluded)
    short = "|".join(re.escape(n) for n in names)
    return rf"^(?!(?:{prefixes})(?:\.|$))(?:.*\.)?(?:{short})$"


def _upcast_trainable(model: Any, finetuning_args: Any) -> None:
    import torch

    if finetuning_args.pure_bf16:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def _setup_full(model: Any, finetuning_args: Any) -> None:
    model.requires_grad_(True)
    visual.freeze_parts(model, finetuning_args)


def _setup_freeze(model: Any, finetuning_args: Any) -> None:
    """Train the last (or first) n layers of the language model; on a multimodal model also a tower/projector
    that the freezing options leave unfrozen, in full."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    if not num_layers:
        raise ConfigError("freeze tuning needs the model's number of layers (config.num_hidden_layers)")
    n = finetuning_args.freeze_trainable_layers
    if n == 0 or abs(n) > num_layers:
        raise ConfigError(f"`freeze_trainable_layers` must be between -{num_layers} and {num_layers}, not 0; got {n}")
    if finetuning_args.use_llama_pro:
        # The expanded blocks sit at the end of each group of num_layers / n layers (scripts/llama_pro.py).
        if n <= 0 or num_layers % n:
            raise ConfigError(f"`use_llama_pro` needs `freeze_trainable_layers` = the number of expanded blocks, "
                              f"dividing the {num_layers} layers evenly; got {n}")
        stride = num_layers // n
        layer_ids = set(range(stride - 1, num_layers, stride))
    else:
        layer_ids = set(range(num_layers - n, num_layers)) if n > 0 else set(range(-n))
    modules = _split(finetuning_args.freeze_trainable_modules)
    extra = _split(finetuning_args.freeze_extra_modules)
    layer_pattern = re.compile(r"\.(\d+)\.")
    parts_entry = visual.model_parts(model)
    media_trainable = set(visual.trainable_media_parts(model, finetuning_args))
    for name, param in model.named_parameters():
        parts = name.split(".")
        part = visual.part_of(name, parts_entry) if parts_entry else None
        match = layer_pattern.search(name)
        trainable = False
        if part in (visual.TOWER, visual.PROJECTOR):
            trainable = part in media_trainable  # media parts are trained whole or not at all
        elif match and int(match.group(1)) in layer_ids:
            inner = name[match.end():].split(".")
            trainable = modules == ["all"] or any(m in inner for m in modules)
        elif any(m in parts for m in extra):
            trainable = True
        param.requires_grad_(trainable)
    visual.freeze_parts(model, finetuning_args)
    if not any(p.requires_grad for p in model.parameters()):
        frozen_lm = " (and `freeze_language_model: true` freezes the language model)" if parts_entry and \
            visual.LANGUAGE_MODEL in visual.frozen_parts(model, finetuning_args) else ""
        raise ConfigError(f"freeze tuning selected no parameters: check `freeze_trainable_modules` "
                          f"({finetuning_args.freeze_trainable_modules}) and `freeze_extra_modules`{frozen_lm}")
    logger.info("Freeze tuning: training layers %s (modules: %s).", sorted(layer_ids), ", ".join(modules))


def _embedding_modules(model: Any) -> list[str]:
    """Names of the input and output embedding modules, trained in full when the vocabulary grew."""
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return sorted({name.split(".")[-1] for name, module in model.named_modules() if id(module) in wanted})


def _peft_config(model: Any, finetuning_args: Any, new_vocab: bool = False) -> Any:
    """The peft config of a new adapter: LoRA (with DoRA, rsLoRA, PiSSA) or OFT."""
    from peft import LoraConfig, OFTConfig, TaskType

    modules_to_save = _split(finetuning_args.additional_target)
    if new_vocab:  # new rows of the embeddings must learn, so the embeddings train in full
        modules_to_save += [m for m in _embedding_modules(model) if m not in modules_to_save]
    # A trainable multimodal projector is small and new to the task: trained in full, saved with the adapter.
    modules_to_save += [m for m in visual.projector_modules_to_save(model, finetuning_args) if m not in modules_to_save]

    if finetuning_args.finetuning_type == "oft":
        return OFTConfig(
            task_type=TaskType.CAUSAL_LM,
            r=finetuning_args.oft_rank,
            oft_block_size=finetuning_args.oft_block_size if not finetuning_args.oft_rank else 0,
            module_dropout=finetuning_args.module_dropout,
            target_modules=_target_modules(model, finetuning_args, "oft_target"),
            modules_to_save=modules_to_save or None,
        )
    init: Any = True
    if finetuning_args.pissa_init:
        init = "pissa" if finetuning_args.pissa_iter == -1 else f"pissa_niter_{finetuning_args.pissa_iter}"
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha_or_default(),
        lora_dropout=finetuning_args.lora_dropout,
        target_modules=_target_modules(model, finetuning_args, "lora_target"),
        use_rslora=finetuning_args.use_rslora,
        use_dora=finetuning_args.use_dora,
        init_lora_weights=init,
        modules_to_save=modules_to_save or None,
    )
    return lora_linear.register(config)


def _resumed_config(path: str) -> Any:
    """The saved config of an adapter to train further, a LoRA one routed to the fused layer like a new one."""
    from peft import LoraConfig, PeftConfig

    config = PeftConfig.from_pretrained(path)
    return lora_linear.register(config) if isinstance(config, LoraConfig) else config


def _setup_peft(model: Any, model_args: Any, finetuning_args: Any, is_trainable: bool) -> Any:
    from peft import PeftModel, get_peft_model

    adapters = _split(model_args.adapter_name_or_path)
    for path in adapters:
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise UserError(f"adapter `{path}` not found: `adapter_name_or_path` must name folders that hold "
                            "adapter_config.json (train one first with `lmf train`)")
    if is_trainable and getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        # On the bare base, before any adapter exists: it freezes every parameter it sees.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # the patcher owns that
    resume = None
    if adapters:
        # Earlier adapters are merged into the base; the last is trained further unless a new one is wanted.
        to_merge = adapters[:-1] if is_trainable and not finetuning_args.create_new_adapter else adapters
        if is_trainable and not finetuning_args.create_new_adapter:
            resume = adapters[-1]
        for path in to_merge:
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        if to_merge:
            logger.info("Merged %d adapter(s): %s", len(to_merge), ", ".join(to_merge))
        if resume:
            model = PeftModel.from_pretrained(model, resume, is_trainable=True, config=_resumed_config(resume))
            logger.info("Resumed adapter %s.", resume)
    if is_trainable and resume is None:
        new_vocab = bool(getattr(model_args, "resize_vocab", False) or getattr(model_args, "add_tokens", None)
                         or getattr(model_args, "add_special_tokens", None))
        config = _peft_config(model, finetuning_args, new_vocab)
        try:
            model = get_peft_model(model, config)
        except ValueError as err:
            key = "oft_target" if finetuning_args.finetuning_type == "oft" else "lora_target"
            raise ConfigError(f"`{key}`: {' '.join(str(err).split())}") from err
        targets = config.target_modules
        modules = targets if isinstance(targets, str) else ", ".join(sorted(targets))
        logger.info("%s on modules: %s", finetuning_args.finetuning_type.upper(), modules)
    return model


def init_adapter(model: Any, model_args: Any, finetuning_args: Any, is_trainable: bool) -> Any:
    kind = finetuning_args.finetuning_type
    if is_trainable:
        visual.check_options(model, finetuning_args)
    if kind in ("lora", "oft"):
        model = _setup_peft(model, model_args, finetuning_args, is_trainable)
    elif is_trainable and kind == "full":
        _setup_full(model, finetuning_args)
    elif is_trainable and kind == "freeze":
        _setup_freeze(model, finetuning_args)
    if is_trainable:
        _upcast_trainable(model, finetuning_args)
    return model

