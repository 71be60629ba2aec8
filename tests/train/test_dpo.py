"""DPO and its relatives: the loss formulas by hand, and real runs that learn to prefer the chosen answers."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from llamafactory.train.dpo.trainer import CustomDPOTrainer
from llamafactory.train.tuner import run_exp

from ..conftest import run_lmf

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "data")


def loss_of(kind: str, chosen, rejected, ref_chosen=None, ref_rejected=None, **extra):
    args = SimpleNamespace(pref_beta=0.5, pref_loss=kind, dpo_label_smoothing=0.0, simpo_gamma=0.4, **extra)
    fake = SimpleNamespace(finetuning_args=args)
    tensors = [torch.tensor(v) if v is not None else None for v in (chosen, rejected, ref_chosen, ref_rejected)]
    return CustomDPOTrainer.preference_loss(fake, *tensors)


def test_losses_match_their_formulas():
    c, r, rc, rr = [-3.0], [-5.0], [-4.0], [-4.5]
    margin = (c[0] - rc[0]) - (r[0] - rr[0])  # 1.5
    sigmoid = -math.log(1 / (1 + math.exp(-0.5 * margin)))
    assert loss_of("sigmoid", c, r, rc, rr)[0].item() == pytest.approx(sigmoid)
    assert loss_of("hinge", c, r, rc, rr)[0].item() == pytest.approx(max(0.0, 1 - 0.5 * margin))
    assert loss_of("ipo", c, r, rc, rr)[0].item() == pytest.approx((margin - 1 / (2 * 0.5)) ** 2)
    losses, chosen_reward, rejected_reward = loss_of("sigmoid", c, r, rc, rr)
    assert (chosen_reward.item(), rejected_reward.item()) == pytest.approx((0.5, -0.25))
    # kto_pair with one pair: each ratio against the other's KL, clamped at 0
    kl_c, kl_r = max(c[0] - rc[0], 0), max(r[0] - rr[0], 0)
    expected = (2 - 1 / (1 + math.exp(-0.5 * ((c[0] - rc[0]) - kl_r)))
                - 1 / (1 + math.exp(-0.5 * (kl_c - (r[0] - rr[0]))))) / 2
    assert loss_of("kto_pair", c, r, rc, rr)[0].item() == pytest.approx(expected)
    # simpo: average log-probs, no reference, margin gamma / beta
    assert loss_of("simpo", [-1.0], [-2.0])[0].item() == pytest.approx(
        -F.logsigmoid(torch.tensor(0.5 * (1.0 - 0.4 / 0.5))).item())
    # orpo: NLL of chosen minus beta * log sigmoid(log odds ratio)
    pc, pr = -0.5, -1.5
    log_odds = (pc - pr) - (math.log(1 - math.exp(pc)) - math.log(1 - math.exp(pr)))
    assert loss_of("orpo", [pc], [pr])[0].item() == pytest.approx(
        -pc - 0.5 * math.log(1 / (1 + math.exp(-log_odds))))


def test_label_smoothing_mixes_in_the_flipped_preference():
    args = SimpleNamespace(pref_beta=1.0, pref_loss="sigmoid", dpo_label_smoothing=0.2, simpo_gamma=0.5)
    fake = SimpleNamespace(finetuning_args=args)
    loss = CustomDPOTrainer.preference_loss(fake, *(torch.tensor([v]) for v in (-1.0, -2.0, -1.0, -1.0)))[0]
    assert loss.item() == pytest.approx(0.8 * -math.log(1 / (1 + math.exp(-1))) + 0.2 * -math.log(
        1 / (1 + math.exp(1))))


def dpo_config(tmp_path, tiny_model_dir, name: str, extra: str = "") -> str:
    out = tmp_path / name
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"""model_name_or_path: {tiny_model_dir}
stage: dpo
do_train: true
dataset: dpo_en_demo
dataset_dir: {DATA}
template: chatml
cutoff_len: 96
output_dir: {out}
per_device_train_batch_size: 4
learning_rate: 5.0e-3
max_steps: 12
logging_steps: 1
save_strategy: "no"
report_to: none
disable_shuffling: true
{extra}""")
    return str(cfg)


def logs(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "trainer_log.jsonl")) as f:
        return [json.loads(line) for line in f if '"loss"' in line]


@pytest.mark.parametrize(("finetuning", "pref_loss"), [
    ("lora", "sigmoid"), ("full", "sigmoid"), ("lora", "hinge"), ("lora", "ipo"), ("lora", "kto_pair"),
    ("lora", "orpo"), ("lora", "simpo"),
])
def test_dpo_learns_to_prefer_chosen(tmp_path, tiny_model_dir, finetuning, pref_loss):
    extra = f"finetuning_type: {finetuning}\npref_loss: {pref_loss}\n"
    if finetuning == "full":
        extra += "learning_rate: 1.0e-3\n"
    run_exp([dpo_config(tmp_path, tiny_model_dir, "out", extra)])  # in-process: the CLI path is tested below
    entries = logs(tmp_path / "out")
    first, last = entries[0], entries[-1]
    if pref_loss == "sigmoid":  # the reference is the untrained policy: at step one the margin is exactly 0
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-3)
        assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    early = sum(e["loss"] for e in entries[:3]) / 3
    late = sum(e["loss"] for e in entries[-3:]) / 3
    assert late < early, [e["loss"] for e in entries]
    assert last["rewards/margins"] > first["rewards/margins"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected",
                "logits/chosen", "logits/rejected"):
        assert key in last


def test_precomputed_reference_is_cached_and_gives_the_same_losses(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    run_exp([dpo_config(tmp_path, tiny_model_dir, "live", "max_steps: 4\n")])
    extra = f"max_steps: 4\nprecompute_ref_logps: true\nref_logps_cache_dir: {cache}\n"
    first = run_lmf("train", dpo_config(tmp_path, tiny_model_dir, "pre1", extra))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cached at" in first.stderr and len(os.listdir(cache)) == 1
    # A beta sweep on the same data and model reuses the cache: the reference model is not run again.
    second = run_lmf("train", dpo_config(tmp_path, tiny_model_dir, "pre2", extra + "pref_beta: 0.2\n"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "loaded from the cache" in second.stderr and "Reference log-probabilities (train)" not in second.stderr
    live_losses = [e["loss"] for e in logs(tmp_path / "live")]
    pre_losses = [e["loss"] for e in logs(tmp_path / "pre1")]
    assert pre_losses == pytest.approx(live_losses, abs=2e-3)


def test_explicit_ref_model_is_used(tmp_path, tiny_model_dir):
    extra = f"finetuning_type: full\nlearning_rate: 1.0e-3\nref_model: {tiny_model_dir}\nmax_steps: 2\n"
    proc = run_lmf("train", dpo_config(tmp_path, tiny_model_dir, "ref", extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Reference model: {tiny_model_dir}" in proc.stderr
    assert logs(tmp_path / "ref")[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)


def live_causal_lms() -> int:
    import gc

    from transformers import LlamaForCausalLM

    gc.collect()
    return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())


class CountBaseCopies(TrainerCallback):
    """Counts the causal-LM objects alive while training runs."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_step_end(self, *args, **kwargs) -> None:
        self.counts.append(live_causal_lms())


@pytest.mark.parametrize(("finetuning", "copies"), [("lora", 1), ("full", 2)])
def test_lora_dpo_holds_one_copy_of_the_base_weights(tmp_path, tiny_model_dir, finetuning, copies):
    before = live_causal_lms()  # models other tests keep alive (session fixtures) are not this run's
    counter = CountBaseCopies()
    run_exp([dpo_config(tmp_path, tiny_model_dir, "count", f"finetuning_type: {finetuning}\nmax_steps: 2\n")],
            callbacks=[counter])
    during = {count - before for count in counter.counts}
    assert during == {copies}, (before, counter.counts)  # full: the policy and its frozen reference
