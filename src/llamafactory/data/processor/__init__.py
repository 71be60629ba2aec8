"""Processors turn aligned examples into model inputs; one per kind of training objective."""

from typing import Any

from .feedback import FeedbackProcessor
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


def get_processor(stage: str, template: Any, tokenizer: Any, data_args: Any) -> Any:
    if stage == "sft" and (data_args.packing or data_args.neat_packing):  # for pt, packing is the default
        return PackedSupervisedProcessor(template, tokenizer, data_args)
    return PROCESSORS[stage](template, tokenizer, data_args)
