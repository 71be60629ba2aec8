"""A run killed between saves and resumed from its checkpoint ends exactly like an uninterrupted run."""

import json
import os

import pytest
from transformers import TrainerCallback

from llamafactory.train.tuner import run_exp


class KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run: no final save, no cleanup


def losses(out: str) -> dict[int, float]:
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        entries = [json.loads(line) for line in f]
    return {e["current_steps"]: e["loss"] for e in entries if "loss" in e}  # later lines win


def weights(out: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(out, "adapter_model.safetensors"))


def test_interrupted_run_resumes_to_the_same_weights_and_losses(tmp_path, tiny_model_dir, identity_dir):
    import torch

    def argv(out: str) -> list[str]:
        return ["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
                "--dataset_dir", identity_dir, "--do_train", "--output_dir", out, "--max_steps", "10",
                "--save_steps", "5", "--logging_steps", "1", "--learning_rate", "5e-3", "--lora_rank", "8",
                "--per_device_train_batch_size", "2", "--cutoff_len", "64", "--seed", "7", "--report_to", "none",
                "--lora_dropout", "0.1"]

    straight = str(tmp_path / "straight")
    run_exp(argv(straight))

    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_exp(argv(resumed), callbacks=[KillAt(7)])
    assert os.path.isdir(os.path.join(resumed, "checkpoint-5"))
    assert not os.path.exists(os.path.join(resumed, "adapter_model.safetensors"))
    run_exp(argv(resumed))  # no overwrite_output_dir: resumes from checkpoint-5 by itself

    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
