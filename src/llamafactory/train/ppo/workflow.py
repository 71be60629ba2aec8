"""PPO, top to bottom: tokenizer, template, prompts, policy with value head, reward source, reference, loop, save.

The policy samples answers to the dataset's prompts, the reward source scores them, and PPO raises the
score while a KL penalty keeps the policy near the reference model (see docs/ppo.md).
"""

from typing import Any

from ...data.collator import build_collator
from ...data.loader import get_dataset
from ...data.template import get_template_and_fix_tokenizer
from ...extras.errors import ConfigError
from ...extras.logging import get_logger
from ...extras.ploting import plot_loss
from ...model.loader import compute_dtype, load_model, load_tokenizer
from ...model.model_utils.hub import resolve_model

logger = get_logger(__name__)


def check_ppo_args(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any) -> None:
    """Stage ppo's own refusals, one line each, before any weight is loaded."""
    f = finetuning_args
    if f.stage != "ppo":
        return
    if not f.reward_model:
        raise ConfigError("stage ppo needs `reward_model`: the output folder of a `stage: rm` run, or a URL with "
                          "`reward_model_type: api`")
    if training_args.do_eval or training_args.do_predict:
        raise ConfigError("stage ppo only trains: remove `do_eval` / `do_predict` (evaluate the saved model in a "
                          "second run)")
    if training_args.load_best_model_at_end:
        raise ConfigError("`load_best_model_at_end` needs evaluation, which stage ppo does not run: remove it")
    if training_args.resume_from_checkpoint:
        raise ConfigError("stage ppo cannot resume from a checkpoint yet: set `overwrite_output_dir: true` or choose "
                          "a new `output_dir`")
    if f.reward_model_type == "lora" and f.finetuning_type != "lora":
        raise ConfigError(f"`reward_model_type: lora` loads the reward adapter beside the policy's LoRA adapter, so "
                          f"it needs `finetuning_type: lora`, not {f.finetuning_type}; use `reward_model_type: full`")
    if f.reward_model_type == "api" and not f.reward_model.startswith(("http://", "https://")):
        raise ConfigError(f"`reward_model_type: api` needs `reward_model` to be an http(s) URL, got "
                          f"`{f.reward_model}`")
    if f.reward_model_type != "full" and (f.reward_model_adapters or f.reward_model_quantization_bit):
        raise ConfigError("`reward_model_adapters` and `reward_model_quantization_bit` apply to "
                          "`reward_model_type: full` only")
    if (f.ref_model_adapters or f.ref_model_quantization_bit) and not f.ref_model:
        raise ConfigError("`ref_model_adapters` / `ref_model_quantization_bit` describe `ref_model`, which is not set")
    if f.ppo_epochs < 1 or f.ppo_buffer_size < 1:
        raise ConfigError(f"`ppo_epochs` and `ppo_buffer_size` must be at least 1, got {f.ppo_epochs} and "
                          f"{f.ppo_buffer_size}")
    if f.use_muon:
        raise ConfigError("`use_muon` is not supported with stage ppo: its value head is not a weight matrix Muon "
                          "can handle; use the default optimizer")


def run_ppo(model_args: Any, data_args: Any, training_args: Any, finetuning_args: Any, generating_args: Any,
            callbacks: list[Any]) -> None:
    from ..reference import create_ref_model
    from .reward import load_reward
    from .trainer import PPOTrainer

    check_ppo_args(model_args, data_args, training_args, finetuning_args)  # resume may be set after the parser
    source = resolve_model(model_args)
    tokenizer = load_tokenizer(model_args, source)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, "ppo", tokenizer)
    dtype = compute_dtype(training_args, finetuning_args, model_args)
    policy = load_model(tokenizer, model_args, finetuning_args, True, dtype, source, add_valuehead=True)
    # None for a LoRA/OFT policy: its adapter switched off is the reference, with no second copy in memory.
    reference = create_ref_model(policy.pretrained_model, model_args, finetuning_args, tokenizer, dtype)
    reward = load_reward(policy, tokenizer, template, model_args, finetuning_args, dtype)

    trainer = PPOTrainer(
        finetuning_args=finetuning_args,
        generating_args=generating_args,
        stop_token_ids=template.stop_token_ids(tokenizer),
        reward=reward,
        ref_model=reference,
        model=policy,
        args=training_args,
        data_collator=build_collator(tokenizer, pad_to_multiple_of=8, padding_side="left"),
        processing_class=tokenizer,
        callbacks=callbacks,
        train_dataset=dataset_module["train_dataset"],
    )
    metrics = trainer.ppo_train()
    trainer.save_model()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero() and finetuning_args.plot_loss:
        plot_loss(training_args.output_dir, keys=("loss", "reward"))
