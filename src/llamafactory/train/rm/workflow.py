"""Reward modelling, top to bottom: tokenizer, template, pairs, model with a value head, train, evaluate, predict."""

from typing import Any

from ...data.collator import build_collator
from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...extras.logging import get_logger
from ...extras.ploting import plot_loss
from ...model.loader import compute_dtype, load_model, load_tokenizer
from ...model.model_utils.hub import resolve_model
from ..trainer_utils import train_and_save
from .trainer import PairwiseTrainer, pairwise_accuracy

logger = get_logger(__name__)


def run_rm(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
           callbacks: list[Any]) -> None:
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, "rm", tokenizer)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, dtype, source,
                       add_valuehead=True)

    training_args.remove_unused_columns = False  # the pairs' columns are not forward() arguments
    trainer = PairwiseTrainer(
        finetuning_args=finetuning_args,
        model=model,
        args=training_args,
        data_collator=build_collator(tokenizer, model, pad_to_multiple_of=8),
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=pairwise_accuracy,
        **dataset_module,
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, finetuning_args)
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            plot_loss(training_args.output_dir, keys=("eval_accuracy",))
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_predict:
        results = trainer.predict(dataset_module["eval_dataset"], metric_key_prefix="predict")
        trainer.log_metrics("predict", results.metrics)
        trainer.save_metrics("predict", results.metrics)
        logger.info("Scores saved at %s.", trainer.save_predictions(results))
