"""Where the parts of each multimodal model live, and what the freezing options make trainable.

One data entry per model_type names, in transformers 5's module tree of the `...ForConditionalGeneration`
class, the media encoder ("tower": vision or audio), the projector that maps its output into the language
model's embedding space, and the language model itself. A parameter belongs to the part with the longest
matching prefix, so a projector nested inside its tower (Qwen2-VL's `model.visual.merger`) is told apart.

Rules (FinetuningArguments):
- `freeze_vision_tower` (default true) freezes the tower (vision or audio), `freeze_multi_modal_projector`
  (default true) the projector, `freeze_language_model` (default false) the language model and its head.
- Full and freeze tuning set `requires_grad` accordingly; freeze tuning picks its layers in the language
  model only, and trains a tower/projector in full when it is not frozen.
- LoRA/OFT never adapt the projector (a trainable projector is trained in full through `modules_to_save`)
  and adapt the tower only when it is not frozen; `freeze_language_model` keeps adapters off the language model.
- On a text-only model `freeze_language_model: true` is an error (nothing would train); un-freezing a tower or
  projector that does not exist only logs a warning (the run trains as asked otherwise).
"""

from dataclasses import dataclass
from typing import Any

from ...extras.errors import ConfigError
from ...extras.logging import get_logger

logger = get_logger(__name__)

TOWER, PROJECTOR, LANGUAGE_MODEL = "vision_tower", "multi_modal_projector", "language_model"


@dataclass(frozen=True)
class ModelParts:
    """Dotted module paths (from the top-level model) of each part of a multimodal model."""

    tower: tuple[str, ...]
    projector: tuple[str, ...]
    language_model: tuple[str, ...] = ("model.language_model", "lm_head")


_LLAVA = ModelParts(tower=("model.vision_tower",), projector=("model.multi_modal_projector",))

MULTIMODAL_MODELS: dict[str, ModelParts] = {
    "llava": _LLAVA,
    "llava_next": ModelParts(tower=("model.vision_tower",),
                             projector=("model.multi_modal_projector", "model.image_newline")),
    "qwen2_vl": ModelParts(tower=("model.visual",), projector=("model.visual.merger",)),
    "qwen2_5_vl": ModelParts(tower=("model.visual",), projector=("model.visual.merger",)),
    "qwen3_vl": ModelParts(tower=("model.visual",),
                           projector=("model.visual.merger", "model.visual.deepstack_merger_list")),
    "gemma3": _LLAVA,
    "paligemma": _LLAVA,
    "mllama": ModelParts(tower=("model.vision_model",), projector=("model.multi_modal_projector",)),
    "qwen2_audio": ModelParts(tower=("model.audio_tower",), projector=("model.multi_modal_projector",)),
}
# Model types not listed above but with a vision/audio sub-config: the common transformers layout.
_FALLBACK = ModelParts(tower=("model.vision_tower", "model.visual", "model.vision_model", "model.audio_tower"),
                       projector=("model.multi_modal_projector",))


def is_multimodal(config: Any) -> bool:
    """True for vision-language and audio-language configs (decided from the config alone, no weights)."""
    if getattr(config, "model_type", None) in MULTIMODAL_MODELS:
        return True
    return any(getattr(config, key, None) is not None for key in ("vision_config", "audio_config"))


def model_parts(model: Any) -> ModelParts | None:
    """The parts entry of `model` (None for a text-only model)."""
    config = getattr(model, "config", None)
    if config is None or not is_multimodal(config):
        return None
    return MULTIMODAL_MODELS.get(config.model_type, _FALLBACK)


def part_of(name: str, parts: ModelParts) -> str | None:
    """Which part a parameter or module name belongs to (longest matching prefix), or None."""
    best, best_len = None, -1
    for part, prefixes in ((TOWER, parts.tower), (PROJECTOR, parts.projector),
                           (LANGUAGE_MODEL, parts.language_model)):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = part, len(prefix)
    return best


def _flag(finetuning_args: Any, key: str, default: bool) -> bool:
    return bool(getattr(finetuning_args, key, default))


