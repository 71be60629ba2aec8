"""Supervised fine-tuning, top to bottom: tokenizer, template, data, model, trainer, train, evaluate, predict."""

from typing import Any

from ...data.collator import build_collator
from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...extras.logging import get_logger
from ...model.loader import compute_dtype, load_model, load_processor, load_tokenizer
from ...model.model_utils.hub import resolve_model
from ...model.model_utils.varlen_attention import enable_padding_free
from ..trainer_utils import evaluate, train_and_save
from .metrics import argmax_logits, similarity_scores, token_accuracy
from .trainer import CustomSeq2SeqTrainer

logger = get_logger(__name__)


def run_sft(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
            callbacks: list[Any]) -> None:
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    processor = load_processor(model_args, tokenizer, source)  # None for text-only models
    generating = training_args.predict_with_generate  # prompts only; answers kept as references
    stage = "predict" if generating else "sft"
    dataset_module = get_dataset(template, model_args, data_args, training_args, stage, tokenizer,
                                 processor=processor)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, dtype, source)
    if processor is not None:
        training_args.remove_unused_columns = False  # the media path columns are read by the collator

    padding_free = processor is None and _padding_free(model, data_args, training_args, generating)
    if processor is not None and data_args.padding_free:
        logger.warning("padding_free is off for multimodal models (their media tokens need whole rows).")
    metrics: dict[str, Any] = {}
    if finetuning_args.compute_accuracy and not generating:
        metrics = {"compute_metrics": token_accuracy, "preprocess_logits_for_metrics": argmax_logits}
    trainer = CustomSeq2SeqTrainer(
        finetuning_args=finetuning_args,
        model=model,
        args=training_args,
        data_collator=build_collator(tokenizer, model, pad_to_multiple_of=8, neat_packing=data_args.neat_packing,
                                     padding_side="left" if generating else "right", padding_free=padding_free,
                                     template=template, processor=processor),
        processing_class=processor if processor is not None else tokenizer,
        callbacks=callbacks,
        **metrics,
        **dataset_module,
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, finetuning_args)
    if training_args.do_eval and not generating:
        evaluate(trainer)
    if training_args.do_predict:
        gen_kwargs = {**generating_args.to_dict(), "eos_token_id": template.stop_token_ids(tokenizer),
                      "pad_token_id": tokenizer.pad_token_id}
        dataset = dataset_module["eval_dataset"]
        results = trainer.predict(dataset, metric_key_prefix="predict", **gen_kwargs)
        path, predictions, labels = trainer.save_predictions(dataset, results, generating_args.skip_special_tokens)
        scores = similarity_scores(predictions, labels)
        results.metrics.update(scores)
        trainer.log_metrics("predict", results.metrics)
        trainer.save_metrics("predict", results.metrics)
        logger.info("Predictions saved at %s.", path)


def _padding_free(model: Any, data_args: Any, training_args: Any, generating: bool) -> bool:
    """Padding-free batches when asked, or by default when the attention kernel keeps examples apart cheaply."""
    if generating or not training_args.do_train or data_args.padding_free is False:
        return False
    if enable_padding_free(model):
        logger.info("Padding-free batches: each batch is one row of back-to-back examples (padding_free).")
        return True
    if data_args.padding_free:
        logger.warning("padding_free with this attention kernel attends through a dense block mask, which costs "
                       "more than padding for long rows; flash_attn: sdpa or fa2 avoids that.")
        return True
    return False
