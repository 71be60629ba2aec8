"""Reward-model training: a pairwise loss on the value head's score at each answer's last token."""

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from ...extras.logging import get_logger
from ..trainer_utils import TrainerMixin

logger = get_logger(__name__)


def pairwise_accuracy(eval_prediction: Any) -> dict[str, float]:
    """Share of pairs whose chosen answer outscores the rejected one."""
    chosen, rejected = eval_prediction.predictions
    return {"accuracy": float((chosen > rejected).mean())}


class PairwiseTrainer(TrainerMixin, Trainer):
    """Trains a ValueHeadModel; saves its body (adapter or full weights) plus value_head.safetensors."""

    def __init__(self, finetuning_args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args
        self.model_accepts_loss_kwargs = False  # the loss is a batch mean: let Trainer scale for accumulation
        self.can_return_loss = True

    def scores(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], score_only=True)
        chosen, rejected = scores.chunk(2)
        return chosen, rejected

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        chosen, rejected = self.scores(model, inputs)
        loss = -F.logsigmoid(chosen - rejected).mean()
        return (loss, (chosen, rejected)) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, (chosen, rejected) = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        labels = torch.zeros_like(chosen)  # transformers scores predictions only when labels come with them
        return loss.detach(), (chosen.float(), rejected.float()), labels

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        model.pretrained_model.save_pretrained(output_dir)
        model.save_value_head(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume: the body's weights (adapter or full) and the value head from a checkpoint of `_save`."""
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(model or self.model)
        body = model.pretrained_model
        if hasattr(body, "peft_config"):
            from peft import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(body, load_peft_weights(resume_from_checkpoint))
        else:
            from transformers.modeling_utils import load_sharded_checkpoint

            single = os.path.join(resume_from_checkpoint, "model.safetensors")
            if os.path.isfile(single):
                result = body.load_state_dict(load_file(single), strict=False)
                tied = getattr(body.config, "tie_word_embeddings", False)
                missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
                if missing:  # never resume silently from the starting weights
                    raise RuntimeError(f"{single} lacks {len(missing)} weights of the model, e.g. {missing[0]}")
            else:
                load_sharded_checkpoint(body, resume_from_checkpoint, strict=True)
        if not model.load_value_head(resume_from_checkpoint):
            raise FileNotFoundError(f"{resume_from_checkpoint} has no value_head.safetensors")
        logger.info("Resumed the reward model from %s.", resume_from_checkpoint)

    def save_predictions(self, predict_results: Any) -> str:
        """generated_predictions.jsonl: one {"chosen", "rejected"} pair of scores per line."""
        chosen, rejected = predict_results.predictions
        path = os.path.join(self.args.output_dir, "generated_predictions.jsonl")
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                for c, r in zip(chosen.tolist(), rejected.tolist()):
                    f.write(json.dumps({"chosen": round(c, 4), "rejected": round(r, 4)}) + "\n")
        return path
