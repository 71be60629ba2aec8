"""The sft trainer's loss on padding-free batches projects to the vocabulary only where a label is, chunk by chunk
without keeping the logits (train/linear_ce.py), and must give the model's own loss and gradients, with and
without gradient-accumulation normalisation, with the chunked loss and with the materialised one."""

from types import SimpleNamespace

import pytest

from llamafactory.data.collator import build_collator
from llamafactory.data.processor.supervised import SupervisedProcessor
from llamafactory.data.template import get_template
from tests.data.test_collator import ROWS


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _padding_free_trainer(tiny_model_dir, tiny_tokenizer, tmp_path):
    """The tiny model in fp32 with padding-free attention, 3 tokenized rows and an sft trainer around them."""
    import torch
    from transformers import AutoModelForCausalLM, Seq2SeqTrainingArguments

    from llamafactory.model.model_utils.varlen_attention import enable_padding_free
    from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    assert enable_padding_free(model) and model.config._attn_implementation == "sdpa_varlen"
    args = SimpleNamespace(cutoff_len=256, train_on_prompt=False, mask_history=False, neat_packing=False)
    single = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, args).preprocess(ROWS)
    rows = [{k: v[i] for k, v in single.items()} for i in range(3)]
    trainer = CustomSeq2SeqTrainer(
        finetuning_args=SimpleNamespace(), model=model, processing_class=tiny_tokenizer,
        args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    return model, rows, trainer


@pytest.mark.parametrize("fused", [True, False])  # a frozen head (LoRA, freeze) takes the chunked loss
@pytest.mark.parametrize("num_items", [None, 40])
def test_selected_position_loss_equals_the_full_loss(tiny_model_dir, tiny_tokenizer, tmp_path, num_items, fused):
    import torch

    model, rows, trainer = _padding_free_trainer(tiny_model_dir, tiny_tokenizer, tmp_path)
    model.lm_head.weight.requires_grad_(not fused)

    padded = build_collator(tiny_tokenizer)(rows)
    labels = padded["labels"][:, 1:]
    full = model(**padded, use_cache=False).logits[:, :-1].float()
    expected = torch.nn.functional.cross_entropy(full.transpose(1, 2), labels, reduction="sum")
    expected = expected / (num_items or int((labels != -100).sum()))
    expected.backward()
    expected_grads = grads(model)
    model.zero_grad()

    calls = []
    hook = model.lm_head.register_forward_hook(lambda module, inp, out: calls.append(out.shape[-2]))
    free = build_collator(tiny_tokenizer, padding_free=True)(rows)
    for _ in range(2):  # the first batch of the chunked loss checks the head against a few real logits
        loss = trainer.compute_loss(model, free, num_items_in_batch=num_items)
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
        loss.backward()
        for name, grad in grads(model).items():
            torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        model.zero_grad()
    hook.remove()
    labelled = int((labels != -100).sum())
    # materialised (a trainable head): the head saw only the labelled positions; chunked: the model's head ran
    # on 4 positions for the check, then on none
    assert calls == ([4, 0] if fused else [labelled, labelled])
    assert trainer._fused is fused
    assert any(p.requires_grad for p in model.parameters())


def test_a_model_whose_logits_are_not_its_head_output_falls_back(tiny_model_dir, tiny_tokenizer, tmp_path):
    """A model that post-processes its logits (here: scaled, as soft-capping or logit_scale models do) fails the
    first-batch check and keeps the materialised loss, which stays the model's own."""
    import torch

    model, rows, trainer = _padding_free_trainer(tiny_model_dir, tiny_tokenizer, tmp_path)
    model.lm_head.weight.requires_grad_(False)
    model.lm_head.register_forward_hook(lambda module, inp, out: out * 0.5)
    padded = build_collator(tiny_tokenizer)(rows)
    labels = padded["labels"][:, 1:]
    with torch.no_grad():
        full = model(**padded, use_cache=False).logits[:, :-1].float()
    expected = torch.nn.functional.cross_entropy(full.transpose(1, 2), labels)
    free = build_collator(tiny_tokenizer, padding_free=True)(rows)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(trainer.compute_loss(model, free), expected, rtol=1e-5, atol=1e-5)
    assert trainer._fused is False


def test_lora_steps_under_bf16_autocast_skip_peft_input_casts(tiny_model_dir, tiny_tokenizer, tmp_path):
    """PEFT casts each LoRA input to the fp32 adapter's dtype and autocast casts it straight back; a bf16 training
    step turns PEFT's cast off (same loss), and generation afterwards has it back."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Seq2SeqTrainingArguments

    from llamafactory.hparams import FinetuningArguments
    from llamafactory.model.model_utils.varlen_attention import enable_padding_free
    from llamafactory.train.sft.trainer import CustomSeq2SeqTrainer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.bfloat16)
    enable_padding_free(base)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # trainable weights in fp32, the frozen base in bf16
    lora = next(m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    seen = []
    lora.register_forward_hook(lambda module, inp, out: seen.append(module.cast_input_dtype_enabled))
    args = SimpleNamespace(cutoff_len=256, train_on_prompt=False, mask_history=False, neat_packing=False)
    single = SupervisedProcessor(get_template("chatml"), tiny_tokenizer, args).preprocess(ROWS)
    rows = [{k: v[i] for k, v in single.items()} for i in range(3)]
    collator = build_collator(tiny_tokenizer, padding_free=True)
    trainer = CustomSeq2SeqTrainer(
        finetuning_args=FinetuningArguments(), model=model, processing_class=tiny_tokenizer, train_dataset=rows,
        data_collator=collator,
        args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to=[], max_steps=1,
                                      per_device_train_batch_size=3, logging_steps=1, save_strategy="no"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # PEFT's cast on: the reference loss
        expected = trainer.compute_loss(model, collator(rows)).item()
    assert seen == [True]
    trainer.train()
    assert len(seen) > 1 and not any(seen[1:])  # PEFT's cast was off in the training step's forward
    assert lora.cast_input_dtype_enabled  # and is back afterwards
    logged = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert abs(logged - expected) < 1e-2 * max(1.0, abs(expected))
