"""Shared fixtures: a tiny tokenizer and 2-layer model built locally, and small datasets. No network."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

# Never reach the hub from tests, and keep converted models out of the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# `lmf webui` installs its own SIGINT handler, so the runs it starts get SIGINT at its default and Stop works like
# Ctrl-C. A test process started as a background job of a script inherits SIGINT *ignored* and would hand that on to
# the runs the web UI tests start, which then never stop; act as the web UI does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IDENTITY = [
    {"instruction": "Who are you?", "input": "", "output": "I am Lumen, an assistant made by Forge."},
    {"instruction": "What is your name?", "input": "", "output": "My name is Lumen."},
    {"instruction": "Who made you?", "input": "", "output": "I was made by Forge."},
    {"instruction": "hi", "input": "", "output": "Hello! I am Lumen, how can I help?"},
]


def build_tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.chat_template = CHATML_JINJA
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer Llama with a 600-token BPE vocabulary, saved as an ordinary HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = [f"{row['instruction']} {row['output']}" for row in IDENTITY] * 20
    corpus += ["system user assistant tool Human: Assistant: System: the quick brown fox jumps over the lazy dog"] * 20
    tokenizer = build_tokenizer(corpus)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    path = str(tmp_path_factory.mktemp("tiny-llama"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_dataset(folder: str, rows: list[dict], name: str = "identity", file_name: str = "identity.json",
                  entry: dict | None = None) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, file_name), "w", encoding="utf-8") as f:
        if file_name.endswith(".jsonl"):
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        else:
            json.dump(rows, f)
    info_path = os.path.join(folder, "dataset_info.json")
    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
    info[name] = {"file_name": file_name, **(entry or {})}
    with open(info_path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return folder


@pytest.fixture
def identity_dir(tmp_path) -> str:
    return write_dataset(str(tmp_path / "data"), IDENTITY)


LMF = shutil.which("lmf", path=os.path.dirname(sys.executable)) or "lmf"


def run_lmf(*args: str, stdin: str | None = None, env: dict | None = None, cwd: str | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real console script, as a user would."""
    full_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})}
    return subprocess.run([LMF, *args], input=stdin, capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout)


@pytest.fixture
def lmf():
    return run_lmf
