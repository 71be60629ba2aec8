"""KTO learns from tagged answers: desirable ones gain reward, undesirable ones lose it."""

import json
import os

import pytest

from llamafactory.train.tuner import run_exp

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def kto_config(tmp_path, tiny_model_dir, extra: str = "") -> str:
    cfg = tmp_path / "kto.yaml"
    cfg.write_text(f"""model_name_or_path: {tiny_model_dir}
stage: kto
do_train: true
finetuning_type: lora
dataset: kto_en_demo
dataset_dir: {DATA}
template: chatml
cutoff_len: 96
output_dir: {tmp_path / "out"}
per_device_train_batch_size: 8
learning_rate: 5.0e-3
max_steps: 14
logging_steps: 1
save_strategy: "no"
report_to: none
plot_loss: true
{extra}""")
    return str(cfg)


def read_log(tmp_path) -> list[dict]:
    with open(tmp_path / "out" / "trainer_log.jsonl") as f:
        return [json.loads(line) for line in f]


def test_kto_learns_and_starts_from_the_reference(tmp_path, tiny_model_dir):
    run_exp([kto_config(tmp_path, tiny_model_dir, "kto_rejected_weight: 1.0\n")])
    entries = read_log(tmp_path)
    # Step one: policy == reference (LoRA starts at zero), so every ratio and the KL are 0 and the loss is 1/2.
    assert entries[0]["loss"] == pytest.approx(0.5, abs=1e-4)
    assert entries[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    late = entries[-4:]
    gap = [e["rewards/chosen"] - e["rewards/rejected"] for e in late if "rewards/rejected" in e and
           "rewards/chosen" in e]
    assert gap and sum(gap) / len(gap) > 0
    assert sum(e["loss"] for e in late) / len(late) < 0.5
    assert os.path.isfile(tmp_path / "out" / "training_rewards_chosen.png")


def test_kto_weights_scale_the_loss(tmp_path, tiny_model_dir):
    run_exp([kto_config(tmp_path, tiny_model_dir, "kto_chosen_weight: 2.0\nkto_rejected_weight: 2.0\nmax_steps: 1\n")])
    assert read_log(tmp_path)[0]["loss"] == pytest.approx(1.0, abs=1e-4)
