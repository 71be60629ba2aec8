"""Preference optimisation, top to bottom: tokenizer, template, pairs, policy and reference, train, evaluate.

kto follows the same recipe with tagged answers and its own loss (train/kto/workflow.py).
"""

from functools import partial
from typing import Any

from ...data.collator import build_collator
from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...extras.ploting import plot_loss
from ...model.loader import compute_dtype, load_model, load_tokenizer
from ...model.model_utils.hub import resolve_model
from ..reference import create_ref_model, with_reference_logps
from ..trainer_utils import evaluate, train_and_save
from .trainer import CustomDPOTrainer


def run_dpo(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
            callbacks: list[Any], trainer_class: type = CustomDPOTrainer,
            plots: tuple[str, ...] = ("rewards/accuracies", "rewards/margins")) -> None:
    stage = finetuning_args.stage  # dpo, or kto (tagged answers plus mismatched pairs for the KL baseline)
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, stage, tokenizer)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, dtype, source)
    collator = build_collator(tokenizer, model, pad_to_multiple_of=8)
    make_ref = partial(create_ref_model, model, model_args, finetuning_args, tokenizer, dtype)
    ref_model = None
    if finetuning_args.precompute_ref_logps:  # the reference is built only for uncached data, then dropped
        dataset_module = with_reference_logps(dataset_module, model, make_ref, collator, model_args,
                                              finetuning_args, training_args, dtype)
    else:
        ref_model = make_ref()

    training_args.remove_unused_columns = False  # the pairs' (or KL rows') columns are not forward() arguments
    trainer = trainer_class(
        finetuning_args=finetuning_args,
        ref_model=ref_model,
        model=model,
        args=training_args,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        **dataset_module,
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, finetuning_args)
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            plot_loss(training_args.output_dir, keys=plots)
    if training_args.do_eval:
        evaluate(trainer, perplexity=False)
