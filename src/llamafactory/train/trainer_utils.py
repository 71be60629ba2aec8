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


def evaluate(trainer: Any, perplexity: bool = True) -> dict[str, float]:
    """Evaluate and save the metrics; `perplexity` (exp of the loss) only means something for pt and sft."""
    metrics = trainer.evaluate(metric_key_prefix="eval")
    for key in [k for k in metrics if k.endswith("_loss") and perplexity]:  # eval_loss or eval_<dataset>_loss
        try:
            metrics[key[: -len("loss")] + "perplexity"] = math.exp(metrics[key])
        except OverflowError:
            metrics[key[: -len("loss")] + "perplexity"] = float("inf")
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


def create_custom_optimizer(model: Any, training_args: Any, finetuning_args: Any) -> Any:
    """The optimizers transformers' `optim` does not offer (None leaves the choice to transformers)."""
    if finetuning_args.loraplus_lr_ratio is not None:
        return create_loraplus_optimizer(model, training_args, finetuning_args)
    if finetuning_args.use_adam_mini:
        return _adam_mini(model, training_args)
    if finetuning_args.use_muon:
        return _muon(model, training_args)
    if finetuning_args.use_badam:
        return _badam(model, training_args, finetuning_args)
    return None


def _adam_kwargs(training_args: Any) -> dict[str, Any]:
    return {"lr": training_args.learning_rate, "betas": (training_args.adam_beta1, training_args.adam_beta2),
            "eps": training_args.adam_epsilon, "weight_decay": training_args.weight_decay}


def _adam_mini(model: Any, training_args: Any) -> Any:
    from adam_mini import Adam_mini

    config = model.config
    logger.info("Using the Adam-mini optimizer.")
    return Adam_mini(named_parameters=model.named_parameters(), **_adam_kwargs(training_args),
                     model_sharding=False, dim=config.hidden_size, n_heads=config.num_attention_heads,
                     n_kv_heads=getattr(config, "num_key_value_heads", None), verbose=False)


def _badam(model: Any, training_args: Any, finetuning_args: Any) -> Any:
    import torch
    from badam import BlockOptimizer

    base = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **_adam_kwargs(training_args))
    logger.info("Using BAdam: one block of layers trained at a time, switched every %d steps.",
                finetuning_args.badam_switch_interval)
    return BlockOptimizer(base_optimizer=base, named_parameters_list=list(model.named_parameters()),
                          switch_block_every=finetuning_args.badam_switch_interval,
                          start_block=finetuning_args.badam_start_block,
                          switch_mode=finetuning_args.badam_switch_mode, verbose=finetuning_args.badam_verbose)


def _combined(optimizers: list[Any]) -> Any:
    """Two optimizers stepped as one, so the scheduler, the trainer and checkpoints see a single optimizer."""
    from collections import ChainMap, OrderedDict

    import torch

    class Combined(torch.optim.Optimizer):
        def __init__(self) -> None:  # deliberately not Optimizer.__init__: the groups already exist
            self.optimizers = optimizers
            self.defaults = optimizers[0].defaults
            for hooks in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                          "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                          "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks"):
                setattr(self, hooks, OrderedDict())

        @property
        def param_groups(self) -> list[dict[str, Any]]:  # live: load_state_dict replaces the inner groups
            return [g for o in self.optimizers for g in o.param_groups]

        @property
        def state(self) -> Any:  # read-only view: each optimizer keeps its own state
            return ChainMap(*(o.state for o in self.optimizers))

        def step(self, closure: Any = None) -> Any:
            for optimizer in self.optimizers:
                optimizer.step()

        def zero_grad(self, set_to_none: bool = True) -> None:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=set_to_none)

        def state_dict(self) -> dict[str, Any]:
            return {"optimizers": [o.state_dict() for o in self.optimizers]}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            for optimizer, state in zip(self.optimizers, state_dict["optimizers"]):
                optimizer.load_state_dict(state)

    return Combined()


def _muon(model: Any, training_args: Any) -> Any:
    """Muon (torch.optim.Muon) for the 2-D weights of the hidden layers; AdamW for embeddings, head and norms."""
    import torch

    embeddings = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
                  for p in m.parameters()}
    matrices = [p for p in model.parameters() if p.requires_grad and p.ndim == 2 and id(p) not in embeddings]
    others = [p for p in model.parameters() if p.requires_grad and (p.ndim != 2 or id(p) in embeddings)]
    kwargs = _adam_kwargs(training_args)
    optimizers = [torch.optim.Muon(matrices, lr=kwargs["lr"], weight_decay=kwargs["weight_decay"])]
    if others:
        optimizers.append(torch.optim.AdamW(others, **kwargs))
    logger.info("Using Muon for %d weight matrices and AdamW for %d other tensors.", len(matrices), len(others))
    return _combined(optimizers)


class TrainerMixin:
    """What every stage's trainer adds to transformers' Trainer: the optimizers transformers' `optim` lacks
    (LoRA+, Adam-mini, Muon, BAdam), a default decay length for warmup_stable_decay, and `disable_shuffling`."""

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        if self.optimizer is None:
            self.optimizer = create_custom_optimizer(self.model, self.args, self.finetuning_args)
        return super().create_optimizer(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        args = self.args
        given = args.lr_scheduler_kwargs or {}
        if args.lr_scheduler_type == "warmup_stable_decay" and "num_decay_steps" not in given:
            # transformers needs the decay length; like the warmup, a share of the run is a sensible default.
            decay = max(1, int(0.1 * num_training_steps))
            args.lr_scheduler_kwargs = {**given, "num_decay_steps": decay}
            logger.info("warmup_stable_decay: decaying over the last %d steps (set lr_scheduler_kwargs."
                        "num_decay_steps to change it).", decay)
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        # disable_shuffling: keep the data in file order (curricula, ordered corpora).
        if self.finetuning_args.disable_shuffling:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(self.train_dataset)
        return super()._get_train_sampler(*args, **kwargs)