def frozen_parts(model: Any, finetuning_args: Any) -> set[str]:
    """The parts the freezing options keep frozen (subset of vision_tower, multi_modal_projector,
    language_model); empty for a text-only model."""
    if model_parts(model) is None:
        return set()
    frozen = set()
    if _flag(finetuning_args, "freeze_vision_tower", True):
        frozen.add(TOWER)
    if _flag(finetuning_args, "freeze_multi_modal_projector", True):
        frozen.add(PROJECTOR)
    if _flag(finetuning_args, "freeze_language_model", False):
        frozen.add(LANGUAGE_MODEL)
    return frozen


def check_options(model: Any, finetuning_args: Any) -> None:
    """Refuse (or warn about) multimodal freezing options on a text-only model."""
    if model_parts(model) is not None:
        return
    if _flag(finetuning_args, "freeze_language_model", False):
        raise ConfigError("`freeze_language_model: true` needs a multimodal model; this one is text-only, so "
                          "nothing would be trained")
    unfrozen = [key for key in ("freeze_vision_tower", "freeze_multi_modal_projector")
                if not _flag(finetuning_args, key, True)]
    if unfrozen:
        logger.warning("%s: false has no effect, this model has no vision/audio tower or projector.",
                       " and ".join(unfrozen))


def freeze_parts(model: Any, finetuning_args: Any) -> None:
    """Set requires_grad False on every parameter of a frozen part (full and freeze tuning)."""
    parts = model_parts(model)
    frozen = frozen_parts(model, finetuning_args)
    if parts is None or not frozen:
        return
    for name, param in model.named_parameters():
        if part_of(name, parts) in frozen:
            param.requires_grad_(False)
    logger.info("Frozen: %s.", ", ".join(sorted(frozen)))


def trainable_media_parts(model: Any, finetuning_args: Any) -> list[str]:
    """Tower/projector parts trained in full by freeze tuning (those the options leave unfrozen)."""
    if model_parts(model) is None:
        return []
    return [p for p in (TOWER, PROJECTOR) if p not in frozen_parts(model, finetuning_args)]


def lora_exclusions(model: Any, finetuning_args: Any) -> list[str]:
    """Module path prefixes that LoRA/OFT must not adapt: the projector always (frozen, or trained in full),
    the tower while frozen, the language model while frozen."""
    parts = model_parts(model)
    if parts is None:
        return []
    frozen = frozen_parts(model, finetuning_args)
    excluded = list(parts.projector)
    if TOWER in frozen:
        excluded += parts.tower
    if LANGUAGE_MODEL in frozen:
        excluded += parts.language_model
    return excluded


def projector_modules_to_save(model: Any, finetuning_args: Any) -> list[str]:
    """Full module paths of a trainable projector, for peft's `modules_to_save` (module lists are expanded,
    since peft wraps modules that are called, not containers; bare parameters cannot be listed)."""
    import torch

    parts = model_parts(model)
    if parts is None or PROJECTOR in frozen_parts(model, finetuning_args):
        return []
    modules = dict(model.named_modules())
    names: list[str] = []
    for path in parts.projector:
        module = modules.get(path)
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            names += [f"{path}.{child}" for child, _ in module.named_children()]
        elif module is not None:
            names.append(path)
    return names


def auto_model_class(config: Any) -> Any:
    """The transformers auto class that loads `config` with its media encoder: image-text-to-text for
    vision-language models, multimodal LM for audio-language ones, causal LM otherwise."""
    import transformers
    from transformers.models.auto import modeling_auto

    if is_multimodal(config):
        model_type = getattr(config, "model_type", None)
        if model_type in modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            return transformers.AutoModelForImageTextToText
        if model_type in modeling_auto.MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES:
            return transformers.AutoModelForMultimodalLM
    return transformers.AutoModelForCausalLM


def processor_without_video(processor_cls: type, **parts: Any) -> Any:
    """An image-only instance of a processor that also declares a video processor (Qwen2-VL, Qwen3-VL).

    transformers' video processors need torchvision; without it such a processor cannot be built at all, even
    for images. A subclass whose constructor omits `video_processor` (and keeps the class name, so that a saved
    processor_config.json still names the real class) builds one that handles images and text.
    """
    name = processor_cls.__name__

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                 **kwargs: Any) -> None:
        kwargs.pop("video_processor", None)
        processor_cls.__init__(self, image_processor=image_processor, tokenizer=tokenizer,
                               chat_template=chat_template, **kwargs)

    subclass = type(name, (processor_cls,), {"__init__": __init__, "__module__": processor_cls.__module__,
                                             "__qualname__": name})
    return subclass(**parts)
