"""PPO: the maths against hand-computed values, the three reward sources, the config checks, and real runs
that raise the reward."""

import json
import math
import os
import statistics
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from llamafactory.extras.errors import ConfigError, UserError
from llamafactory.train.ppo.trainer import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    compute_gae,
    kl_controller,
    ppo_losses,
    response_mask,
    token_rewards,
    whiten,
)

from ..conftest import IDENTITY, run_lmf, write_dataset


# ----------------------------------------------------------------------------------------------- maths
def test_gae_matches_the_hand_computed_recursion():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the 7.0 and 9.0 of row 2 are padding
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 1: deltas 0.9, -0.1, -0.3 from the end; A_t = delta_t + 0.95 A_{t+1}
    assert advantages[0].tolist() == pytest.approx([-0.3 + 0.95 * (-0.1 + 0.95 * 0.9), -0.1 + 0.95 * 0.9, 0.9])
    assert returns[0].tolist() == pytest.approx([0.91725, 0.955, 1.0])
    # row 2 ends after its second token: the next value there is 0, not the padding's 9
    assert advantages[1].tolist() == pytest.approx([1.45, 1.0, 0.0])
    assert returns[1].tolist() == pytest.approx([2.45, 2.0, 0.0])


def test_whiten_uses_real_tokens_only():
    values, mask = torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]])
    scale = 1 / math.sqrt(2 / 3)  # population variance of 1, 2, 3
    assert whiten(values, mask)[0].tolist() == pytest.approx([-scale, 0.0, scale, 0.0], abs=1e-5)
    assert whiten(values, mask, shift_mean=False)[0].tolist() == pytest.approx([2 - scale, 2.0, 2 + scale, 0.0],
                                                                                abs=1e-5)


def test_kl_controller_moves_towards_the_target_and_fixed_one_stays():
    ctl = AdaptiveKLController(target=6.0)
    assert ctl.value == 0.2
    ctl.update(9.0, 100)  # error +50% clipped to +20%, over 100 of 10000 horizon samples
    assert ctl.value == pytest.approx(0.2 * 1.002)
    ctl.update(3.0, 100)  # -50% clipped to -20%
    assert ctl.value == pytest.approx(0.2 * 1.002 * 0.998)
    ctl.update(6.6, 1000)  # +10% over 1000 samples
    assert ctl.value == pytest.approx(0.2 * 1.002 * 0.998 * 1.01)
    for target in (0, 0.0, None):
        fixed = kl_controller(target)
        assert isinstance(fixed, FixedKLController)
        fixed.update(100.0, 1000)
        assert fixed.value == 0.2
    assert isinstance(kl_controller(6.0), AdaptiveKLController)


def test_token_rewards_put_the_score_on_the_last_real_token():
    logprobs, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-1.5, -2.0, -2.0]])
    rewards, kl = token_rewards(torch.tensor([4.0]), logprobs, ref, torch.tensor([[1.0, 1.0, 0.0]]), kl_coef=0.5)
    assert kl[0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.25, 4.0, 0.0])


def test_response_mask_ends_at_the_first_stop_token():
    responses = torch.tensor([[5, 6, 2, 0, 0], [0, 7, 7, 7, 7], [5, 5, 5, 5, 5]])
    assert response_mask(responses, [2, 0]).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_running_moments_merge_batches_exactly():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    moments.update(torch.tensor([4.0, 5.0]))
    assert (moments.count, moments.mean, moments.std) == (5, pytest.approx(3.0), pytest.approx(math.sqrt(2.0)))
    assert moments.normalize(torch.tensor([3.0, 3.0 + math.sqrt(2.0)])).tolist() == pytest.approx([0.0, 1.0])


