"""The sft trainer's loss on padding-free batches projects to the vocabulary only where a label is, and must give
the model's own loss and gradients, with and without gradient-accumulation normalisation."""

from types import SimpleNamespace

import pytest

from llamafactory.data.collator import build_collator
from llamafactory.data.processor.supervised import SupervisedProcessor
from llamafactory.data.template import get_template
from tests.data.test_collator import ROWS


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, 40])
def test_selected_position_loss_equals_the_full_loss(tiny_model_dir, tiny_tokenizer, tmp_path, num_items):
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
    loss = trainer.compute_loss(model, free, num_items_in_batch=num_items)
    hook.remove()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    assert calls == [int((labels != -100).sum())]  # the head saw only the labelled positions
    loss.backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
