"""Group-relative policy optimisation, top to bottom: checks, tokenizer, template, prompts, policy, rewards,
trainer, train, save, plot, evaluate.

For each prompt the policy samples `num_generations` answers; each answer's advantage is its reward against
the others of its group, so no value model is needed. trl's GRPOTrainer does the sampling and the loss; this
recipe feeds it our template's prompt ids, our stop tokens and our settings.
"""

import dataclasses
import os
from typing import Any

from transformers import TrainingArguments as HFTrainingArguments
from trl import GRPOConfig

from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...extras.errors import ConfigError
from ...extras.logging import get_logger
from ...extras.ploting import plot_loss
from ...model.loader import compute_dtype, load_model, load_tokenizer
from ...model.model_utils.hub import resolve_model
from ..trainer_utils import train_and_save
from .rewards import build_rule_rewards, load_reward_model, needs_reference
from .trainer import CustomGRPOTrainer

logger = get_logger(__name__)


def run_grpo(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
             callbacks: list[Any]) -> None:
    check_grpo_args(training_args, finetuning_args, generating_args)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # trl reports usage to the hub unless told not to
    reward_funcs = build_rule_rewards(finetuning_args.reward_funcs)  # bad specs fail before anything loads
    changed = [k for k in ("resize_vocab", "add_tokens", "add_special_tokens", "quantization_bit")
               if getattr(model_args, k)]
    if finetuning_args.finetuning_type in ("full", "freeze") and finetuning_args.grpo_beta > 0 and changed:
        # trl rebuilds this reference from the checkpoint's path, without our changes to the loaded model.
        raise ConfigError(f"grpo with {finetuning_args.finetuning_type} tuning and `grpo_beta` > 0 reloads the "
                          f"reference from the checkpoint, which would lack `{changed[0]}`: use LoRA, or "
                          "`grpo_beta: 0`")
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, "grpo", tokenizer)
    dataset_module = {split: _for_each(data, lambda d: with_prompt_text(d, tokenizer))
                      for split, data in dataset_module.items()}
    if needs_reference(reward_funcs):
        _check_references(dataset_module)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, dtype, source)
    stop_at(model, template.stop_token_ids(tokenizer))
    if finetuning_args.reward_model:
        reward_funcs.append(load_reward_model(tokenizer, model_args, data_args, training_args, finetuning_args))

    trainer = CustomGRPOTrainer(
        finetuning_args=finetuning_args,
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_config(training_args, model_args, finetuning_args, generating_args),
        processing_class=tokenizer,
        callbacks=callbacks,
        **dataset_module,
    )
    if training_args.do_train:
        train_and_save(trainer, training_args, finetuning_args)
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            plot_loss(training_args.output_dir, keys=("reward", "kl"))
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