def test_clipped_losses():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    new = torch.full((1, 2), math.log(1.5))  # ratio 1.5, beyond the 1.2 clip
    out = ppo_losses(new, torch.ones(1, 2), old, torch.full((1, 2), 0.5), torch.tensor([[1.0, -1.0]]),
                     torch.zeros(1, 2), mask)
    # advantage +1: min(1.5, 1.2) * 1 -> loss -1.2; advantage -1: the unclipped 1.5 is the pessimistic one
    assert out["policy"].item() == pytest.approx((-1.2 + 1.5) / 2)
    assert out["clipfrac"].item() == pytest.approx(0.5)
    # values 1.0 against returns 0, clipped to 0.5 + 0.2: the larger error (1.0) counts
    assert out["value"].item() == pytest.approx(0.5)
    assert out["loss"].item() == pytest.approx(0.15 + 0.1 * 0.5)


# ----------------------------------------------------------------------------------------------- api reward
def lowercase_share(text: str) -> float:
    """The test's reward: 10 x the share of lowercase ASCII letters in the answer (a dense signal that a random
    model can raise by preferring word pieces over stray bytes)."""
    answer = text.rsplit("<|im_start|>assistant\n", 1)[-1]
    for special in ("<|im_end|>", "<|endoftext|>"):
        answer = answer.replace(special, "")
    return 10 * sum(c in string.ascii_lowercase for c in answer) / max(len(answer), 1)


@pytest.fixture
def reward_server():
    """A reward API on 127.0.0.1; `server.requests` records every body received."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            if self.path == "/broken":
                reply, status = b"<html>oops</html>", 200
            elif self.path == "/error":
                reply, status = b"model not loaded", 503
            else:
                reply, status = json.dumps({"scores": [lowercase_share(t) for t in body["messages"]]}).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = requests
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_api_reward_posts_texts_and_reports_failures_in_one_line(reward_server, tiny_tokenizer):
    from llamafactory.train.ppo.reward import ApiReward

    pad = tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompt = tiny_tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    answer = tiny_tokenizer.encode("the fox<|im_end|>")
    sequences = torch.tensor([[pad, pad] + prompt + answer, [pad, pad] + prompt + answer])
    mask = torch.ones_like(sequences)
    mask[:, :2] = 0
    mask[1, -1] = 0  # the second answer ends one token earlier (no stop token)
    scores = ApiReward(reward_server.url + "/score", tiny_tokenizer).score(sequences, mask)
    sent = reward_server.requests[-1]
    assert sent["model"] == "llamafactory"
    assert sent["messages"][0] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nthe fox<|im_end|>"
    assert sent["messages"][1] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nthe fox"
    assert scores.tolist() == pytest.approx([10 * 6 / 7, 10 * 6 / 7])

    for path, expected in (("/broken", "must answer"), ("/error", "HTTP 503: model not loaded")):
        with pytest.raises(UserError, match=expected) as err:
            ApiReward(reward_server.url + path, tiny_tokenizer).score(sequences, mask)
        assert reward_server.url + path in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot be reached") as err:
        ApiReward("http://127.0.0.1:9/score", tiny_tokenizer, timeout=5).score(sequences, mask)
    assert "http://127.0.0.1:9/score" in str(err.value)


# ----------------------------------------------------------------------------------------------- lora reward
def build_reward_adapter(model_dir: str, folder: str) -> None:
    """An rm-style adapter folder: a LoRA adapter with non-zero weights and a value head of known weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llamafactory.model.model_utils.valuehead import save_value_head

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)
    head = torch.nn.Linear(64, 1)
    with torch.no_grad():
        head.weight.copy_(torch.linspace(-1.0, 1.0, 64).unsqueeze(0))
        head.bias.fill_(0.5)
    save_value_head(head, folder)


