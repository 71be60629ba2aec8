"""Seq2SeqTrainer plus token throughput reporting, generated-prediction files (optimizers: TrainerMixin) and a
loss that computes the vocabulary projection only where a label is."""

from typing import Any

from transformers import Seq2SeqTrainer

from ...extras.logging import get_logger
from ..throughput import ThroughputMeter, count_tokens, flops_per_token, matmul_peak
from ..trainer_utils import TrainerMixin

logger = get_logger(__name__)


class CustomSeq2SeqTrainer(TrainerMixin, Seq2SeqTrainer):
    def __init__(self, finetuning_args: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finetuning_args = finetuning_args
        self.meter = ThroughputMeter()

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)  # a processor holds one
        self.meter.add(*count_tokens(inputs, getattr(tokenizer, "pad_token_id", None)))
        with self._autocast_casts_lora_inputs(model):
            return super().training_step(model, inputs, *args, **kwargs)

    def _autocast_casts_lora_inputs(self, model: Any) -> Any:
        """Under bf16/fp16 mixed precision, PEFT's casting of each LoRA input to the fp32 adapter weights' dtype
        is undone at once by autocast (a full-size copy each way, in forward, recompute and backward, for every
        adapted linear); autocast alone gives the matmul the same operands. Training steps skip PEFT's cast, inside
        an autocast of their own (accelerate's, around forward, is there only once the trainer has prepared the
        model); generation keeps it."""
        import contextlib

        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(self.accelerator.mixed_precision))
        unwrapped = self.accelerator.unwrap_model(model)
        if dtype is None or not hasattr(unwrapped, "peft_config"):
            return contextlib.nullcontext()
        from peft.helpers import disable_input_dtype_casting

        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.args.device.type, dtype=dtype))
        stack.enter_context(disable_input_dtype_casting(unwrapped))
        return stack

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """On padding-free batches, the LM head and cross-entropy run only at positions whose next token is a
        label (`logits_to_keep`), not over the whole row: in sft the prompt is often half the tokens, and the
        head is a vocabulary-wide matmul plus softmax. The sum and the normalisation are the model's own."""
        labels = inputs.get("labels")
        if return_outputs or labels is None or labels.shape[0] != 1 or "cu_seq_lens_q" not in inputs \
                or not self._selective_logits(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        inputs = {key: value for key, value in inputs.items() if key != "labels"}
        targets = labels[0, 1:]
        keep = (targets != -100).nonzero().squeeze(-1)
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        head = self._fused_head(model)
        if head is not None:
            loss = self._fused_loss(model, inputs, keep, targets[keep], head)
        else:
            logits = model(**inputs, logits_to_keep=keep).logits[0].float()
            loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
        if not scaled:
            return loss / max(int(keep.numel()), 1)
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    def _fused_head(self, model: Any) -> Any:
        """The LM head for the chunked loss (train/linear_ce.py), or None where it can't be used: a head that
        is not a plain whole nn.Linear, FSDP/ZeRO-3 sharding, or a model whose logits turned out to be more
        than `head(last hidden state)` (soft-capping, scaling), found on the first batch."""
        if getattr(self, "_fused", True) is False:
            return None
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if self.is_fsdp_enabled or (plugin is not None and plugin.zero_stage == 3):
            self._fused = False
            return None
        from ..linear_ce import plain_linear_head

        head = plain_linear_head(self.accelerator.unwrap_model(model))
        if head is None:
            self._fused = False
        return head

    def _fused_loss(self, model: Any, inputs: dict[str, Any], keep: Any, targets: Any, head: Any) -> Any:
        """Summed cross-entropy from the head's input and weight, chunk by chunk. A forward pre-hook takes the
        head's input (the labelled positions' last hidden states, in the dtype the head would run in) and hands
        the head no rows. On the first batch the head still computes 4 rows, which must equal the head applied
        by hand; a model that changes its logits after the head fails that, and takes the standard loss."""
        import torch

        from ..linear_ce import linear_cross_entropy_sum

        checking = getattr(self, "_fused", None) is None and keep.numel() > 0
        seen: list[tuple[Any, Any]] = []

        def take(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            device = args[0].device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else args[0].dtype
            seen.append((args[0], dtype))
            return (args[0][..., :4 if checking else 0, :], *args[1:])

        handle = head.register_forward_pre_hook(take)
        try:
            outputs = model(**inputs, logits_to_keep=keep)
        finally:
            handle.remove()
        if len(seen) == 1:
            hidden, dtype = seen[0][0].reshape(-1, seen[0][0].shape[-1]), seen[0][1]
            if not checking:
                return linear_cross_entropy_sum(hidden, head.weight, head.bias, targets, dtype)
            with torch.no_grad():
                bias = head.bias.to(dtype) if head.bias is not None else None
                mine = torch.nn.functional.linear(hidden[:4].to(dtype), head.weight.to(dtype), bias).float()
            logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
            if logits.shape == mine.shape and torch.allclose(logits, mine, rtol=1e-2, atol=1e-2):
                self._fused = True
                return linear_cross_entropy_sum(hidden, head.weight, head.bias, targets, dtype)
        self._fused = False
        logger.info("The model's logits are not its LM head applied to its last hidden states (soft-capping or "
                    "scaling): the loss materialises the logits instead of computing them chunk by chunk.")
        logits = model(**inputs, logits_to_keep=keep).logits[0].float()
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")

    def _selective_logits(self, model: Any) -> bool:
        if getattr(self, "_selective", None) is None:
            import inspect

            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            config = getattr(base, "config", None)
            self._selective = (
                self.label_smoother is None and self.compute_loss_func is None
                and not getattr(self.args, "use_liger_kernel", False)  # liger fuses the head with its own loss
                and "logits_to_keep" in inspect.signature(base.forward).parameters
                and not getattr(config, "output_router_logits", False)  # MoE: the model adds its auxiliary loss
            )
        return self._selective

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self.meter.real and "loss" in logs:
            logs["total_tokens"] = self.meter.real
            logs["throughput"] = round(self.meter.tokens_per_second(), 2)
        super().log(logs, *args, **kwargs)

    def throughput_report(self) -> dict[str, float]:
        """Effective tokens/s, padding share and model FLOP/s against this machine's matmul peak."""
        import torch

        dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32
        tokens_per_second = self.meter.tokens_per_second()
        achieved = flops_per_token(self.model) * tokens_per_second
        peak = matmul_peak(dtype)
        return {
            "effective_tokens_per_second": round(tokens_per_second, 2),
            "padding_share": round(self.meter.padding_share(), 4),
            "model_tflops": round(achieved / 1e12, 4),
            "matmul_peak_tflops": round(peak / 1e12, 4),
            "flops_utilization": round(achieved / peak, 4) if peak else 0.0,
        }

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None, **gen_kwargs: Any) -> tuple[Any, Any, Any]:
        """With predict_with_generate, labels are the reference answers (not aligned with the prompt), and the
        prompt is cut from each generated sequence."""
        if not self.args.predict_with_generate:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        labels = inputs.pop("labels", None)
        loss, generated, _ = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        if generated is not None:
            generated = generated[:, inputs["input_ids"].size(-1):]
        return loss, generated, labels

    def save_predictions(self, dataset: Any, predict_results: Any,
                         skip_special_tokens: bool = True) -> tuple[str, list[str], list[str]]:
        """Write generated_predictions.jsonl (one {"prompt", "predict", "label"} line per example, on the main
        process) and return its path with the decoded predictions and labels, which every process has."""
        import json
        import os

        import numpy as np

        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        pad = tokenizer.pad_token_id

        def decode(rows: Any) -> list[str]:
            rows = np.where(np.asarray(rows) < 0, pad, np.asarray(rows))
            return tokenizer.batch_decode(rows, skip_special_tokens=skip_special_tokens)

        prompts = tokenizer.batch_decode([list(ids) for ids in dataset["input_ids"]], skip_special_tokens=False)
        predictions = [p.strip() for p in decode(predict_results.predictions)]
        labels = [label.strip() for label in decode(predict_results.label_ids)]
        path = os.path.join(self.args.output_dir, "generated_predictions.jsonl")
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                for prompt, predict, label in zip(prompts, predictions, labels):
                    f.write(json.dumps({"prompt": prompt, "predict": predict, "label": label}, ensure_ascii=False)
                            + "\n")
        return path, predictions, labels
