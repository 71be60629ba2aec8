"""KTO, top to bottom: the dpo recipe (train/dpo/workflow.py) with tagged answers, their mismatched KL pairs,
and the KTO loss."""

from typing import Any

from ..dpo.workflow import run_dpo
from .trainer import CustomKTOTrainer


def run_kto(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
            callbacks: list[Any]) -> None:
    run_dpo(model_args, data_args, training_args, finetuning_args, generating_args, callbacks,
            trainer_class=CustomKTOTrainer, plots=("rewards/chosen", "rewards/rejected", "kl"))
