"""Stage grpo: reward specs, up-front config checks, reward models, generation from our template's exact prompt
ids, and a tiny model that measurably learns a rule reward through `lmf train`."""

import json
import os
import shutil
from types import SimpleNamespace

import pytest

from llamafactory.extras.errors import ConfigError
from llamafactory.train.grpo.rewards import build_rule_rewards, parse_reward_spec
from llamafactory.train.grpo.workflow import check_grpo_args

from ..conftest import IDENTITY, run_lmf, write_dataset


# ----------------------------------------------------------------------------------------------- reward specs
def test_exact_match_compares_stripped_answers_and_skips_rows_without_a_reference():
    reward = parse_reward_spec("exact_match")
    assert reward(completions=[" 12\n", "13", "12"], reference=["12", "12", ""]) == [1.0, 0.0, None]


def test_regex_rewards_a_match_anywhere_in_the_answer():
    reward = parse_reward_spec(r"regex:\d+")
    assert reward(completions=["it is 12.", "twelve"]) == [1.0, 0.0]


def test_format_needs_the_whole_answer_to_match_across_lines():
    reward = parse_reward_spec(r"format:<think>.*</think>\s*<answer>\d+</answer>")
    answers = ["<think>7 and\n5</think>\n<answer>12</answer>\n", "so <think>x</think><answer>12</answer>",
               "<think>x</think><answer>12</answer> done"]
    assert reward(completions=answers) == [1.0, 0.0, 0.0]


def test_length_is_one_at_the_target_and_halves_one_target_away():
    reward = parse_reward_spec("length:4")
    assert reward(completions=["abcd", " ab ", "abcdefgh", ""]) == pytest.approx([1.0, 2 / 3, 0.5, 0.5])
    zero = parse_reward_spec("length:0")
    assert zero(completions=["", "abc"]) == pytest.approx([1.0, 0.25])


def test_a_python_function_is_imported_by_its_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def shout(completions, **kwargs):\n"
                                            "    return [float(c.isupper()) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = parse_reward_spec("my_rewards:shout")
    assert reward.__name__ == "shout"
    assert reward(completions=["HI", "hi"]) == [1.0, 0.0]


def test_repeated_rules_get_their_own_names_for_the_logs():
    names = [f.__name__ for f in build_rule_rewards(["regex:a", "regex:b", "exact_match", "length:3", "length:5"])]
    assert names == ["regex", "regex_2", "exact_match", "length", "length_2"]


@pytest.mark.parametrize(("spec", "expected"), [
    ("exact", "unknown reward `exact`; expected `exact_match`, `regex:PATTERN`"),
    ("regex:(", "`regex:(` is not a valid regular expression"),
    ("format:", "`format:` has no pattern after the colon"),
    ("length:ten", "`length:ten` needs a whole number of characters"),
    ("no_such_module_xyz:score", "cannot import module `no_such_module_xyz` for `no_such_module_xyz:score`"),
    ("json:no_such_function", "module `json` has no `no_such_function`"),
    ("json:__name__", "`json:__name__` is a str, not a function"),
])
def test_bad_specs_name_the_key_the_value_and_what_is_expected(spec, expected):
    with pytest.raises(ConfigError) as err:
        parse_reward_spec(spec)
    message = str(err.value)
    assert message.startswith("`reward_funcs`: ") and expected in message and "\n" not in message


# ----------------------------------------------------------------------------------------------- config checks
def grpo_args(**overrides):
    training = dict(world_size=1, do_train=True, do_eval=False, do_predict=False, per_device_train_batch_size=4,
                    gradient_accumulation_steps=1, per_device_eval_batch_size=4)
    finetuning = dict(num_generations=4, max_completion_length=16, grpo_beta=0.04, reward_funcs=["exact_match"],
                      reward_model=None, reward_model_type="lora", reward_weights=None)
    generating = dict(do_sample=True, num_beams=1)
    for key, value in overrides.items():
        for group in (training, finetuning, generating):
            if key in group:
                group[key] = value
    return SimpleNamespace(**training), SimpleNamespace(**finetuning), SimpleNamespace(**generating)


def test_valid_settings_pass():
    check_grpo_args(*grpo_args())


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"per_device_train_batch_size": 3, "gradient_accumulation_steps": 2},
     "`per_device_train_batch_size` (3) x `gradient_accumulation_steps` (2) x 1 process(es) = 6 answers per "
     "generation round, which must be a multiple of `num_generations` (4)"),
    ({"do_eval": True, "per_device_eval_batch_size": 6}, "`per_device_eval_batch_size` (6) x 1 process(es) must be "
     "a multiple of `num_generations` (4)"),
    ({"num_generations": 1}, "`num_generations` must be at least 2"),
    ({"reward_funcs": None}, "stage grpo needs a reward: set `reward_funcs`"),
    ({"reward_weights": [1.0, 0.5]}, "`reward_weights` has 2 values for 1 rewards"),
    ({"reward_model": "http://judge", "reward_model_type": "api"}, "`reward_model_type: api` is not supported"),
    ({"do_sample": False}, "keep `do_sample: true`"),
    ({"do_predict": True}, "stage grpo trains and evaluates only"),
])
def test_settings_trl_would_refuse_are_refused_first_in_our_keys(overrides, expected):
    with pytest.raises(ConfigError) as err:
        check_grpo_args(*grpo_args(**overrides))
    assert expected in str(err.value)


