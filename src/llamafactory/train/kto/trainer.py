"""The KTO loss: each answer, tagged desirable or not, is pushed above or below a KL baseline of the batch."""

from typing import Any

import torch

from ..dpo.trainer import CustomDPOTrainer
from ..reference import reduce_logps, reference_logps, sequence_logps, token_logps


class CustomKTOTrainer(CustomDPOTrainer):
    """Reuses the DPO trainer's reference handling and metric logging; only the loss differs."""

    def batch_loss(self, model: Any, inputs: dict[str, Any], split: str) -> torch.Tensor:
        f = self.finetuning_args
        beta = f.pref_beta
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        per_token, mask = token_logps(outputs.logits, inputs["labels"])
        logps = reduce_logps(per_token, mask)
        with torch.no_grad():  # the KL baseline: this batch's prompts with mismatched answers
            kl_logits = model(input_ids=inputs["kl_input_ids"], attention_mask=inputs["kl_attention_mask"],
                              use_cache=False).logits
            kl_logps = sequence_logps(kl_logits, inputs["kl_labels"])
        if "ref_logps" in inputs:
            ref, ref_kl = inputs["ref_logps"].to(logps.dtype), inputs["ref_kl_logps"].to(logps.dtype)
        else:
            ref = reference_logps(model, self.ref_model, inputs)
            ref_kl = reference_logps(model, self.ref_model, inputs, "kl_")
        # The baseline is averaged over every process's batch, as one batch per device is small.
        kl = self.accelerator.gather(kl_logps - ref_kl).mean().clamp(min=0).detach()
        ratio = logps - ref
        desirable = inputs["kto_tags"].bool()
        losses = torch.where(desirable, f.kto_chosen_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
                             f.kto_rejected_weight * (1 - torch.sigmoid(beta * (kl - ratio))))
        loss = losses.mean()
        if f.pref_ftx > 0 and desirable.any():  # an SFT term on the desirable answers, per token
            nll = -(per_token.sum(-1) / mask.sum(-1).clamp(min=1))
            loss = loss + f.pref_ftx * nll[desirable].mean()
        rewards = (beta * ratio).detach()
        metrics = {"kl": kl.item()}
        for name, rows in (("chosen", desirable), ("rejected", ~desirable)):
            if rows.any():
                metrics[f"rewards/{name}"] = rewards[rows].mean().item()
                metrics[f"logps/{name}"] = logps.detach()[rows].mean().item()
        self.store_metrics(metrics, split)
        return loss
