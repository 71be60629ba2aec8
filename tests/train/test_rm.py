"""Reward models: trained through the CLI, saved as adapter + value head, scored, resumed and reloaded."""

import json
import os

import pytest

from ..conftest import run_lmf

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def rm_config(tmp_path, tiny_model_dir, extra: str = "") -> str:
    cfg = tmp_path / "rm.yaml"
    cfg.write_text(f"""model_name_or_path: {tiny_model_dir}
stage: rm
do_train: true
do_eval: true
do_predict: true
finetuning_type: lora
dataset: dpo_en_demo
eval_dataset: dpo_en_demo
dataset_dir: {DATA}
template: chatml
cutoff_len: 96
output_dir: {tmp_path / "out"}
per_device_train_batch_size: 4
per_device_eval_batch_size: 16
learning_rate: 5.0e-3
max_steps: 12
logging_steps: 1
eval_strategy: steps
eval_steps: 12
eval_on_start: true
save_steps: 6
report_to: none
{extra}""")
    return str(cfg)


def test_reward_model_learns_saves_head_and_scores(tmp_path, tiny_model_dir):
    import torch

    from llamafactory.model.model_utils.valuehead import read_value_head

    proc = run_lmf("train", rm_config(tmp_path, tiny_model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    with open(out / "trainer_log.jsonl") as f:
        losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
    assert losses[0] == pytest.approx(0.6931, abs=0.05)  # scores start near equal
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
    metrics = json.load(open(out / "all_results.json"))
    with open(out / "trainer_log.jsonl") as f:
        evals = [json.loads(line) for line in f if '"eval_loss"' in line]
    assert evals[0]["current_steps"] == 0 and evals[-1]["current_steps"] == 12
    assert metrics["eval_accuracy"] > 0.8 and metrics["eval_accuracy"] > evals[0]["eval_accuracy"] + 0.2, evals
    head = read_value_head(str(out))
    assert head is not None and head["weight"].shape == (1, 64) and torch.isfinite(head["weight"]).all()
    assert os.path.isfile(out / "adapter_model.safetensors")
    assert os.path.isfile(out / "checkpoint-6" / "value_head.safetensors")
    rows = [json.loads(line) for line in open(out / "generated_predictions.jsonl")]
    assert len(rows) == len(json.load(open(os.path.join(DATA, "dpo_en_demo.json"))))
    assert sum(r["chosen"] > r["rejected"] for r in rows) / len(rows) == pytest.approx(metrics["eval_accuracy"])


def test_reward_model_resumes_and_reloads(tmp_path, tiny_model_dir):
    import torch

    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.model.loader import load_model, load_tokenizer

    extra = "do_eval: false\ndo_predict: false\neval_strategy: \"no\"\nmax_steps: 4\nsave_steps: 2\n"
    assert run_lmf("train", rm_config(tmp_path, tiny_model_dir, extra)).returncode == 0
    resumed = run_lmf("train", rm_config(tmp_path, tiny_model_dir, extra), "max_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed the reward model from" in resumed.stderr and "checkpoint-4" in resumed.stderr

    model_args = ModelArguments(model_name_or_path=tiny_model_dir, adapter_name_or_path=str(tmp_path / "out"))
    tokenizer = load_tokenizer(model_args)
    model = load_model(tokenizer, model_args, FinetuningArguments(), False, torch.float32, add_valuehead=True)
    ids = torch.tensor([tokenizer.encode("Who are you?")])
    score = model.score(ids, torch.ones_like(ids))
    values = model.values(ids, torch.ones_like(ids))
    assert score.item() == pytest.approx(values[0, -1].item())


def test_loading_a_reward_model_without_head_is_refused(tiny_model_dir):
    import torch

    from llamafactory.extras.errors import UserError
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.model.loader import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=tiny_model_dir)
    with pytest.raises(UserError, match="no value_head.safetensors"):
        load_model(load_tokenizer(model_args), model_args, FinetuningArguments(), False, torch.float32,
                   add_valuehead=True)
