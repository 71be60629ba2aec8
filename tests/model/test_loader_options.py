"""Model options applied at load time: RoPE scaling, new tokens, random init, fp32 norms and logits."""

import pytest

from llamafactory.extras.errors import ConfigError
from llamafactory.hparams import FinetuningArguments, ModelArguments
from llamafactory.model.loader import load_model, load_tokenizer


def load(tiny_model_dir, trainable=True, **options):
    import torch

    model_args = ModelArguments(model_name_or_path=tiny_model_dir, disable_gradient_checkpointing=True, **options)
    model_args.model_max_length = 1024
    tokenizer = load_tokenizer(model_args)
    model = load_model(tokenizer, model_args, FinetuningArguments(finetuning_type="full"), trainable, torch.float32)
    return tokenizer, model


def test_rope_scaling_stretches_the_context(tiny_model_dir):
    _, model = load(tiny_model_dir, rope_scaling="linear")
    assert model.config.rope_parameters["rope_type"] == "linear"
    assert model.config.rope_parameters["factor"] == 2.0 and model.config.max_position_embeddings == 1024


def test_new_tokens_grow_the_embeddings_only_when_asked(tiny_model_dir):
    from transformers import AutoTokenizer

    before = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    tokenizer, model = load(tiny_model_dir, add_special_tokens="<tool>,<end_tool>")
    assert tokenizer.convert_tokens_to_ids("<tool>") == before and len(tokenizer) == before + 2
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert model.get_input_embeddings().weight.shape[0] % 64 == 0


def test_a_tokenizer_larger_than_the_model_is_refused_without_resize_vocab(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(10)])
    tokenizer.save_pretrained(tmp_path)
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{name}", tmp_path / name)
    with pytest.raises(ConfigError, match="set `resize_vocab: true`"):
        load(str(tmp_path))
    tokenizer, model = load(str(tmp_path), resize_vocab=True)
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)


def test_train_from_scratch_does_not_load_the_weights(tiny_model_dir):
    import torch

    _, loaded = load(tiny_model_dir)
    _, fresh = load(tiny_model_dir, train_from_scratch=True)
    assert not torch.equal(loaded.lm_head.weight, fresh.lm_head.weight)


def test_upcast_norms_and_logits(tiny_model_dir):
    import torch

    model_args = ModelArguments(model_name_or_path=tiny_model_dir, upcast_layernorm=True, upcast_lmhead_output=True)
    tokenizer = load_tokenizer(model_args)
    model = load_model(tokenizer, model_args, FinetuningArguments(), True, torch.bfloat16)  # a training setting
    norms = [p for n, p in model.named_parameters() if "norm" in n]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in bf16 training
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.float32


def test_liger_without_its_package_says_what_to_install(tmp_path):
    from llamafactory.extras.errors import UserError
    from llamafactory.hparams.parser import get_train_args

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model_name_or_path: m\ndo_train: true\ndataset: d\noutput_dir: {tmp_path / 'o'}\n"
                   "enable_liger_kernel: true\n")
    with pytest.raises(UserError, match="liger"):
        get_train_args([str(cfg)])


def test_lora_with_new_tokens_trains_the_embeddings(tiny_model_dir):
    import torch

    model_args = ModelArguments(model_name_or_path=tiny_model_dir, add_special_tokens="<tool>")
    tokenizer = load_tokenizer(model_args)
    model = load_model(tokenizer, model_args, FinetuningArguments(finetuning_type="lora"), True, torch.float32)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)


def test_full_tuning_loads_fp32_weights_and_adapters_keep_a_bf16_base():
    import torch

    from llamafactory.model.loader import compute_dtype

    bf16 = type("Args", (), {"bf16": True, "fp16": False})()
    model_args = ModelArguments(model_name_or_path="m")
    # Full tuning trains every weight in fp32: loading them in bf16 first would round them all.
    assert compute_dtype(bf16, FinetuningArguments(finetuning_type="full"), model_args) == torch.float32
    pure = FinetuningArguments(finetuning_type="full", pure_bf16=True)
    assert compute_dtype(bf16, pure, model_args) == torch.bfloat16
    assert compute_dtype(bf16, FinetuningArguments(finetuning_type="lora"), model_args) == torch.bfloat16


def test_qlora_continues_a_saved_adapter_with_trainable_weights(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from llamafactory.model.adapter import init_adapter

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    init_adapter(base, ModelArguments(model_name_or_path=tiny_model_dir), FinetuningArguments(lora_rank=4),
                 True).save_pretrained(tmp_path / "adapter")
    model_args = ModelArguments(model_name_or_path=tiny_model_dir, quantization_bit=4,
                                adapter_name_or_path=str(tmp_path / "adapter"))
    model = load_model(load_tokenizer(model_args), model_args, FinetuningArguments(), True, torch.float32)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_generation_runs_in_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, tiny_model_dir,
                                                                              native_bf16):
    """Decoding is bound by reading the weights, so half-size weights generate faster, but only with native bf16
    (emulated bf16 is slower than fp32); scoring and explicit dtypes are left alone."""
    import torch

    from llamafactory.chat.chat_model import ChatModel
    from llamafactory.extras import env
    from llamafactory.model.loader import compute_dtype

    if torch.cuda.is_available():
        pytest.skip("the CPU rule")
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: native_bf16)
    auto = ModelArguments(model_name_or_path="m")
    want = torch.bfloat16 if native_bf16 else torch.float32
    assert compute_dtype(None, FinetuningArguments(), auto, generation=True) == want
    assert compute_dtype(None, FinetuningArguments(), auto) == torch.float32  # lmf eval's scoring
    fixed = ModelArguments(model_name_or_path="m", infer_dtype="float32")
    assert compute_dtype(None, FinetuningArguments(), fixed, generation=True) == torch.float32
    chat = ChatModel(["--model_name_or_path", tiny_model_dir, "--template", "chatml", "--do_sample", "false",
                      "--max_new_tokens", "4"])
    assert next(chat.engine.model.parameters()).dtype == want
    assert chat.chat([{"role": "user", "content": "hi"}])[0].response_length >= 0