def test_the_batch_size_message_suggests_a_size_that_fits():
    with pytest.raises(ConfigError) as err:
        check_grpo_args(*grpo_args(per_device_train_batch_size=3, gradient_accumulation_steps=2))
    assert "e.g. `per_device_train_batch_size: 4`" in str(err.value)  # 4 x 2 = 8 answers: two groups of 4


def test_training_settings_reach_trl_and_our_sampling_settings_replace_its_defaults(tmp_path):
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.generating_args import GeneratingArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.hparams.training_args import TrainingArguments
    from llamafactory.train.grpo.workflow import grpo_config

    training = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, learning_rate=3e-4, max_steps=7,
                                 per_device_train_batch_size=8, logging_steps=2, seed=5, report_to="none")
    finetuning = FinetuningArguments(stage="grpo", num_generations=8, max_completion_length=32, grpo_beta=0.1,
                                     reward_weights=[2.0], disable_shuffling=True)
    generating = GeneratingArguments(temperature=0.7, top_p=0.9, top_k=20)
    config = grpo_config(training, ModelArguments(model_name_or_path="unused"), finetuning, generating)
    assert (config.learning_rate, config.max_steps, config.logging_steps, config.seed) == (3e-4, 7, 2, 5)
    assert config.bf16 is False and config.use_cpu and config.report_to == []  # not trl's bf16-on default
    assert (config.num_generations, config.max_completion_length, config.beta) == (8, 32, 0.1)
    assert (config.temperature, config.top_p, config.top_k, config.reward_weights) == (0.7, 0.9, 20, [2.0])
    assert config.remove_unused_columns is False and config.shuffle_dataset is False
    assert config.gradient_checkpointing_kwargs == {"use_reentrant": True}


# ----------------------------------------------------------------------------------------------- reward models
def _value_head(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Linear(64, 1)


def _reward_args(tmp_path, base_dir: str, reward_dir: str, kind: str):
    from llamafactory.hparams.data_args import DataArguments
    from llamafactory.hparams.finetuning_args import FinetuningArguments
    from llamafactory.hparams.model_args import ModelArguments
    from llamafactory.hparams.training_args import TrainingArguments

    return (ModelArguments(model_name_or_path=base_dir), DataArguments(template="chatml"),
            TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_eval_batch_size=2,
                              report_to="none"),
            FinetuningArguments(stage="grpo", reward_model=reward_dir, reward_model_type=kind))


def _policy_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    from llamafactory.data.template import get_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    get_template("chatml").fix_tokenizer(tokenizer)
    return tokenizer


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
ANSWERS = [[20, 21], [22, 23, 24, 25], [26]]


def _scores_one_by_one(model):
    """The reference: each prompt + answer scored alone, so no padding is involved."""
    import torch

    return [model.score(torch.tensor([p + a]), torch.ones(1, len(p + a), dtype=torch.long)).item()
            for p, a in zip(PROMPTS, ANSWERS)]


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_a_reward_model_saved_by_stage_rm_scores_prompt_plus_answer(tmp_path, tiny_model_dir, kind):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from llamafactory.model.model_utils.valuehead import ValueHeadModel, save_value_head
    from llamafactory.train.grpo.rewards import load_reward_model

    folder = str(tmp_path / "rm")
    if kind == "lora":
        trained = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                 LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        trained.save_pretrained(folder)
    else:
        shutil.copytree(tiny_model_dir, folder)
    save_value_head(_value_head(3), folder)

    tokenizer = _policy_tokenizer(tiny_model_dir)
    model_args, data_args, training_args, finetuning_args = _reward_args(tmp_path, tiny_model_dir, folder, kind)
    reward = load_reward_model(tokenizer, model_args, data_args, training_args, finetuning_args)
    scores = reward(prompts=["unused"] * 3, completions=["unused"] * 3, completion_ids=ANSWERS, input_ids=PROMPTS)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir if kind == "lora" else folder)
    expected_model = ValueHeadModel(PeftModel.from_pretrained(base, folder) if kind == "lora" else base)
    assert expected_model.load_value_head(folder)
    expected = _scores_one_by_one(expected_model.eval())
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(round(s, 4) for s in scores)) == 3  # a real model's scores, not a constant


def test_a_full_reward_model_with_another_vocabulary_is_refused(tmp_path, tiny_model_dir, llama3_like_dir):
    from llamafactory.model.model_utils.valuehead import save_value_head
    from llamafactory.train.grpo.rewards import load_reward_model

    save_value_head(_value_head(3), llama3_like_dir)
    args = _reward_args(tmp_path, tiny_model_dir, llama3_like_dir, "full")
    with pytest.raises(ConfigError, match="has another vocabulary than `model_name_or_path`"):
        load_reward_model(_policy_tokenizer(tiny_model_dir), *args)