def check_grpo_args(training_args: Any, finetuning_args: Any, generating_args: Any | None = None) -> None:
    """What trl would refuse mid-setup (or silently ignore), refused up front in our keys' names (a dry run,
    which has no generating arguments, checks the rest)."""
    groups = finetuning_args.num_generations
    if groups < 2:
        raise ConfigError(f"`num_generations` must be at least 2 (each answer is judged against the others sampled "
                          f"for its prompt); got {groups}")
    if finetuning_args.max_completion_length < 1:
        raise ConfigError(f"`max_completion_length` must be positive; got {finetuning_args.max_completion_length}")
    if finetuning_args.grpo_beta < 0:
        raise ConfigError(f"`grpo_beta` must be 0 or more; got {finetuning_args.grpo_beta}")
    world = training_args.world_size
    if training_args.do_train:
        batch, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
        answers = batch * world * accumulation
        if answers % groups:
            fitting = next(b for b in range(batch, batch + groups + 1) if (b * world * accumulation) % groups == 0)
            raise ConfigError(f"`per_device_train_batch_size` ({batch}) x `gradient_accumulation_steps` "
                              f"({accumulation}) x {world} process(es) = {answers} answers per generation round, "
                              f"which must be a multiple of `num_generations` ({groups}) so every prompt's group "
                              f"is sampled together; change one of these keys (e.g. "
                              f"`per_device_train_batch_size: {fitting}`)")
        logger.info("grpo: each optimizer step samples %d answers = %d prompts x %d answers (num_generations).",
                    answers, answers // groups, groups)
    if training_args.do_eval and (training_args.per_device_eval_batch_size * world) % groups:
        raise ConfigError(f"`per_device_eval_batch_size` ({training_args.per_device_eval_batch_size}) x {world} "
                          f"process(es) must be a multiple of `num_generations` ({groups}): evaluation samples "
                          "each prompt's whole group in one batch")
    if training_args.do_predict:
        raise ConfigError("stage grpo trains and evaluates only; to generate answers, run stage sft with "
                          "`do_predict: true` and `predict_with_generate: true` on the trained adapter")
    if generating_args is not None and (not generating_args.do_sample or generating_args.num_beams != 1):
        raise ConfigError("grpo learns by comparing sampled answers: keep `do_sample: true` and `num_beams: 1` "
                          "(tune `temperature`, `top_p` and `top_k` instead)")
    if finetuning_args.reward_model and finetuning_args.reward_model_type == "api":
        raise ConfigError("`reward_model_type: api` is not supported by stage grpo; use a reward model saved by "
                          "stage rm (`reward_model_type: lora` or `full`), or a Python function in `reward_funcs`")
    count = len(finetuning_args.reward_funcs or []) + (1 if finetuning_args.reward_model else 0)
    if count == 0:
        raise ConfigError("stage grpo needs a reward: set `reward_funcs` (e.g. [exact_match]) and/or `reward_model`")
    weights = finetuning_args.reward_weights
    if weights is not None and len(weights) != count:
        raise ConfigError(f"`reward_weights` has {len(weights)} values for {count} rewards (the `reward_funcs` "
                          "entries, then `reward_model`); give one weight per reward")


def _for_each(data: Any, fn: Any) -> Any:
    return {name: fn(d) for name, d in data.items()} if isinstance(data, dict) else fn(data)


def with_prompt_text(dataset: Any, tokenizer: Any) -> Any:
    """Add `prompt` (our prompt ids as text: trl logs it and hands it to rewards) and `reference` (the
    reference answer as text, stripped). The ids stay: generation starts from them, not from the text."""

    def add_text(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        references = [[t for t in ids if t >= 0] for ids in batch["labels"]]
        return {"prompt": tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False),
                "reference": [t.strip() for t in tokenizer.batch_decode(references, skip_special_tokens=True)]}

    return dataset.map(add_text, batched=True, remove_columns=["attention_mask"])


def _check_references(dataset_module: dict[str, Any]) -> None:
    from datasets import Dataset

    train = dataset_module.get("train_dataset")
    if isinstance(train, Dataset) and not any(train["reference"]):
        raise ConfigError("`reward_funcs: exact_match` compares answers with the dataset's reference answers, but "
                          "no training example has one (fill the `output`/response column)")


def stop_at(model: Any, stop_ids: list[int]) -> None:
    """Make the template's stop tokens end each sampled answer: trl reads the model's generation config both
    to stop generating and to cut each answer after its first stop token."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.generation_config.eos_token_id = list(stop_ids)


def grpo_config(training_args: Any, model_args: Any, finetuning_args: Any, generating_args: Any) -> Any:
    """Our TrainingArguments as trl's GRPOConfig: every transformers setting as given (trl's own defaults,
    e.g. bf16 on and learning rate 1e-6, would otherwise apply), plus the grpo and sampling keys."""
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(HFTrainingArguments)
              if f.init and hasattr(training_args, f.name)}
    values.update(
        remove_unused_columns=False,  # generation reads `input_ids`; rewards read every column
        num_generations=finetuning_args.num_generations,
        max_completion_length=finetuning_args.max_completion_length,
        beta=finetuning_args.grpo_beta,
        reward_weights=finetuning_args.reward_weights,
        shuffle_dataset=not finetuning_args.disable_shuffling,
        temperature=generating_args.temperature,
        top_p=generating_args.top_p,
        top_k=generating_args.top_k,
        repetition_penalty=generating_args.repetition_penalty,
        generation_kwargs={"use_cache": True},  # training turns the cache off in the model config
    )
    if not model_args.disable_gradient_checkpointing:  # trl re-enables it after each generation with these
        values["gradient_checkpointing_kwargs"] = {"use_reentrant": model_args.use_reentrant_gc}
    try:
        return GRPOConfig(**values)
    except ValueError as err:
        raise ConfigError(f"stage grpo: {' '.join(str(err).split())}") from err
