"""`lmf export`: merged weights equal base + adapter, the tokenizer formats chats like the template, the GGUF
file loads back through transformers with the same logits, and every refusal happens before any work."""

import json
import os
import re

import pytest

from llamafactory.extras.errors import ConfigError, UserError
from llamafactory.train.export import MARKER, export_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TEXT = "Who are you? I am Lumen, an assistant made by Forge."
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am Lumen."}, {"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """LoRA, DoRA and OFT adapters with non-zero weights, so merging them changes the model."""
    import torch
    from peft import LoraConfig, OFTConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    configs = {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
        "dora": LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, use_dora=True),
        "oft": OFTConfig(r=0, oft_block_size=8, target_modules=TARGETS, init_weights=False),
    }
    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for kind, config in configs.items():
        torch.manual_seed(1)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
        paths[kind] = str(root / kind)
        model.save_pretrained(paths[kind])
    return paths


def _base_plus_adapter(tiny_model_dir: str, adapter: str):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter).eval()


def _export(tmp_path, tiny_model_dir: str, *extra: str, name: str = "out") -> str:
    out = str(tmp_path / name)
    export_model([f"model_name_or_path={tiny_model_dir}", "template=smollm2", f"export_dir={out}", *extra])
    return out


@pytest.mark.parametrize("kind", ["lora", "dora", "oft"])
def test_merged_model_equals_base_plus_adapter(kind, adapters, tiny_model_dir, tiny_tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = _export(tmp_path, tiny_model_dir, f"adapter_name_or_path={adapters[kind]}", "infer_dtype=float32")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    reference = _base_plus_adapter(tiny_model_dir, adapters[kind])
    ids = torch.tensor([tiny_tokenizer.encode(TEXT)])
    with torch.no_grad():
        expected, got = reference(ids).logits, merged(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert (expected - base).abs().max() > 1e-2  # the adapter matters, so the comparison means something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        assert merged.generate(ids, **settings).tolist() == reference.generate(input_ids=ids, **settings).tolist()
    assert not any(name.startswith("adapter") for name in os.listdir(out))


def test_tokenizer_generation_config_and_modelfile(adapters, tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from llamafactory.data.template import get_template

    out = _export(tmp_path, tiny_model_dir, f"adapter_name_or_path={adapters['lora']}")
    tokenizer = AutoTokenizer.from_pretrained(out)
    template = get_template("smollm2")
    assert tokenizer.eos_token == "<|im_end|>"
    for messages in (CHAT, CHAT[1:], CHAT[1:3]):  # with and without a system turn, ending on either side
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = messages[1:] if system else messages
        if turns[-1]["role"] == "user":
            expected = template.encode_prompt(tokenizer, turns, system)
        else:
            expected = [t for p, r in template.encode_multiturn(tokenizer, turns, system) for t in p + r]
        assert tokenizer.encode(text, add_special_tokens=False) == expected
    generation = GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert str(AutoConfig.from_pretrained(out).dtype).endswith("bfloat16")  # auto: an fp32 checkpoint -> bf16

    modelfile = parse_modelfile(os.path.join(out, "Modelfile"))
    assert modelfile["FROM"] == ["."]
    assert modelfile["SYSTEM"] == [template.default_system]
    assert modelfile["PARAMETER"] == ['stop "<|im_end|>"']
    rendered = render_go(modelfile["TEMPLATE"][0], CHAT, "Be brief.")
    assert rendered == tokenizer.apply_chat_template(CHAT, tokenize=False)


def test_modelfile_of_a_template_without_system_turn():
    """Gemma puts the system text inside the first user turn; the Go template must too."""
    from llamafactory.data.template import get_template
    from llamafactory.model.model_utils.ollama import render_modelfile

    template = get_template("gemma")
    text = render_modelfile(".", template, list(template.stop_words), "<eos>")
    path_free = parse_modelfile_text(text)
    assert 'stop "<end_of_turn>"' in path_free["PARAMETER"] and 'stop "<eos>"' in path_free["PARAMETER"]
    rendered = render_go(path_free["TEMPLATE"][0], CHAT, "Be brief.")
    expected = template.to_jinja()  # render the Jinja with the same conversation for comparison
    from jinja2 import Environment

    jinja = Environment().from_string(expected).render(messages=CHAT, bos_token="", eos_token="<eos>")
    assert rendered == jinja


@pytest.mark.parametrize("gguf_type,tolerance", [("f16", 1e-2), ("bf16", 3e-2), ("q8_0", 0.1)])
def test_gguf_round_trip(gguf_type, tolerance, adapters, tiny_model_dir, tiny_tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _export(tmp_path, tiny_model_dir, f"adapter_name_or_path={adapters['lora']}", "export_format=gguf",
                  f"export_gguf_type={gguf_type}", name="gguf")
    files = sorted(os.listdir(out))
    assert files == [MARKER, "Modelfile", f"gguf-{gguf_type}.gguf"]
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=files[2], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=files[2])
    assert tokenizer.encode(TEXT, add_special_tokens=False) == tiny_tokenizer.encode(TEXT)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    reference = _base_plus_adapter(tiny_model_dir, adapters["lora"]).merge_and_unload()
    ids = torch.tensor([tiny_tokenizer.encode(TEXT)])
    with torch.no_grad():
        expected, got = reference(ids).logits, loaded(ids).logits.float()
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() < tolerance * scale, (got - expected).abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9
    assert parse_modelfile(os.path.join(out, "Modelfile"))["FROM"] == [f"./{files[2]}"]


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "mistral"])
def test_gguf_round_trip_of_other_architectures(model_type, tiny_tokenizer, tmp_path):
    """Qwen2 (attention biases, no q/k reordering), Qwen3 (q/k norms) and Mistral (llama layout), tied heads."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = dict(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **sizes)).eval()
    for name, param in model.named_parameters():
        if name.endswith(("_proj.bias", "_norm.weight")):  # make biases and norms matter
            torch.nn.init.normal_(param, mean=1.0 if name.endswith("norm.weight") else 0.0, std=0.3)
    folder = str(tmp_path / "tiny-base")  # transformers reads "mistral" in a GGUF's name as a request for its
    model.save_pretrained(folder)         # own mistral loader, which gguf-py lacks; any other name loads as llama
    tiny_tokenizer.save_pretrained(folder)
    out = _export(tmp_path, folder, "export_format=gguf", "template=chatml", name="gguf")
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="gguf-f16.gguf", dtype=torch.float32).eval()
    ids = torch.tensor([tiny_tokenizer.encode(TEXT)])
    with torch.no_grad():
        expected, got = model(ids).logits, loaded(ids).logits.float()
    assert (got - expected).abs().max().item() < 1e-2 * expected.abs().max().item()


def test_rope_layout_matches_transformers_inverse():
    """Our q/k reordering is exactly what transformers' GGUF loader undoes (llama.cpp's rope layout)."""
    import numpy as np
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from llamafactory.model.model_utils.gguf_export import rope_rows_to_interleaved

    weight = np.arange(8 * 2 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of 8 rows
    reordered = rope_rows_to_interleaved(weight, 2)
    assert reordered[:8, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]  # row i and i + 4 of a head side by side
    undo = LlamaTensorProcessor({"num_attention_heads": 2, "num_key_value_heads": 2})
    assert np.array_equal(undo._reverse_permute_weights(reordered, 2, 2), weight)


def test_llama3_rope_factors_match_transformers():
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llamafactory.model.model_utils.gguf_export import llama3_rope_factors

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=131072,
                         rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float32) / 128))
    factors = torch.from_numpy(llama3_rope_factors(rope, 128, 500000.0))
    torch.testing.assert_close(plain / scaled.float(), factors, rtol=1e-4, atol=1e-4)


def test_shards_respect_export_size_and_legacy_format(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    limit = 0.0001  # GB: 100 kB shards of a ~480 kB fp32 model
    out = _export(tmp_path, tiny_model_dir, f"export_size={limit}", "infer_dtype=float32")
    shards = [f for f in os.listdir(out) if f.endswith(".safetensors")]
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    assert len(shards) >= 4 and set(index["weight_map"].values()) == set(shards)
    from safetensors import safe_open

    for shard in shards:
        size = os.path.getsize(os.path.join(out, shard))
        with safe_open(os.path.join(out, shard), "pt") as f:
            alone = len(list(f.keys())) == 1  # a tensor larger than the limit gets a shard of its own
        assert alone or size <= limit * 1e9 + 4096, (shard, size)

    legacy = _export(tmp_path, tiny_model_dir, f"export_size={limit}", "infer_dtype=float32",
                     "export_legacy_format=true", name="legacy")
    bins = [f for f in os.listdir(legacy) if f.endswith(".bin")]
    assert len(bins) == len(shards) and not any(f.endswith(".safetensors") for f in os.listdir(legacy))
    a, b = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(legacy)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_reward_model_value_head_is_copied(adapters, tiny_model_dir, tmp_path):
    import shutil

    import torch

    from llamafactory.model.model_utils.valuehead import read_value_head, save_value_head

    adapter = str(tmp_path / "rm_adapter")
    shutil.copytree(adapters["lora"], adapter)
    save_value_head(torch.nn.Linear(64, 1), adapter)
    out = _export(tmp_path, tiny_model_dir, f"adapter_name_or_path={adapter}", "stage=rm")
    torch.testing.assert_close(read_value_head(out)["weight"], read_value_head(adapter)["weight"])
    with pytest.raises(UserError, match="value_head.safetensors"):
        _export(tmp_path, tiny_model_dir, f"adapter_name_or_path={adapters['lora']}", "stage=rm", name="rm2")
    assert not os.path.exists(tmp_path / "rm2")


def test_export_dir_is_never_overwritten_unless_it_is_ours(tiny_model_dir, tmp_path):
    out = _export(tmp_path, tiny_model_dir)
    _export(tmp_path, tiny_model_dir, "export_size=0.0002")  # an earlier export is replaced
    assert "model.safetensors" not in os.listdir(out) and "model.safetensors.index.json" in os.listdir(out)
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        _export(tmp_path, tiny_model_dir)
    user = tmp_path / "user"
    user.mkdir()
    (user / "weights.bin").write_text("precious")
    with pytest.raises(ConfigError, match=re.escape(str(user))):
        _export(tmp_path, tiny_model_dir, name="user")
    assert (user / "weights.bin").read_text() == "precious"


def test_push_offline_fails_after_a_complete_export(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="export is complete .* cannot be reached"):
        _export(tmp_path, tiny_model_dir, "export_hub_model_id=me/tiny")
    assert "model.safetensors" in os.listdir(tmp_path / "out") and "Modelfile" in os.listdir(tmp_path / "out")


def test_lmf_export_command(adapters, tiny_model_dir, tmp_path):
    """The real console script: a complete export, then the offline push failing in one line, status 1."""
    from llamafactory import cli

    from ..conftest import run_lmf

    if "export" in cli.NOT_BUILT or "export" not in cli.COMMANDS:
        pytest.skip("cli.py does not dispatch `lmf export` yet")
    cfg = tmp_path / "export.yaml"
    cfg.write_text(f"model_name_or_path: {tiny_model_dir}\nadapter_name_or_path: {adapters['lora']}\n"
                   f"template: smollm2\nexport_dir: {tmp_path / 'out'}\nexport_hub_model_id: me/tiny\n")
    proc = run_lmf("export", str(cfg), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "export is complete" in errors[0], proc.stderr[-2000:]
    assert {"model.safetensors", "Modelfile", "tokenizer.json"} <= set(os.listdir(tmp_path / "out"))


@pytest.mark.parametrize("extra,message", [
    (["export_quantization_bit=4", "export_quantization_dataset={data}"], "needs a CUDA GPU"),
    (["export_quantization_bit=4"], "needs `export_quantization_dataset`"),
    (["export_quantization_bit=4", "export_quantization_dataset={data}", "adapter_name_or_path={adapter}"],
     "export the merged model first"),
    (["quantization_bit=4", "adapter_name_or_path={adapter}"], "would round the result"),
    (["export_format=gguf", "export_legacy_format=true"], "does not apply"),
    (["export_size=0"], "must be positive"),
])
def test_refusals_come_before_any_work(extra, message, adapters, tiny_model_dir, tmp_path):
    data = tmp_path / "calib.txt"
    data.write_text("the quick brown fox\n")
    args = [e.format(data=data, adapter=adapters["lora"]) for e in extra]
    with pytest.raises(UserError, match=re.escape(message)):
        _export(tmp_path, tiny_model_dir, *args)
    assert not os.path.exists(tmp_path / "out")


def test_gguf_refuses_other_architectures(tmp_path, tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = str(tmp_path / "gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tiny_tokenizer))).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    with pytest.raises(UserError, match="supported: Llama, SmolLM2, Mistral"):
        _export(tmp_path, folder, "export_format=gguf")


# ------------------------------------------------------------------------------------------------ helpers
def parse_modelfile(path: str) -> dict[str, list[str]]:
    with open(path, encoding="utf-8") as f:
        return parse_modelfile_text(f.read())


def parse_modelfile_text(text: str) -> dict[str, list[str]]:
    """Ollama's Modelfile grammar as far as exports use it: INSTRUCTION value, values in \"\"\" may span lines."""
    found: dict[str, list[str]] = {}
    for match in re.finditer(r'^(\w+) ("""(.*?)"""|[^\n]*)$', text, flags=re.S | re.M):
        value = match.group(3) if match.group(3) is not None else match.group(2)
        found.setdefault(match.group(1).upper(), []).append(value)
    return found


