"""Supervised fine-tuning, top to bottom: tokenizer, template, data, model, trainer, train, evaluate."""

from typing import Any

from ...data.collator import build_collator
from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...model.loader import compute_dtype, load_model, load_tokenizer
from ...model.model_utils.hub import resolve_model
from ..trainer_utils import evaluate, train_and_save
from .trainer import CustomSeq2SeqTrainer


def run_sft(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
            callbacks: list[Any]) -> None:
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, "sft", tokenizer)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, dtype, source)

    trainer = CustomSeq2SeqTrainer(
        finetuning_args=finetuning_args,
        model=model,
        args=training_args,
        data_collator=build_collator(tokenizer, model, pad_to_multiple_of=8, neat_packing=data_args.neat_packing),
        processing_class=tokenizer,
        callbacks=callbacks,
        **dataset_module,
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, finetuning_args)
    if training_args.do_eval:
        evaluate(trainer)
