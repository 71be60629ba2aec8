"""The PPO loop on transformers' Trainer: sample answers, score them, then a few clipped updates per batch.

trl no longer ships a PPO trainer, so the rollout and the loss live here. transformers' Trainer still gives
the optimizer and scheduler, the accelerator, the callbacks (progress bar, trainer_log.jsonl), `self.log`
and checkpoints; `ppo_train` replaces `train`.

Shapes: a rollout holds `sequences` = left-padded prompts of width W followed by responses of length R
(right-padded). Every per-token tensor (`mask`, log-probs, values, advantages, returns) is (rows, R) and
describes the response tokens: column t is token W + t, predicted from position W + t - 1.
"""

import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from transformers import Trainer

from ...extras.logging import get_logger
from ..reference import adapters_disabled
from ..trainer_utils import TrainerMixin

logger = get_logger(__name__)

CLIP_RANGE = 0.2  # how far one update may move a token's probability ratio
VALUE_CLIP_RANGE = 0.2  # how far one update may move a value away from the rollout's
VALUE_COEF = 0.1  # weight of the value loss beside the policy loss
GAMMA, LAMBDA = 1.0, 0.95  # GAE: no discount inside an answer; lambda trades bias for variance
KL_INIT, KL_HORIZON = 0.2, 10000  # adaptive KL controller (Ziegler et al., 2019)


# ------------------------------------------------------------------------------------------ tensor helpers
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of the unmasked entries."""
    return masked_mean((values - masked_mean(values, mask)) ** 2, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Unit variance over the real tokens (and zero mean unless `shift_mean` is False); padding stays 0."""
    mean = masked_mean(values, mask)
    out = (values - mean) * torch.rsqrt(masked_var(values, mask) + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def response_mask(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1 up to and including each row's first stop token; what `generate` wrote after it is padding."""
    is_stop = torch.isin(responses, torch.tensor(stop_ids, device=responses.device)).long()
    stops_before = is_stop.cumsum(dim=1) - is_stop
    return (stops_before == 0).long()


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` does, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits` (rows, R, vocab), in fp32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(2, tokens.unsqueeze(-1)).squeeze(-1)


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (-kl_coef * KL on every token, the score added on the last one) and the per-token KL."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(rewards.size(0), device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards, kl


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = GAMMA,
                lam: float = LAMBDA) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over each answer; the episode ends after the last real token."""
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages * mask, (advantages + values) * mask


def ppo_losses(logprobs: torch.Tensor, values: torch.Tensor, old_logprobs: torch.Tensor, old_values: torch.Tensor,
               advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Clipped surrogate policy loss and clipped value loss, averaged over real tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - CLIP_RANGE, 1 + CLIP_RANGE)
    policy = masked_mean(torch.max(unclipped, clipped), mask)
    values_clipped = old_values + (values - old_values).clamp(-VALUE_CLIP_RANGE, VALUE_CLIP_RANGE)
    value = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return {"policy": policy, "value": value, "loss": policy + VALUE_COEF * value, "clipfrac": clipfrac}


def disable_dropout(model: torch.nn.Module) -> None:
    """PPO compares log-probs taken in eval mode (rollout) with ones taken in train mode (update): with dropout
    on, their ratio would differ from 1 before any update, biasing clipping and the KL."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


# ------------------------------------------------------------------------------------------ controllers
class AdaptiveKLController:
    """Moves the KL coefficient so the measured KL drifts towards `target` (Ziegler et al., 2019): the error
    is clipped to +-20% and applied over `horizon` samples, so the coefficient changes slowly."""

    def __init__(self, target: float, init: float = KL_INIT, horizon: int = KL_HORIZON) -> None:
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon


class FixedKLController:
    """`ppo_target` 0 (or unset): the KL coefficient stays at its initial value."""

    def __init__(self, init: float = KL_INIT) -> None:
        self.value = init

    def update(self, current_kl: float, n_samples: int) -> None:
        return None


def kl_controller(target: float | None) -> AdaptiveKLController | FixedKLController:
    return AdaptiveKLController(target) if target else FixedKLController()


class RunningMoments:
    """Mean and standard deviation of every score seen so far, for `ppo_score_norm` (batches merged exactly)."""

    def __init__(self) -> None:
        self.count, self.mean, self.var = 0, 0.0, 0.0

    def update(self, scores: torch.Tensor) -> None:
        scores = scores.detach().double().flatten()
        n = scores.numel()
        if n == 0:
            return
        batch_mean, batch_var = scores.mean().item(), scores.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.mean) / (self.std + 1e-8)