def render_go(template: str, messages: list[dict[str, str]], system: str) -> str:
    """A tiny Go text/template interpreter covering what ollama.go_template writes."""
    tokens = re.split(r"(\{\{.*?\}\})", template)
    scope = {"$first": True}

    def value(expr: str, item: dict[str, str]) -> object:
        expr = expr.strip()
        if expr.startswith('"'):
            return json.loads(expr)
        if expr in (".System", "$.System"):
            return system
        if expr.startswith("."):
            return item[expr[1:].lower()]
        if expr in ("true", "false"):
            return expr == "true"
        if expr.startswith("eq "):
            a, b = re.findall(r'"[^"]*"|\S+', expr[3:])
            return value(a, item) == value(b, item)
        if expr.startswith("and "):
            return all(value(part, item) for part in expr[4:].split())
        return scope[expr]

    def run(start: int, item: dict[str, str], out: list[str], live: bool = True) -> int:
        """Render tokens from start until an unmatched else/end (only effects when live); return its index."""
        i = start
        while i < len(tokens):
            tok = tokens[i]
            if not tok.startswith("{{"):
                if live:
                    out.append(tok)
                i += 1
                continue
            action = tok[2:-2].strip()
            if action == "end" or action.startswith("else"):
                return i
            if action.startswith("if "):
                taken = live and bool(value(action[3:], item))
                i = run(i + 1, item, out, taken)
                while tokens[i][2:-2].strip() != "end":
                    branch = tokens[i][2:-2].strip()
                    cond = live and not taken and (branch == "else" or bool(value(branch[len("else if "):], item)))
                    taken = taken or cond
                    i = run(i + 1, item, out, cond)
                i += 1
            elif action.startswith("range "):
                end = run(i + 1, {}, out, False)
                for message in messages if live else []:
                    run(i + 1, message, out, True)
                i = end + 1
            elif ":=" in action or "=" in action:
                name, expr = re.split(r":?=", action, maxsplit=1)
                if live:
                    scope[name.strip()] = value(expr, item)
                i += 1
            else:
                if live:
                    out.append(str(value(action, item)))
                i += 1
        return i

    result: list[str] = []
    run(0, {}, result)
    return "".join(result)


@pytest.mark.parametrize("name", ["smollm2_lora_sft.yaml", "smollm2_gguf.yaml"])
def test_export_examples_parse(name):
    from llamafactory.hparams.parser import get_infer_args
    from llamafactory.train.export import check_export_args

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    model_args, data_args, finetuning_args, _ = get_infer_args([os.path.join(root, "examples", "merge_lora", name)])
    assert model_args.export_dir and model_args.adapter_name_or_path and data_args.template == "smollm2"
    check_export_args(model_args, finetuning_args, [])  # the demo adapter need not exist for the keys to be valid
