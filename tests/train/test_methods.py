"""Every fine-tuning method learns, trains exactly its own parameters, and leaves the rest untouched."""

from types import SimpleNamespace

import pytest

from llamafactory.model.adapter import init_adapter

METHODS = {
    "lora": {"finetuning_type": "lora"},
    "dora": {"finetuning_type": "lora", "use_dora": True},
    "oft": {"finetuning_type": "oft"},
    "freeze": {"finetuning_type": "freeze", "freeze_trainable_layers": 1, "freeze_extra_modules": "lm_head"},
    "full": {"finetuning_type": "full"},
}


def ft_args(**kwargs):
    defaults = dict(pure_bf16=False, lora_rank=8, lora_alpha=None, lora_dropout=0.0, lora_target="all",
                    use_rslora=False, use_dora=False, additional_target=None, create_new_adapter=False,
                    freeze_trainable_layers=2, freeze_trainable_modules="all", freeze_extra_modules=None,
                    pissa_init=False, pissa_iter=16, oft_rank=0, oft_block_size=16, oft_target="all",
                    module_dropout=0.0, use_llama_pro=False)
    defaults.update(kwargs)
    ns = SimpleNamespace(**defaults)
    ns.lora_alpha_or_default = lambda: ns.lora_alpha or ns.lora_rank * 2
    return ns


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_learns_and_touches_only_its_parameters(tiny_model_dir, tiny_tokenizer, method):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = init_adapter(base, SimpleNamespace(adapter_name_or_path=None), ft_args(**METHODS[method]), True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable
    ids = torch.tensor([tiny_tokenizer.encode("Who are you? I am Lumen, an assistant made by Forge.")])
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(15):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses  # adapters move the tiny model slowly: 10% is a clear signal

    changed = {n for n, p in base.named_parameters() if n in before and not torch.equal(p.detach(), before[n])}
    if method in ("lora", "dora", "oft"):
        assert not changed, f"{method} changed base weights: {sorted(changed)[:3]}"
    elif method == "freeze":
        assert changed and all(".layers.1." in n or n.startswith("lm_head") for n in changed)
    else:
        assert changed == set(before)


def test_muon_learning_rate_changes_reach_the_optimizers_after_a_resume(tiny_model_dir):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from llamafactory.train.trainer_utils import _muon

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = _muon(model, TrainingArguments(output_dir="unused", use_cpu=True, report_to="none"))
    optimizer.load_state_dict(optimizer.state_dict())  # what resume_from_checkpoint does
    for group in optimizer.param_groups:  # what the scheduler does
        group["lr"] = 0.123
    assert all(g["lr"] == 0.123 for inner in optimizer.optimizers for g in inner.param_groups)
