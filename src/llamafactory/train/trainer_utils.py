"""Steps every stage's recipe shares after the trainer is built: train, save, plot, evaluate."""

import math
from typing import Any

from ..extras.logging import get_logger
from ..extras.ploting import plot_loss

logger = get_logger(__name__)


def train_and_save(trainer: Any, training_args: Any, finetuning_args: Any) -> None:
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.is_world_process_zero() and finetuning_args.plot_loss:
        plot_loss(training_args.output_dir, keys=("loss", "eval_loss"))


def evaluate(trainer: Any) -> dict[str, float]:
    metrics = trainer.evaluate(metric_key_prefix="eval")
    try:
        metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
    except (KeyError, OverflowError):
        metrics["eval_perplexity"] = float("inf")
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics
