from types import SimpleNamespace

import pytest

from llamafactory.extras.errors import ConfigError
from llamafactory.model.adapter import find_all_linear_modules, init_adapter


def ft_args(**kwargs):
    defaults = dict(finetuning_type="lora", pure_bf16=False, lora_rank=4, lora_alpha=None, lora_dropout=0.0,
                    lora_target="all", use_rslora=False, use_dora=False, additional_target=None,
                    create_new_adapter=False, freeze_trainable_layers=2, freeze_trainable_modules="all",
                    freeze_extra_modules=None, pissa_init=False, pissa_iter=16, oft_rank=0, oft_block_size=16,
                    oft_target="all", module_dropout=0.0, use_llama_pro=False)
    defaults.update(kwargs)
    ns = SimpleNamespace(**defaults)
    ns.lora_alpha_or_default = lambda: ns.lora_alpha or ns.lora_rank * 2
    return ns


MODEL_ARGS = SimpleNamespace(adapter_name_or_path=None)


@pytest.fixture
def model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_all_targets_every_linear_but_the_head(model):
    import torch

    assert find_all_linear_modules(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                              "v_proj"]
    peft_model = init_adapter(model, MODEL_ARGS, ft_args(), is_trainable=True)
    names = trainable(peft_model)
    assert names and all("lora_" in n for n in names)
    assert not any("lm_head" in n for n in names)
    assert all(p.dtype == torch.float32 for n, p in peft_model.named_parameters() if p.requires_grad)
    config = peft_model.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 8


def test_freeze_trains_the_last_or_first_layers(model):
    init_adapter(model, MODEL_ARGS, ft_args(finetuning_type="freeze", freeze_trainable_layers=1), True)
    names = trainable(model)
    assert names and all(".layers.1." in n for n in names)
    init_adapter(model, MODEL_ARGS, ft_args(finetuning_type="freeze", freeze_trainable_layers=-1,
                                            freeze_trainable_modules="mlp", freeze_extra_modules="lm_head"), True)
    names = trainable(model)
    assert any(n.startswith("lm_head") for n in names)
    assert {n for n in names if ".layers." in n} == {n for n in names if ".layers.0.mlp." in n}
    with pytest.raises(ConfigError, match="`freeze_trainable_layers` must be between -2 and 2"):
        init_adapter(model, MODEL_ARGS, ft_args(finetuning_type="freeze", freeze_trainable_layers=5), True)


def test_full_trains_everything_in_fp32(model):
    import torch

    init_adapter(model, MODEL_ARGS, ft_args(finetuning_type="full"), True)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("option,check", [
    ({"use_dora": True}, lambda c: c.use_dora),
    ({"use_rslora": True}, lambda c: c.use_rslora),
    ({"pissa_init": True, "pissa_iter": 4}, lambda c: c.init_lora_weights == "pissa_niter_4"),
])
def test_lora_variants_reach_peft(model, option, check):
    peft_model = init_adapter(model, MODEL_ARGS, ft_args(**option), is_trainable=True)
    assert check(peft_model.peft_config["default"])


def test_oft_trains_only_its_own_parameters(model):
    peft_model = init_adapter(model, MODEL_ARGS, ft_args(finetuning_type="oft"), is_trainable=True)
    config = peft_model.peft_config["default"]
    assert type(config).__name__ == "OFTConfig" and config.oft_block_size == 16
    names = trainable(peft_model)
    assert names and all("oft_" in n for n in names)


def test_loraplus_gives_b_matrices_a_larger_learning_rate(model):
    from transformers import TrainingArguments

    from llamafactory.train.trainer_utils import create_loraplus_optimizer

    peft_model = init_adapter(model, MODEL_ARGS, ft_args(), is_trainable=True)
    args = TrainingArguments(output_dir="unused", learning_rate=1e-4, use_cpu=True, report_to="none")
    optimizer = create_loraplus_optimizer(peft_model, args, ft_args(loraplus_lr_ratio=16.0))
    by_lr = {g["lr"]: len(g["params"]) for g in optimizer.param_groups}
    assert set(by_lr) == {1e-4, 1.6e-3}
    b_count = sum(1 for n in trainable(peft_model) if "lora_B" in n)
    assert by_lr[1.6e-3] == b_count
