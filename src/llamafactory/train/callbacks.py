"""Callbacks that make a run readable: trainer_log.jsonl, one JSON line per log step."""

import json
import os
import time
from datetime import timedelta
from typing import Any

from transformers import TrainerCallback

from ..extras.constants import TRAINER_LOG


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class LogCallback(TrainerCallback):
    """Appends progress to `<output_dir>/trainer_log.jsonl` (read by people, plots and the web UI)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.start_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.time()
        self.start_step = state.global_step
        path = os.path.join(args.output_dir, TRAINER_LOG)
        if state.is_world_process_zero and os.path.exists(path) and not args.resume_from_checkpoint:
            os.remove(path)  # a fresh run (overwrite_output_dir) starts a fresh log; a resumed one appends

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss", "reward"} & logs.keys()):
            return  # the closing summary (train_runtime, ...) goes to train_results.json instead
        elapsed = time.time() - self.start
        done = max(state.global_step - self.start_step, 0)
        remaining = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        entry = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"),
            "epoch": logs.get("epoch", state.epoch),
            "percentage": round(100 * state.global_step / state.max_steps, 2) if state.max_steps else 0.0,
            "elapsed_time": _clock(elapsed),
            "remaining_time": _clock(remaining),
        }
        for key, value in logs.items():  # stage metrics too: rewards/accuracies, objective/kl, reward ...
            if key not in entry and key not in ("learning_rate", "epoch") and isinstance(value, (int, float)):
                entry[key] = value
        entry = {k: v for k, v in entry.items() if v is not None}
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, TRAINER_LOG), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


class PissaConvertCallback(TrainerCallback):
    """pissa_convert: save the PiSSA adapter as a plain LoRA adapter that applies to the original base model.

    PiSSA moves the principal components of each weight into the adapter and leaves the residual in the base,
    so the trained adapter only fits that modified base. Saving the initial adapter first lets peft rewrite
    the final one (at twice the rank) as a difference that applies to the untouched base model.
    """

    INIT, CONVERTED = "pissa_init", "pissa_converted"

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and model is not None and not args.resume_from_checkpoint:
            model.save_pretrained(os.path.join(args.output_dir, self.INIT))

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        init = os.path.join(args.output_dir, self.INIT)
        if not os.path.isdir(init):
            return
        model.save_pretrained(os.path.join(args.output_dir, self.CONVERTED),
                              path_initial_model_for_weight_conversion=init)
