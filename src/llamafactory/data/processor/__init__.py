"""Processors turn aligned examples into model inputs; one per kind of training objective."""

from typing import Any

from .pretrain import PretrainProcessor
from .supervised import SupervisedProcessor

PROCESSORS = {"pt": PretrainProcessor, "sft": SupervisedProcessor}


def get_processor(stage: str, template: Any, tokenizer: Any, data_args: Any) -> Any:
    return PROCESSORS[stage](template, tokenizer, data_args)
