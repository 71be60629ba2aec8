"""Configuration: one dataclass per concern, read from YAML/JSON files, `key=value` and `--key value`.

Importing this package is cheap; `TrainingArguments` (which needs transformers) is imported lazily.
"""

from .data_args import DataArguments
from .evaluation_args import EvaluationArguments
from .finetuning_args import FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments

__all__ = ["DataArguments", "EvaluationArguments", "FinetuningArguments", "GeneratingArguments", "ModelArguments"]