def direct_scores(model_dir: str, folder: str | None, rows: list[list[int]]) -> list[float]:
    """Each row alone, unpadded: head(last hidden state of the last token)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if folder:
        model = PeftModel.from_pretrained(model, folder).get_base_model()
    head = torch.nn.Linear(64, 1)
    with torch.no_grad():
        head.weight.copy_(torch.linspace(-1.0, 1.0, 64).unsqueeze(0))
        head.bias.fill_(0.5)
        return [head(model.model(input_ids=torch.tensor([row])).last_hidden_state[0, -1]).item() for row in rows]


def test_lora_reward_scores_with_its_own_adapter_and_head_then_restores_the_policy(tmp_path, tiny_model_dir,
                                                                                   tiny_tokenizer):
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.model.loader import load_model
    from llamafactory.train.ppo.reward import AdapterReward

    folder = str(tmp_path / "reward")
    build_reward_adapter(tiny_model_dir, folder)
    model_args = ModelArguments(model_name_or_path=tiny_model_dir, disable_gradient_checkpointing=True)
    policy = load_model(tiny_tokenizer, model_args, FinetuningArguments(stage="ppo", finetuning_type="lora"), True,
                        torch.float32, add_valuehead=True)
    policy.eval()
    rows = [tiny_tokenizer.encode("Who are you? I am Lumen"), tiny_tokenizer.encode("hi there fox")]
    width = max(len(r) for r in rows)
    sequences = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left-padded, as in a rollout
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    with torch.no_grad():
        logits_before, values_before = policy(sequences, mask)

    reward = AdapterReward(policy, folder)
    scores = reward.score(sequences, mask)
    expected = direct_scores(tiny_model_dir, folder, rows)
    assert scores.tolist() == pytest.approx(expected, abs=1e-4)
    without_adapter = direct_scores(tiny_model_dir, None, rows)
    assert all(abs(a - b) > 1e-3 for a, b in zip(expected, without_adapter))  # the adapter really was active

    lm = policy.pretrained_model
    assert lm.active_adapter == "default" and set(lm.peft_config) == {"default", "reward"}
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable
    assert not any("reward" in n for n in trainable)
    with torch.no_grad():
        logits_after, values_after = policy(sequences, mask)
    assert torch.allclose(logits_before, logits_after) and torch.allclose(values_before, values_after)


def test_lora_reward_refuses_a_folder_without_adapter_or_head(tmp_path, tiny_model_dir, tiny_tokenizer):
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.model.loader import load_model
    from llamafactory.train.ppo.reward import AdapterReward

    model_args = ModelArguments(model_name_or_path=tiny_model_dir, disable_gradient_checkpointing=True)
    policy = load_model(tiny_tokenizer, model_args, FinetuningArguments(stage="ppo"), True, torch.float32,
                        add_valuehead=True)
    with pytest.raises(UserError, match="not an adapter folder"):
        AdapterReward(policy, tiny_model_dir)
    folder = str(tmp_path / "reward")
    build_reward_adapter(tiny_model_dir, folder)
    os.remove(os.path.join(folder, "value_head.safetensors"))
    with pytest.raises(UserError, match="no value_head.safetensors"):
        AdapterReward(policy, folder)


# ----------------------------------------------------------------------------------------------- config
def parsed(tmp_path, tiny_model_dir, **overrides):
    from llamafactory.hparams.parser import get_train_args

    values = {"model_name_or_path": tiny_model_dir, "stage": "ppo", "do_train": True, "dataset": "identity",
              "output_dir": str(tmp_path / "out"), "reward_model": "saves/rm", "report_to": "none"}
    values.update(overrides)
    return get_train_args([f"--{k}={v}" for k, v in values.items() if v is not None])


@pytest.mark.parametrize("overrides,attrs,message", [
    ({"reward_model": None}, {}, "stage ppo needs `reward_model`"),
    ({}, {"load_best_model_at_end": True}, "`load_best_model_at_end`"),
    ({"finetuning_type": "full"}, {}, "`reward_model_type: lora` loads the reward adapter"),
    ({}, {"do_eval": True}, "stage ppo only trains"),
    ({}, {"do_predict": True}, "stage ppo only trains"),
    ({"reward_model_type": "api"}, {}, "needs `reward_model` to be an http"),
    ({}, {"resume_from_checkpoint": "out/checkpoint-5"}, "cannot resume"),
    ({"reward_model_adapters": "saves/a"}, {}, "`reward_model_type: full` only"),
    ({}, {"ref_model_adapters": "saves/a"}, "which is not set"),
])
def test_config_checks(tmp_path, tiny_model_dir, overrides, attrs, message):
    from llamafactory.train.ppo.workflow import check_ppo_args

    model_args, data_args, training_args, finetuning_args, _ = parsed(tmp_path, tiny_model_dir, **overrides)
    for key, value in attrs.items():  # set after parsing: the parser refuses some of these on its own
        setattr(finetuning_args if hasattr(finetuning_args, key) else training_args, key, value)
    with pytest.raises(ConfigError, match=message) as err:
        check_ppo_args(model_args, data_args, training_args, finetuning_args)
    assert "\n" not in str(err.value)


def test_config_checks_accept_valid_setups(tmp_path, tiny_model_dir):
    from llamafactory.train.ppo.workflow import check_ppo_args

    for overrides in ({}, {"finetuning_type": "full", "reward_model_type": "full"},
                      {"reward_model_type": "api", "reward_model": "http://localhost:8000/v1/score"}):
        check_ppo_args(*parsed(tmp_path, tiny_model_dir, **overrides)[:4])


# ----------------------------------------------------------------------------------------------- real runs
COMMON = ["--stage", "ppo", "--do_train", "--dataset", "identity", "--template", "chatml", "--report_to", "none",
          "--cutoff_len", "64", "--max_new_tokens", "8", "--do_sample", "true", "--temperature", "1.0",
          "--top_p", "1.0", "--top_k", "0", "--seed", "0"]


def log_entries(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "trainer_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_ppo_with_an_api_reward_raises_the_reward(tmp_path, tiny_model_dir, reward_server):
    data = write_dataset(str(tmp_path / "data"), IDENTITY * 8)
    out = str(tmp_path / "ppo")
    # The random tiny model's output layer caps its logits, so it trains beside the LoRA adapter here.
    proc = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--dataset_dir", data, "--output_dir", out,
                   "--reward_model", reward_server.url + "/score", "--reward_model_type", "api",
                   "--finetuning_type", "lora", "--additional_target", "lm_head", "--learning_rate", "1e-2",
                   "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2",
                   "--max_steps", "20", "--logging_steps", "1", "--save_steps", "10", "--plot_loss", "true",
                   "--disable_gradient_checkpointing", "true", *COMMON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = log_entries(out)
    assert [e["current_steps"] for e in entries] == list(range(1, 21))
    for entry in entries:
        assert {"loss", "loss/policy", "loss/value", "objective/kl", "objective/kl_coef", "reward", "lr",
                "epoch"} <= set(entry)
    rewards = [e["reward"] for e in entries]
    assert statistics.mean(rewards[-5:]) > statistics.mean(rewards[:5]) + 1.5, rewards
    # the LoRA policy starts equal to its reference (the adapter's B is zero), then moves away from it
    assert abs(entries[0]["objective/kl"]) < 1e-4 and entries[-1]["objective/kl"] > 0.1
    assert entries[-1]["objective/kl_coef"] != 0.2  # the adaptive controller reacted
    assert entries[-1]["epoch"] == pytest.approx(20 * 16 / 32)  # 32 prompts, 16 per step
    assert len(reward_server.requests) == 20 * 2  # one request per 8-row chunk
    for name in ("adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "train_results.json",
                 "training_loss.png", "training_reward.png", "checkpoint-10/value_head.safetensors",
                 "checkpoint-20/adapter_model.safetensors"):
        assert os.path.isfile(os.path.join(out, name)), name


def test_ppo_with_the_lora_reward_adapter_saves_only_the_policy(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from llamafactory.train.tuner import run_exp

    reward = str(tmp_path / "reward")
    build_reward_adapter(tiny_model_dir, reward)
    data = write_dataset(str(tmp_path / "data"), IDENTITY)
    out = str(tmp_path / "ppo")
    run_exp(["--model_name_or_path", tiny_model_dir, "--dataset_dir", data, "--output_dir", out,
             "--reward_model", reward, "--finetuning_type", "lora", "--per_device_train_batch_size", "2",
             "--ppo_buffer_size", "2", "--ppo_epochs", "2", "--max_steps", "2", "--logging_steps", "1",
             "--ppo_score_norm", "true", "--ppo_whiten_rewards", "true", *COMMON])
    entries = log_entries(out)
    assert len(entries) == 2 and all(math.isfinite(e["reward"]) for e in entries)
    assert not os.path.exists(os.path.join(out, "reward"))  # the reward adapter is not part of the result
    with open(os.path.join(out, "adapter_config.json")) as f:
        assert json.load(f)["r"] == 8  # the policy's adapter, not the reward's rank-4 one
    head = load_file(os.path.join(out, "value_head.safetensors"))["v_head.summary.weight"]
    assert not torch.allclose(head, torch.linspace(-1.0, 1.0, 64).unsqueeze(0))  # the critic, not the reward head


def test_full_tuning_with_a_full_reward_model(tmp_path, tiny_model_dir):
    import shutil

    from llamafactory.model.model_utils.valuehead import read_value_head, save_value_head
    from llamafactory.train.tuner import run_exp

    reward = str(tmp_path / "reward_full")
    shutil.copytree(tiny_model_dir, reward)
    head = torch.nn.Linear(64, 1)
    save_value_head(head, reward)
    data = write_dataset(str(tmp_path / "data"), IDENTITY)
    out = str(tmp_path / "ppo")
    run_exp(["--model_name_or_path", tiny_model_dir, "--dataset_dir", data, "--output_dir", out,
             "--reward_model", reward, "--reward_model_type", "full", "--finetuning_type", "full",
             "--ppo_target", "0", "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
             "--logging_steps", "1", *COMMON])
    entries = log_entries(out)
    assert [(e["current_steps"], e["total_steps"], e["epoch"]) for e in entries] == [(1, 2, 1.0), (2, 2, 2.0)]
    assert abs(entries[0]["objective/kl"]) < 1e-4  # the frozen copy starts equal to the policy
    assert [e["objective/kl_coef"] for e in entries] == [0.2, 0.2]  # ppo_target 0: fixed coefficient
    assert os.path.isfile(os.path.join(out, "model.safetensors"))
    assert read_value_head(out) is not None


def test_full_reward_model_with_another_vocabulary_is_refused(tmp_path, tiny_model_dir):
    import shutil

    from transformers import AutoTokenizer

    from llamafactory.data.template import get_template
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.model.model_utils.valuehead import save_value_head
    from llamafactory.train.ppo.reward import load_reward

    from ..conftest import build_tokenizer

    reward = str(tmp_path / "other_vocab")
    shutil.copytree(tiny_model_dir, reward)
    build_tokenizer(["completely different words for another vocabulary"] * 20).save_pretrained(reward)
    save_value_head(torch.nn.Linear(64, 1), reward)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = get_template("chatml", tokenizer)
    template.fix_tokenizer(tokenizer)
    finetuning_args = FinetuningArguments(stage="ppo", finetuning_type="full", reward_model=reward,
                                          reward_model_type="full")
    with pytest.raises(ConfigError, match="another vocabulary"):
        load_reward(None, tokenizer, template, ModelArguments(model_name_or_path=tiny_model_dir), finetuning_args,
                    torch.float32)


def test_dropout_is_switched_off_for_ppo(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from llamafactory.train.ppo.trainer import disable_dropout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attention_dropout=0.3)
    model.lm_head = torch.nn.Sequential(torch.nn.Dropout(0.5), model.lm_head)
    disable_dropout(model)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in model.modules())