# ----------------------------------------------------------------------------------------------- generation
@pytest.fixture
def llama3_like_dir(tmp_path, tiny_model_dir) -> str:
    """The tiny model with Llama-3 special tokens and a tokenizer that adds a BOS whenever it encodes text, as
    Llama's does: re-tokenizing a rendered prompt would double the BOS, and `<|eom_id|>` is a stop token that is
    neither the tokenizer's eos nor the model's."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>", "additional_special_tokens": [
        "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"]})
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos)])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    path = str(tmp_path / "tiny-llama3")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_generation_starts_from_our_template_prompt_and_stops_at_its_stop_tokens(tmp_path, llama3_like_dir,
                                                                                 identity_dir, monkeypatch):
    from transformers import AutoTokenizer, GenerationMixin

    from llamafactory.data.template import get_template
    from llamafactory.train.tuner import run_exp

    prompts, stops = [], []
    generate = GenerationMixin.generate

    def recording_generate(self, *args, **kwargs):
        for row, mask in zip(kwargs["input_ids"], kwargs["attention_mask"]):
            prompts.append(row[mask.bool()].tolist())
        stops.append(kwargs["generation_config"].eos_token_id)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording_generate)
    out = str(tmp_path / "out")
    run_exp(["--model_name_or_path", llama3_like_dir, "--template", "llama3", "--dataset", "identity",
             "--dataset_dir", identity_dir, "--stage", "grpo", "--do_train", "--output_dir", out, "--max_steps", "1",
             "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "4",
             "--reward_funcs", "length:10", "--report_to", "none"])

    tokenizer = AutoTokenizer.from_pretrained(llama3_like_dir)
    template = get_template("llama3")
    template.fix_tokenizer(tokenizer)
    ours = {tuple(template.encode_prompt(tokenizer, [{"role": "user", "content": row["instruction"]}]))
            for row in IDENTITY}
    assert len(prompts) == 4 and all(tuple(p) in ours for p in prompts), (prompts, ours)
    assert all(p.count(tokenizer.bos_token_id) == 1 for p in prompts)  # trl's own tokenizing would add a second
    stop_ids = template.stop_token_ids(tokenizer)
    assert len(stop_ids) == 2 and set(stop_ids) <= set(stops[0])  # <|eot_id|> and <|eom_id|>
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    assert not os.path.exists(os.path.join(out, "ref"))  # trl's frozen reference adapter is not saved


# ----------------------------------------------------------------------------------------------- learning
REWARD_MODULE = '''
def low_ids(completion_ids, **kwargs):
    """The share of answer tokens from the lower half of the vocabulary: dense, so a random model's answers
    already differ within each group, and the policy can move towards it in a few steps."""
    return [sum(t < {half} for t in ids) / max(len(ids), 1) for ids in completion_ids]
'''


def test_lmf_train_grpo_raises_the_reward_and_saves_the_adapter(tmp_path, tiny_model_dir, tiny_tokenizer):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "toy_rewards.py").write_text(REWARD_MODULE.format(half=len(tiny_tokenizer) // 2))
    data = write_dataset(str(tmp_path / "data"), IDENTITY)
    out = str(tmp_path / "out")
    # The random model's lm_head is tiny and LoRA leaves it frozen, so it is trained beside the adapter.
    python_path = os.pathsep.join(filter(None, [str(modules), os.environ.get("PYTHONPATH")]))
    result = run_lmf("train", "--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
                     "--dataset_dir", data, "--stage", "grpo", "--do_train", "--output_dir", out,
                     "--finetuning_type", "lora", "--additional_target", "lm_head", "--learning_rate", "3e-2",
                     "--max_steps", "16", "--logging_steps", "1", "--per_device_train_batch_size", "8",
                     "--num_generations", "4", "--max_completion_length", "8", "--temperature", "1.0",
                     "--top_p", "1.0", "--top_k", "0", "--reward_funcs", "toy_rewards:low_ids", "--plot_loss",
                     "--report_to", "none", env={"PYTHONPATH": python_path})
    assert result.returncode == 0, result.stderr[-3000:]

    with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as f:
        rewards = [entry["reward"] for entry in map(json.loads, f) if "reward" in entry]
    assert len(rewards) == 16
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1, rewards  # ~0.55 -> 0.7-0.9 over seeds 1-3 and 42
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    assert os.path.isfile(os.path.join(out, "tokenizer_config.json"))
    assert os.path.isfile(os.path.join(out, "training_reward.png"))


def test_a_bad_reward_spec_stops_the_run_before_any_model_loads(tmp_path, tiny_model_dir, identity_dir):
    from llamafactory.train.tuner import run_exp

    with pytest.raises(ConfigError, match="`reward_funcs`: unknown reward `exact`"):
        run_exp(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--dataset", "identity",
                 "--dataset_dir", identity_dir, "--stage", "grpo", "--do_train", "--output_dir",
                 str(tmp_path / "out"), "--reward_funcs", "exact", "--report_to", "none"])