# ------------------------------------------------------------------------------------------ trainer
class PPOTrainer(TrainerMixin, Trainer):
    """`model` is the policy with its value head (ValueHeadModel); `reward` scores (sequences, attention_mask);
    `ref_model` gives the reference log-probabilities, or None to use the policy with its adapters disabled."""

    def __init__(self, finetuning_args: Any, generating_args: Any, stop_token_ids: list[int], reward: Any,
                 ref_model: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args
        self.reward = reward
        self._place(getattr(reward, "model", None))
        self.ref_model = self._place(ref_model)
        self.stop_token_ids = stop_token_ids
        tokenizer = self.processing_class
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
        self.generation_kwargs = {**generating_args.to_dict(), "eos_token_id": stop_token_ids,
                                  "pad_token_id": self.pad_token_id, "use_cache": True}
        args = self.args
        self.micro_size = args.per_device_train_batch_size  # rows per forward/backward pass
        self.minibatch_size = self.micro_size * args.gradient_accumulation_steps  # rows per optimizer step
        self.rollout_size = self.minibatch_size * finetuning_args.ppo_buffer_size  # prompts per PPO step
        self.kl_ctl = kl_controller(finetuning_args.ppo_target)
        self.score_moments = RunningMoments()
        lm = self.model.pretrained_model
        self.policy_adapter = lm.active_adapter if hasattr(lm, "peft_config") else None

    def _place(self, model: Any) -> Any:
        """Frozen helper models go where the policy is, unless quantization already placed them."""
        if model is None:
            return None
        inner = getattr(model, "pretrained_model", model)
        if not (getattr(inner, "is_quantized", False) or getattr(inner, "hf_device_map", None)):
            model.to(self.args.device)
        return model

    # -------------------------------------------------------------------------------------- data
    def _rollout_loader(self) -> Any:
        """Batches of `rollout_size` left-padded prompts, in the order the shared sampler gives (shuffled unless
        `disable_shuffling`)."""
        from torch.utils.data import DataLoader

        loader = DataLoader(self.train_dataset, batch_size=self.rollout_size, sampler=self._get_train_sampler(),
                            collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    # -------------------------------------------------------------------------------------- rollout
    @contextmanager
    def _reference(self) -> Any:
        """The causal LM that gives reference log-probabilities."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        lm = self.accelerator.unwrap_model(self.model).pretrained_model
        with adapters_disabled(lm):
            yield lm

    def _generate(self, queries: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
        lm = self.accelerator.unwrap_model(self.model).pretrained_model
        with self.accelerator.autocast():
            out = lm.generate(input_ids=queries, attention_mask=query_mask, **self.generation_kwargs)
        return out[:, queries.size(1):]

    def _pad_responses(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        length = max(c.size(1) for c in chunks)
        return torch.cat([torch.nn.functional.pad(c, (0, length - c.size(1)), value=self.pad_token_id)
                          for c in chunks])

    @torch.no_grad()
    def _rollout(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, float]]:
        """Sample one answer per prompt, score it, and compute everything the updates compare against."""
        device = self.args.device
        queries, query_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        width, rows = queries.size(1), queries.size(0)
        chunks = [slice(i, i + self.micro_size) for i in range(0, rows, self.micro_size)]
        self.model.eval()
        responses = self._pad_responses([self._generate(queries[c], query_mask[c]) for c in chunks])
        mask = response_mask(responses, self.stop_token_ids)
        responses = responses.masked_fill(mask == 0, self.pad_token_id)
        sequences = torch.cat([queries, responses], dim=1)
        attention = torch.cat([query_mask, mask], dim=1)
        positions = position_ids(attention)

        logprobs, values, ref_logprobs, scores = [], [], [], []
        for c in chunks:
            inputs = {"input_ids": sequences[c], "attention_mask": attention[c], "position_ids": positions[c]}
            with self.accelerator.autocast():
                logits, value = self.model(**inputs)
                logprobs.append(token_logprobs(logits[:, width - 1:-1], responses[c]))
                values.append(value[:, width - 1:-1].float())
                with self._reference() as ref:
                    ref_logits = ref(**inputs, use_cache=False).logits
                ref_logprobs.append(token_logprobs(ref_logits[:, width - 1:-1], responses[c]))
                scores.append(self.reward.score(sequences[c], attention[c]).float().to(device))
        logprobs, values, ref_logprobs = torch.cat(logprobs), torch.cat(values), torch.cat(ref_logprobs)
        raw_scores = torch.cat(scores)
        mask = mask.to(values.dtype)

        scores = raw_scores
        if self.finetuning_args.ppo_score_norm:
            self.score_moments.update(self.accelerator.gather(raw_scores))
            scores = self.score_moments.normalize(raw_scores)
        kl_coef = self.kl_ctl.value
        rewards, kl = token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
        if self.finetuning_args.ppo_whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = compute_gae(rewards, values * mask, mask)
        advantages = whiten(advantages, mask)
        rollout = {"sequences": sequences, "attention_mask": attention, "position_ids": positions, "width": width,
                   "mask": mask, "logprobs": logprobs, "values": values * mask, "advantages": advantages,
                   "returns": returns}
        stats = {"reward": self._mean(raw_scores), "objective/kl": self._mean(kl.sum(dim=1)),
                 "objective/kl_coef": kl_coef, "response_length": self._mean(mask.sum(dim=1))}
        return rollout, stats

    def _mean(self, values: torch.Tensor) -> float:
        """Mean over every process's rows, so all processes log and control the same numbers."""
        gathered = self.accelerator.gather(values.detach().float().reshape(-1))
        return gathered.mean().item()

    # -------------------------------------------------------------------------------------- updates
    @staticmethod
    def _micro_batch(rollout: dict[str, Any], index: torch.Tensor) -> dict[str, Any]:
        """Rows `index` of the rollout, cut after their longest response to skip trailing padding."""
        width = rollout["width"]
        length = max(int(rollout["mask"][index].sum(dim=1).max().item()), 1)
        part = {key: rollout[key][index][:, : width + length] for key in ("sequences", "attention_mask",
                                                                          "position_ids")}
        part.update({key: rollout[key][index][:, :length] for key in ("mask", "logprobs", "values", "advantages",
                                                                       "returns")})
        return part

    def _optimise(self, rollout: dict[str, Any]) -> dict[str, float]:
        """`ppo_epochs` passes over the rollout in `ppo_buffer_size` minibatches, each one optimizer step made of
        `gradient_accumulation_steps` micro-batches."""
        self.model.train()
        width = rollout["width"]
        rows = rollout["sequences"].size(0)
        totals: dict[str, list[float]] = defaultdict(list)
        for _ in range(self.finetuning_args.ppo_epochs):
            order = torch.randperm(rows, device=rollout["sequences"].device)
            for minibatch in order.tensor_split(self.finetuning_args.ppo_buffer_size):
                if minibatch.numel() == 0:
                    continue
                micros = minibatch.split(self.micro_size)
                for i, index in enumerate(micros):
                    part = self._micro_batch(rollout, index)
                    last = i == len(micros) - 1
                    with nullcontext() if last else self.accelerator.no_sync(self.model_wrapped):
                        with self.accelerator.autocast():
                            logits, values = self.model_wrapped(input_ids=part["sequences"],
                                                                attention_mask=part["attention_mask"],
                                                                position_ids=part["position_ids"])
                        responses = part["sequences"][:, width:]
                        losses = ppo_losses(token_logprobs(logits[:, width - 1:-1], responses),
                                            values[:, width - 1:-1].float(), part["logprobs"], part["values"],
                                            part["advantages"], part["returns"], part["mask"])
                        self.accelerator.backward(losses["loss"] / len(micros))
                    for key, value in losses.items():
                        totals[key].append(value.item())
                if self.args.max_grad_norm:
                    norm = self.accelerator.clip_grad_norm_(self.model_wrapped.parameters(), self.args.max_grad_norm)
                    totals["grad_norm"].append(float(norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {("loss" if key == "loss" else f"loss/{key}" if key in ("policy", "value") else key):
                sum(values) / len(values) for key, values in totals.items()}

    # -------------------------------------------------------------------------------------- the loop
    def ppo_train(self) -> dict[str, float]:
        """Run max_steps PPO steps (or num_train_epochs passes over the prompts); return the run's metrics."""
        from transformers.trainer_utils import speed_metrics

        args, state = self.args, self.state
        loader = self._rollout_loader()
        try:
            per_epoch = len(loader)
        except TypeError:  # streamed prompts: the parser insists on max_steps
            per_epoch = None
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
        per_epoch = per_epoch or max_steps
        disable_dropout(self.model)  # old and new log-probs must come from the same deterministic policy
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)

        state.global_step, state.epoch, state.max_steps = 0, 0.0, max_steps
        state.num_train_epochs = math.ceil(max_steps / per_epoch)
        state.train_batch_size = self.rollout_size
        state.logging_steps = _steps(args.logging_steps, max_steps)
        state.save_steps = _steps(args.save_steps, max_steps)
        handler = self.callback_handler
        handler.model = self.accelerator.unwrap_model(self.model).pretrained_model  # what gets saved
        handler.optimizer, handler.lr_scheduler, handler.train_dataloader = self.optimizer, self.lr_scheduler, loader
        logger.info("PPO: %d steps of %d prompts (%d per process), %d epochs x %d minibatches per step, "
                    "target KL %s.", max_steps, self.rollout_size * args.world_size, self.rollout_size,
                    self.finetuning_args.ppo_epochs, self.finetuning_args.ppo_buffer_size,
                    self.finetuning_args.ppo_target or "none (fixed coefficient)")

        start = time.time()
        self.control = handler.on_train_begin(args, state, self.control)
        self.control = handler.on_epoch_begin(args, state, self.control)
        batches = iter(loader)
        window: dict[str, list[float]] = defaultdict(list)
        losses: list[float] = []
        while state.global_step < max_steps:
            try:
                batch = next(batches)
            except StopIteration:
                self._end_epoch()
                self.control = handler.on_epoch_begin(args, state, self.control)
                batches = iter(loader)
                batch = next(batches)
            self.control = handler.on_step_begin(args, state, self.control)
            rollout, stats = self._rollout(batch)
            stats.update(self._optimise(rollout))
            stats["learning_rate"] = self.lr_scheduler.get_last_lr()[0]
            self.lr_scheduler.step()
            self.kl_ctl.update(stats["objective/kl"], rollout["sequences"].size(0) * args.world_size)
            state.global_step += 1
            state.epoch = state.global_step / per_epoch
            losses.append(stats["loss"])
            for key, value in stats.items():
                window[key].append(value)
            self.control = handler.on_step_end(args, state, self.control)
            if self.control.should_log:
                self.log({key: round(sum(v) / len(v), 6) for key, v in window.items()})
                window.clear()
            self._maybe_save()
            if self.control.should_training_stop:
                break
        if state.global_step % per_epoch == 0:
            self._end_epoch()
        metrics = speed_metrics("train", start, num_samples=state.global_step * self.rollout_size * args.world_size,
                                num_steps=state.global_step)
        metrics["train_loss"] = sum(losses) / max(len(losses), 1)
        metrics["epoch"] = state.epoch
        self.control = handler.on_train_end(args, state, self.control)
        return metrics

    def _end_epoch(self) -> None:
        self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
        self._maybe_save()

    def _maybe_save(self) -> None:
        if self.control.should_save:
            self._save_checkpoint(self.model, trial=None)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    # -------------------------------------------------------------------------------------- saving
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The language model (only the policy's adapter, never the reward adapter) plus value_head.safetensors."""
        from transformers.trainer import TRAINING_ARGS_NAME

        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:  # one writer: every rank holds the same weights under plain DDP
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        extra = {"selected_adapters": [self.policy_adapter]} if self.policy_adapter else {}
        model.pretrained_model.save_pretrained(output_dir, **extra)
        model.save_value_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


def _steps(value: float, max_steps: int) -> int:
    """logging_steps / save_steps: below 1 they are a share of the run, as in transformers."""
    return math.ceil(max_steps * value) if value and value < 1 else int(value)
