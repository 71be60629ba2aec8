"""Steps every stage's recipe shares after the trainer is built: train, save, plot, evaluate."""

import math
from typing import Any

from ..extras.logging import get_logger
from ..extras.ploting import plot_loss

logger = get_logger(__name__)


def train_and_save(trainer: Any, training_args: Any, finetuning_args: Any) -> None:
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    metrics = dict(result.metrics)
    if hasattr(trainer, "throughput_report") and trainer.meter.real:
        report = trainer.throughput_report()
        metrics.update(report)
        logger.info("Throughput: %.1f effective tokens/s, %.1f%% padding; model %.3f TFLOP/s = %.1f%% of the "
                    "measured %.3f TFLOP/s matmul peak (FLOPs/token = 4N + 2T, see train/throughput.py).",
                    report["effective_tokens_per_second"], 100 * report["padding_share"], report["model_tflops"],
                    100 * report["flops_utilization"], report["matmul_peak_tflops"])
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
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


def create_loraplus_optimizer(model: Any, training_args: Any, finetuning_args: Any) -> Any:
    """LoRA+: the B matrices learn `loraplus_lr_ratio` times faster than A (and embeddings at their own rate).

    The optimizer class and its settings come from transformers' own `optim` handling; only the parameter
    groups differ.
    """
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import get_parameter_names

    decay_names = set(get_parameter_names(model, [torch.nn.LayerNorm]))
    decay_names = {n for n in decay_names if "bias" not in n and "norm" not in n}
    lr = training_args.learning_rate
    groups: dict[tuple[float, float], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_embedding_B" in name:
            rate = finetuning_args.loraplus_lr_embedding
        elif "lora_B" in name:
            rate = lr * finetuning_args.loraplus_lr_ratio
        else:
            rate = lr
        decay = training_args.weight_decay if name in decay_names else 0.0
        groups.setdefault((rate, decay), []).append(param)
    optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    param_groups = [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in groups.items()]
    logger.info("LoRA+ optimizer: lora_B learning rate x%s.", finetuning_args.loraplus_lr_ratio)
    return optim_cls(param_groups, **{k: v for k, v in optim_kwargs.items() if k not in ("lr", "weight_decay")})
