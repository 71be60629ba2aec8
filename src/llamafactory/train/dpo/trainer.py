"""The preference losses on top of transformers' Trainer.

trl's DPOTrainer tokenizes data with the tokenizer's own chat template and offers neither orpo, simpo nor
kto_pair; here the batches come from our template (identical to the model's, token for token) and every
loss is a few lines of arithmetic on per-sequence log-probabilities.
"""

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..reference import AVERAGED_LOSSES, REFERENCE_FREE_LOSSES, reduce_logps, reference_logps, token_logps
from ..trainer_utils import TrainerMixin


class MetricsMixin:
    """Keeps per-batch metrics and logs their mean with the next loss, as `rewards/chosen` etc. (eval_ for eval)."""

    def store_metrics(self, metrics: dict[str, float], split: str) -> None:
        if not hasattr(self, "_stored"):
            self._stored: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        for key, value in metrics.items():
            self._stored[split][key].append(value)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        stored = getattr(self, "_stored", None)
        if stored is not None:
            split = "eval" if any(k.startswith("eval_") and k.endswith("_loss") for k in logs) else "train"
            prefix = "eval_" if split == "eval" else ""
            for key, values in stored[split].items():
                if values:
                    logs[prefix + key] = round(sum(values) / len(values), 4)
            stored[split].clear()
        super().log(logs, *args, **kwargs)


class CustomDPOTrainer(MetricsMixin, TrainerMixin, Trainer):
    def __init__(self, finetuning_args: Any, ref_model: Any | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args
        self.model_accepts_loss_kwargs = False  # our losses are batch means: let Trainer scale for accumulation
        self.ref_model = ref_model
        if ref_model is not None:
            self.ref_model = ref_model.to(self.args.device)

    def preference_loss(self, chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor | None,
                        ref_rejected: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair losses and the implicit rewards of both answers."""
        f = self.finetuning_args
        beta, kind, smoothing = f.pref_beta, f.pref_loss, f.dpo_label_smoothing
        if kind == "orpo":  # odds ratio of the two answers' mean token probabilities, plus the chosen NLL
            def log1m_exp(x: torch.Tensor) -> torch.Tensor:
                return torch.log1p(-torch.exp(x).clamp(max=1 - 1e-6))

            log_odds = (chosen - rejected) - (log1m_exp(chosen) - log1m_exp(rejected))
            return -chosen - beta * F.logsigmoid(log_odds), beta * chosen.detach(), beta * rejected.detach()
        if kind == "simpo":  # length-normalised, no reference, a target margin gamma
            margin = (chosen - rejected) - f.simpo_gamma / beta
            losses = -F.logsigmoid(beta * margin) * (1 - smoothing) - F.logsigmoid(-beta * margin) * smoothing
            return losses, beta * chosen.detach(), beta * rejected.detach()
        assert ref_chosen is not None and ref_rejected is not None
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        margin = chosen_ratio - rejected_ratio
        if kind == "sigmoid":
            losses = -F.logsigmoid(beta * margin) * (1 - smoothing) - F.logsigmoid(-beta * margin) * smoothing
        elif kind == "hinge":
            losses = torch.relu(1 - beta * margin)
        elif kind == "ipo":
            losses = (margin - 1 / (2 * beta)) ** 2
        elif kind == "kto_pair":  # each answer against the batch's KL estimate of the other kind
            chosen_kl = chosen_ratio.mean().clamp(min=0).detach()
            rejected_kl = rejected_ratio.mean().clamp(min=0).detach()
            losses = (2 - torch.sigmoid(beta * (chosen_ratio - rejected_kl))
                      - torch.sigmoid(beta * (chosen_kl - rejected_ratio))) / 2
        else:
            raise ValueError(f"unknown pref_loss {kind}")
        return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()

    def batch_loss(self, model: Any, inputs: dict[str, Any], split: str) -> torch.Tensor:
        f = self.finetuning_args
        average = f.pref_loss in AVERAGED_LOSSES
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        per_token, mask = token_logps(outputs.logits, inputs["labels"])
        logps = reduce_logps(per_token, mask, average, f.ld_alpha)
        chosen, rejected = logps.chunk(2)
        ref_chosen = ref_rejected = None
        if f.pref_loss not in REFERENCE_FREE_LOSSES:
            if "ref_logps" in inputs:
                ref = inputs["ref_logps"].to(logps.dtype)
            else:
                ref = reference_logps(model, self.ref_model, inputs, "", average, f.ld_alpha)
            ref_chosen, ref_rejected = ref.chunk(2)
        losses, chosen_rewards, rejected_rewards = self.preference_loss(chosen, rejected, ref_chosen, ref_rejected)
        loss = losses.mean()
        if f.pref_ftx > 0:  # keep the chosen answers likely: an SFT term, per token
            chosen_mask = mask.chunk(2)[0]
            sft = -(per_token.chunk(2)[0].sum(-1) / chosen_mask.sum(-1).clamp(min=1)).mean()
            loss = loss + f.pref_ftx * sft
        with torch.no_grad():
            logits = outputs.logits[:, :-1]
            chosen_mask, rejected_mask = mask.chunk(2)
            chosen_logits, rejected_logits = logits.chunk(2)
            self.store_metrics({
                "rewards/chosen": chosen_rewards.mean().item(),
                "rewards/rejected": rejected_rewards.mean().item(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
                "logps/chosen": chosen.detach().mean().item(),
                "logps/rejected": rejected.detach().mean().item(),
                "logits/chosen": chosen_logits[chosen_mask].float().mean().item(),
                "logits/rejected": rejected_logits[rejected_mask].float().mean().item(),
            }, split)
        return loss

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss = self.batch_loss(model, inputs, "train" if model.training else "eval")
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.batch_loss(model, inputs, "eval")
        return loss.detach(), None, None
