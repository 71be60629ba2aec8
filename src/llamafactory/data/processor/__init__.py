"""Processors turn aligned examples into model inputs; one per kind of training objective."""

from typing import Any

from ...extras.errors import ConfigError
from .feedback import FeedbackProcessor
from .media import MEDIA_CUT, MEDIA_OUTPUT
from .packed import PackedSupervisedProcessor
from .pairwise import PairwiseProcessor
from .pretrain import PretrainProcessor
from .supervised import SupervisedProcessor
from .unsupervised import UnsupervisedProcessor

PROCESSORS = {
    "pt": PretrainProcessor,
    "sft": SupervisedProcessor,
    "rm": PairwiseProcessor,
    "dpo": PairwiseProcessor,
    "kto": FeedbackProcessor,
    "ppo": UnsupervisedProcessor,
    "grpo": UnsupervisedProcessor,
    "predict": UnsupervisedProcessor,
}


def get_processor(stage: str, template: Any, tokenizer: Any, data_args: Any, processor: Any = None) -> Any:
    """The processor for `stage`; `processor` is the model's HF processor (multimodal models), else None.

    A template's mm plugin is active only with a processor: a text-only model on a multimodal template (Gemma 3 1B
    on `gemma3`) is tokenized, packed and batched exactly like any text model."""
    if stage == "sft" and (data_args.packing or data_args.neat_packing):  # for pt, packing is the default
        if (getattr(template, "mm_plugin", None) or "base") != "base" and processor is not None:
            raise ConfigError(f"packing is not supported with the multimodal template `{template.name}`: set "
                              "`packing: false` and `neat_packing: false`")
        return PackedSupervisedProcessor(template, tokenizer, data_args)
    return PROCESSORS[stage](template, tokenizer, data_args, processor)


__all__ = ["MEDIA_CUT", "MEDIA_OUTPUT", "PROCESSORS", "get_processor"]
