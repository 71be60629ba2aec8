from types import SimpleNamespace

import pytest

from llamafactory.extras.errors import ConfigError
from llamafactory.model.adapter import find_all_linear_modules, init_adapter


def ft_args(**kwargs):
    defaults = dict(finetuning_type="lora", pure_bf16=False, lora_rank=4, lora_alpha=None, lora_dropout=0.0,
                    lora_target="all", use_rslora=False, use_dora=False, additional_target=None,
                    create_new_adapter=False, freeze_trainable_layers=2, freeze_trainable_modules="all",
                    freeze_extra_modules=None)
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
